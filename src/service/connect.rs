//! The command loop: Idle asks for work, reports finish or defer commands.

use super::checkin::Caller;
use super::{now, Mdm, ServiceError};
use crate::protocol::{CommandReport, Status};
use crate::store::{DeliveryStatus, ReportOutcome, ReportRecord};

impl Mdm {
    /// Apply a report and return the next command body, or `None` for "no more commands".
    pub async fn connect(&self, report: CommandReport, raw: &[u8], caller: &Caller) -> Result<Option<Vec<u8>>, ServiceError> {
        let id = report.enrollment.id.as_str();
        let hash = self.check_identity(caller).await?;
        let device = self.check_binding(&report.enrollment.device, &hash).await?;
        if id == device.id {
            super::checkin::active_or_rejected(id, Some(device))?;
        } else {
            self.require_known(id).await?;
        }
        self.mark_seen(id);
        let next = match (report.status, report.command_uuid) {
            (Status::Idle, _) => self.store.next_command(id, false).await?,
            (status, Some(uuid)) => {
                let rec = ReportRecord {
                    status: match status {
                        Status::Acknowledged => DeliveryStatus::Acknowledged,
                        Status::Error => DeliveryStatus::Error,
                        Status::CommandFormatError => DeliveryStatus::CommandFormatError,
                        _ => DeliveryStatus::NotNow,
                    },
                    command_uuid: uuid.clone(),
                    error_chain: report.error_chain,
                    raw: raw.to_vec(),
                    now: now(),
                };
                let (outcome, next) = self.store.report(id, rec).await?;
                match outcome {
                    ReportOutcome::NotPending => {
                        tracing::warn!(enrollment = %id, command = %uuid, status = status.as_str(), "report for a command that is not pending: ignored")
                    }
                    ReportOutcome::NotNowRecorded => {
                        tracing::debug!(enrollment = %id, command = %uuid, "NotNow")
                    }
                    ReportOutcome::Finished => {
                        tracing::debug!(enrollment = %id, command = %uuid, status = status.as_str(), "command finished")
                    }
                }
                next
            }
            (_, None) => return Err(ServiceError::Rejected("report without CommandUUID".into())),
        };
        Ok(next.map(|c| c.body))
    }
}

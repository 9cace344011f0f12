//! The command loop: Idle asks for work, reports finish or defer commands.

use crate::clock::now;
use crate::protocol::{CommandReport, Status};
use crate::service::checkin::Caller;
use crate::service::{Mdm, ServiceError};
use crate::store::{DeliveryStatus, ReportOutcome, ReportRecord};

impl Mdm {
    /// Apply a report and return the next command body, or `None` for "no more commands".
    /// The report's `answer` (its dictionary, parsed once by the HTTP layer) is
    /// what `learn` and the inventory read; `raw` is what is stored.
    pub async fn connect(&self, mut report: CommandReport, raw: &[u8], caller: &Caller) -> Result<Option<Vec<u8>>, ServiceError> {
        let answer = std::mem::take(&mut report.answer);
        let id = report.enrollment.id.as_str();
        let (_, device) = self.check_identity_and_binding(caller, &report.enrollment.device).await?;
        let device_id = device.id.clone();
        if id == device.id {
            crate::service::checkin::active_or_rejected(id, Some(device))?;
        } else {
            self.require_known(id).await?;
        }
        self.mark_seen(id);
        let next = match (report.status, report.command_uuid) {
            (Status::Idle, _) => self.store.next_command(id, false).await?,
            (status, Some(uuid)) => {
                let events = match self.webhooks() {
                    Some(w) => w.acknowledge_event(
                        report.ids.udid.as_deref(),
                        report.ids.enrollment_id.as_deref(),
                        status.as_str(),
                        Some(uuid.as_str()),
                        raw,
                    ),
                    None => Vec::new(),
                };
                let chain_text = (!report.error_chain.is_empty()).then(|| {
                    report
                        .error_chain
                        .iter()
                        .map(|c| format!("{} ({} {})", c.localized_description, c.domain, c.code))
                        .collect::<Vec<_>>()
                        .join("; ")
                });
                let rec = ReportRecord {
                    events,
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
                    ReportOutcome::Finished { request_type } => {
                        tracing::debug!(enrollment = %id, command = %uuid, status = status.as_str(), "command finished");
                        if matches!(
                            request_type.as_str(),
                            "InstallProfile" | "RemoveProfile" | "InstallApplication" | "RemoveApplication" | "Settings"
                        ) || id == device_id && status != Status::Acknowledged
                        {
                            self.fact_changed(id);
                        }
                        if request_type == "InstallProfile" {
                            self.profile_event(id, &uuid, status).await;
                        }
                        self.observe_result(id, &request_type, status == Status::Acknowledged, &uuid, &answer, chain_text)
                            .await;
                        if status == Status::Acknowledged {
                            self.learn(id, &device_id, &request_type, raw, answer).await;
                            // A follow-up (CertificateList after an install) is answered in this session.
                            if next.is_none() && request_type == "InstallProfile" {
                                return self.stored_for_device(self.store.next_command(id, true).await?);
                            }
                        }
                    }
                }
                next
            }
            (_, None) => return Err(ServiceError::Rejected("report without CommandUUID".into())),
        };
        self.stored_for_device(next)
    }

    /// The XML a device gets for a queued command: a sealed body (a command
    /// with secrets) is opened here, in memory, and nowhere else.
    fn stored_for_device(&self, next: Option<crate::store::QueuedCommand>) -> Result<Option<Vec<u8>>, ServiceError> {
        let Some(c) = next else { return Ok(None) };
        if !crate::service::commands::sealed::is_sealed(&c.body) {
            return Ok(Some(c.body));
        }
        match crate::service::commands::sealed::open(&self.secrets, &c.uuid, &c.body) {
            Ok(xml) => Ok(Some(xml.into_owned())),
            Err(e) => {
                tracing::error!(command = %c.uuid, error = %e, "a queued command's sealed body does not open (is secrets.keys the one it was sealed with?)");
                Err(ServiceError::internal("opening a queued command's sealed body", e))
            }
        }
    }
}

impl Mdm {
    /// `mdmd.ProfileInstalled` / `mdmd.ProfileFailed` for an InstallProfile result.
    async fn profile_event(&self, id: &str, uuid: &str, status: Status) {
        let Some(w) = self.webhooks() else { return };
        let profile = match self.store.command(uuid).await {
            Ok(Some((rec, _))) => rec.profile.map(|t| t.identifier),
            _ => None,
        };
        let topic = if status == Status::Acknowledged {
            "mdmd.ProfileInstalled"
        } else {
            "mdmd.ProfileFailed"
        };
        let ev = w.own_event(
            topic,
            serde_json::json!({"enrollment": id, "profile": profile, "command_uuid": uuid, "status": status.as_str()}),
        );
        if let Err(e) = w.emit(ev).await {
            tracing::warn!(enrollment = %id, error = %e, "profile event not stored");
        }
    }

    /// What a finished command's answer teaches us about the device: the
    /// facts in DeviceInformation (used by profile variables) and the
    /// profiles in ProfileList (reconciled with what we installed). Failing
    /// here never fails the device's request: the result itself is stored.
    async fn learn(&self, id: &str, device: &str, request_type: &str, raw: &[u8], answer: plist::Dictionary) {
        let r = match request_type {
            "DeviceInformation" => {
                let info = facts(&answer);
                self.store.update_info(id, info).await.map(drop)
            }
            "ProfileList" => {
                let installed = match answer.get("ProfileList") {
                    Some(plist::Value::Array(a)) => a
                        .iter()
                        .filter_map(|p| p.as_dictionary()?.get("PayloadIdentifier")?.as_string().map(str::to_owned))
                        .collect(),
                    _ => Vec::new(),
                };
                match self.store.reconcile_profiles(id, installed, now()).await {
                    Ok(n) if n > 0 => {
                        tracing::info!(enrollment = %id, changed = n, "ProfileList reconciled");
                        Ok(())
                    }
                    other => other.map(drop),
                }
            }
            _ => Ok(()),
        };
        if let Err(e) = r {
            tracing::warn!(enrollment = %id, request_type, error = %e, "could not record what the answer reported");
        }
        // Kept as the device's inventory (on the device channel), then compliance follows.
        if let Err(e) = self.record_inventory(device, request_type, answer).await {
            tracing::warn!(enrollment = %device, request_type, error = %e, "could not store inventory");
        }
        if matches!(
            request_type,
            "InstallProfile" | "RemoveProfile" | "CertificateList" | "InstallApplication"
        ) {
            self.command_finished(id, request_type, raw).await;
        }
    }
}

/// Device facts from a DeviceInformation answer.
fn facts(d: &plist::Dictionary) -> crate::store::DeviceInfo {
    let q = d.get("QueryResponses").and_then(plist::Value::as_dictionary);
    let s = |k: &str| {
        q.and_then(|q| q.get(k))
            .and_then(plist::Value::as_string)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    crate::store::DeviceInfo {
        serial_number: s("SerialNumber"),
        product_name: s("ProductName"),
        os_version: s("OSVersion"),
        build_version: s("BuildVersion"),
        imei: s("IMEI"),
        meid: s("MEID"),
        device_name: s("DeviceName"),
        model: s("Model"),
        model_name: s("ModelName"),
        wifi_mac: s("WiFiMAC"),
        bluetooth_mac: s("BluetoothMAC"),
        phone_number: s("PhoneNumber"),
        is_supervised: q.and_then(|q| q.get("IsSupervised")).and_then(plist::Value::as_boolean),
    }
}

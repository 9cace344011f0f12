//! Queueing one command as given to every target (internal uses such as
//! identity renewal; admins go through `commands::Commander`).

use super::{now, Mdm, ServiceError};
use crate::protocol::schema::{Schema, SchemaError};
use crate::protocol::Command;
use crate::store::{CommandRecord, EnqueueOutcome};

#[derive(Debug)]
pub enum EnqueueError {
    Invalid(SchemaError),
    Service(ServiceError),
}

impl Mdm {
    /// Validate a JSON command against Apple's schema, store it once, and
    /// queue it for every known target in one transaction.
    pub async fn enqueue_json(&self, command: &serde_json::Value, targets: Vec<String>) -> Result<(String, EnqueueOutcome), EnqueueError> {
        let dict = Schema::get().json_to_command(command).map_err(EnqueueError::Invalid)?;
        let cmd = Command::new(dict).map_err(|e| {
            EnqueueError::Invalid(SchemaError {
                path: "RequestType".into(),
                problem: e.to_string(),
            })
        })?;
        let rec = CommandRecord::new(&cmd, now(), None);
        let out = self
            .store
            .enqueue(rec, targets.clone())
            .await
            .map_err(|e| EnqueueError::Service(e.into()))?;
        if out.queued > 0 {
            let unknown: std::collections::HashSet<&String> = out.unknown.iter().collect();
            self.wake(targets.into_iter().filter(|t| !unknown.contains(t)).collect());
        }
        tracing::info!(command = %cmd.uuid, request_type = %cmd.request_type, queued = out.queued, unknown = out.unknown.len(), "command queued");
        Ok((cmd.uuid, out))
    }
}

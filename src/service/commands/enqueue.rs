//! The one fan-out path: a command stored once and queued to every target
//! in one transaction, the targets woken, counted and logged (`fan_out`).
//! Admin commands that are the same for every target (`Commander`) and
//! internal ones (`enqueue_json`: identity renewal, inventory) both take it.

use crate::clock::now;
use crate::protocol::schema::{Schema, SchemaError};
use crate::protocol::Command;
use crate::service::{Mdm, ServiceError};
use crate::store::{CommandRecord, EnqueueOutcome, StoreError};

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
            .fan_out(rec, targets, true)
            .await
            .map_err(|e| EnqueueError::Service(e.into()))?;
        Ok((cmd.uuid, out))
    }

    /// Store `rec` once and queue it for every known target in one
    /// transaction; wake the targets it was queued for (with `push`), count
    /// them (`commands_queued`) and log.
    pub(crate) async fn fan_out(&self, rec: CommandRecord, targets: Vec<String>, push: bool) -> Result<EnqueueOutcome, StoreError> {
        let (uuid, request_type) = (rec.uuid.clone(), rec.request_type.clone());
        let out = self.store.enqueue(rec, targets.clone()).await?;
        if push && out.queued > 0 {
            let unknown: std::collections::HashSet<&String> = out.unknown.iter().collect();
            self.wake(targets.into_iter().filter(|t| !unknown.contains(t)).collect());
        }
        crate::metrics::get().commands_queued.inc_by(out.queued);
        tracing::info!(command = %uuid, %request_type, queued = out.queued, unknown = out.unknown.len(), "command queued");
        Ok(out)
    }
}

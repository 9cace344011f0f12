//! The device side of ADE: in Setup Assistant the device POSTs its
//! MachineInfo (UDID, SERIAL, PRODUCT, VERSION, IMEI, MEID, LANGUAGE) as a
//! CMS SignedData, signed by its Apple device certificate, to the ADE
//! profile's `url`. It is checked like the profile service's phase 1 (the
//! signature; with `--device-attestation-ca`, the signer chains to Apple's
//! device CA and names that UDID), its serial must be one a sync knows (403
//! otherwise, unless `--ade-allow-unknown`), and the answer is the signed
//! enrollment profile: no invitation or password, Apple vouched for the
//! device by assigning it to us. Its challenge carries the `AdeOrigin` to the
//! identity and the enrollment.
//!
//! Vouched (it may replace an active enrollment's identity under the strict
//! re-enrollment policy) only when attested, and only for the same serial:
//! a UDID enrolled with another serial is refused, and so is a serial
//! actively enrolled under another UDID.

use plist::Value;

use super::{Ade, DeviceRecord};
use crate::clock::now;
use crate::service::enroll::SecretFor;
use crate::service::ServiceError;
use crate::store::{AdeOrigin, SecretKind, Store, StoreError};

/// Attested MachineInfo already served (by the SHA-256 of its bytes).
const SEEN: &str = "ade_machine_info_seen";

/// Another active device enrollment that ADE pinned to `serial`, besides `id`.
/// (Only ADE serials count: a serial a device merely reported proves nothing,
/// and must not lock the real device out.)
pub async fn serial_enrolled_elsewhere(store: &dyn Store, serial: &str, id: &str) -> Result<Option<String>, StoreError> {
    for other in store.find(crate::store::LookupKey::Serial, serial).await? {
        if other == id {
            continue;
        }
        if store.enrollment(&other).await?.is_some_and(|e| {
            e.active && e.checked_out_at.is_none() && e.id == e.device && e.ade.as_ref().is_some_and(|a| a.serial == serial)
        }) {
            return Ok(Some(other));
        }
    }
    Ok(None)
}

impl Ade {
    /// A MachineInfo POST: the signed enrollment profile, or why not.
    pub async fn machine_info(&self, body: &[u8]) -> Result<Vec<u8>, ServiceError> {
        let r = self.serve_machine_info(body).await;
        crate::metrics::get().ade_enrollment(match &r {
            Ok(_) => "served",
            Err(ServiceError::Forbidden(_)) => "refused",
            Err(ServiceError::Rejected(_)) => "bad",
            Err(_) => "error",
        });
        r
    }

    async fn serve_machine_info(&self, body: &[u8]) -> Result<Vec<u8>, ServiceError> {
        let (signer, attrs) = crate::service::enroll::ota::read_body(body)?;
        if let Some(p) = crate::protocol::ade::machine_info_problem(&attrs) {
            return Err(ServiceError::Rejected(format!("MachineInfo: {p}")));
        }
        let get = |k: &str| attrs.get(k).and_then(Value::as_string).unwrap_or_default().to_owned();
        let (udid, serial) = (get("UDID"), get("SERIAL"));
        let mut attested = self.enroller.attest(&signer, &udid, "ADE enrollment")?;
        let mut device = self.device_record(&serial).await?.filter(|d| d.op != "deleted");
        if let Some(d) = &device {
            // A device of a server token that was deleted is no longer ours.
            if self.token_record(&d.server).await?.is_none() {
                device = None;
            }
        }
        let device = match device {
            Some(d) => Some(d),
            None if self.cfg.allow_unknown => None,
            None => {
                tracing::warn!(%serial, %udid, "ADE enrollment refused: the serial is not assigned to this server in Apple Business Manager");
                return Err(ServiceError::Forbidden(format!(
                    "serial {serial} is not assigned to this MDM server in Apple Business Manager (or no sync has seen it yet)"
                )));
            }
        };
        // The same device: a UDID enrolled before keeps its serial.
        if let Some(e) = self.store.enrollment(&udid).await? {
            if let Some(known) = e.info.serial_number.as_deref().filter(|s| !s.is_empty()) {
                if known != serial {
                    return Err(ServiceError::Forbidden(format!(
                        "{udid} is enrolled with serial {known}, not {serial}"
                    )));
                }
            }
        }
        // A serial is one device: an active ADE enrollment of it under another UDID is not this
        // one (a UDID does not change when a device is erased).
        if let Some(other) = serial_enrolled_elsewhere(self.store.as_ref(), &serial, &udid).await? {
            tracing::warn!(%serial, %udid, enrolled = %other, "ADE enrollment refused: the serial is enrolled as another device");
            return Err(ServiceError::Forbidden(format!(
                "serial {serial} is enrolled as another device ({other})"
            )));
        }
        if attested {
            // Attested once: the same signed bytes again (a replay by whoever saw them) are
            // served, but not vouched — they cannot replace an active identity.
            let seen = serde_json::json!({ "udid": udid, "at": now() });
            let first = self
                .store
                .put_record(
                    SEEN,
                    &hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body)),
                    seen,
                    now(),
                    Some(0),
                )
                .await?
                .is_some();
            if !first {
                tracing::warn!(%udid, %serial, "ADE MachineInfo seen before: served, not vouched");
                attested = false;
            }
        }
        let origin = self.origin(device.as_ref(), &serial, attested).await?;
        let (challenge, _) = self
            .enroller
            .new_secret_with(
                SecretKind::Challenge,
                &format!("ade:{udid}"),
                self.enroller.cfg.challenge_ttl,
                SecretFor {
                    enrollment: Some(udid.clone()),
                    vouched: attested,
                    renews: None,
                    user: None,
                    ade: Some(origin.clone()),
                },
            )
            .await?;
        let xml = self
            .enroller
            .profile_plist(&challenge, &uuid::Uuid::new_v4().to_string().to_uppercase())
            .map_err(|e| ServiceError::internal("building the enrollment profile", e))?;
        tracing::info!(%udid, %serial, server = %origin.server, supervised = origin.supervised, await_configured = origin.await_configured, attested, at = now(), "ADE enrollment profile served");
        crate::pki::cms::sign_profile(&self.enroller.pki, &xml).map_err(|e| ServiceError::internal("signing the enrollment profile", e))
    }

    /// What the device's ADE profile says of it.
    async fn origin(&self, device: Option<&DeviceRecord>, serial: &str, attested: bool) -> Result<AdeOrigin, ServiceError> {
        let profile = match device.and_then(|d| d.profile_uuid.as_deref()) {
            Some(uuid) => self.profile_by_uuid(uuid).await?,
            None => None,
        };
        Ok(AdeOrigin {
            server: device.map(|d| d.server.clone()).unwrap_or_default(),
            serial: serial.to_owned(),
            profile_uuid: device.and_then(|d| d.profile_uuid.clone()),
            // Every ADE device is supervised since iOS 13 unless its profile says otherwise.
            supervised: profile.as_ref().is_none_or(|(_, p)| p.supervised()),
            await_configured: profile.as_ref().is_some_and(|(_, p)| p.await_configured()),
            attested,
        })
    }
}

//! What network access control asks: a device's posture, derived from its
//! enrollment, inventory and compliance (Cisco ISE's attribute set).

use crate::service::{Mdm, ServiceError};
use crate::store::{ComplianceRecord, ComplianceState, Enrollment, InventoryItem, LookupKey};

#[derive(Debug, Clone, PartialEq)]
pub struct Posture {
    pub udid: String,
    pub guid: String,
    /// 12 upper-case hex digits, or empty if not reported yet.
    pub mac: String,
    pub registered: bool,
    pub compliant: bool,
    pub failure_reason: String,
    pub remediation: String,
    /// Data protection is on: hardware encryption (SecurityInfo
    /// `HardwareEncryptionCaps` block and file level, 3) and a passcode
    /// (`PasscodePresent`): iOS protects files with keys derived from the
    /// passcode, so without one the file-level encryption protects nothing.
    pub disk_encryption_on: bool,
    /// SecurityInfo `PasscodePresent`.
    pub pin_lock_on: bool,
    /// iOS does not tell an MDM; always false.
    pub jail_broken: bool,
    pub manufacturer: &'static str,
    pub model: String,
    pub imei: String,
    pub meid: String,
    pub serial_number: String,
    pub os_version: String,
    pub phone_number: String,
    pub user: String,
    /// Seconds since the epoch.
    pub last_checkin: i64,
}

pub fn posture(e: &Enrollment, inventory: &[InventoryItem], compliance: Option<&ComplianceRecord>) -> Posture {
    let sec = inventory
        .iter()
        .find(|i| i.kind == "SecurityInfo")
        .and_then(|i| i.data.get("SecurityInfo"));
    let flag = |k: &str| sec.and_then(|s| s.get(k)).and_then(serde_json::Value::as_bool).unwrap_or(false);
    let caps = sec
        .and_then(|s| s.get("HardwareEncryptionCaps"))
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(0);
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    let (compliant, failure_reason) = match compliance {
        Some(c) if c.state == ComplianceState::Compliant => (true, String::new()),
        Some(c) => (
            false,
            if c.reasons.is_empty() {
                c.state.as_str().to_owned()
            } else {
                c.reasons.join("; ")
            },
        ),
        None => (false, "not evaluated yet".to_owned()),
    };
    let registered = e.active && e.checked_out_at.is_none();
    Posture {
        udid: e.udid.clone().unwrap_or_else(|| e.device.clone()),
        guid: e.device_guid(),
        mac: LookupKey::WifiMac.normalize(&s(&e.info.wifi_mac)).to_uppercase(),
        registered,
        compliant: compliant && registered,
        remediation: if compliant {
            String::new()
        } else {
            "Open Settings on the device and resolve what is listed, or contact IT.".to_owned()
        },
        failure_reason: if registered { failure_reason } else { "not enrolled".to_owned() },
        disk_encryption_on: caps & 3 == 3 && flag("PasscodePresent"),
        pin_lock_on: flag("PasscodePresent"),
        jail_broken: false,
        manufacturer: "Apple Inc.",
        model: e
            .info
            .model_name
            .clone()
            .or_else(|| e.info.product_name.clone())
            .unwrap_or_default(),
        imei: s(&e.info.imei),
        meid: s(&e.info.meid),
        serial_number: s(&e.info.serial_number),
        os_version: s(&e.info.os_version),
        phone_number: s(&e.info.phone_number),
        user: e.username().unwrap_or_default(),
        last_checkin: e.last_seen_at.max(e.last_checkin_at),
    }
}

impl Mdm {
    /// The posture of every device found by `key` = `value` (none: an empty list).
    pub async fn postures(&self, key: LookupKey, value: &str) -> Result<Vec<Posture>, ServiceError> {
        let ids = self.store.find(key, value).await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(p) = self.posture_of(&id).await? {
                out.push(p);
            }
        }
        Ok(out)
    }

    pub async fn posture_of(&self, id: &str) -> Result<Option<Posture>, ServiceError> {
        let Some(e) = self.store.enrollment(id).await? else {
            return Ok(None);
        };
        let inv = self.store.inventory(id).await?;
        let c = self.store.compliance(id).await?;
        Ok(Some(posture(&e, &inv, c.as_ref())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::EnrollmentKind;

    fn with_security(info: Option<serde_json::Value>) -> Posture {
        let mut e = Enrollment::blank("U1", "U1", EnrollmentKind::Device, "com.apple.mgmt.External.t", 1);
        e.active = true;
        let inv: Vec<InventoryItem> = info
            .into_iter()
            .map(|v| InventoryItem {
                kind: "SecurityInfo".into(),
                reported_at: 1,
                data: serde_json::json!({ "SecurityInfo": v }),
            })
            .collect();
        posture(&e, &inv, None)
    }

    #[test]
    fn disk_encryption_needs_hardware_encryption_and_a_passcode() {
        let p = |caps: i64, passcode: bool| {
            with_security(Some(
                serde_json::json!({"HardwareEncryptionCaps": caps, "PasscodePresent": passcode}),
            ))
        };
        let both = p(3, true);
        assert!(both.disk_encryption_on && both.pin_lock_on);
        // Hardware encryption without a passcode: data protection is off.
        let no_passcode = p(3, false);
        assert!(!no_passcode.disk_encryption_on && !no_passcode.pin_lock_on);
        // A passcode on hardware with block-level encryption only.
        assert!(!p(1, true).disk_encryption_on);
        assert!(!p(2, true).disk_encryption_on);
        assert!(p(7, true).disk_encryption_on, "other bits do not matter");
        // Nothing reported yet: off.
        let unknown = with_security(None);
        assert!(!unknown.disk_encryption_on && !unknown.pin_lock_on);
        // A PasscodePresent that is not a boolean is not a passcode.
        assert!(!with_security(Some(serde_json::json!({"HardwareEncryptionCaps": 3, "PasscodePresent": "yes"}))).disk_encryption_on);
    }
}

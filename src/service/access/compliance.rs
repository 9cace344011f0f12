//! Compliance: a policy file of rules, evaluated per device from its
//! enrollment record and stored inventory.
//!
//! The policy is TOML (docs/compliance.md); every key is optional and a
//! missing key is no rule:
//!
//! ```toml
//! passcode_required = true          # SecurityInfo: PasscodePresent
//! passcode_compliant = true         # SecurityInfo: PasscodeCompliant and PasscodeCompliantWithProfiles
//! hardware_encryption = true        # SecurityInfo: HardwareEncryptionCaps has block and file encryption
//! min_os_version = "17.4"
//! required_profiles = ["com.example.wifi"]   # PayloadIdentifiers the device must have installed
//! forbidden_apps = ["com.example.game"]      # bundle identifiers it must not have
//! max_hours_since_checkin = 72
//! identity_min_days_left = 14       # the MDM identity certificate must not expire sooner
//! ```
//!
//! A device is **non-compliant** if any rule fails, **unknown** if no rule
//! fails but one cannot be decided yet (the inventory it needs was never
//! reported), **compliant** otherwise. Reasons name each failing or
//! undecided rule.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use serde::Deserialize;

use crate::store::{ComplianceRecord, ComplianceState, DeviceProfile, Enrollment, InventoryItem, ProfileState};

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub passcode_required: bool,
    #[serde(default)]
    pub passcode_compliant: bool,
    #[serde(default)]
    pub hardware_encryption: bool,
    pub min_os_version: Option<String>,
    #[serde(default)]
    pub required_profiles: Vec<String>,
    #[serde(default)]
    pub forbidden_apps: Vec<String>,
    pub max_hours_since_checkin: Option<u32>,
    pub identity_min_days_left: Option<u32>,
}

/// Why a compliance policy cannot be used (the file's path first, then why).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    #[error("min_os_version {0:?} is not a version like \"17.4\"")]
    Version(String),
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Invalid {
        path: String,
        #[source]
        source: Box<PolicyError>,
    },
}

impl Policy {
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let p: Policy = toml::from_str(text)?;
        if let Some(v) = &p.min_os_version {
            if parse_version(v).is_none() {
                return Err(PolicyError::Version(v.clone()));
            }
        }
        Ok(p)
    }

    /// Whether the policy has any rule at all.
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }
}

/// "17.4.1" → [17, 4, 1]; None unless every part is a number.
pub fn parse_version(v: &str) -> Option<Vec<u32>> {
    let parts: Option<Vec<u32>> = v.trim().split('.').map(|p| p.parse().ok()).collect();
    parts.filter(|p| !p.is_empty())
}

fn version_lt(a: &[u32], b: &[u32]) -> bool {
    let n = a.len().max(b.len());
    for i in 0..n {
        let (x, y) = (a.get(i).copied().unwrap_or(0), b.get(i).copied().unwrap_or(0));
        if x != y {
            return x < y;
        }
    }
    false
}

/// What one device looks like to the rules.
pub struct Facts<'a> {
    pub enrollment: &'a Enrollment,
    pub inventory: &'a [InventoryItem],
    pub profiles: &'a [DeviceProfile],
    pub now: i64,
}

impl Facts<'_> {
    fn item(&self, kind: &str) -> Option<&serde_json::Value> {
        self.inventory.iter().find(|i| i.kind == kind).map(|i| &i.data)
    }
}

/// Evaluate `policy` for one device.
pub fn evaluate(policy: &Policy, version: &str, f: &Facts<'_>) -> ComplianceRecord {
    let mut failed = Vec::new();
    let mut undecided = Vec::new();
    let sec = f.item("SecurityInfo").and_then(|d| d.get("SecurityInfo"));
    let flag = |k: &str| sec.and_then(|s| s.get(k)).and_then(serde_json::Value::as_bool);
    if policy.passcode_required {
        match flag("PasscodePresent") {
            Some(true) => {}
            Some(false) => failed.push("no passcode set".to_owned()),
            None => undecided.push("passcode: SecurityInfo not reported yet".to_owned()),
        }
    }
    if policy.passcode_compliant {
        match (flag("PasscodeCompliant"), flag("PasscodeCompliantWithProfiles")) {
            (Some(true), Some(true)) | (Some(true), None) => {}
            (Some(_), _) => failed.push("passcode does not meet the passcode policy".to_owned()),
            (None, _) => undecided.push("passcode compliance: SecurityInfo not reported yet".to_owned()),
        }
    }
    if policy.hardware_encryption {
        match sec
            .and_then(|s| s.get("HardwareEncryptionCaps"))
            .and_then(serde_json::Value::as_i64)
        {
            Some(c) if c & 3 == 3 => {}
            Some(_) => failed.push("hardware encryption is not on (no passcode, or not supported)".to_owned()),
            None => undecided.push("hardware encryption: SecurityInfo not reported yet".to_owned()),
        }
    }
    if let Some(min) = policy.min_os_version.as_deref().and_then(parse_version) {
        match f.enrollment.info.os_version.as_deref().and_then(parse_version) {
            Some(v) if version_lt(&v, &min) => failed.push(format!(
                "OS version {} is older than {}",
                f.enrollment.info.os_version.as_deref().unwrap_or_default(),
                policy.min_os_version.as_deref().unwrap_or_default()
            )),
            Some(_) => {}
            None => undecided.push("OS version not reported yet".to_owned()),
        }
    }
    if !policy.required_profiles.is_empty() {
        let listed: Option<Vec<&str>> = f.item("ProfileList").and_then(|d| d.get("ProfileList")).and_then(|a| {
            a.as_array()
                .map(|a| a.iter().filter_map(|p| p.get("PayloadIdentifier")?.as_str()).collect())
        });
        let listed_at = f.inventory.iter().find(|i| i.kind == "ProfileList").map_or(0, |i| i.reported_at);
        for want in &policy.required_profiles {
            // An install or removal the device acknowledged after its last
            // ProfileList counts at once (the list is refreshed hours apart).
            let since_list = f
                .profiles
                .iter()
                .find(|p| &p.identifier == want && p.updated_at >= listed_at)
                .and_then(|p| match p.state {
                    ProfileState::Installed => Some(true),
                    ProfileState::Removed | ProfileState::Missing => Some(false),
                    _ => None,
                });
            let has = match (&listed, since_list) {
                (Some(_), Some(known)) => Some(known),
                (Some(l), None) => Some(l.contains(&want.as_str())),
                (None, _) => f
                    .profiles
                    .iter()
                    .any(|p| &p.identifier == want && p.state == ProfileState::Installed)
                    .then_some(true),
            };
            match has {
                Some(true) => {}
                Some(false) => failed.push(format!("required profile {want} is not installed")),
                None => undecided.push(format!("required profile {want}: ProfileList not reported yet")),
            }
        }
    }
    if !policy.forbidden_apps.is_empty() {
        match f
            .item("InstalledApplicationList")
            .and_then(|d| d.get("InstalledApplicationList"))
            .and_then(serde_json::Value::as_array)
        {
            Some(apps) => {
                for app in apps {
                    if let Some(id) = app.get("Identifier").and_then(serde_json::Value::as_str) {
                        if policy.forbidden_apps.iter().any(|f| f == id) {
                            failed.push(format!("forbidden app {id} is installed"));
                        }
                    }
                }
            }
            None => undecided.push("apps: InstalledApplicationList not reported yet".to_owned()),
        }
    }
    // When a time-based rule changes its verdict with no new fact.
    let mut recheck: Option<i64> = None;
    let mut at = |t: i64| recheck = Some(recheck.map_or(t, |r: i64| r.min(t)));
    if let Some(h) = policy.max_hours_since_checkin {
        let seen = f.enrollment.last_seen_at.max(f.enrollment.last_checkin_at);
        let age = f.now - seen;
        if age > i64::from(h) * 3600 {
            failed.push(format!("not seen for {} hours (at most {h})", age / 3600));
            // Back only with a check-in, which is not a fact that evaluates: look again later.
            at(f.now + AGE_RECHECK);
        } else {
            at(seen + i64::from(h) * 3600 + 1);
        }
    }
    if let Some(days) = policy.identity_min_days_left {
        match f.enrollment.identity_not_after {
            Some(na) if na - f.now < i64::from(days) * 86_400 => {
                failed.push(format!("identity certificate expires in {} day(s)", (na - f.now).max(0) / 86_400))
            }
            Some(na) => at(na - i64::from(days) * 86_400),
            None => undecided.push("identity certificate expiry unknown".to_owned()),
        }
    }
    if !f.enrollment.active && f.enrollment.checked_out_at.is_some() {
        failed.push("checked out (no longer managed)".to_owned());
    }
    let state = if !failed.is_empty() {
        ComplianceState::NonCompliant
    } else if !undecided.is_empty() {
        ComplianceState::Unknown
    } else {
        ComplianceState::Compliant
    };
    failed.extend(undecided);
    ComplianceRecord {
        state,
        reasons: failed,
        evaluated_at: f.now,
        policy: version.to_owned(),
        recheck_at: recheck.filter(|t| *t > f.now),
    }
}

/// How long a device failing `max_hours_since_checkin` waits before it is
/// evaluated again (its check-ins do not evaluate it; a report does).
pub const AGE_RECHECK: i64 = 900;

/// The policy in use, reloaded from its file when the file changes.
pub struct PolicyFile {
    path: Option<PathBuf>,
    current: RwLock<(Arc<Policy>, String, Option<std::time::SystemTime>)>,
}

fn version_of(text: &str) -> String {
    use sha2::Digest as _;
    hex::encode(&sha2::Sha256::digest(text.as_bytes())[..6])
}

impl PolicyFile {
    /// Load the policy (a missing `path` is an empty policy; a broken file is an error).
    pub fn load(path: Option<PathBuf>) -> Result<PolicyFile, PolicyError> {
        let pf = PolicyFile {
            path,
            ..PolicyFile::empty()
        };
        pf.reload()?;
        Ok(pf)
    }

    /// No file: no rules.
    pub fn empty() -> PolicyFile {
        PolicyFile {
            path: None,
            current: RwLock::new((Arc::new(Policy::default()), version_of(""), None)),
        }
    }

    pub fn get(&self) -> (Arc<Policy>, String) {
        let c = self.current.read().unwrap_or_else(|p| p.into_inner());
        (c.0.clone(), c.1.clone())
    }

    pub fn path(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }

    /// Re-read the file if it changed. Ok(true) if a new policy is in use; a
    /// broken file keeps the old policy and is an error.
    pub fn reload(&self) -> Result<bool, PolicyError> {
        let Some(path) = &self.path else { return Ok(false) };
        let read = |source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        };
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).map_err(read)?;
        if self.current.read().map(|c| c.2 == Some(modified)).unwrap_or(false) {
            return Ok(false);
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        let mut c = self.current.write().unwrap_or_else(|p| p.into_inner());
        c.2 = Some(modified);
        let policy = Policy::parse(&text).map_err(|e| PolicyError::Invalid {
            path: path.display().to_string(),
            source: Box::new(e),
        })?;
        let version = version_of(&text);
        let changed = version != c.1;
        *c = (Arc::new(policy), version, Some(modified));
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::EnrollmentKind;

    fn facts_with(sec: serde_json::Value, os: &str) -> (Enrollment, Vec<InventoryItem>) {
        let mut e = Enrollment::blank("D", "D", EnrollmentKind::Device, "t", 1000);
        e.active = true;
        e.info.os_version = Some(os.into());
        e.identity_not_after = Some(1000 + 365 * 86_400);
        let inv = vec![InventoryItem {
            kind: "SecurityInfo".into(),
            reported_at: 1000,
            data: serde_json::json!({ "SecurityInfo": sec }),
        }];
        (e, inv)
    }

    #[test]
    fn rules() {
        let p = Policy::parse(
            "passcode_required = true\nhardware_encryption = true\nmin_os_version = \"17.4\"\nmax_hours_since_checkin = 24\nidentity_min_days_left = 14\n",
        )
        .unwrap();
        let (e, inv) = facts_with(serde_json::json!({"PasscodePresent": true, "HardwareEncryptionCaps": 3}), "17.10");
        let f = Facts {
            enrollment: &e,
            inventory: &inv,
            profiles: &[],
            now: 2000,
        };
        let r = evaluate(&p, "v", &f);
        assert_eq!((r.state, r.reasons.len()), (ComplianceState::Compliant, 0), "{:?}", r.reasons);
        // Looked at again when the first time-based rule can fail: 24 h after the last check-in
        // (the identity's 14 days left come much later).
        assert_eq!(r.recheck_at, Some(1000 + 24 * 3600 + 1));
        let late = Facts {
            now: 1000 + 25 * 3600,
            ..f
        };
        let r = evaluate(&p, "v", &late);
        assert_eq!(r.state, ComplianceState::NonCompliant);
        assert_eq!(
            r.recheck_at,
            Some(late.now + AGE_RECHECK),
            "back only after a check-in: looked at again"
        );
        let r = evaluate(&Policy::parse("identity_min_days_left = 14").unwrap(), "v", &f);
        assert_eq!(r.recheck_at, Some(1000 + 365 * 86_400 - 14 * 86_400));
        assert_eq!(
            evaluate(&Policy::parse("passcode_required = true").unwrap(), "v", &f).recheck_at,
            None,
            "facts only"
        );
        let (e, inv) = facts_with(serde_json::json!({"PasscodePresent": false, "HardwareEncryptionCaps": 0}), "16.7.2");
        let f = Facts {
            enrollment: &e,
            inventory: &inv,
            profiles: &[],
            now: 1000 + 30 * 3600,
        };
        let r = evaluate(&p, "v", &f);
        assert_eq!(r.state, ComplianceState::NonCompliant);
        assert_eq!(r.reasons.len(), 4, "{:?}", r.reasons);
        // Nothing reported yet: unknown, not compliant.
        let f = Facts {
            enrollment: &e,
            inventory: &[],
            profiles: &[],
            now: 1000,
        };
        let r = evaluate(&Policy::parse("passcode_required = true").unwrap(), "v", &f);
        assert_eq!(r.state, ComplianceState::Unknown);
        assert!(Policy::parse("passcode = true").is_err(), "unknown keys are errors");
        assert!(Policy::parse("min_os_version = \"seventeen\"").is_err());
    }
}

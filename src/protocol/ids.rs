//! Enrollment identifiers: which device or user channel a request speaks for.

use super::{get_str, ProtocolError};
use serde::{Deserialize, Serialize};

/// The Shared iPad user channel sends this fixed UserID; the user is told
/// apart by `UserShortName` instead.
pub const SHARED_IPAD_USER_ID: &str = "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF";

/// Identifier keys as they appear in any check-in or command report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ids {
    pub udid: Option<String>,
    pub enrollment_id: Option<String>,
    pub user_id: Option<String>,
    pub user_short_name: Option<String>,
    pub user_long_name: Option<String>,
    pub enrollment_user_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EnrollmentKind {
    Device,
    User,
}

/// A stable enrollment id: `UDID`, `EnrollmentID`, `UDID:UserID`,
/// `UDID:UserShortName` (Shared iPad) or `EnrollmentID:EnrollmentUserID`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EnrollmentId {
    pub id: String,
    /// The device channel this enrollment belongs to (itself for a device channel).
    pub device: String,
    pub kind: EnrollmentKind,
}

/// Is this a valid id part (a UDID, EnrollmentID, user id): 1–128 of
/// `A-Z a-z 0-9 - _ . @`?
pub fn is_valid_part(s: &str) -> bool {
    valid_part(s).is_ok()
}

fn valid_part(s: &str) -> Result<&str, ProtocolError> {
    if s.is_empty() || s.len() > 128 || !s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@')) {
        return Err(ProtocolError::BadIdentifier(s.chars().take(64).collect()));
    }
    Ok(s)
}

impl Ids {
    pub fn from_dict(d: &plist::Dictionary) -> Result<Self, ProtocolError> {
        let own = |k: &'static str| get_str(d, k).map(|o| o.map(str::to_owned));
        Ok(Ids {
            udid: own("UDID")?,
            enrollment_id: own("EnrollmentID")?,
            user_id: own("UserID")?,
            user_short_name: own("UserShortName")?,
            user_long_name: own("UserLongName")?,
            enrollment_user_id: own("EnrollmentUserID")?,
        })
    }

    /// Derive the enrollment (channel) this request speaks for.
    pub fn enrollment(&self) -> Result<EnrollmentId, ProtocolError> {
        let device = match (&self.udid, &self.enrollment_id) {
            (Some(u), _) => valid_part(u)?.to_owned(),
            (None, Some(e)) => valid_part(e)?.to_owned(),
            (None, None) => return Err(ProtocolError::NoIdentifier),
        };
        let user = if self.udid.is_some() {
            match (&self.user_id, &self.user_short_name) {
                (Some(uid), Some(short)) if uid.eq_ignore_ascii_case(SHARED_IPAD_USER_ID) => Some(valid_part(short)?.to_owned()),
                (Some(uid), _) => Some(valid_part(uid)?.to_owned()),
                _ => None,
            }
        } else {
            match &self.enrollment_user_id {
                Some(u) => Some(valid_part(u)?.to_owned()),
                None => None,
            }
        };
        Ok(match user {
            None => EnrollmentId {
                id: device.clone(),
                device,
                kind: EnrollmentKind::Device,
            },
            Some(u) => EnrollmentId {
                id: format!("{device}:{u}"),
                device,
                kind: EnrollmentKind::User,
            },
        })
    }
}

impl EnrollmentId {
    /// Parse an id as the admin API names it (`UDID` or `UDID:User`).
    pub fn parse(s: &str) -> Result<Self, ProtocolError> {
        match s.split_once(':') {
            None => Ok(EnrollmentId {
                id: valid_part(s)?.to_owned(),
                device: s.to_owned(),
                kind: EnrollmentKind::Device,
            }),
            Some((d, u)) => {
                valid_part(d)?;
                valid_part(u)?;
                Ok(EnrollmentId {
                    id: s.to_owned(),
                    device: d.to_owned(),
                    kind: EnrollmentKind::User,
                })
            }
        }
    }
}

impl std::fmt::Display for EnrollmentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(pairs: &[(&str, &str)]) -> Ids {
        let mut d = plist::Dictionary::new();
        for (k, v) in pairs {
            d.insert((*k).into(), plist::Value::String((*v).into()));
        }
        Ids::from_dict(&d).unwrap()
    }

    #[test]
    fn channels() {
        assert_eq!(ids(&[("UDID", "abc")]).enrollment().unwrap().id, "abc");
        assert_eq!(ids(&[("UDID", "abc"), ("UserID", "u1")]).enrollment().unwrap().id, "abc:u1");
        let shared = ids(&[("UDID", "abc"), ("UserID", SHARED_IPAD_USER_ID), ("UserShortName", "jo@x.org")]);
        assert_eq!(shared.enrollment().unwrap().id, "abc:jo@x.org");
        assert_eq!(ids(&[("EnrollmentID", "E1")]).enrollment().unwrap().kind, EnrollmentKind::Device);
        assert_eq!(
            ids(&[("EnrollmentID", "E1"), ("EnrollmentUserID", "U")]).enrollment().unwrap().id,
            "E1:U"
        );
        assert_eq!(ids(&[]).enrollment(), Err(ProtocolError::NoIdentifier));
        assert!(ids(&[("UDID", "a/b")]).enrollment().is_err());
        assert!(ids(&[("UDID", "")]).enrollment().is_err());
    }
}

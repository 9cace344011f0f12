//! The command ("connect") loop: device reports and the commands we send.

use super::{get_str, parse_dict, EnrollmentId, Ids, ProtocolError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    Idle,
    Acknowledged,
    Error,
    CommandFormatError,
    NotNow,
}

impl Status {
    pub fn parse(s: &str) -> Result<Self, ProtocolError> {
        Ok(match s {
            "Idle" => Status::Idle,
            "Acknowledged" => Status::Acknowledged,
            "Error" => Status::Error,
            "CommandFormatError" => Status::CommandFormatError,
            "NotNow" => Status::NotNow,
            other => return Err(ProtocolError::UnknownStatus(other.chars().take(64).collect())),
        })
    }

    /// Final statuses finish a command; NotNow and Idle do not.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Acknowledged | Status::Error | Status::CommandFormatError)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Idle => "Idle",
            Status::Acknowledged => "Acknowledged",
            Status::Error => "Error",
            Status::CommandFormatError => "CommandFormatError",
            Status::NotNow => "NotNow",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorChainItem {
    #[serde(rename = "ErrorCode", default)]
    pub code: i64,
    #[serde(rename = "ErrorDomain", default)]
    pub domain: String,
    #[serde(rename = "LocalizedDescription", default)]
    pub localized_description: String,
    #[serde(rename = "USEnglishDescription", default, skip_serializing_if = "Option::is_none")]
    pub us_english_description: Option<String>,
}

/// A report PUT to the ServerURL.
#[derive(Debug, Clone)]
pub struct CommandReport {
    pub ids: Ids,
    pub enrollment: EnrollmentId,
    pub status: Status,
    pub command_uuid: Option<String>,
    pub error_chain: Vec<ErrorChainItem>,
    /// The whole root dictionary (a query command's answer), parsed once and
    /// passed on (empty when built with `from_dict`, which borrows).
    pub answer: plist::Dictionary,
}

impl CommandReport {
    pub fn parse(body: &[u8]) -> Result<Self, ProtocolError> {
        Self::from_owned_dict(parse_dict(body)?)
    }

    /// As `from_dict`, keeping the dictionary as `answer`.
    pub fn from_owned_dict(d: plist::Dictionary) -> Result<Self, ProtocolError> {
        let mut r = Self::from_dict(&d)?;
        r.answer = d;
        Ok(r)
    }

    pub fn from_dict(d: &plist::Dictionary) -> Result<Self, ProtocolError> {
        let status = Status::parse(get_str(d, "Status")?.ok_or(ProtocolError::MissingKey("Status"))?)?;
        let command_uuid = get_str(d, "CommandUUID")?.map(str::to_owned);
        if status != Status::Idle && command_uuid.as_deref().map_or(true, str::is_empty) {
            return Err(ProtocolError::MissingKey("CommandUUID"));
        }
        if let Some(u) = &command_uuid {
            if u.len() > 128 {
                return Err(ProtocolError::BadKey {
                    key: "CommandUUID".into(),
                    detail: "too long".into(),
                });
            }
        }
        let error_chain = match d.get("ErrorChain") {
            None => Vec::new(),
            Some(v) => plist::from_value(v).map_err(|e| ProtocolError::BadKey {
                key: "ErrorChain".into(),
                detail: e.to_string(),
            })?,
        };
        let ids = Ids::from_dict(d)?;
        Ok(CommandReport {
            enrollment: ids.enrollment()?,
            ids,
            status,
            command_uuid,
            error_chain,
            answer: plist::Dictionary::new(),
        })
    }
}

/// A command as handed to a device: `{CommandUUID, Command: {RequestType, …}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub uuid: String,
    pub request_type: String,
    pub command: plist::Dictionary,
}

impl Command {
    pub fn new(command: plist::Dictionary) -> Result<Self, ProtocolError> {
        let rt = get_str(&command, "RequestType")?
            .ok_or(ProtocolError::MissingKey("RequestType"))?
            .to_owned();
        Ok(Command {
            uuid: uuid::Uuid::new_v4().to_string().to_uppercase(),
            request_type: rt,
            command,
        })
    }

    /// The XML body sent to the device.
    pub fn to_xml(&self) -> Vec<u8> {
        let mut d = plist::Dictionary::new();
        d.insert("CommandUUID".into(), plist::Value::String(self.uuid.clone()));
        d.insert("Command".into(), plist::Value::Dictionary(self.command.clone()));
        super::to_xml(&d)
    }

    /// Parse a command body as a device receives it.
    pub fn from_xml(body: &[u8]) -> Result<Self, ProtocolError> {
        let d = parse_dict(body)?;
        let uuid = get_str(&d, "CommandUUID")?
            .ok_or(ProtocolError::MissingKey("CommandUUID"))?
            .to_owned();
        let command = match d.get("Command") {
            Some(plist::Value::Dictionary(c)) => c.clone(),
            Some(_) => {
                return Err(ProtocolError::BadKey {
                    key: "Command".into(),
                    detail: "expected dictionary".into(),
                })
            }
            None => return Err(ProtocolError::MissingKey("Command")),
        };
        let request_type = get_str(&command, "RequestType")?
            .ok_or(ProtocolError::MissingKey("RequestType"))?
            .to_owned();
        Ok(Command {
            uuid,
            request_type,
            command,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_report() {
        let body = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/nanomdm-device-captures/DeviceInformation.1.plist"
        ))
        .unwrap();
        let r = CommandReport::parse(&body).unwrap();
        assert_eq!(r.status, Status::Acknowledged);
        assert_eq!(r.command_uuid.as_deref(), Some("76eda240-5488-4989-8339-f2ae160113c4"));
        assert_eq!(r.enrollment.id, "66ADE930-5FDF-5EC4-8429-15640684C489");
    }

    #[test]
    fn error_chain_and_bad_status() {
        let body = br#"<plist><dict><key>UDID</key><string>D</string><key>Status</key><string>Error</string>
<key>CommandUUID</key><string>C</string><key>ErrorChain</key><array><dict><key>ErrorCode</key><integer>12021</integer>
<key>ErrorDomain</key><string>MCMDMErrorDomain</string><key>LocalizedDescription</key><string>nope</string></dict></array></dict></plist>"#;
        let r = CommandReport::parse(body).unwrap();
        assert_eq!(r.error_chain[0].code, 12021);
        let bad = b"<plist><dict><key>UDID</key><string>D</string><key>Status</key><string>Maybe</string></dict></plist>";
        assert!(matches!(CommandReport::parse(bad), Err(ProtocolError::UnknownStatus(_))));
        let no_uuid = b"<plist><dict><key>UDID</key><string>D</string><key>Status</key><string>Acknowledged</string></dict></plist>";
        assert_eq!(CommandReport::parse(no_uuid).unwrap_err(), ProtocolError::MissingKey("CommandUUID"));
    }

    #[test]
    fn command_round_trip() {
        let mut d = plist::Dictionary::new();
        d.insert("RequestType".into(), "ProfileList".into());
        let c = Command::new(d).unwrap();
        let back = Command::from_xml(&c.to_xml()).unwrap();
        assert_eq!(back, c);
    }
}

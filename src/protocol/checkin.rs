//! Check-in messages (`MessageType` …) as sent to the CheckInURL.

use super::{get_bool, get_data, get_str, parse_dict, EnrollmentId, Ids, ProtocolError};

/// A parsed check-in request: who sent it and what it says.
#[derive(Debug, Clone)]
pub struct CheckinRequest {
    pub ids: Ids,
    pub enrollment: EnrollmentId,
    pub topic: Option<String>,
    pub message: CheckinMessage,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceFacts {
    pub os_version: Option<String>,
    pub build_version: Option<String>,
    pub product_name: Option<String>,
    pub serial_number: Option<String>,
    pub imei: Option<String>,
    pub meid: Option<String>,
    pub device_name: Option<String>,
    pub model: Option<String>,
    pub model_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CheckinMessage {
    Authenticate(DeviceFacts),
    TokenUpdate {
        token: Vec<u8>,
        push_magic: String,
        unlock_token: Option<Vec<u8>>,
        awaiting_configuration: bool,
    },
    CheckOut,
    UserAuthenticate {
        digest_response: Option<String>,
    },
    SetBootstrapToken {
        token: Option<Vec<u8>>,
    },
    GetBootstrapToken,
    GetToken {
        service_type: String,
    },
    DeclarativeManagement {
        endpoint: String,
        data: Option<Vec<u8>>,
    },
    ReturnToService,
}

impl CheckinMessage {
    pub fn name(&self) -> &'static str {
        match self {
            CheckinMessage::Authenticate(_) => "Authenticate",
            CheckinMessage::TokenUpdate { .. } => "TokenUpdate",
            CheckinMessage::CheckOut => "CheckOut",
            CheckinMessage::UserAuthenticate { .. } => "UserAuthenticate",
            CheckinMessage::SetBootstrapToken { .. } => "SetBootstrapToken",
            CheckinMessage::GetBootstrapToken => "GetBootstrapToken",
            CheckinMessage::GetToken { .. } => "GetToken",
            CheckinMessage::DeclarativeManagement { .. } => "DeclarativeManagement",
            CheckinMessage::ReturnToService => "ReturnToService",
        }
    }
}

/// Whether a body is a check-in message (has `MessageType`) or a command report.
pub fn is_checkin(dict: &plist::Dictionary) -> bool {
    dict.contains_key("MessageType")
}

impl CheckinRequest {
    pub fn parse(body: &[u8]) -> Result<Self, ProtocolError> {
        Self::from_dict(&parse_dict(body)?)
    }

    pub fn from_dict(d: &plist::Dictionary) -> Result<Self, ProtocolError> {
        let mt = get_str(d, "MessageType")?.ok_or(ProtocolError::MissingKey("MessageType"))?;
        let ids = Ids::from_dict(d)?;
        let s = |k: &'static str| get_str(d, k).map(|o| o.map(str::to_owned));
        let message = match mt {
            "Authenticate" => CheckinMessage::Authenticate(DeviceFacts {
                os_version: s("OSVersion")?,
                build_version: s("BuildVersion")?,
                product_name: s("ProductName")?,
                serial_number: s("SerialNumber")?,
                imei: s("IMEI")?,
                meid: s("MEID")?,
                device_name: s("DeviceName")?,
                model: s("Model")?,
                model_name: s("ModelName")?,
            }),
            "TokenUpdate" => CheckinMessage::TokenUpdate {
                token: get_data(d, "Token")?.ok_or(ProtocolError::MissingKey("Token"))?.to_vec(),
                push_magic: s("PushMagic")?.ok_or(ProtocolError::MissingKey("PushMagic"))?,
                unlock_token: get_data(d, "UnlockToken")?.map(<[u8]>::to_vec),
                awaiting_configuration: get_bool(d, "AwaitingConfiguration")?.unwrap_or(false),
            },
            "CheckOut" => CheckinMessage::CheckOut,
            "UserAuthenticate" => CheckinMessage::UserAuthenticate {
                digest_response: s("DigestResponse")?,
            },
            "SetBootstrapToken" => CheckinMessage::SetBootstrapToken {
                token: get_data(d, "BootstrapToken")?.filter(|b| !b.is_empty()).map(<[u8]>::to_vec),
            },
            "GetBootstrapToken" => CheckinMessage::GetBootstrapToken,
            "GetToken" => CheckinMessage::GetToken {
                service_type: s("TokenServiceType")?.ok_or(ProtocolError::MissingKey("TokenServiceType"))?,
            },
            "DeclarativeManagement" => CheckinMessage::DeclarativeManagement {
                endpoint: s("Endpoint")?.ok_or(ProtocolError::MissingKey("Endpoint"))?,
                data: get_data(d, "Data")?.map(<[u8]>::to_vec),
            },
            "ReturnToService" => CheckinMessage::ReturnToService,
            other => return Err(ProtocolError::UnknownMessageType(other.chars().take(64).collect())),
        };
        let enrollment = ids.enrollment()?;
        Ok(CheckinRequest {
            enrollment,
            topic: s("Topic")?,
            ids,
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/nanomdm-device-captures");

    fn capture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{CAPTURES}/{name}")).unwrap()
    }

    #[test]
    fn real_authenticate() {
        let r = CheckinRequest::parse(&capture("Authenticate.1.plist")).unwrap();
        assert_eq!(r.enrollment.id, "663b07bb783e9ade1dae4fbb92ea12afc0ce5b69");
        match r.message {
            CheckinMessage::Authenticate(f) => {
                assert_eq!(f.serial_number.as_deref(), Some("F5JM992LF193"));
                assert_eq!(f.product_name.as_deref(), Some("iPad2,5"));
            }
            m => panic!("{m:?}"),
        }
        let r = CheckinRequest::parse(&capture("Authenticate.2.plist")).unwrap();
        assert!(matches!(r.message, CheckinMessage::Authenticate(_)));
    }

    #[test]
    fn real_token_update() {
        for f in ["TokenUpdate.1.plist", "TokenUpdate.2.plist"] {
            let r = CheckinRequest::parse(&capture(f)).unwrap();
            match r.message {
                CheckinMessage::TokenUpdate { token, push_magic, .. } => {
                    assert_eq!(token.len(), 32);
                    assert!(!push_magic.is_empty());
                }
                m => panic!("{m:?}"),
            }
        }
    }

    #[test]
    fn bad_inputs() {
        assert!(matches!(
            CheckinRequest::parse(b"\x00\xffgarbage"),
            Err(ProtocolError::NotAPlist(_))
        ));
        let no_mt = b"<plist><dict><key>UDID</key><string>x</string></dict></plist>";
        assert_eq!(CheckinRequest::parse(no_mt).unwrap_err(), ProtocolError::MissingKey("MessageType"));
        let unknown = b"<plist><dict><key>MessageType</key><string>Bogus</string><key>UDID</key><string>x</string></dict></plist>";
        assert!(matches!(CheckinRequest::parse(unknown), Err(ProtocolError::UnknownMessageType(_))));
        let no_id = b"<plist><dict><key>MessageType</key><string>CheckOut</string></dict></plist>";
        assert_eq!(CheckinRequest::parse(no_id).unwrap_err(), ProtocolError::NoIdentifier);
        let arr = b"<plist><array/></plist>";
        assert_eq!(CheckinRequest::parse(arr).unwrap_err(), ProtocolError::NotADictionary);
        let tu = b"<plist><dict><key>MessageType</key><string>TokenUpdate</string><key>UDID</key><string>x</string><key>Token</key><string>notdata</string></dict></plist>";
        assert!(matches!(CheckinRequest::parse(tu), Err(ProtocolError::BadKey { .. })));
    }
}

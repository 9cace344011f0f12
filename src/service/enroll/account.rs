//! Account-driven enrollment (Apple's flow for a person who signs in with a
//! work account in Settings): the service-discovery document, the access
//! token a web sign-in hands the device, and the enrollment profile it buys.
//!
//! 1. The device reads `https://<email domain>/.well-known/com.apple.remotemanagement`
//!    (`discovery`): a `BaseURL` per kind — `mdm-byod` (User Enrollment of a
//!    personal device) and `mdm-adde` (account-driven Device Enrollment).
//! 2. It POSTs its signed attributes to the BaseURL; without a token the
//!    answer is 401 with `WWW-Authenticate: Bearer method="apple-as-web", url=…`.
//! 3. It opens that URL in a web view; the person signs in (identity provider
//!    or directory); we answer 308 to
//!    `apple-remotemanagement-user-login://authentication-results?access-token=…`.
//! 4. It POSTs again with `Authorization: Bearer <token>`: the token is used
//!    up (`use_token`) and the answer is the enrollment profile for that
//!    person (`account_profile`): `EnrollmentMode` and `AssignedManagedAppleID`
//!    in its MDM payload, and a SCEP challenge that carries who signed in to
//!    the certificate and the enrollment, like every other enrollment.
//!
//! The token is a single-use secret (stored as its SHA-256) that lives
//! `TOKEN_SECONDS`; a replayed or unknown one is a fresh 401, never an error.

use plist::Value;

use crate::clock::now;
use crate::pki::cms;
use crate::pki::sha256_hex;
use crate::service::enroll::{Enroller, SecretFor};
use crate::service::ServiceError;
use crate::store::{Consumed, EnrollUser, SecretKind};

/// How long a device has to come back with its access token.
pub const TOKEN_SECONDS: i64 = 900;

/// The two kinds of account-driven enrollment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// User Enrollment: a personal device, a separate managed volume, no UDID.
    Byod,
    /// Account-driven Device Enrollment: an organisation's device.
    Adde,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "byod" => Some(Mode::Byod),
            "adde" => Some(Mode::Adde),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Byod => "byod",
            Mode::Adde => "adde",
        }
    }
    /// Apple's name in the discovery document.
    pub fn version(self) -> &'static str {
        match self {
            Mode::Byod => "mdm-byod",
            Mode::Adde => "mdm-adde",
        }
    }
    /// `EnrollmentMode` in the MDM payload.
    pub fn enrollment_mode(self) -> &'static str {
        match self {
            Mode::Byod => "BYOD",
            Mode::Adde => "ADDE",
        }
    }
}

/// The service-discovery document for the kinds offered.
pub fn discovery(public_url: &str, modes: &[Mode]) -> serde_json::Value {
    serde_json::json!({
        "Servers": modes
            .iter()
            .map(|m| serde_json::json!({"Version": m.version(), "BaseURL": format!("{public_url}/mdm/account/{}", m.as_str())}))
            .collect::<Vec<_>>()
    })
}

/// Make an enrollment profile's MDM payload an account-driven one. A renewal
/// must carry the same values: the device refuses an update that changes them.
pub fn mark_account_driven(top: &mut plist::Dictionary, mode: Mode, managed_apple_id: &str) {
    if let Some(Value::Array(items)) = top.get_mut("PayloadContent") {
        for p in items.iter_mut().filter_map(Value::as_dictionary_mut) {
            if p.get("PayloadType").and_then(Value::as_string) == Some("com.apple.mdm") {
                p.insert("EnrollmentMode".into(), mode.enrollment_mode().into());
                p.insert("AssignedManagedAppleID".into(), managed_apple_id.into());
                if mode == Mode::Byod {
                    // Ignored in User Enrollment: the device decides what a personal device allows.
                    p.remove("AccessRights");
                }
            }
        }
    }
}

impl Enroller {
    /// A single-use access token for `user`, good for one `mode` enrollment profile.
    pub async fn account_token(&self, mode: Mode, user: EnrollUser) -> Result<String, ServiceError> {
        let (token, _) = self
            .new_secret_with(
                SecretKind::AccountDriven,
                &format!("account-driven:{}", mode.as_str()),
                TOKEN_SECONDS,
                SecretFor::user(Some(user)),
            )
            .await?;
        Ok(token)
    }

    /// Use an access token once: who signed in for it, if it is live and for this kind.
    pub async fn use_token(&self, mode: Mode, token: &str) -> Result<Option<EnrollUser>, ServiceError> {
        if token.is_empty() || token.len() > 256 {
            return Ok(None);
        }
        let purpose = format!("account-driven:{}", mode.as_str());
        Ok(
            match self
                .store
                .consume_secret(SecretKind::AccountDriven, &sha256_hex(token), now())
                .await?
            {
                Consumed::Ok(s) if s.purpose == purpose => s.user,
                _ => None,
            },
        )
    }

    /// The signed enrollment profile of an account-driven enrollment for `user`.
    pub async fn account_profile(&self, mode: Mode, user: EnrollUser) -> Result<Vec<u8>, ServiceError> {
        let managed = user
            .managed_apple_id
            .clone()
            .ok_or_else(|| ServiceError::Rejected(format!("{} has no Managed Apple Account (email) to enroll with", user.username)))?;
        let (challenge, _) = self
            .new_secret_with(
                SecretKind::Challenge,
                &format!("account-driven:{}", mode.as_str()),
                self.cfg.challenge_ttl,
                SecretFor::user(Some(user)),
            )
            .await?;
        let xml = self
            .profile_plist(&challenge, &uuid::Uuid::new_v4().to_string().to_uppercase())
            .map_err(|e| ServiceError::internal("building the enrollment profile", e))?;
        let mut top = crate::profiles::parse_stored(&xml).map_err(|e| ServiceError::internal("reading the enrollment profile", e))?;
        mark_account_driven(&mut top, mode, &managed);
        cms::sign_profile(&self.pki, &crate::protocol::to_xml(&top)).map_err(|e| ServiceError::internal("signing the profile", e))
    }
}

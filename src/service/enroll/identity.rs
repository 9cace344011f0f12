//! The identity rule, written once: what a certificate our CA issues may
//! speak for, what a renewal inherits, and who may `Authenticate` as an
//! enrollment. SCEP issuance (`enroll`), the profile service, the renewal
//! profile and `checkin` all decide through these functions.
//!
//! - Every certificate has a purpose: `mdm` (an MDM identity; a record with
//!   no purpose, written before purposes were always recorded, means the
//!   same), `profile-service` (the phase-1 identity that only signs phase 3),
//!   `profile:…` (an identity a profile's `$SCEP_CHALLENGE` got), or
//!   `ddm-asset:…` (a declarative SCEP credential asset). Only MDM
//!   identities may check in; no other purpose ever becomes one.
//! - A renewal inherits the purpose, device and vouched state of what
//!   justified it (the RenewalReq's signer, or the identity a renewal profile
//!   was encrypted to), never more. An MDM identity bound to an enrollment is
//!   renewed only while it is that enrollment's current identity (or while an
//!   admin's re-enrollment approval for it is pending).
//! - `Authenticate` as an active enrollment with another identity is a
//!   renewal when that identity renews the current one (whatever its vouched
//!   state), a re-enrollment when it is vouched for that device (or the policy
//!   is open, or an admin approved), and refused otherwise. The current
//!   identity again (a re-sent or replayed message) resets nothing.
//! - **Vouched** means the device proved it is that UDID: an attested
//!   phase 1, or a renewal of a vouched identity. An identity issued for one
//!   UDID never speaks for another.
//! - Before any of this, a SCEP request is bounded (`pki::scep::policy`):
//!   subject size, no CA's name, RSA 2048 to `--scep-max-key-bits`.

use crate::store::{AdeOrigin, EnrollUser, Enrollment, IssuedCert, OneTimeSecret};

/// The purpose of an MDM identity.
pub const MDM: &str = "mdm";
/// The purpose of a profile service's phase-1 identity.
pub const PROFILE_SERVICE: &str = "profile-service";

/// Is a certificate with this purpose an MDM identity?
pub fn is_mdm(purpose: Option<&str>) -> bool {
    matches!(purpose, None | Some(MDM))
}

/// May a certificate with this purpose sign a profile service's phase 3?
/// Its phase-1 identity, or (records from before purposes) one without purpose.
pub fn may_sign_phase3(purpose: Option<&str>) -> bool {
    matches!(purpose, None | Some(PROFILE_SERVICE))
}

/// What a certificate about to be issued is, and for whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub purpose: String,
    /// The device it is for (`Authenticate` must name it).
    pub udid: Option<String>,
    /// The enrollment it belongs to (bound at `Authenticate` for MDM identities).
    pub enrollment: Option<String>,
    pub vouched: bool,
    /// The identity it renews (SHA-256 hex).
    pub renewed_from: Option<String>,
    /// Who signed in for it.
    pub user: Option<EnrollUser>,
    /// The ADE enrollment it is for.
    pub ade: Option<AdeOrigin>,
}

/// What a PKCSReq with this challenge gets: `None` is the static challenge
/// (an MDM identity for no device in particular).
pub fn grant_for_challenge(secret: Option<&OneTimeSecret>) -> Grant {
    let Some(s) = secret else {
        return Grant {
            purpose: MDM.into(),
            udid: None,
            enrollment: None,
            vouched: false,
            renewed_from: None,
            user: None,
            ade: None,
        };
    };
    let p = s.purpose.as_str();
    if p.starts_with("profile:") || p.starts_with("ddm-asset:") {
        // For that payload or asset of that device, never an MDM identity.
        return Grant {
            purpose: s.purpose.clone(),
            udid: None,
            enrollment: s.enrollment.clone(),
            vouched: false,
            renewed_from: None,
            user: None,
            ade: None,
        };
    }
    let purpose = if p.starts_with("profile-service:") { PROFILE_SERVICE } else { MDM };
    Grant {
        purpose: purpose.into(),
        // A challenge made for one device: the identity is that device's.
        udid: s.enrollment.clone(),
        enrollment: None,
        vouched: s.enrollment.is_some() && s.vouched,
        renewed_from: s.renews.clone(),
        user: s.user.clone(),
        ade: s.ade.clone(),
    }
}

/// Why an identity may not be used as asked (403 at Authenticate, SCEP's
/// BadCertId for a renewal).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("renewal signer is not the current identity of enrollment {0}")]
    NotCurrent(String),
    #[error("this certificate was issued for {0}, not as an MDM identity")]
    OtherPurpose(String),
    #[error("this identity was issued for device {bound}, not {claimed}")]
    OtherDevice { bound: String, claimed: String },
    #[error("this identity was replaced by its renewal; {0} speaks with the new one")]
    Replaced(String),
}

/// What a RenewalReq signed by `signer` (SHA-256 `signer_hash`, valid and
/// not revoked) gets. `current` is the enrollment the signer belongs to, if
/// it exists; `approval_pending` whether an admin's re-enrollment approval for
/// it is waiting. `Err` says why the renewal is refused.
pub fn grant_for_renewal(
    signer: &IssuedCert,
    signer_hash: &str,
    current: Option<&Enrollment>,
    approval_pending: bool,
) -> Result<Grant, Refusal> {
    let inherited = Grant {
        purpose: signer.purpose.clone().unwrap_or_else(|| MDM.into()),
        udid: signer.udid.clone(),
        enrollment: signer.enrollment.clone(),
        // A record from before purposes cannot show how it was vouched for (a
        // laundering renewal recorded it so too): its renewals are not.
        vouched: signer.vouched && signer.purpose.is_some(),
        renewed_from: Some(signer_hash.to_owned()),
        user: signer.user.clone(),
        ade: signer.ade.clone(),
    };
    if !is_mdm(signer.purpose.as_deref()) {
        return Ok(inherited);
    }
    match current {
        // Not (yet) an enrollment's: it gets what the signer has, nothing more.
        None => Ok(inherited),
        Some(e) if e.cert_hash.as_deref() == Some(signer_hash) => Ok(inherited),
        // An admin approved re-enrolling the device: the renewed identity still
        // needs that approval at Authenticate, and is not vouched.
        Some(_) if approval_pending => Ok(Grant {
            vouched: false,
            ..inherited
        }),
        Some(e) => Err(Refusal::NotCurrent(e.id.clone())),
    }
}

/// The enrollment an MDM identity belongs to (bound, or issued for).
pub fn enrollment_of(c: &IssuedCert) -> Option<&str> {
    c.enrollment.as_deref().or(c.udid.as_deref())
}

/// How an `Authenticate` with an identity is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The active enrollment's current identity again (a re-sent or replayed
    /// message): nothing is reset.
    Same,
    /// A renewal of the active enrollment's identity: queue, push channel and
    /// escrow are kept.
    Renewal,
    /// A new enrollment, or a permitted re-enrollment: it starts afresh.
    Fresh,
    /// Replacing an active enrollment's identity needs an admin's approval.
    NeedsApproval,
}

/// May the identity `hash` (its record `cert`, if we have one) Authenticate as
/// enrollment `id` for the device `udid`? `old` is the enrollment as stored,
/// `current_cert` the record of its current identity; `strict` the re-enrollment
/// policy. `Err` says why not (403).
pub fn admission(
    cert: Option<&IssuedCert>,
    hash: &str,
    id: &str,
    udid: Option<&str>,
    old: Option<&Enrollment>,
    current_cert: Option<&IssuedCert>,
    strict: bool,
) -> Result<Admission, Refusal> {
    if let Some(p) = cert.and_then(|c| c.purpose.as_deref()).filter(|p| !is_mdm(Some(p))) {
        return Err(Refusal::OtherPurpose(p.to_owned()));
    }
    let bound = cert.and_then(|c| c.udid.as_deref());
    if let Some(b) = bound {
        // An identity issued for a UDID speaks only for that UDID: not for another, nor for
        // a channel without one (an EnrollmentID).
        if udid != Some(b) {
            return Err(Refusal::OtherDevice {
                bound: b.to_owned(),
                claimed: udid.unwrap_or(id).to_owned(),
            });
        }
    }
    let Some(o) = old.filter(|o| o.active && o.checked_out_at.is_none()) else {
        return Ok(Admission::Fresh);
    };
    let Some(current) = o.cert_hash.as_deref() else {
        return Ok(Admission::Fresh);
    };
    if current == hash {
        return Ok(Admission::Same);
    }
    // The identity the current one renewed is retired (a replayed message of it changes nothing).
    if current_cert.and_then(|c| c.renewed_from.as_deref()) == Some(hash) {
        return Err(Refusal::Replaced(id.to_owned()));
    }
    let renewed_from = cert.and_then(|c| c.renewed_from.as_deref());
    if renewed_from == Some(current) {
        return Ok(Admission::Renewal);
    }
    let vouched_as_recorded = cert.is_some_and(|c| c.vouched) && bound == Some(id);
    // Renewal profiles sent before renewals recorded what they renew.
    if o.renewal_requested_at.is_some() && vouched_as_recorded && renewed_from.is_none() {
        return Ok(Admission::Renewal);
    }
    // A record from before purposes may have been vouched by a laundering
    // renewal (issue 23): it replaces an active identity only with approval.
    let vouched = vouched_as_recorded && cert.is_some_and(|c| c.purpose.is_some());
    if !strict || vouched {
        return Ok(Admission::Fresh);
    }
    Ok(Admission::NeedsApproval)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(purpose: Option<&str>, udid: Option<&str>, vouched: bool, renewed_from: Option<&str>) -> IssuedCert {
        IssuedCert {
            serial: "01".into(),
            sha256: "h".into(),
            subject: "CN=x".into(),
            not_before: 0,
            not_after: 1,
            issued_at: 0,
            enrollment: None,
            revoked_at: None,
            purpose: purpose.map(str::to_owned),
            der: None,
            udid: udid.map(str::to_owned),
            vouched,
            renewed_from: renewed_from.map(str::to_owned),
            user: None,
            ade: None,
        }
    }

    fn active(id: &str, hash: &str) -> Enrollment {
        let mut e = Enrollment::blank(id, id, crate::protocol::EnrollmentKind::Device, "t", 0);
        e.active = true;
        e.cert_hash = Some(hash.into());
        e
    }

    fn secret(purpose: &str, enrollment: Option<&str>, vouched: bool) -> OneTimeSecret {
        OneTimeSecret {
            created_at: 0,
            expires_at: 1,
            purpose: purpose.into(),
            used_at: None,
            enrollment: enrollment.map(str::to_owned),
            vouched,
            renews: None,
            user: None,
            ade: None,
        }
    }

    #[test]
    fn challenges_give_their_purpose() {
        assert_eq!(grant_for_challenge(None).purpose, MDM);
        let g = grant_for_challenge(Some(&secret("profile:p/wifi", Some("D"), true)));
        assert_eq!((g.purpose.as_str(), g.udid, g.vouched), ("profile:p/wifi", None, false));
        let g = grant_for_challenge(Some(&secret("ddm-asset:a", Some("D"), false)));
        assert!(!is_mdm(Some(&g.purpose)) && g.udid.is_none());
        let g = grant_for_challenge(Some(&secret("profile-service:D", Some("D"), true)));
        assert_eq!(
            (g.purpose.as_str(), g.udid.as_deref(), g.vouched),
            (PROFILE_SERVICE, Some("D"), true)
        );
        let g = grant_for_challenge(Some(&secret("enroll:D", Some("D"), false)));
        assert_eq!((g.purpose.as_str(), g.udid.as_deref(), g.vouched), (MDM, Some("D"), false));
    }

    #[test]
    fn renewals_never_grow() {
        // A Wi-Fi identity stays one, renewed any number of times.
        let wifi = cert(Some("profile:p/wifi"), None, false, None);
        let g = grant_for_renewal(&wifi, "w", None, false).unwrap();
        assert_eq!(g.purpose, "profile:p/wifi");
        // An unvouched identity for the victim's device, not its current one: refused.
        let thief = cert(None, Some("V"), false, None);
        assert!(grant_for_renewal(&thief, "t", Some(&active("V", "v")), false).is_err());
        // Not an enrollment's yet: inherited, not vouched.
        let g = grant_for_renewal(&thief, "t", None, false).unwrap();
        assert_eq!((g.purpose.as_str(), g.udid.as_deref(), g.vouched), (MDM, Some("V"), false));
        // The current identity renews itself, keeping exactly its state.
        let own = cert(Some(MDM), Some("V"), false, None);
        let g = grant_for_renewal(&own, "v", Some(&active("V", "v")), false).unwrap();
        assert_eq!((g.vouched, g.renewed_from.as_deref()), (false, Some("v")));
        // An approval lets a replaced identity renew, unvouched.
        let vouched = cert(Some(MDM), Some("V"), true, None);
        assert!(!grant_for_renewal(&vouched, "old", Some(&active("V", "v")), true).unwrap().vouched);
    }

    #[test]
    fn admission_follows_the_rule() {
        let o = active("V", "v");
        let a = |c: &IssuedCert, h: &str| admission(Some(c), h, "V", Some("V"), Some(&o), None, true);
        assert_eq!(a(&cert(None, Some("V"), false, None), "v"), Ok(Admission::Same));
        assert_eq!(a(&cert(Some(MDM), Some("V"), false, Some("v")), "n"), Ok(Admission::Renewal));
        assert_eq!(
            a(&cert(Some(MDM), Some("V"), false, Some("old")), "n"),
            Ok(Admission::NeedsApproval)
        );
        assert_eq!(a(&cert(Some(MDM), Some("V"), true, Some("old")), "n"), Ok(Admission::Fresh));
        // A record from before purposes, vouched (perhaps by a laundering renewal): approval needed,
        // and what it renews is not vouched.
        let legacy = cert(None, Some("V"), true, None);
        assert_eq!(a(&legacy, "n"), Ok(Admission::NeedsApproval));
        assert!(!grant_for_renewal(&legacy, "n", None, false).unwrap().vouched);
        assert!(a(&cert(Some("profile:x"), Some("V"), true, Some("v")), "n").is_err());
        assert!(a(&cert(Some(MDM), Some("X"), true, None), "n").is_err());
        assert_eq!(
            admission(
                Some(&cert(Some(MDM), Some("V"), false, None)),
                "n",
                "V",
                Some("V"),
                Some(&o),
                None,
                false
            ),
            Ok(Admission::Fresh)
        );
        assert_eq!(admission(None, "n", "N", Some("N"), None, None, true), Ok(Admission::Fresh));
        // A vouched identity its renewal replaced cannot come back, even under the open policy.
        let current = cert(Some(MDM), Some("V"), true, Some("old"));
        let old = cert(Some(MDM), Some("V"), true, None);
        assert!(admission(Some(&old), "old", "V", Some("V"), Some(&o), Some(&current), false).is_err());
    }
}

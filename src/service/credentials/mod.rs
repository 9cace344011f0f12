//! Credentials that are not the device's MDM identity: the organisation's
//! own CAs and mdmd's SCEP proxy in front of them (`orgca`), derived
//! credentials from a person's PIV card (`derived`), and what follows an
//! install — certificates learned and renewed, profiles that wait for a
//! derived credential (`followup`). The admin API for all of it is
//! `api::credentials`.
//!
//! A template naming `$SCEP_PROXY_URL:corp` is rendered with a proxy token
//! (a `ScepProxy` secret bound to the device, the profile and the CA) and
//! the CA's challenge (unsealed, or fetched from NDES per install) — stored
//! with the command in one transaction, sent only encrypted.
//! `/scep-proxy/corp/<token>` checks the token in the store, forwards to the
//! CA (bounded), and marks the token used when the CertRep says SUCCESS. The
//! acknowledged install queues CertificateList (answered in the same
//! session); its answer is matched against the CA's chain and kept in the
//! `org-certs` records; an hourly leased sweep re-installs profiles near
//! expiry. A template with `$DERIVED_CREDENTIAL:usage` is held back per
//! device (`derived-waiting` record) until `POST /v1/derived-credentials`
//! stores a credential for the device or its user; `Commander::derived_posted`
//! then installs the waiting profiles (the PKCS#12 and its password are put
//! into the payload before encryption), and `derived_deleted` removes them.
//! A credential also ends when its certificate expires or is revoked (the
//! provider's `POST /v1/derived-credentials/revocations`, or its CRL or OCSP
//! responder in the periodic check): `ended` keeps the audit record,
//! `revocation` asks the CRL/OCSP sources (bounded), `checks` is the
//! periodic pass; the profiles leave as with a deletion.

pub mod checks;
pub mod derived;
pub mod ended;
pub mod followup;
pub mod orgca;
pub mod revocation;

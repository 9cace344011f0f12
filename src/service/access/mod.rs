//! Access: who and what may reach the fleet, and what others may learn of a
//! device's standing.
//!
//! - `accounts`: named API accounts with a role (people and systems such as
//!   a NAC), secrets shown once and stored hashed, and the capability check
//!   of a role (the URL → capability mapping is `api`'s).
//! - `limits`: bounded cost for credential checks (failed attempts counted
//!   per source and per account) and for secrets created without
//!   credentials.
//! - `tokens`: access tokens for identity providers and gateways (shared
//!   tokens, per-device JWTs).
//! - `app_configs`: the app configurations that carry those tokens,
//!   remembered for re-sending (admin-named, and device-named for that
//!   device only).
//! - `compliance`: the policy file's rules, evaluated per device.
//! - `nac`: a device's posture for network access control (Cisco ISE).

pub mod accounts;
pub mod app_configs;
pub mod compliance;
pub mod limits;
pub mod nac;
pub mod tokens;

pub use tokens::Access;

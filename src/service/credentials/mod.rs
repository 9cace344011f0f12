//! Credentials that are not the device's MDM identity: the organisation's
//! own CAs and mdmd's SCEP proxy in front of them (`orgca`), derived
//! credentials from a person's PIV card (`derived`), and what follows an
//! install — certificates learned and renewed, profiles that wait for a
//! derived credential (`followup`). The admin API for all of it is
//! `api::credentials`.

pub mod derived;
pub mod followup;
pub mod orgca;

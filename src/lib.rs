//! mdmd: an Apple MDM server. See docs/ARCHITECTURE.md for the map.
//!
//! No `unsafe` anywhere but `pki::ossl` (the few OpenSSL calls the `openssl`
//! crate does not wrap), which is the one module allowed it.

#![deny(unsafe_code)]

pub mod ade;
pub mod api;
pub mod app;
pub mod clock;
pub mod config;
pub mod console;
pub mod http;
pub mod logfmt;
pub mod metrics;
pub mod ops;
pub mod outbound;
pub mod pki;
pub mod profiles;
pub mod protocol;
pub mod push;
pub mod server;
pub mod service;
pub mod sim;
pub mod store;
pub mod vpp;

//! mdmd: an Apple MDM server. See docs/ARCHITECTURE.md for the map.

pub mod protocol;
pub mod store;
pub mod api;
pub mod config;
pub mod http;
pub mod service;
pub mod server;
pub mod profiles;
pub mod sim;
pub mod pki;

//! mdmd: an Apple MDM server. See docs/ARCHITECTURE.md for the map.

pub mod api;
pub mod app;
pub mod config;
pub mod console;
pub mod http;
pub mod logfmt;
pub mod metrics;
pub mod pki;
pub mod profiles;
pub mod protocol;
pub mod push;
pub mod server;
pub mod service;
pub mod sim;
pub mod store;

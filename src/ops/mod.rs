//! Operations: background work that runs beside the request path, over the
//! store and below the services (so `push` and `service` may both use it).
//!
//! - `lease`: work that must run on one instance at a time (identity
//!   renewal sweep, re-push, inventory, outbox delivery), a named lease in
//!   the shared store taken over when its holder stops renewing it.
//! - `webhooks`: the event outbox — every check-in and command result as
//!   JSON in the MicroMDM/NanoMDM webhook format, written in the same
//!   transaction as what it reports and delivered (signed, retried) by one
//!   instance.
//! - `acme`: mdmd's own publicly trusted TLS certificate (RFC 8555,
//!   HTTP-01), obtained and renewed in the background; the challenge answers
//!   are served by `http::acme`.
//!
//! No rules of the protocol here (those are `service`), no HTTP serving
//! (that is `http`).

pub mod acme;
pub mod lease;
pub mod webhooks;

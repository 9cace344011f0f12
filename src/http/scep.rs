//! `/scep`: GetCACaps, GetCACert, PKIOperation (GET and POST), RFC 8894.
//! A request that cannot be read at all gets HTTP 400; anything else gets a
//! CertRep (FAILURE with failInfo where refused), with HTTP 200.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use super::mdm::{service_error, text};
use super::App;
use crate::pki::scep::CAPABILITIES;
use crate::service::enroll::ScepReply;

async fn operation(app: &App, der: &[u8]) -> Response {
    match app.enroller.pki_operation(der).await {
        Ok(ScepReply::CertRep(b)) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/x-pki-message")], b).into_response(),
        Ok(ScepReply::Unparsable(why)) => {
            tracing::warn!(reason = %why, "unreadable SCEP message");
            text(StatusCode::BAD_REQUEST, format!("bad SCEP message: {why}\n"))
        }
        Err(e) => service_error(app, e),
    }
}

/// The GET form's message: base64, maybe URL-encoded, maybe with '+' turned into ' '.
fn decode_message(m: &str) -> Option<Vec<u8>> {
    let cleaned: String = m.trim().replace(' ', "+").chars().filter(|c| !c.is_whitespace()).collect();
    let e = base64::engine::general_purpose::STANDARD;
    e.decode(&cleaned)
        .ok()
        .or_else(|| urlencoding::decode(&cleaned).ok().and_then(|u| e.decode(u.as_bytes()).ok()))
}

pub async fn get(State(app): State<Arc<App>>, Query(q): Query<HashMap<String, String>>) -> Response {
    match q.get("operation").map(String::as_str) {
        Some("GetCACaps") => (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], CAPABILITIES).into_response(),
        Some("GetCACert") => match app.pki.get_ca_cert() {
            Ok((content_type, der)) => (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], der).into_response(),
            Err(e) => super::mdm::internal_error("encoding our CA certificate", &e),
        },
        Some("PKIOperation") => match q.get("message").and_then(|m| decode_message(m)) {
            Some(der) => operation(&app, &der).await,
            None => text(StatusCode::BAD_REQUEST, "PKIOperation needs a base64 message parameter\n".into()),
        },
        Some(other) => text(
            StatusCode::BAD_REQUEST,
            format!("unsupported SCEP operation {:?}\n", other.chars().take(40).collect::<String>()),
        ),
        None => text(StatusCode::BAD_REQUEST, "missing operation parameter\n".into()),
    }
}

pub async fn post(State(app): State<Arc<App>>, Query(q): Query<HashMap<String, String>>, body: Bytes) -> Response {
    match q.get("operation").map(String::as_str) {
        Some("PKIOperation") => operation(&app, &body).await,
        _ => text(StatusCode::BAD_REQUEST, "POST supports operation=PKIOperation only\n".into()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn get_message_forms() {
        let b64 = "MIIB+/A=";
        assert_eq!(super::decode_message(b64), super::decode_message("MIIB%2B%2FA%3D"));
        assert_eq!(super::decode_message(b64), super::decode_message("MIIB /A="));
        assert!(super::decode_message("***").is_none());
    }
}

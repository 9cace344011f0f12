//! `PUT /mdm/checkin`, `/mdm/connect`, `/mdm`: check-ins and command reports,
//! told apart by `MessageType`. Never answers 401 (a device may unenroll).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{App, Stats};
use crate::protocol::checkin::{is_checkin, CheckinRequest};
use crate::protocol::{parse_dict, CommandReport, ProtocolError};
use crate::service::checkin::Caller;
use crate::service::{CheckinReply, ServiceError};

fn text(status: StatusCode, msg: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], msg).into_response()
}

fn protocol_error(app: &App, e: ProtocolError) -> Response {
    Stats::inc(&app.stats.rejected);
    tracing::warn!(error = %e, "bad device request");
    text(StatusCode::BAD_REQUEST, format!("bad request: {e}\n"))
}

pub fn service_error(app: &App, e: ServiceError) -> Response {
    Stats::inc(&app.stats.rejected);
    match e {
        ServiceError::Rejected(m) => {
            tracing::warn!(reason = %m, "device request rejected");
            text(StatusCode::BAD_REQUEST, format!("rejected: {m}\n"))
        }
        ServiceError::Forbidden(m) => {
            tracing::warn!(reason = %m, "device request refused");
            text(StatusCode::FORBIDDEN, format!("forbidden: {m}\n"))
        }
        ServiceError::Store(e) => {
            tracing::error!(error = %e, "storage failure");
            text(StatusCode::SERVICE_UNAVAILABLE, "temporarily unavailable\n".into())
        }
    }
}

pub async fn put(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let dict = match parse_dict(&body) {
        Ok(d) => d,
        Err(e) => return protocol_error(&app, e),
    };
    let caller = Caller::default();
    if is_checkin(&dict) {
        Stats::inc(&app.stats.checkins);
        let req = match CheckinRequest::from_dict(&dict) {
            Ok(r) => r,
            Err(e) => return protocol_error(&app, e),
        };
        match app.mdm.checkin(req, &caller).await {
            Ok(CheckinReply::Empty) => StatusCode::OK.into_response(),
            Ok(CheckinReply::Plist(b)) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/xml")], b).into_response(),
            Ok(CheckinReply::Json(b)) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], b).into_response(),
            Ok(CheckinReply::Gone) => StatusCode::GONE.into_response(),
            Ok(CheckinReply::Unsupported(m)) => text(StatusCode::BAD_REQUEST, format!("not supported: {m}\n")),
            Err(e) => service_error(&app, e),
        }
    } else {
        Stats::inc(&app.stats.connects);
        let report = match CommandReport::from_dict(&dict) {
            Ok(r) => r,
            Err(e) => return protocol_error(&app, e),
        };
        match app.mdm.connect(report, &body).await {
            Ok(Some(cmd)) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/xml")], cmd).into_response(),
            Ok(None) => StatusCode::OK.into_response(),
            Err(e) => service_error(&app, e),
        }
    }
}

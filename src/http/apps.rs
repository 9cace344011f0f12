//! In-house app downloads: `GET /mdm/apps/{app}/{enrollment}/{sha256}/{expires}/{mac}/manifest.plist`
//! and `…/app.ipa`, the links `service::apps` sends in `InstallApplication`.
//! No client certificate comes with these requests (the device's installer
//! fetches them), so the link is the credential: its MAC is checked first
//! (constant time, nothing read before), then its expiry, the enrollment and
//! the app. A refused link says why in one line and serves nothing. The
//! `.ipa` is streamed a stored chunk at a time.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::mdm::text;
use super::App;
use crate::service::apps::files::DownloadError;

type Parts = (String, String, String, String, String);

fn refused(e: DownloadError) -> Response {
    crate::metrics::get().app_download("refused");
    let status = match e {
        DownloadError::BadLink => StatusCode::FORBIDDEN,
        DownloadError::Expired | DownloadError::Gone => StatusCode::GONE,
    };
    text(status, format!("{e}\n"))
}

pub async fn manifest(State(app): State<Arc<App>>, Path((a, e, sha, exp, mac)): Path<Parts>) -> Response {
    match app.apps.check_download(&a, &e, &sha, &exp, &mac).await {
        Ok((d, rec)) => {
            crate::metrics::get().app_download("manifest");
            tracing::info!(app = %d.app, enrollment = %d.enrollment, "app manifest served");
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/xml"), (header::CACHE_CONTROL, "no-store")],
                app.apps.manifest_for(&d, &rec),
            )
                .into_response()
        }
        Err(err) => refused(err),
    }
}

pub async fn ipa(State(app): State<Arc<App>>, Path((a, e, sha, exp, mac)): Path<Parts>) -> Response {
    let (d, rec) = match app.apps.check_download(&a, &e, &sha, &exp, &mac).await {
        Ok(x) => x,
        Err(err) => return refused(err),
    };
    let Some(file) = rec.ipa.clone() else {
        return refused(DownloadError::Gone);
    };
    crate::metrics::get().app_download("ipa");
    tracing::info!(app = %d.app, enrollment = %d.enrollment, size = file.size, "app file served");
    let apps = app.apps.clone();
    let sha = file.sha256.clone();
    let stream = futures_util::stream::unfold(0u32, move |i| {
        let apps = apps.clone();
        let sha = sha.clone();
        async move {
            if i >= file.chunks {
                return None;
            }
            match apps.chunk(&sha, i).await {
                Ok(b) => Some((Ok::<_, std::io::Error>(bytes::Bytes::from(b)), i + 1)),
                Err(e) => {
                    tracing::error!(sha256 = %sha, chunk = i, error = %e, "app file chunk not served");
                    Some((Err(std::io::Error::other("app file chunk missing")), u32::MAX))
                }
            }
        }
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, file.size.to_string()),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

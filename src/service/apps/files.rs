//! In-house app files and the URLs devices fetch them through.
//!
//! **Storage.** An `.ipa` is kept in the shared `RecordStore` as 1 MiB
//! chunks (`app_blobs`, `{sha256}/{index}`, base64 in the JSON record), so
//! every instance of a PostgreSQL deployment serves the same bytes with
//! nothing else to share. No crate stores blobs in our two stores for us;
//! a record per chunk keeps memory bounded on upload (spooled to a file
//! first) and download (one chunk at a time). A replaced or removed file's
//! chunks are deleted in the background.
//!
//! **URLs.** A device is sent `…/mdm/apps/{app}/{enrollment}/{sha}/{expires}/{mac}/manifest.plist`;
//! the manifest it gets names `…/app.ipa` under the same path. `mac` is
//! HMAC-SHA256 over (app, enrollment, sha, expires) under a random key
//! sealed in the shared settings (`apps.url-key`): a URL works only as
//! issued (another device's, another app's or a made-up one is refused),
//! only until it expires (`--app-download-lifetime`), only while the
//! enrollment is active and the app is still that file. Nothing about the
//! URL is stored per device.

use std::io::Read as _;

use base64::Engine as _;
use hmac::Mac as _;
use serde::{Deserialize, Serialize};

use super::catalog::{AppKind, AppRecord, IpaFile};
use super::{read, Apps, AppsFailure, APPS, BLOBS};
use crate::clock::now;
use crate::pki::secrets::SecretBox;
use crate::service::ServiceError;
use crate::store::{RecordWrite, Store, StoreError};

/// Bytes per stored chunk.
pub const CHUNK: usize = 1024 * 1024;
/// The shared setting holding the sealed URL key.
const KEY_SETTING: &str = "apps.url-key";
const KEY_AAD: &str = "apps-url-key";

#[derive(Serialize, Deserialize)]
struct Chunk {
    data: String,
}

/// The URL key: made once, sealed, the same on every instance.
pub(super) async fn load_or_create_key(store: &dyn Store, secrets: &SecretBox) -> Result<Vec<u8>, ServiceError> {
    let mut fresh = [0u8; 32];
    openssl::rand::rand_bytes(&mut fresh).map_err(|e| ServiceError::internal("random bytes for the app URL key", e))?;
    let sealed = secrets
        .seal(&fresh, KEY_AAD)
        .map_err(|e| ServiceError::internal("sealing the app URL key", e))?;
    let s = store.setting_or_insert(KEY_SETTING, sealed.into_bytes(), now()).await?;
    let text = String::from_utf8(s.value).map_err(|e| ServiceError::internal("the stored app URL key", e))?;
    secrets
        .open(&text, KEY_AAD)
        .map_err(|e| ServiceError::internal("opening the app URL key (same secrets.keys on every instance?)", e))
}

/// What a download URL names, once its MAC and expiry are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    pub app: String,
    pub enrollment: String,
    pub sha256: String,
    pub expires: i64,
}

/// Why a download is refused (each one a 4xx; nothing is served).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DownloadError {
    #[error("this download link is not valid")]
    BadLink,
    #[error("this download link has expired: the device is sent a fresh one with the next install")]
    Expired,
    #[error("this app is no longer offered at this link")]
    Gone,
}

/// HMAC-SHA256 of a link's parts (each length-prefixed), base64url.
pub fn link_mac(key: &[u8], d: &Download) -> String {
    let Ok(mut m) = hmac::Hmac::<sha2::Sha256>::new_from_slice(key) else {
        return String::new();
    };
    for part in [d.app.as_str(), d.enrollment.as_str(), d.sha256.as_str(), &d.expires.to_string()] {
        m.update(&(part.len() as u64).to_be_bytes());
        m.update(part.as_bytes());
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
}

/// A link's parts (app, enrollment, sha256, expires, mac) checked at `now`:
/// sizes, the MAC (constant time), then the expiry. Pure: the store is asked
/// nothing until this passes.
pub fn check_link(key: &[u8], parts: [&str; 5], now: i64) -> Result<Download, DownloadError> {
    let [app, enrollment, sha, expires, mac] = parts;
    if app.len() > 160 || enrollment.len() > 200 || sha.len() != 64 || mac.len() > 64 || expires.len() > 20 {
        return Err(DownloadError::BadLink);
    }
    let expires: i64 = expires.parse().map_err(|_| DownloadError::BadLink)?;
    let d = Download {
        app: app.to_owned(),
        enrollment: enrollment.to_owned(),
        sha256: sha.to_owned(),
        expires,
    };
    let want = link_mac(key, &d);
    if want.is_empty() || want.len() != mac.len() || !openssl::memcmp::eq(want.as_bytes(), mac.as_bytes()) {
        return Err(DownloadError::BadLink);
    }
    if expires <= now {
        return Err(DownloadError::Expired);
    }
    Ok(d)
}

impl Apps {
    fn mac(&self, d: &Download) -> Option<String> {
        self.url_key.as_ref().ok().map(|k| link_mac(k, d))
    }

    /// The manifest URL one device is sent for an in-house app.
    pub fn manifest_url(&self, app: &AppRecord, enrollment: &str) -> Option<String> {
        let f = app.ipa.as_ref()?;
        let d = Download {
            app: app.id.clone(),
            enrollment: enrollment.to_owned(),
            sha256: f.sha256.clone(),
            expires: now() + self.cfg.download_lifetime.max(1),
        };
        Some(format!("{}/manifest.plist", self.download_base(&d)?))
    }

    fn download_base(&self, d: &Download) -> Option<String> {
        let enc = |s: &str| urlencoding::encode(s).into_owned();
        Some(format!(
            "{}/mdm/apps/{}/{}/{}/{}/{}",
            self.cfg.public_url.trim_end_matches('/'),
            enc(&d.app),
            enc(&d.enrollment),
            d.sha256,
            d.expires,
            self.mac(d)?
        ))
    }

    /// Check a download path's parts: the MAC (constant time), the expiry,
    /// the enrollment (still active), the app (still that file).
    pub async fn check_download(
        &self,
        app: &str,
        enrollment: &str,
        sha: &str,
        expires: &str,
        mac: &str,
    ) -> Result<(Download, AppRecord), DownloadError> {
        let key = self.url_key.as_ref().map_err(|_| DownloadError::Gone)?;
        let d = check_link(key, [app, enrollment, sha, expires, mac], now())?;
        let e = self.store.enrollment(enrollment).await.map_err(|_| DownloadError::Gone)?;
        if !e.is_some_and(|e| e.active && e.checked_out_at.is_none()) {
            return Err(DownloadError::Gone);
        }
        let rec = match read::<AppRecord>(self.store.as_ref(), APPS, app).await {
            Ok(Some((a, _))) => a,
            _ => return Err(DownloadError::Gone),
        };
        if rec.kind != AppKind::InHouse || rec.ipa.as_ref().map(|f| f.sha256.as_str()) != Some(sha) {
            return Err(DownloadError::Gone);
        }
        // Only while the device is to have it: not after it was removed from the device.
        let key = format!("{app}/{enrollment}");
        match read::<super::install::DeviceApp>(self.store.as_ref(), super::DEVICE_APPS, &key).await {
            Ok(Some((d, _))) if d.state != "removing" => {}
            _ => return Err(DownloadError::Gone),
        }
        Ok((d, rec))
    }

    /// The manifest a checked link serves (it names the `.ipa` under the same link).
    pub fn manifest_for(&self, d: &Download, rec: &AppRecord) -> Vec<u8> {
        let info = crate::protocol::ipa::IpaInfo {
            bundle_id: rec.bundle_id.clone(),
            version: rec.version.clone(),
            build: None,
            name: rec.name.clone(),
            minimum_os: rec.minimum_os.clone(),
            size: rec.ipa.as_ref().map_or(0, |f| f.size),
        };
        crate::protocol::ipa::manifest(&info, &format!("{}/app.ipa", self.download_base(d).unwrap_or_default()))
    }

    /// One stored chunk of a file.
    pub async fn chunk(&self, sha: &str, index: u32) -> Result<Vec<u8>, ServiceError> {
        let key = format!("{sha}/{index:06}");
        let (c, _) = read::<Chunk>(self.store.as_ref(), BLOBS, &key)
            .await?
            .ok_or_else(|| ServiceError::internal("an app file chunk is missing", std::io::Error::other(key.clone())))?;
        base64::engine::general_purpose::STANDARD
            .decode(c.data)
            .map_err(|e| ServiceError::internal("a stored app file chunk is corrupt", e))
    }

    /// Store a spooled file as chunks (nothing when the same file is stored already).
    pub(super) async fn store_file(&self, path: &std::path::Path, sha256: &str, size: u64) -> Result<IpaFile, AppsFailure> {
        let chunks = size.div_ceil(CHUNK as u64) as u32;
        let file = IpaFile {
            sha256: sha256.to_owned(),
            size,
            chunks,
        };
        let last = format!("{sha256}/{:06}", chunks.saturating_sub(1));
        if chunks > 0 && self.store.record(BLOBS, &last).await?.is_some() {
            return Ok(file);
        }
        let mut f = std::fs::File::open(path).map_err(|e| ServiceError::internal("opening the spooled upload", e))?;
        let mut buf = vec![0u8; CHUNK];
        for i in 0..chunks {
            let mut n = 0;
            while n < CHUNK {
                let r = f
                    .read(&mut buf[n..])
                    .map_err(|e| ServiceError::internal("reading the spooled upload", e))?;
                if r == 0 {
                    break;
                }
                n += r;
            }
            let data = base64::engine::general_purpose::STANDARD.encode(&buf[..n]);
            let w = RecordWrite {
                collection: BLOBS.into(),
                key: format!("{sha256}/{i:06}"),
                value: super::to_json(&Chunk { data }),
                expect: None,
            };
            self.store.put_records(vec![w], now()).await?;
        }
        Ok(file)
    }

    /// Delete a file's chunks in the background unless another app uses it.
    pub(super) fn drop_file_later(&self, f: IpaFile) {
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(e) = drop_file(store.as_ref(), &f).await {
                tracing::warn!(sha256 = %f.sha256, error = %e, "old app file not deleted");
            }
        });
    }
}

async fn drop_file(store: &dyn Store, f: &IpaFile) -> Result<(), StoreError> {
    for (_, r) in store.records(APPS).await? {
        if let Ok(a) = serde_json::from_value::<AppRecord>(r.value) {
            if a.ipa.as_ref().is_some_and(|x| x.sha256 == f.sha256) {
                return Ok(());
            }
        }
    }
    for i in 0..f.chunks {
        store.delete_record(BLOBS, &format!("{}/{i:06}", f.sha256), None).await?;
    }
    Ok(())
}

/// Spool an upload to a private temporary file, hashing as it goes; refused
/// past `max` bytes. Returns the file (deleted when dropped), its SHA-256 and size.
pub async fn spool<S, E>(mut body: S, max: u64) -> Result<(tempfile::NamedTempFile, String, u64), AppsFailure>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    use futures_util::StreamExt as _;
    use sha2::Digest as _;
    use std::io::Write as _;
    let tmp = tempfile::NamedTempFile::new().map_err(|e| ServiceError::internal("a temporary file for the upload", e))?;
    let mut out = std::io::BufWriter::new(
        tmp.reopen()
            .map_err(|e| ServiceError::internal("a temporary file for the upload", e))?,
    );
    let mut h = sha2::Sha256::new();
    let mut size: u64 = 0;
    while let Some(part) = body.next().await {
        let part = part.map_err(|e| AppsFailure::Invalid(format!("the upload broke off: {e}")))?;
        size += part.len() as u64;
        if size > max {
            return Err(AppsFailure::Invalid(format!(
                "the app is larger than {} MiB (--app-max-size)",
                max / (1024 * 1024)
            )));
        }
        h.update(&part);
        out.write_all(&part)
            .map_err(|e| ServiceError::internal("writing the upload to disk", e))?;
    }
    out.flush().map_err(|e| ServiceError::internal("writing the upload to disk", e))?;
    if size == 0 {
        return Err(AppsFailure::Invalid("the body is empty: send the .ipa file itself".into()));
    }
    Ok((tmp, hex::encode(h.finalize()), size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(key: &[u8], expires: i64) -> (Download, String) {
        let d = Download {
            app: "com.example.field".into(),
            enrollment: "UDID-1".into(),
            sha256: "a".repeat(64),
            expires,
        };
        let m = link_mac(key, &d);
        (d, m)
    }

    #[test]
    fn a_link_works_as_issued_until_it_expires_and_not_otherwise() {
        let key = [7u8; 32];
        let (d, mac) = link(&key, 1_000);
        let exp = d.expires.to_string();
        let parts = |app: &str, e: &str, sha: &str, x: &str, m: &str| check_link(&key, [app, e, sha, x, m], 999).map(|d| d.app);
        assert_eq!(parts(&d.app, &d.enrollment, &d.sha256, &exp, &mac), Ok(d.app.clone()));
        // Every part is bound: another app, device, file, expiry or MAC.
        assert_eq!(
            parts("com.example.other", &d.enrollment, &d.sha256, &exp, &mac),
            Err(DownloadError::BadLink)
        );
        assert_eq!(parts(&d.app, "UDID-2", &d.sha256, &exp, &mac), Err(DownloadError::BadLink));
        assert_eq!(
            parts(&d.app, &d.enrollment, &"b".repeat(64), &exp, &mac),
            Err(DownloadError::BadLink)
        );
        assert_eq!(parts(&d.app, &d.enrollment, &d.sha256, "100000", &mac), Err(DownloadError::BadLink));
        let mut m2 = mac.clone();
        m2.pop();
        assert_eq!(parts(&d.app, &d.enrollment, &d.sha256, &exp, &m2), Err(DownloadError::BadLink));
        m2.push('A');
        if m2 != mac {
            assert_eq!(parts(&d.app, &d.enrollment, &d.sha256, &exp, &m2), Err(DownloadError::BadLink));
        }
        // Another key (another server) makes other links.
        assert_eq!(
            check_link(&[8u8; 32], [&d.app, &d.enrollment, &d.sha256, &exp, &mac], 999),
            Err(DownloadError::BadLink)
        );
        // Expired: the clock passes it.
        assert_eq!(
            check_link(&key, [&d.app, &d.enrollment, &d.sha256, &exp, &mac], 1_000),
            Err(DownloadError::Expired)
        );
        // Garbage of every size, never a panic.
        for junk in ["", "x", &"9".repeat(30), "-1", "1e9", &"/".repeat(500)] {
            assert!(check_link(&key, [junk, junk, junk, junk, junk], 0).is_err());
        }
        // Length prefixes: moving a character between parts changes the MAC.
        let shifted = Download {
            app: "com.example.fieldU".into(),
            enrollment: "DID-1".into(),
            ..d.clone()
        };
        assert_ne!(link_mac(&key, &shifted), mac);
    }
}

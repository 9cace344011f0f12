//! The TLS server configuration in use (OpenSSL), replaceable while
//! serving: new connections take the current one, open ones keep theirs.
//! The listener (`http::listener`) serves it; the certificate reloader,
//! ACME and the enrollment profile (which installs our root only when the
//! TLS certificate is ours) read it.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use openssl::ssl::{SslAcceptor, SslMethod, SslVerifyMode, SslVersion};
use openssl::x509::X509;

use super::ca::KeyPair;

pub struct LiveTls {
    acceptor: RwLock<Arc<SslAcceptor>>,
    /// The files it came from (reloaded on change or SIGHUP).
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl LiveTls {
    pub fn new(acceptor: Arc<SslAcceptor>, cert_path: PathBuf, key_path: PathBuf) -> LiveTls {
        LiveTls {
            acceptor: RwLock::new(acceptor),
            cert_path,
            key_path,
        }
    }

    pub fn current(&self) -> Arc<SslAcceptor> {
        self.acceptor.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn replace(&self, a: Arc<SslAcceptor>) {
        *self.acceptor.write().unwrap_or_else(|p| p.into_inner()) = a;
    }

    /// The certificate new connections get.
    pub fn certificate(&self) -> Option<X509> {
        self.current().context().certificate().map(|c| c.to_owned())
    }

    /// Load the certificate files again and serve them to new connections.
    /// A file that does not load (or a key that does not match, or an
    /// expired certificate) leaves the current configuration in place.
    /// False when the files hold the certificate already served.
    pub fn reload(&self) -> Result<bool, super::PkiError> {
        let pair = super::ca::load_pair(&self.cert_path, &self.key_path)?;
        let new_der = pair.cert.to_der()?;
        if self.certificate().and_then(|c| c.to_der().ok()).as_deref() == Some(new_der.as_slice()) {
            return Ok(false);
        }
        if super::asn1_unix(pair.cert.not_after()) <= crate::clock::now() {
            return Err(super::PkiError::Io(format!("{} has expired", self.cert_path.display())));
        }
        self.replace(acceptor_for(&pair)?);
        Ok(true)
    }
}

/// A TLS server configuration for a certificate, its chain and key.
pub fn acceptor_for(pair: &KeyPair) -> Result<Arc<SslAcceptor>, openssl::error::ErrorStack> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    b.set_private_key(&pair.key)?;
    b.set_certificate(&pair.cert)?;
    for c in &pair.chain {
        b.add_extra_chain_cert(c.clone())?;
    }
    b.check_private_key()?;
    // Request a client certificate, accept the handshake either way: the MDM
    // handlers decide (and never with a 401).
    b.set_verify_callback(SslVerifyMode::PEER, |_, _| true);
    b.set_session_id_context(b"mdmd")?;
    b.set_alpn_select_callback(|_, client| {
        openssl::ssl::select_next_proto(b"\x02h2\x08http/1.1", client).ok_or(openssl::ssl::AlpnError::NOACK)
    });
    Ok(Arc::new(b.build()))
}

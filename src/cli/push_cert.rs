//! `mdmd push-cert`: the MDM push certificate — make the request for Apple's
//! portal (no server needed), set the certificate, show it.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::Value;

use super::client::{AdminClient, ClientOpts};
use super::print;

#[derive(Args)]
pub struct PushCertArgs {
    #[command(subcommand)]
    what: PushCertCmd,
    #[command(flatten)]
    client: ClientOpts,
}

impl PushCertArgs {
    pub async fn run(self) -> anyhow::Result<()> {
        match self.what {
            // Works without a server; asks one for the current topic if it answers.
            PushCertCmd::Request {
                vendor_cert,
                vendor_key,
                vendor_key_password,
                out_dir,
                organization,
            } => {
                request(
                    &self.client,
                    &vendor_cert,
                    &vendor_key,
                    vendor_key_password.as_deref(),
                    &out_dir,
                    &organization,
                )
                .await
            }
            what => what.run(&self.client.admin()?).await,
        }
    }
}

#[derive(Subcommand)]
pub enum PushCertCmd {
    /// Make the push key (0600) and CSR, and with your MDM vendor certificate the signed request
    /// file to upload at Apple's Push Certificates Portal (no server needed).
    Request {
        /// The MDM vendor certificate (PEM; Apple's intermediates may follow in the same file).
        #[arg(long)]
        vendor_cert: std::path::PathBuf,
        /// The MDM vendor certificate's private key (PEM).
        #[arg(long)]
        vendor_key: std::path::PathBuf,
        /// Password of an encrypted vendor key.
        #[arg(long, env = "MDMD_VENDOR_KEY_PASSWORD", hide_env_values = true)]
        vendor_key_password: Option<String>,
        /// Where to write the push key, CSR and request.
        #[arg(long, default_value = ".")]
        out_dir: std::path::PathBuf,
        #[arg(long, default_value = "mdmd")]
        organization: String,
    },
    /// Set the push certificate: PEM (with --key, or key in the same file) or PKCS#12 (.p12/.pfx, --password).
    Set {
        file: std::path::PathBuf,
        /// The private key (PEM), e.g. push-request.key from `push-cert request`.
        #[arg(long)]
        key: Option<std::path::PathBuf>,
        /// PKCS#12 or encrypted-key password.
        #[arg(long, env = "MDMD_PUSH_CERT_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// Accept a certificate with another topic even though enrolled devices would be stranded.
        #[arg(long)]
        force: bool,
    },
    /// Topic, expiry and health of the push certificate in use.
    Show,
}

impl PushCertCmd {
    /// `set` and `show` (`request` needs no server: see `PushCertArgs::run`).
    pub async fn run(self, a: &AdminClient) -> anyhow::Result<()> {
        match self {
            PushCertCmd::Set {
                file,
                key,
                password,
                force,
            } => {
                let mut body = super::read_file(&file)?;
                let p12 = file
                    .extension()
                    .and_then(|x| x.to_str())
                    .is_some_and(|x| x.eq_ignore_ascii_case("p12") || x.eq_ignore_ascii_case("pfx"));
                if let Some(k) = key {
                    body.push(b'\n');
                    body.extend(super::read_file(&k)?);
                }
                let content_type = if p12 { "application/x-pkcs12" } else { "application/x-pem-file" };
                let headers: Vec<(&str, &str)> = password.as_deref().map(|p| ("X-Password", p)).into_iter().collect();
                let path = format!("/v1/push-cert{}", if force { "?force=true" } else { "" });
                let resp = a.put_bytes(&path, content_type, &headers, body).await?;
                let status = resp.status();
                let v: Value = resp.json().await.unwrap_or(Value::Null);
                if !status.is_success() {
                    anyhow::bail!("HTTP {status}: {}", v["error"].as_str().unwrap_or(&v.to_string()));
                }
                print(&v);
            }
            PushCertCmd::Show => super::show(&a.get("/v1/push-cert").await?, super::table::push_cert),
            PushCertCmd::Request { .. } => anyhow::bail!("`push-cert request` runs without a server"),
        }
        Ok(())
    }
}

/// `mdmd push-cert request`: push key (0600), CSR, and the vendor-signed request file.
async fn request(
    client: &ClientOpts,
    vendor_cert: &std::path::Path,
    vendor_key: &std::path::Path,
    password: Option<&str>,
    out_dir: &std::path::Path,
    organization: &str,
) -> anyhow::Result<()> {
    use mdmd::push::cert;
    let chain =
        openssl::x509::X509::stack_from_pem(&std::fs::read(vendor_cert).with_context(|| format!("reading {}", vendor_cert.display()))?)
            .context("--vendor-cert: not PEM certificates")?;
    let kpem = std::fs::read(vendor_key).with_context(|| format!("reading {}", vendor_key.display()))?;
    let vkey = match password {
        Some(p) => openssl::pkey::PKey::private_key_from_pem_passphrase(&kpem, p.as_bytes()),
        None => openssl::pkey::PKey::private_key_from_pem(&kpem),
    }
    .context("--vendor-key: not a PEM private key (encrypted? pass --vendor-key-password)")?;
    std::fs::create_dir_all(out_dir)?;
    let key_path = out_dir.join("push-request.key");
    let key = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048)?)?;
    mdmd::pki::write_secret(&key_path, &key.private_key_to_pem_pkcs8()?)
        .with_context(|| format!("writing {} (it must not exist yet)", key_path.display()))?;
    let csr = cert::csr(&key, organization)?;
    std::fs::write(out_dir.join("push-request.csr"), csr.to_pem()?)?;
    let req = cert::vendor_signed_request(&csr, &vkey, &chain)?;
    let req_path = out_dir.join("push-request.b64");
    std::fs::write(&req_path, &req)?;
    // Renewal: the topic of the certificate in use, if a server answers.
    let current = match client.admin() {
        Ok(a) => a.get("/v1/push-cert").await.ok().filter(|v| v["configured"] == true),
        Err(_) => None,
    };
    outln!(
        "Wrote {} (0600), {} and {}.",
        key_path.display(),
        out_dir.join("push-request.csr").display(),
        req_path.display()
    );
    outln!("1. Sign in at https://identity.apple.com/pushcert with your organisation's Apple Account.");
    match &current {
        Some(v) => outln!(
            "2. RENEWAL: choose \"Renew\" next to the certificate with topic {} (expires in {} days) and upload {}.\n   Renewing keeps the topic: enrolled devices keep working. \"Create a Certificate\" would give a NEW topic and every enrolled device would have to re-enroll.",
            v["topic"].as_str().unwrap_or("?"),
            v["days_left"],
            req_path.display()
        ),
        None => outln!("2. Choose \"Create a Certificate\" and upload {} (for a renewal choose \"Renew\" on the existing certificate instead: same topic).", req_path.display()),
    }
    outln!("3. Download the certificate (MDM_…_Certificate.pem), then:");
    outln!("   mdmd push-cert set MDM_Certificate.pem --key {}", key_path.display());
    Ok(())
}

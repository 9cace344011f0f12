//! Simulated devices that speak the real protocol over real HTTP(S):
//! Authenticate, TokenUpdate, the connect loop, and realistic answers to
//! commands (valid against Apple's response schemas). Used by the tests and
//! by the load generator (`mdmd sim load`).

pub mod answers;
pub mod load;
pub mod pki;

use std::collections::{BTreeMap, HashSet};

use anyhow::{bail, Context as _};
use rand::Rng as _;

use crate::protocol::{Command, Status};

/// One simulated iPhone.
pub struct SimDevice {
    pub udid: String,
    pub serial: String,
    pub name: String,
    pub topic: String,
    pub push_magic: String,
    pub token: Vec<u8>,
    pub unlock_token: Vec<u8>,
    pub os_version: String,
    pub build_version: String,
    pub product_name: String,
    /// Request types this device answers with NotNow (e.g. while "locked").
    pub not_now: HashSet<String>,
    /// Profiles installed through InstallProfile: identifier -> (uuid, display name).
    pub profiles: BTreeMap<String, (String, String)>,
    /// Set when an EraseDevice was acknowledged: the device goes quiet.
    pub erased: bool,
    /// The SCEP-issued identity that signs every message (`Mdm-Signature`).
    pub identity: Option<pki::SimIdentity>,
    /// The enrollment profile as installed.
    pub profile: Option<pki::EnrollmentProfile>,
    /// Identity renewals performed (InstallProfile of our enrollment profile).
    pub renewals: u32,
    pub checkin_url: String,
    pub server_url: String,
    base: String,
    client: reqwest::Client,
}

/// What one connect session did.
#[derive(Debug, Clone, PartialEq)]
pub struct Handled {
    pub command_uuid: String,
    pub request_type: String,
    pub status: Status,
}

fn origin(url: &str) -> String {
    match url.find("://") {
        Some(i) => match url[i + 3..].find('/') {
            Some(j) => url[..i + 3 + j].to_owned(),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

pub fn random_udid() -> String {
    let mut r = rand::thread_rng();
    format!("00008101-{:016X}", r.gen::<u64>())
}

fn random_serial() -> String {
    const A: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ0123456789";
    let mut r = rand::thread_rng();
    (0..12).map(|_| A[r.gen_range(0..A.len())] as char).collect()
}

/// An HTTP client for talking to mdmd from simulated devices and the CLI.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    http_client_trusting(None)
}

/// An HTTP client that also trusts `ca_pem` (our CA, for the TLS certificate it issued).
pub fn http_client_trusting(ca_pem: Option<&[u8]>) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .user_agent("MDM/1.0 mdmd-sim")
        .timeout(std::time::Duration::from_secs(30));
    if let Some(pem) = ca_pem {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(pem)?);
    }
    Ok(b.build()?)
}

/// Download the enrollment profile as a person would (basic auth or invitation URL).
pub async fn download_profile(client: &reqwest::Client, url: &str, basic: Option<(&str, &str)>) -> anyhow::Result<Vec<u8>> {
    let mut r = client.get(url);
    if let Some((u, p)) = basic {
        r = r.basic_auth(u, Some(p));
    }
    let resp = r.send().await.with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    let ct = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = resp.bytes().await?.to_vec();
    if !status.is_success() {
        bail!("profile download: HTTP {status}: {}", String::from_utf8_lossy(&body).trim());
    }
    if ct != "application/x-apple-aspen-config" {
        bail!("profile download: unexpected content type {ct:?}");
    }
    Ok(body)
}

impl SimDevice {
    pub fn new(base_url: &str, topic: &str, client: reqwest::Client) -> Self {
        let mut r = rand::thread_rng();
        let udid = random_udid();
        SimDevice {
            name: format!("iPhone {}", &udid[udid.len() - 4..]),
            serial: random_serial(),
            udid,
            topic: topic.to_owned(),
            push_magic: uuid::Uuid::new_v4().to_string().to_uppercase(),
            token: (0..32).map(|_| r.gen()).collect(),
            unlock_token: (0..64).map(|_| r.gen()).collect(),
            os_version: "18.1".into(),
            build_version: "22B83".into(),
            product_name: "iPhone16,1".into(),
            not_now: HashSet::new(),
            profiles: BTreeMap::new(),
            erased: false,
            identity: None,
            profile: None,
            renewals: 0,
            checkin_url: format!("{}/mdm/checkin", base_url.trim_end_matches('/')),
            server_url: format!("{}/mdm/connect", base_url.trim_end_matches('/')),
            base: base_url.trim_end_matches('/').to_owned(),
            client,
        }
    }

    /// Enroll like an iPhone from a downloaded enrollment profile: verify it,
    /// trust its CA, generate (or take) a key, run SCEP, keep the identity.
    /// Authenticate and TokenUpdate follow with `enroll()`.
    pub async fn from_profile(
        client: reqwest::Client,
        profile_der: &[u8],
        key: Option<openssl::pkey::PKey<openssl::pkey::Private>>,
    ) -> anyhow::Result<Self> {
        let p = pki::read_profile(profile_der)?;
        let origin = origin(&p.server_url);
        let mut dev = SimDevice::new(&origin, &p.topic, client);
        dev.checkin_url = p.checkin_url.clone();
        dev.server_url = p.server_url.clone();
        let key = match key {
            Some(k) => k,
            None => openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(p.key_size.max(2048))?)?,
        };
        let ident = pki::scep_enroll(&dev.client, &p.scep_url, Some(&p.ca), key, &p.subject, Some(&p.challenge), None)
            .await?
            .map_err(|e| anyhow::anyhow!("SCEP refused: {e}"))?;
        dev.identity = Some(ident);
        dev.profile = Some(p);
        Ok(dev)
    }

    /// Re-install the enrollment profile (identity renewal): new SCEP identity,
    /// then Authenticate and TokenUpdate with it, as iOS does.
    pub async fn reinstall_profile(&mut self, profile_der: &[u8]) -> anyhow::Result<()> {
        let p = pki::read_profile(profile_der)?;
        if p.topic != self.topic || p.server_url != self.server_url {
            bail!("MDM payload changed: refused");
        }
        let key = match &self.identity {
            Some(i) => i.key.clone(),
            None => openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048)?)?,
        };
        let ident = pki::scep_enroll(&self.client, &p.scep_url, Some(&p.ca), key, &p.subject, Some(&p.challenge), None)
            .await?
            .map_err(|e| anyhow::anyhow!("SCEP refused: {e}"))?;
        self.identity = Some(ident);
        self.profile = Some(p);
        self.enroll().await?;
        self.renewals += 1;
        Ok(())
    }

    fn dict(&self, pairs: Vec<(&str, plist::Value)>) -> plist::Dictionary {
        let mut d = plist::Dictionary::new();
        d.insert("UDID".into(), self.udid.clone().into());
        for (k, v) in pairs {
            d.insert(k.into(), v);
        }
        d
    }

    /// PUT a body to a path (or full URL), signed with `Mdm-Signature` when the
    /// device has an identity; returns (status, body).
    pub async fn put_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> anyhow::Result<(u16, Vec<u8>)> {
        let sig = match &self.identity {
            Some(i) => Some(i.sign(&body)?),
            None => None,
        };
        self.put_signed(path, content_type, body, sig.as_deref()).await
    }

    /// PUT with an explicit `Mdm-Signature` header value (or none).
    pub async fn put_signed(&self, path: &str, content_type: &str, body: Vec<u8>, sig: Option<&str>) -> anyhow::Result<(u16, Vec<u8>)> {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{}", self.base, path)
        };
        let send = || {
            let mut r = self
                .client
                .put(&url)
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body.clone());
            if let Some(s) = sig {
                r = r.header("Mdm-Signature", s);
            }
            r.send()
        };
        // A pooled connection may have died with a restarted server: like a
        // device, try once more on a fresh connection.
        let resp = match send().await {
            Ok(r) => r,
            Err(e) if e.is_request() || e.is_connect() => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                send().await.with_context(|| format!("PUT {path}"))?
            }
            Err(e) => return Err(e).with_context(|| format!("PUT {path}")),
        };
        let status = resp.status().as_u16();
        Ok((status, resp.bytes().await?.to_vec()))
    }

    async fn put_ok(&self, path: &str, content_type: &str, d: &plist::Dictionary) -> anyhow::Result<Vec<u8>> {
        let (status, body) = self.put_raw(path, content_type, crate::protocol::to_xml(d)).await?;
        if status != 200 {
            bail!("{path} answered HTTP {status}: {}", String::from_utf8_lossy(&body).trim());
        }
        Ok(body)
    }

    pub async fn checkin(&self, d: &plist::Dictionary) -> anyhow::Result<Vec<u8>> {
        self.put_ok(&self.checkin_url.clone(), "application/x-apple-aspen-mdm-checkin", d)
            .await
    }

    pub fn authenticate_message(&self) -> plist::Dictionary {
        self.dict(vec![
            ("MessageType", "Authenticate".into()),
            ("Topic", self.topic.clone().into()),
            ("OSVersion", self.os_version.clone().into()),
            ("BuildVersion", self.build_version.clone().into()),
            ("ProductName", self.product_name.clone().into()),
            ("SerialNumber", self.serial.clone().into()),
        ])
    }

    pub fn token_update_message(&self) -> plist::Dictionary {
        self.dict(vec![
            ("MessageType", "TokenUpdate".into()),
            ("Topic", self.topic.clone().into()),
            ("Token", plist::Value::Data(self.token.clone())),
            ("PushMagic", self.push_magic.clone().into()),
            ("UnlockToken", plist::Value::Data(self.unlock_token.clone())),
            ("AwaitingConfiguration", false.into()),
        ])
    }

    pub async fn authenticate(&self) -> anyhow::Result<()> {
        self.checkin(&self.authenticate_message()).await.map(drop)
    }

    pub async fn token_update(&self) -> anyhow::Result<()> {
        self.checkin(&self.token_update_message()).await.map(drop)
    }

    /// Authenticate + TokenUpdate, as an iPhone does while installing the MDM payload.
    pub async fn enroll(&self) -> anyhow::Result<()> {
        self.authenticate().await?;
        self.token_update().await
    }

    pub async fn checkout(&self) -> anyhow::Result<()> {
        let d = self.dict(vec![("MessageType", "CheckOut".into()), ("Topic", self.topic.clone().into())]);
        self.checkin(&d).await.map(drop)
    }

    pub fn idle_report(&self) -> plist::Dictionary {
        self.dict(vec![("Status", "Idle".into())])
    }

    /// One PUT to the command endpoint; `None` when the server says "no more commands".
    pub async fn connect(&self, report: &plist::Dictionary) -> anyhow::Result<Option<Command>> {
        let body = self
            .put_ok(&self.server_url.clone(), "application/x-apple-aspen-mdm", report)
            .await?;
        if body.is_empty() {
            return Ok(None);
        }
        Ok(Some(Command::from_xml(&body).context("server sent a malformed command")?))
    }

    /// A full session: Idle, then answer every command until the empty body.
    pub async fn session(&mut self) -> anyhow::Result<Vec<Handled>> {
        let mut handled = Vec::new();
        let mut report = self.idle_report();
        while let Some(cmd) = self.connect(&report).await? {
            if handled.len() > 10_000 {
                bail!("server keeps sending commands (loop?)");
            }
            // Our own enrollment profile coming back is an identity renewal:
            // the device re-runs SCEP, Authenticate and TokenUpdate while installing it.
            if let Some(payload) = self.renewal_payload(&cmd) {
                self.reinstall_profile(&payload).await?;
            }
            let (status, r) = self.answer(&cmd);
            handled.push(Handled {
                command_uuid: cmd.uuid.clone(),
                request_type: cmd.request_type.clone(),
                status,
            });
            report = r;
            if self.erased {
                // The report is sent, then the device wipes itself.
                self.connect(&report).await?;
                break;
            }
        }
        Ok(handled)
    }

    fn renewal_payload(&self, cmd: &Command) -> Option<Vec<u8>> {
        if cmd.request_type != "InstallProfile" || self.not_now.contains("InstallProfile") {
            return None;
        }
        let data = cmd.command.get("Payload")?.as_data()?;
        let p = pki::read_profile(data).ok()?;
        (Some(&p.identifier) == self.profile.as_ref().map(|x| &x.identifier)).then(|| data.to_vec())
    }

    /// The report a device sends for a command.
    pub fn answer(&mut self, cmd: &Command) -> (Status, plist::Dictionary) {
        let mut d = self.dict(vec![("CommandUUID", cmd.uuid.clone().into())]);
        let status = if self.not_now.contains(&cmd.request_type) {
            Status::NotNow
        } else {
            match answers::respond(self, cmd) {
                Ok(keys) => {
                    d.extend(keys);
                    Status::Acknowledged
                }
                Err((status, chain)) => {
                    d.insert("ErrorChain".into(), chain);
                    status
                }
            }
        };
        d.insert("Status".into(), status.as_str().into());
        (status, d)
    }
}

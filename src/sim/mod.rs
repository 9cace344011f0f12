//! Simulated devices that speak the real protocol over real HTTP(S):
//! Authenticate, TokenUpdate, the connect loop, and realistic answers to
//! commands (valid against Apple's response schemas). Used by the tests and
//! by the load generator (`mdmd sim load`).

pub mod account;
pub mod ade;
pub mod ade_api;
pub mod answers;
pub mod apns;
pub mod apps;
pub mod chaos;
pub mod ddm;
pub mod fleet;
pub mod load;
pub mod nac;
pub mod pki;
pub mod soak;
pub mod vpp_api;

use std::collections::{BTreeMap, HashSet};

use anyhow::{bail, Context as _};
use rand::Rng as _;

use crate::protocol::{Command, Status};

pub use apps::SimApp;

/// One simulated iPhone.
pub struct SimDevice {
    pub udid: String,
    /// User Enrollment (a personal device): the device is known by this
    /// EnrollmentID and never tells its UDID, serial number or IMEI.
    pub enrollment_id: Option<String>,
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
    /// Profiles installed through InstallProfile, by PayloadIdentifier.
    pub profiles: BTreeMap<String, InstalledProfile>,
    /// Provisioning profiles: UUID -> (name, expiry).
    pub provisioning: BTreeMap<String, (String, Option<plist::Date>)>,
    /// Managed apps by bundle id (or `store.<id>` / `manifest.<file>` until
    /// the bundle id is known): installed, queued or failed (`apps`).
    pub apps: BTreeMap<String, SimApp>,
    /// The App Store as this device reaches it: the Apps and Books stand-in's
    /// URL (`VppStandIn::url`); none: no store (App Store installs fail).
    pub app_store: Option<String>,
    /// What installs fetched (manifests, apps) and the HTTP status (0: no answer).
    pub fetches: Vec<(String, u16)>,
    /// Installs acknowledged, done by `settle_apps` at the next session.
    pending_apps: BTreeMap<String, apps::PendingInstall>,
    /// Bundle ids of App Store items, learned from the store's lookup when an
    /// `InstallApplication` names an app by `iTunesStoreID` only.
    store_names: BTreeMap<i64, String>,
    /// Set when an EraseDevice was acknowledged: the device goes quiet.
    pub erased: bool,
    /// Set when its enrollment profile was removed: it checks out and goes quiet.
    pub unenrolled: bool,
    /// The SCEP-issued identity that signs every message (`Mdm-Signature`).
    pub identity: Option<pki::SimIdentity>,
    /// The enrollment profile as installed.
    pub profile: Option<pki::EnrollmentProfile>,
    /// Identity renewals performed (InstallProfile of our enrollment profile).
    pub renewals: u32,
    /// A passcode is set (SecurityInfo; data protection follows it).
    pub passcode: bool,
    /// Supervised (DeviceInformation's IsSupervised): an unsupervised device
    /// answers Apple's supervised-only commands and Settings items with Error.
    pub supervised: bool,
    /// In Setup Assistant after an ADE enrollment whose profile says
    /// `await_device_configured`: TokenUpdate says so until DeviceConfigured.
    pub awaiting_configuration: bool,
    /// Its Wi-Fi MAC address (Apple's OUI, the rest from the UDID).
    pub wifi_mac: String,
    pub checkin_url: String,
    pub server_url: String,
    /// Declarative management as this device holds it.
    pub ddm: ddm::DdmState,
    /// Commands whose final result (Acknowledged, Error) the server answered
    /// 200: it must never send them again (`redelivered` counts it if it does).
    pub results_acked: HashSet<String>,
    /// Commands the server sent again after their final result got 200.
    pub redelivered: Vec<String>,
    /// Where to record how long each request to the server took, in ms
    /// (`mdmd sim soak`); none: not recorded.
    pub latency: Option<std::sync::Arc<LatencyLog>>,
    base: String,
    client: reqwest::Client,
}

/// Request latencies in milliseconds, drained by whoever samples them.
pub type LatencyLog = std::sync::Mutex<Vec<f32>>;

/// A configuration profile as the device holds it (decrypted).
#[derive(Clone)]
pub struct InstalledProfile {
    pub uuid: String,
    pub display_name: String,
    pub encrypted: bool,
    pub payloads: Vec<plist::Dictionary>,
    /// Identities its SCEP payloads obtained: (payload UUID, identity).
    pub identities: Vec<(String, pki::SimIdentity)>,
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

/// A new RSA key pair, generated off the async threads and one at a time
/// (tens to hundreds of milliseconds each: inline, it would stall every other
/// simulated device; a fleet's renewals at once would take every core from
/// the server beside it).
pub async fn new_rsa_key(bits: u32) -> anyhow::Result<openssl::pkey::PKey<openssl::pkey::Private>> {
    static ONE_AT_A_TIME: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
    let _turn = ONE_AT_A_TIME.acquire().await.context("key generation")?;
    tokio::task::spawn_blocking(move || Ok(openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(bits)?)?))
        .await
        .context("key generation")?
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
    Ok(http_client_builder(ca_pem)?.build()?)
}

/// The builder behind `http_client_trusting` (for clients that differ in pooling).
pub fn http_client_builder(ca_pem: Option<&[u8]>) -> anyhow::Result<reqwest::ClientBuilder> {
    let mut b = reqwest::Client::builder()
        .user_agent("MDM/1.0 mdmd-sim")
        .timeout(std::time::Duration::from_secs(30));
    if let Some(pem) = ca_pem {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(pem)?);
    }
    Ok(b)
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
        let mac_for = |u: &str| {
            use sha2::Digest as _;
            let h = sha2::Sha256::digest(u.as_bytes());
            format!("f0:5c:77:{:02x}:{:02x}:{:02x}", h[0], h[1], h[2])
        };
        let wifi_mac = mac_for(&udid);
        SimDevice {
            name: format!("iPhone {}", &udid[udid.len() - 4..]),
            serial: random_serial(),
            udid,
            enrollment_id: None,
            topic: topic.to_owned(),
            push_magic: uuid::Uuid::new_v4().to_string().to_uppercase(),
            token: (0..32).map(|_| r.gen()).collect(),
            unlock_token: (0..64).map(|_| r.gen()).collect(),
            os_version: "18.1".into(),
            build_version: "22B83".into(),
            product_name: "iPhone16,1".into(),
            not_now: HashSet::new(),
            profiles: BTreeMap::new(),
            provisioning: BTreeMap::new(),
            apps: BTreeMap::new(),
            app_store: None,
            fetches: Vec::new(),
            pending_apps: BTreeMap::new(),
            store_names: BTreeMap::new(),
            erased: false,
            unenrolled: false,
            identity: None,
            profile: None,
            renewals: 0,
            passcode: true,
            supervised: false,
            awaiting_configuration: false,
            wifi_mac,
            ddm: Default::default(),
            results_acked: HashSet::new(),
            redelivered: Vec::new(),
            latency: None,
            checkin_url: format!("{}/mdm/checkin", base_url.trim_end_matches('/')),
            server_url: format!("{}/mdm/connect", base_url.trim_end_matches('/')),
            base: base_url.trim_end_matches('/').to_owned(),
            client,
        }
    }

    /// Enroll like an iPhone from a downloaded enrollment profile: verify it,
    /// trust its CA, generate (or take) a key, run SCEP, keep the identity.
    /// A profile-service profile runs Apple's three phases first (see
    /// `from_profile_service`; the device certificate is then self-signed).
    /// Authenticate and TokenUpdate follow with `enroll()`.
    pub async fn from_profile(
        client: reqwest::Client,
        profile_der: &[u8],
        key: Option<openssl::pkey::PKey<openssl::pkey::Private>>,
    ) -> anyhow::Result<Self> {
        let key = match key {
            Some(k) => k,
            None => openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048)?)?,
        };
        if pki::is_profile_service(profile_der) {
            return Self::from_profile_service(client, profile_der, key, None, None).await;
        }
        let mut p = pki::read_profile(profile_der)?;
        let origin = origin(&p.server_url);
        let mut dev = SimDevice::new(&origin, &p.topic, client);
        dev.checkin_url = p.checkin_url.clone();
        dev.server_url = p.server_url.clone();
        let ca = p.ensure_ca(&dev.client).await?;
        let ident = pki::scep_enroll(&dev.client, &p.scep_url, Some(&ca), key, &p.subject, Some(&p.challenge), None)
            .await?
            .map_err(|e| anyhow::anyhow!("SCEP refused: {e}"))?;
        dev.identity = Some(ident);
        if p.enrollment_mode.as_deref() == Some("BYOD") {
            // Apple makes up an EnrollmentID for a User Enrollment; the UDID stays on the device.
            dev.enrollment_id = Some(uuid::Uuid::new_v4().to_string().to_uppercase());
        }
        dev.profile = Some(p);
        Ok(dev)
    }

    /// Over-the-air enrollment in Apple's three phases: (1) POST the device
    /// attributes signed by the device's own certificate (`device_cert`, as
    /// Apple's device CA would issue it; self-signed if none), get the SCEP
    /// profile; run SCEP; (3) POST the attributes again signed by that
    /// identity, get the MDM profile (encrypted to it), run its SCEP for the
    /// MDM identity. `udid` overrides the device's random UDID (re-enrollment).
    pub async fn from_profile_service(
        client: reqwest::Client,
        profile_der: &[u8],
        key: openssl::pkey::PKey<openssl::pkey::Private>,
        device_cert: Option<&pki::SimIdentity>,
        udid: Option<&str>,
    ) -> anyhow::Result<Self> {
        let (url, challenge) = pki::read_profile_service(profile_der)?;
        let mut dev = SimDevice::new(&origin(&url), "", client);
        if let Some(u) = udid {
            dev.udid = u.to_owned();
        }
        let device_cert = match device_cert {
            Some(c) => c.clone(),
            None => {
                let mut n = openssl::x509::X509NameBuilder::new()?;
                n.append_entry_by_text("CN", &dev.udid)?;
                pki::SimIdentity {
                    cert: pki::self_signed(&key, &n.build())?,
                    key: key.clone(),
                }
            }
        };
        let mut attrs = dev.dict(vec![
            ("SERIAL", dev.serial.clone().into()),
            ("PRODUCT", dev.product_name.clone().into()),
            ("VERSION", dev.build_version.clone().into()),
        ]);
        attrs.insert("CHALLENGE".into(), challenge.into());
        let phase2 = dev
            .post_attributes(&url, &attrs, &device_cert)
            .await
            .context("profile service phase 1")?;
        let mut scep = pki::read_scep_profile(&phase2)?;
        let scep_ca = scep.ensure_ca(&dev.client).await?;
        let first = pki::scep_enroll(
            &dev.client,
            &scep.scep_url,
            Some(&scep_ca),
            key.clone(),
            &scep.subject,
            Some(&scep.challenge),
            None,
        )
        .await?
        .map_err(|e| anyhow::anyhow!("SCEP refused (phase 2): {e}"))?;
        attrs.remove("CHALLENGE");
        let last = dev.post_attributes(&url, &attrs, &first).await.context("profile service phase 3")?;
        let mut p = pki::read_profile_as(&last, Some(&first)).context("the MDM profile (phase 3)")?;
        let ca = p.ensure_ca(&dev.client).await?;
        let ident = pki::scep_enroll(&dev.client, &p.scep_url, Some(&ca), key, &p.subject, Some(&p.challenge), None)
            .await?
            .map_err(|e| anyhow::anyhow!("SCEP refused (MDM identity): {e}"))?;
        dev.topic = p.topic.clone();
        dev.checkin_url = p.checkin_url.clone();
        dev.server_url = p.server_url.clone();
        dev.identity = Some(ident);
        dev.profile = Some(p);
        Ok(dev)
    }

    /// POST device attributes as CMS SignedData signed by `by`; the profile answered.
    pub async fn post_attributes(&self, url: &str, attrs: &plist::Dictionary, by: &pki::SimIdentity) -> anyhow::Result<Vec<u8>> {
        let signed = pki::sign_attached(by, &crate::protocol::to_xml(attrs))?;
        let resp = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/pkcs7-signature")
            .body(signed)
            .send()
            .await?;
        let status = resp.status();
        let body = resp.bytes().await?.to_vec();
        if !status.is_success() {
            bail!("HTTP {status}: {}", String::from_utf8_lossy(&body).trim());
        }
        Ok(body)
    }

    /// Re-install the enrollment profile (identity renewal): new SCEP identity,
    /// then Authenticate and TokenUpdate with it, as iOS does.
    pub async fn reinstall_profile(&mut self, profile_der: &[u8]) -> anyhow::Result<()> {
        let mut p = pki::read_profile_as(profile_der, self.identity.as_ref())?;
        if p.topic != self.topic || p.server_url != self.server_url {
            bail!("MDM payload changed: refused");
        }
        if p.ca.is_none() {
            p.ca = self.profile.as_ref().and_then(|old| old.ca.clone());
        }
        let ca = p.ensure_ca(&self.client).await?;
        // A new key pair, as iOS makes for every SCEP enrollment.
        let key = new_rsa_key(p.key_size.max(2048)).await?;
        let ident = pki::scep_enroll(&self.client, &p.scep_url, Some(&ca), key, &p.subject, Some(&p.challenge), None)
            .await?
            .map_err(|e| anyhow::anyhow!("SCEP refused: {e}"))?;
        self.identity = Some(ident);
        self.profile = Some(p);
        self.enroll().await?;
        self.renewals += 1;
        Ok(())
    }

    /// The id this device is enrolled as: its UDID, or its EnrollmentID (User Enrollment).
    pub fn id(&self) -> String {
        self.enrollment_id.clone().unwrap_or_else(|| self.udid.clone())
    }

    fn dict(&self, pairs: Vec<(&str, plist::Value)>) -> plist::Dictionary {
        let mut d = plist::Dictionary::new();
        match &self.enrollment_id {
            Some(e) => d.insert("EnrollmentID".into(), e.clone().into()),
            None => d.insert("UDID".into(), self.udid.clone().into()),
        };
        for (k, v) in pairs {
            d.insert(k.into(), v);
        }
        d
    }

    /// The Bluetooth MAC: the Wi-Fi MAC plus one, as on Apple hardware.
    pub fn bluetooth_mac(&self) -> String {
        let last = u8::from_str_radix(self.wifi_mac.rsplit(':').next().unwrap_or("0"), 16).unwrap_or(0);
        let head = self.wifi_mac.rsplit_once(':').map_or("", |(h, _)| h);
        format!("{head}:{:02x}", last.wrapping_add(1))
    }

    /// Talk to another server (another instance behind the same balancer):
    /// the same paths at a new origin.
    pub fn retarget(&mut self, base: &str) {
        let base = origin(base);
        let swap = |u: &str| format!("{base}{}", &u[origin(u).len()..]);
        self.checkin_url = swap(&self.checkin_url);
        self.server_url = swap(&self.server_url);
        self.base = base;
    }

    /// PUT a body to a path (or full URL), signed with `Mdm-Signature` when the
    /// device has an identity; returns (status, body).
    pub async fn put_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> anyhow::Result<(u16, Vec<u8>)> {
        let sig = match &self.identity {
            Some(i) if pki::STYLE.try_with(|s| s.sha1_signatures).unwrap_or(false) => Some(i.sign_sha1(&body)?),
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
        let t0 = std::time::Instant::now();
        let resp = match send().await {
            Ok(r) => r,
            Err(e) if e.is_request() || e.is_connect() => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                send().await.with_context(|| format!("PUT {path}"))?
            }
            Err(e) => return Err(e).with_context(|| format!("PUT {path}")),
        };
        let status = resp.status().as_u16();
        let body = resp.bytes().await?.to_vec();
        if let Some(l) = &self.latency {
            if let Ok(mut v) = l.lock() {
                v.push(t0.elapsed().as_secs_f32() * 1000.0);
            }
        }
        Ok((status, body))
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
        if self.enrollment_id.is_some() {
            // User Enrollment: nothing that identifies the hardware.
            return self.dict(vec![
                ("MessageType", "Authenticate".into()),
                ("Topic", self.topic.clone().into()),
                ("Model", "MTLT3LL/A".into()),
                ("ModelName", "iPhone".into()),
                ("OSVersion", self.os_version.clone().into()),
                ("BuildVersion", self.build_version.clone().into()),
                ("ProductName", self.product_name.clone().into()),
            ]);
        }
        self.dict(vec![
            ("MessageType", "Authenticate".into()),
            ("Topic", self.topic.clone().into()),
            ("DeviceName", self.name.clone().into()),
            ("Model", "MTLT3LL/A".into()),
            ("ModelName", "iPhone".into()),
            ("OSVersion", self.os_version.clone().into()),
            ("BuildVersion", self.build_version.clone().into()),
            ("ProductName", self.product_name.clone().into()),
            ("SerialNumber", self.serial.clone().into()),
        ])
    }

    pub fn token_update_message(&self) -> plist::Dictionary {
        let mut pairs = vec![
            ("MessageType", "TokenUpdate".into()),
            ("Topic", self.topic.clone().into()),
            ("Token", plist::Value::Data(self.token.clone())),
            ("PushMagic", self.push_magic.clone().into()),
            ("AwaitingConfiguration", self.awaiting_configuration.into()),
        ];
        // No UnlockToken in User Enrollment: the organisation cannot clear a personal device's passcode.
        if self.enrollment_id.is_none() {
            pairs.push(("UnlockToken", plist::Value::Data(self.unlock_token.clone())));
        }
        self.dict(pairs)
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

    /// A full session: the queued installs done (`settle_apps`), Idle, then
    /// answer every command until the empty body.
    pub async fn session(&mut self) -> anyhow::Result<Vec<Handled>> {
        // Installs queued in the last session happen first, as in the background.
        self.settle_apps().await;
        let mut handled = Vec::new();
        let mut report = self.idle_report();
        let mut sync = false;
        // The final result `report` carries, if any: once answered 200, it is done.
        let mut sent: Option<String> = None;
        loop {
            let next = self.connect(&report).await?;
            if let Some(u) = sent.take() {
                self.results_acked.insert(u);
            }
            let Some(cmd) = next else { break };
            if handled.len() > 10_000 {
                bail!("server keeps sending commands (loop?)");
            }
            if self.results_acked.contains(&cmd.uuid) {
                self.redelivered.push(cmd.uuid.clone());
            }
            let (status, r) = if cmd.request_type == "InstallProfile" && !self.not_now.contains("InstallProfile") {
                self.install_profile(&cmd).await?
            } else if cmd.request_type == "DeclarativeManagement" && !self.not_now.contains("DeclarativeManagement") {
                // Acknowledged now; the sync runs once the session is over.
                let data = cmd.command.get("Data").and_then(plist::Value::as_data).map(<[u8]>::to_vec);
                let mut d = self.dict(vec![("CommandUUID", cmd.uuid.clone().into())]);
                let status = match self.ddm_command(data.as_deref()) {
                    Ok(_) => {
                        sync = true;
                        Status::Acknowledged
                    }
                    Err(e) => {
                        d.insert(
                            "ErrorChain".into(),
                            answers::error_chain(12021, "MCMDMErrorDomain", &format!("{e:#}")),
                        );
                        Status::Error
                    }
                };
                d.insert("Status".into(), status.as_str().into());
                (status, d)
            } else {
                if cmd.request_type == "InstallApplication" {
                    self.name_store_app(&cmd.command).await;
                }
                self.answer(&cmd)
            };
            handled.push(Handled {
                command_uuid: cmd.uuid.clone(),
                request_type: cmd.request_type.clone(),
                status,
            });
            sent = matches!(status, Status::Acknowledged | Status::Error).then(|| cmd.uuid.clone());
            report = r;
            if self.erased {
                // The report is sent, then the device wipes itself.
                self.connect(&report).await?;
                break;
            }
            if self.unenrolled {
                // The report is sent, then CheckOut (CheckOutWhenRemoved), then nothing.
                self.connect(&report).await?;
                self.checkout().await?;
                break;
            }
        }
        if sync && !self.erased {
            self.ddm_sync().await.context("declarative management sync")?;
        }
        Ok(handled)
    }

    /// InstallProfile as iOS does it: the signature must chain to the CA the
    /// device trusts, encrypted payloads must decrypt with its own key, SCEP
    /// payloads run SCEP for an identity; our own enrollment profile coming
    /// back is an identity renewal (SCEP, Authenticate, TokenUpdate again).
    pub async fn install_profile(&mut self, cmd: &Command) -> anyhow::Result<(Status, plist::Dictionary)> {
        let mut d = self.dict(vec![("CommandUUID", cmd.uuid.clone().into())]);
        let result = self.try_install(cmd).await;
        let status = match result {
            Ok(()) => Status::Acknowledged,
            Err((status, chain)) => {
                d.insert("ErrorChain".into(), chain);
                status
            }
        };
        d.insert("Status".into(), status.as_str().into());
        Ok((status, d))
    }

    async fn try_install(&mut self, cmd: &Command) -> Result<(), (Status, plist::Value)> {
        let Some(data) = cmd.command.get("Payload").and_then(plist::Value::as_data) else {
            return Err((
                Status::CommandFormatError,
                answers::error_chain(12021, "MCMDMErrorDomain", "Payload missing"),
            ));
        };
        let fail = |code: i64, text: String| (Status::Error, answers::error_chain(code, "MCProfileErrorDomain", &text));
        let trust = self.profile.as_ref().and_then(|p| p.ca.clone());
        let (top, encrypted) = pki::open_profile(data, trust.as_ref(), self.identity.as_ref())
            .map_err(|e| fail(1000, format!("The profile could not be installed: {e:#}")))?;
        let ident = top
            .get("PayloadIdentifier")
            .and_then(plist::Value::as_string)
            .unwrap_or_default()
            .to_owned();
        if Some(&ident) == self.profile.as_ref().map(|p| &p.identifier) {
            let der = data.to_vec();
            return self
                .reinstall_profile(&der)
                .await
                .map_err(|e| fail(1001, format!("Identity renewal failed: {e:#}")));
        }
        let payloads: Vec<plist::Dictionary> = top
            .get("PayloadContent")
            .and_then(plist::Value::as_array)
            .map(|a| a.iter().filter_map(|p| p.as_dictionary().cloned()).collect())
            .unwrap_or_default();
        let mut identities = Vec::new();
        for p in &payloads {
            if p.get("PayloadType").and_then(plist::Value::as_string) != Some("com.apple.security.scep") {
                continue;
            }
            let uuid = payload_uuid(p);
            let sc = p.get("PayloadContent").and_then(plist::Value::as_dictionary);
            let s = |k: &str| sc.and_then(|d| d.get(k)).and_then(plist::Value::as_string).map(str::to_owned);
            let url = s("URL").ok_or_else(|| fail(1002, "SCEP payload without URL".into()))?;
            let subject = sc.map(pki::scep_subject).unwrap_or_default();
            // A fresh key for every identity, as iOS generates one per SCEP payload.
            let bits = sc
                .and_then(|d| d.get("Keysize"))
                .and_then(plist::Value::as_unsigned_integer)
                .unwrap_or(2048)
                .max(2048) as u32;
            let key = new_rsa_key(bits).await.map_err(|e| fail(1002, format!("key generation: {e:#}")))?;
            // Through mdmd's SCEP proxy the CA is the organisation's, not the one the enrollment profile installed.
            let expected = if url.contains("/scep-proxy/") { None } else { trust.as_ref() };
            let got = pki::scep_enroll(&self.client, &url, expected, key, &subject, s("Challenge").as_deref(), None)
                .await
                .map_err(|e| fail(1002, format!("SCEP: {e:#}")))?
                .map_err(|e| fail(1002, format!("The SCEP server refused the request: {e}")))?;
            identities.push((uuid, got));
        }
        // PKCS#12 identities (a derived credential among them), opened with the password inside the profile.
        for p in &payloads {
            if p.get("PayloadType").and_then(plist::Value::as_string) != Some("com.apple.security.pkcs12") {
                continue;
            }
            let uuid = payload_uuid(p);
            let Some(der) = p.get("PayloadContent").and_then(plist::Value::as_data) else {
                return Err(fail(1004, "The PKCS#12 payload has no data.".into()));
            };
            let password = p.get("Password").and_then(plist::Value::as_string).unwrap_or_default();
            let id = pki::open_pkcs12(der, password).map_err(|e| fail(1004, format!("The PKCS#12 could not be imported: {e:#}")))?;
            identities.push((uuid, id));
        }
        self.profiles.insert(
            ident,
            InstalledProfile {
                uuid: top
                    .get("PayloadUUID")
                    .and_then(plist::Value::as_string)
                    .unwrap_or_default()
                    .to_owned(),
                display_name: top
                    .get("PayloadDisplayName")
                    .and_then(plist::Value::as_string)
                    .unwrap_or_default()
                    .to_owned(),
                encrypted,
                payloads,
                identities,
            },
        );
        Ok(())
    }

    /// Play a derived-credential provider's app: read the app's managed
    /// configuration for the upload URL (`…/v1/derived-credentials`) and the
    /// per-device token (`dct_…`), and post a credential with them.
    /// Returns the HTTP status and the JSON answer.
    pub async fn provider_app_upload(
        &self,
        bundle_id: &str,
        usage: &str,
        pkcs12: &[u8],
        password: &str,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let config = self
            .apps
            .get(bundle_id)
            .and_then(|a| a.config.clone())
            .with_context(|| format!("app {bundle_id} has no managed configuration"))?;
        let strings: Vec<&str> = config.values().filter_map(plist::Value::as_string).collect();
        let url = strings
            .iter()
            .find(|v| v.ends_with("/v1/derived-credentials"))
            .context("no upload URL in the app's configuration ($DERIVED_CREDENTIAL_URL)")?;
        let token = strings
            .iter()
            .find(|v| v.starts_with(crate::service::credentials::derived::TOKEN_PREFIX))
            .context("no upload token in the app's configuration ($DERIVED_CREDENTIAL_TOKEN)")?;
        let body = serde_json::json!({
            "usage": usage,
            "pkcs12": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pkcs12),
            "password": password,
        });
        let r = self.client.post(*url).bearer_auth(token).json(&body).send().await?;
        let status = r.status().as_u16();
        let v = r.json().await.unwrap_or(serde_json::Value::Null);
        Ok((status, v))
    }

    /// The user removes a profile in Settings (no message to the server).
    pub fn user_removes_profile(&mut self, identifier: &str) -> bool {
        self.profiles.remove(identifier).is_some()
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

fn payload_uuid(p: &plist::Dictionary) -> String {
    p.get("PayloadUUID")
        .and_then(plist::Value::as_string)
        .unwrap_or_default()
        .to_owned()
}

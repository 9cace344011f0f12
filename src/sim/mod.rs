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
    Ok(reqwest::Client::builder()
        .user_agent("MDM/1.0 mdmd-sim")
        .pool_max_idle_per_host(4)
        .timeout(std::time::Duration::from_secs(30))
        .build()?)
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
            base: base_url.trim_end_matches('/').to_owned(),
            client,
        }
    }

    fn dict(&self, pairs: Vec<(&str, plist::Value)>) -> plist::Dictionary {
        let mut d = plist::Dictionary::new();
        d.insert("UDID".into(), self.udid.clone().into());
        for (k, v) in pairs {
            d.insert(k.into(), v);
        }
        d
    }

    /// PUT a body; returns (status, body).
    pub async fn put_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> anyhow::Result<(u16, Vec<u8>)> {
        let send = || {
            self.client
                .put(format!("{}{}", self.base, path))
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body.clone())
                .send()
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
        self.put_ok("/mdm/checkin", "application/x-apple-aspen-mdm-checkin", d).await
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
        let body = self.put_ok("/mdm/connect", "application/x-apple-aspen-mdm", report).await?;
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
            let (status, r) = self.answer(&cmd);
            handled.push(Handled { command_uuid: cmd.uuid.clone(), request_type: cmd.request_type.clone(), status });
            report = r;
            if self.erased {
                // The report is sent, then the device wipes itself.
                self.connect(&report).await?;
                break;
            }
        }
        Ok(handled)
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

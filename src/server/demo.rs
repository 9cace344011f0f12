//! `mdmd serve --demo N`: a demo where everything finishes. Beside the real
//! server, in the same process: an enrollment user, an APNs stand-in on
//! loopback (`sim::apns`) trusting a throwaway push CA, a push certificate
//! from that CA set through the normal path (`Pusher::set_certificate`, so
//! `GET /v1/push-cert` shows it), and N simulated iPhones (`sim::fleet`) that
//! enroll over real HTTPS, stay online, are woken by push and answer commands.
//!
//! The demo refuses a store that holds enrollments other than its own (their
//! UDIDs are kept in the `demo-devices` setting) or a push certificate that is
//! not a demo's: it is meant for a data dir of its own (`make demo`). On a
//! restart the same UDIDs enroll again (checked out first: the simulated
//! devices of the last run are gone).

use std::sync::Arc;

use anyhow::Context as _;

use crate::app::App;
use crate::config::ServeConfig;
use crate::sim::apns::StandIn;
use crate::sim::fleet::FleetStats;
use crate::sim::pki::SimIdentity;

/// The store setting that lists the demo's device UDIDs (JSON array).
const DEVICES_SETTING: &str = "demo-devices";
/// The common name of the demo's push certificate (how a restart knows its own).
const PUSH_CN: &str = "APSP:mdmd-demo";
/// Used when the admin gave no `--enroll-user`.
const DEMO_USER: (&str, &str) = ("demo", "demo");
/// Devices enrolling at once.
const ENROLL_CONCURRENCY: usize = 8;

/// The demo's parts made before the server is built (the push client must
/// know the stand-in's URL and certificate).
pub struct Demo {
    devices: usize,
    user: (String, String),
    standin: Arc<StandIn>,
    push_ca: SimIdentity,
    stats: Arc<FleetStats>,
}

/// With `--demo N`: choose the enrollment user, start the APNs stand-in on
/// loopback and point the push client at it. None without `--demo`.
pub async fn prepare(cfg: &mut ServeConfig) -> anyhow::Result<Option<Demo>> {
    let Some(n) = cfg.demo else { return Ok(None) };
    let user = match cfg.enroll_users.first().and_then(|u| u.split_once(':')) {
        Some((u, p)) => (u.to_owned(), p.to_owned()),
        None => {
            cfg.enroll_users.push(format!("{}:{}", DEMO_USER.0, DEMO_USER.1));
            (DEMO_USER.0.to_owned(), DEMO_USER.1.to_owned())
        }
    };
    // Every demo device enrolls from this host: room for them in the per-source budget.
    let needed = n.saturating_mul(4).saturating_add(100);
    if cfg.limits.enroll_per_source != 0 && cfg.limits.enroll_per_source < needed {
        cfg.limits.enroll_per_source = needed;
    }
    if cfg.listen.parse::<std::net::SocketAddr>().map_or(true, |a| !a.ip().is_loopback()) {
        tracing::warn!(listen = %cfg.listen, user = %user.0, "--demo listens beyond this machine: anyone who reaches it can enroll with the demo's credentials (use --listen 127.0.0.1:PORT, as `make demo` does)");
    }
    let push_ca = crate::sim::pki::test_ca("mdmd demo push CA (not Apple)").context("demo: the push CA")?;
    let standin = StandIn::start("127.0.0.1:0", vec![push_ca.cert.clone()])
        .await
        .context("demo: starting the APNs stand-in")?;
    super::ensure_dir(&cfg.data_dir)?;
    let ca_path = cfg.data_dir.join("demo-apns-standin.pem");
    std::fs::write(&ca_path, standin.server_cert.to_pem()?).with_context(|| format!("writing {}", ca_path.display()))?;
    cfg.apns_url = Some(standin.url());
    cfg.apns_ca = Some(ca_path);
    tracing::warn!(
        devices = n,
        apns = %standin.url(),
        "DEMO MODE (--demo): simulated iPhones, an APNs stand-in and a throwaway push certificate; not for real devices"
    );
    Ok(Some(Demo {
        devices: n as usize,
        user,
        standin: Arc::new(standin),
        push_ca,
        stats: Arc::new(FleetStats::default()),
    }))
}

impl Demo {
    /// After the server is built, before it serves: check that the store is
    /// the demo's, set the push certificate, and start enrolling the devices
    /// (they reach the listener as soon as it accepts). Returns the UDIDs.
    pub async fn start(&self, app: Arc<App>, cfg: &ServeConfig) -> anyhow::Result<Vec<String>> {
        let store = app.mdm.store.clone();
        let own: Vec<String> = match store.setting(DEVICES_SETTING).await? {
            Some(s) => serde_json::from_slice(&s.value).context("demo: the stored device list")?,
            None => Vec::new(),
        };
        let mut foreign = Vec::new();
        let mut after = None;
        loop {
            let page = store.enrollments(after.clone(), 1000).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            foreign.extend(page.into_iter().filter(|e| !own.contains(&e.device)).map(|e| e.id));
        }
        if let Some(first) = foreign.first() {
            anyhow::bail!(
                "--demo refuses to start: the store holds {} enrollment(s) that are not the demo's (e.g. {first}). \
                 The demo enrolls simulated devices and sets a throwaway push certificate; give it a data dir of its \
                 own (`make demo`: --data-dir ./demo-data --certs-dir ./demo-certs) and no --database-url of a real installation",
                foreign.len()
            );
        }
        if let Some(pc) = app.pusher.client.identity() {
            if !pc.subject().contains(PUSH_CN) {
                anyhow::bail!(
                    "--demo refuses to start: a push certificate is set ({}, topic {}) that is not the demo's; \
                     give the demo a data dir and certs dir of its own",
                    pc.subject(),
                    pc.topic
                );
            }
        }

        // A push certificate for the topic devices enroll with, from the CA the stand-in trusts.
        let topic = app.mdm.topic.get();
        let (ca, t) = (self.push_ca.clone(), topic.clone());
        let id = tokio::task::spawn_blocking(move || crate::sim::pki::issue_push_cert(&ca, &t, PUSH_CN, 365)).await??;
        let mut pem = id.cert.to_pem()?;
        pem.extend(id.key.private_key_to_pem_pkcs8()?);
        let pc = crate::push::cert::PushCert::from_pem(&pem, None).map_err(|e| anyhow::anyhow!("demo push certificate: {e}"))?;
        app.pusher
            .set_certificate(pc, false)
            .await
            .map_err(|e| anyhow::anyhow!("demo: setting the push certificate: {e}"))?;

        // The same UDIDs as last time (checked out: those simulated devices are gone), then new ones.
        let now = crate::clock::now();
        for id in &own {
            store.checkout(id, now).await?;
        }
        let mut udids: Vec<String> = own.iter().take(self.devices).cloned().collect();
        while udids.len() < self.devices {
            udids.push(crate::sim::random_udid());
        }
        let mut keep = own.clone();
        keep.extend(udids.iter().filter(|u| !own.contains(u)).cloned());
        store
            .put_setting(DEVICES_SETTING, serde_json::to_vec(&keep)?, now)
            .await
            .context("demo: storing the device list")?;

        let trust = app.pki.ca.cert.to_pem()?;
        let http = crate::sim::http_client_trusting(Some(&trust))?;
        let enroll = Enrolling {
            http,
            url: format!("{}/mdm/enroll", cfg.public_url()),
            user: self.user.clone(),
            standin: self.standin.clone(),
            stats: self.stats.clone(),
        };
        let (base, cli, list) = (cfg.public_url(), cli_env(cfg), udids.clone());
        tokio::spawn(async move {
            let ok = enroll.all(&list).await;
            tracing::warn!(
                enrolled = ok,
                of = list.len(),
                "DEMO MODE: simulated iPhones enrolled and listening for pushes"
            );
            println!("{}", ready_banner(&base, &cli, &list, ok));
        });
        Ok(udids)
    }

    /// What is printed right after the listening line.
    pub fn banner(&self, cfg: &ServeConfig) -> String {
        format!(
            "=== DEMO MODE (--demo {n}) ===\n\
             This is a demo, not a deployment: {n} simulated iPhones (no real devices) enroll over HTTPS as {user},\n\
             woken by an APNs stand-in on {apns} with a throwaway push certificate (nothing reaches Apple).\n\
             Keep this data dir for the demo only. Enrolling now; list them with `mdmd devices`.\n\
             console: {base}/ui/",
            n = self.devices,
            user = self.user.0,
            apns = self.standin.url(),
            base = cfg.public_url(),
        )
    }
}

/// What the demo's devices enroll with.
struct Enrolling {
    http: reqwest::Client,
    url: String,
    user: (String, String),
    standin: Arc<StandIn>,
    stats: Arc<FleetStats>,
}

impl Enrolling {
    /// Enroll every device (a few at once, each retried): how many made it.
    async fn all(self, udids: &[String]) -> usize {
        let keys = match tokio::task::spawn_blocking(|| crate::sim::load::key_pool(4)).await {
            Ok(Ok(k)) => k,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "demo: cannot make keys for the simulated iPhones");
                return 0;
            }
            Err(e) => {
                tracing::error!(error = %e, "demo: cannot make keys for the simulated iPhones");
                return 0;
            }
        };
        let me = Arc::new(self);
        let sem = Arc::new(tokio::sync::Semaphore::new(ENROLL_CONCURRENCY));
        let mut joins = Vec::new();
        for (i, udid) in udids.iter().enumerate() {
            let (me, sem, udid, key) = (me.clone(), sem.clone(), udid.clone(), keys[i % keys.len()].clone());
            joins.push(tokio::spawn(async move {
                let Ok(_permit) = sem.acquire_owned().await else { return false };
                for attempt in 0..5u64 {
                    if attempt > 0 {
                        tokio::time::sleep(std::time::Duration::from_secs(attempt)).await;
                    }
                    match me.one(&udid, i + 1, key.clone()).await {
                        Ok(()) => return true,
                        Err(e) => tracing::warn!(%udid, attempt, error = %format!("{e:#}"), "demo: a simulated iPhone did not enroll"),
                    }
                }
                false
            }));
        }
        let mut ok = 0;
        for j in joins {
            if matches!(j.await, Ok(true)) {
                ok += 1;
            }
        }
        ok
    }

    /// One simulated iPhone: profile (basic auth), SCEP, its push token
    /// registered with the stand-in before Authenticate and TokenUpdate (no
    /// push is lost), the commands queued meanwhile answered, then it answers
    /// every push.
    async fn one(&self, udid: &str, number: usize, key: openssl::pkey::PKey<openssl::pkey::Private>) -> anyhow::Result<()> {
        let der = crate::sim::download_profile(&self.http, &self.url, Some((&self.user.0, &self.user.1))).await?;
        let mut d = if crate::sim::pki::is_profile_service(&der) {
            crate::sim::SimDevice::from_profile_service(self.http.clone(), &der, key, None, Some(udid)).await?
        } else {
            let mut d = crate::sim::SimDevice::from_profile(self.http.clone(), &der, Some(key)).await?;
            d.udid = udid.to_owned();
            d
        };
        d.name = format!("Demo iPhone {number}");
        let wakes = self.standin.register(&hex::encode(&d.token), &d.topic);
        d.enroll().await?;
        d.session().await?;
        crate::sim::fleet::answer_pushes(d, wakes, self.stats.clone());
        Ok(())
    }
}

/// The environment the CLI needs for this server (its URL, CA and key).
fn cli_env(cfg: &ServeConfig) -> String {
    let key = match &cfg.api_key {
        Some(k) if !k.trim().is_empty() => "<the --api-key you gave>".to_owned(),
        _ => format!("\"$(cat {})\"", cfg.data_dir.join("api-key").display()),
    };
    format!(
        "export MDMD_SERVER={} MDMD_TRUST_CA={} MDMD_API_KEY={key}",
        cfg.public_url(),
        cfg.certs_dir.join("ca.pem").display()
    )
}

/// Printed once the devices have enrolled: their UDIDs and three things to try.
fn ready_banner(base: &str, cli: &str, udids: &[String], ok: usize) -> String {
    let first = udids.first().map(String::as_str).unwrap_or("<UDID>");
    let mut s = format!("=== DEMO: {ok} of {} simulated iPhones enrolled and online ===\n", udids.len());
    for u in udids {
        s.push_str(&format!("  {u}\n"));
    }
    if ok < udids.len() {
        s.push_str("  (some did not enroll: the log says why; `mdmd devices` lists those that did)\n");
    }
    s.push_str(&format!(
        "console: {base}/ui/ (sign in as admin with the API key)\n\
         Try, in another terminal (the binary is target/release/mdmd):\n\
         \x20 {cli}\n\
         \x20 mdmd devices\n\
         \x20 mdmd cmd device-info {first}        # prints the command's UUID\n\
         \x20 mdmd cmd show <UUID>                # Acknowledged, with the device's answer\n\
         \x20 mdmd profiles add profiles/webclip.mobileconfig && mdmd profiles install com.example.mdmd.webclip -t {first}\n\
         \x20 mdmd devices profiles {first}\n\
         === this is a demo: simulated devices, a throwaway push certificate ==="
    ));
    s
}

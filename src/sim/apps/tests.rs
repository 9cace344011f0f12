//! A simulated device installing apps against the Apps and Books stand-in
//! (in process) and an https file server: what its lists then say.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use hyper_util::rt::TokioIo;

use super::*;
use crate::sim::vpp_api::VppStandIn;
use crate::vpp::{ContentToken, VppClient};

fn http(trust: Option<&openssl::x509::X509>) -> reqwest::Client {
    let mut b = reqwest::Client::builder().pool_max_idle_per_host(0);
    if let Some(ca) = trust {
        b = b.add_root_certificate(reqwest::Certificate::from_der(&ca.to_der().unwrap()).unwrap());
    }
    b.build().unwrap()
}

fn device(store: Option<&VppStandIn>, trust: Option<&openssl::x509::X509>) -> SimDevice {
    let mut dev = SimDevice::new("https://127.0.0.1:1", "com.apple.mgmt.test", http(trust));
    dev.app_store = store.map(VppStandIn::url);
    dev
}

fn command(pairs: Vec<(&str, Value)>) -> Command {
    Command::new(d(pairs)).unwrap()
}

fn store_install(adam_id: i64, purchase_method: Option<i64>) -> Command {
    let mut pairs = vec![
        ("RequestType", Value::from("InstallApplication")),
        ("iTunesStoreID", adam_id.into()),
        ("ManagementFlags", 1.into()),
    ];
    if let Some(p) = purchase_method {
        pairs.push(("Options", Value::Dictionary(d(vec![("PurchaseMethod", p.into())]))));
    }
    command(pairs)
}

/// The answer's keys, `Acknowledged` required.
fn ok(dev: &mut SimDevice, cmd: &Command) -> Dictionary {
    let (status, r) = dev.answer(cmd);
    assert_eq!(status, Status::Acknowledged, "{r:?}");
    r
}

fn managed(dev: &mut SimDevice) -> Dictionary {
    let r = ok(dev, &command(vec![("RequestType", "ManagedApplicationList".into())]));
    r["ManagedApplicationList"].as_dictionary().unwrap().clone()
}

fn installed_ids(dev: &mut SimDevice, managed_only: bool) -> Vec<String> {
    let r = ok(
        dev,
        &command(vec![
            ("RequestType", "InstalledApplicationList".into()),
            ("ManagedAppsOnly", managed_only.into()),
        ]),
    );
    r["InstalledApplicationList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_dictionary().unwrap()["Identifier"].as_string().unwrap().to_owned())
        .collect()
}

/// Give `serial` a licence of `adam_id` as the server would, through Apple's API.
async fn associate(apple: &VppStandIn, adam_id: &str, serial: &str) {
    apple.set_event_delay(0);
    let token = ContentToken::parse(apple.token_file().as_bytes()).unwrap();
    let client = VppClient::new(&apple.url(), token, http(None)).unwrap();
    for e in client.associate(adam_id, "STDQ", &[serial.to_owned()]).await.unwrap() {
        client.wait_event(&e, std::time::Duration::from_secs(5)).await.unwrap();
    }
    assert!(apple.assigned(adam_id, serial));
}

#[tokio::test]
async fn a_store_app_needs_a_licence() {
    let apple = VppStandIn::start("Example Org").await.unwrap();
    apple.add_app("361309726", 5);
    apple.set_app_meta("361309726", "Pages", "com.apple.Pages", "13.1");
    let mut dev = device(Some(&apple), None);

    // No licence: acknowledged and queued, then Failed; nothing installed.
    let r = ok(&mut dev, &store_install(361309726, Some(1)));
    assert_eq!(r["State"].as_string(), Some("Queued"));
    assert_eq!(r["Identifier"].as_string(), Some("store.361309726"));
    assert_eq!(
        managed(&mut dev)["store.361309726"].as_dictionary().unwrap()["Status"].as_string(),
        Some("Queued")
    );
    dev.settle_apps().await;
    let list = managed(&mut dev);
    let app = list["com.apple.Pages"].as_dictionary().unwrap();
    assert_eq!(app["Status"].as_string(), Some("Failed"), "{list:?}");
    assert_eq!(app["IsValidated"].as_boolean(), Some(false));
    assert!(dev.apps["com.apple.Pages"].failure.as_deref().unwrap().contains("no licence"));
    assert!(!installed_ids(&mut dev, true).contains(&"com.apple.Pages".to_owned()));
    assert_eq!(apple.stats().calls["GET /sim/licence"], 1);

    // With the licence: Managed, the store's bundle id and version.
    associate(&apple, "361309726", &dev.serial).await;
    let r = ok(&mut dev, &store_install(361309726, Some(1)));
    assert_eq!(r["Identifier"].as_string(), Some("com.apple.Pages"));
    dev.settle_apps().await;
    let a = &dev.apps["com.apple.Pages"];
    assert_eq!(
        (a.status.as_str(), a.version.as_str(), a.name.as_str()),
        ("Managed", "13.1", "Pages")
    );
    assert_eq!((a.adam_id, a.management_flags), (Some(361309726), 1));
    assert_eq!(dev.apps.len(), 1, "{:?}", dev.apps.keys());
    let list = managed(&mut dev);
    let app = list["com.apple.Pages"].as_dictionary().unwrap();
    assert_eq!(app["Status"].as_string(), Some("Managed"));
    assert!(app["ExternalVersionIdentifier"].as_signed_integer().unwrap() > 0);
    assert_eq!(installed_ids(&mut dev, true), ["com.apple.Pages"]);
    let all = installed_ids(&mut dev, false);
    assert!(all.len() == 4 && all.contains(&"com.apple.Keynote".to_owned()), "{all:?}");
    let r = ok(
        &mut dev,
        &command(vec![
            ("RequestType", "InstalledApplicationList".into()),
            ("Identifiers", Value::Array(vec!["com.apple.Pages".into()])),
        ]),
    );
    let item = r["InstalledApplicationList"].as_array().unwrap()[0]
        .as_dictionary()
        .unwrap()
        .clone();
    assert_eq!(item["ShortVersion"].as_string(), Some("13.1"));
    assert_eq!(item["AppStoreVendable"].as_boolean(), Some(true));
    assert_eq!(item["Installing"].as_boolean(), Some(false));

    // A new version in the store: installing again updates.
    apple.set_app_meta("361309726", "Pages", "com.apple.Pages", "14.0");
    ok(&mut dev, &store_install(361309726, Some(1)));
    dev.settle_apps().await;
    assert_eq!(dev.apps["com.apple.Pages"].version, "14.0");

    // Removal.
    ok(
        &mut dev,
        &command(vec![
            ("RequestType", "RemoveApplication".into()),
            ("Identifier", "com.apple.Pages".into()),
        ]),
    );
    assert!(dev.apps.is_empty());
    let (status, _) = dev.answer(&command(vec![
        ("RequestType", "RemoveApplication".into()),
        ("Identifier", "com.apple.Pages".into()),
    ]));
    assert_eq!(status, Status::Error);
}

#[tokio::test]
async fn without_a_device_licence_or_a_store_it_fails() {
    let apple = VppStandIn::start("Example Org").await.unwrap();
    apple.add_app("408709785", 5);
    let mut dev = device(Some(&apple), None);
    associate(&apple, "408709785", &dev.serial).await;
    // Licensed, but not asked to use the device licence: the user would be asked to sign in.
    let config = d(vec![("server", "https://example.com".into())]);
    let mut cmd = store_install(408709785, None);
    cmd.command.insert("Configuration".into(), Value::Dictionary(config.clone()));
    ok(&mut dev, &cmd);
    // Queued: the configuration is there, as the device keeps it for the app.
    assert_eq!(dev.apps["store.408709785"].config.as_ref(), Some(&config));
    dev.settle_apps().await;
    let a = &dev.apps["store.408709785"];
    assert_eq!((a.status.as_str(), a.config.is_none()), ("Failed", true));
    assert!(a.failure.as_deref().unwrap().contains("PurchaseMethod"));
    assert_eq!(apple.stats().calls.get("GET /sim/licence"), None);
    // The next install of it replaces the failure.
    ok(&mut dev, &store_install(408709785, Some(1)));
    assert_eq!(dev.apps["store.408709785"].status, "Queued");
    dev.settle_apps().await;
    assert_eq!(dev.apps["com.example.app408709785"].status, "Managed");
    assert!(!dev.apps.contains_key("store.408709785"));

    // No store at all.
    let mut alone = device(None, None);
    ok(&mut alone, &store_install(408709785, Some(1)));
    alone.settle_apps().await;
    assert_eq!(alone.apps["store.408709785"].status, "Failed");
    // An Identifier the store contradicts.
    let mut dev2 = device(Some(&apple), None);
    associate(&apple, "408709785", &dev2.serial).await;
    let mut cmd = store_install(408709785, Some(1));
    cmd.command.insert("Identifier".into(), "com.example.other".into());
    ok(&mut dev2, &cmd);
    dev2.settle_apps().await;
    assert_eq!(dev2.apps["com.example.other"].status, "Failed");
    assert!(installed_ids(&mut dev2, true).is_empty());
}

/// An https server on loopback answering the files `make` lists (path →
/// status, body) given the server's own base URL.
async fn file_server(make: impl FnOnce(&str) -> HashMap<String, (u16, Vec<u8>)>) -> (String, openssl::x509::X509) {
    use openssl::ssl::{SslAcceptor, SslMethod};
    let (cert, key) = crate::sim::apns::loopback_server_cert().unwrap();
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
    b.set_certificate(&cert).unwrap();
    b.set_private_key(&key).unwrap();
    let acceptor = Arc::new(b.build());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let files = Arc::new(make(&base));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, files) = (acceptor.clone(), files.clone());
            tokio::spawn(async move {
                let ssl = openssl::ssl::Ssl::new(acceptor.context()).unwrap();
                let mut tls = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
                if std::pin::Pin::new(&mut tls).accept().await.is_err() {
                    return;
                }
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let files = files.clone();
                    async move {
                        let (status, body) = files.get(req.uri().path()).cloned().unwrap_or((404, Vec::new()));
                        Ok::<_, std::convert::Infallible>(Response::builder().status(status).body(Full::new(Bytes::from(body))).unwrap())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (base, cert)
}

fn manifest_install(url: &str) -> Command {
    command(vec![("RequestType", "InstallApplication".into()), ("ManifestURL", url.into())])
}

#[tokio::test]
async fn an_in_house_app_from_its_manifest() {
    use crate::protocol::ipa;
    let field = ipa::build_ipa("com.example.field", "2.1", "Field");
    let info = ipa::read_ipa(std::io::Cursor::new(&field), field.len() as u64).unwrap();
    let other = ipa::build_ipa("com.example.other", "1.0", "Other");
    let (base, cert) = file_server(|base| {
        let mut files = HashMap::new();
        files.insert("/field.ipa".to_owned(), (200, field.clone()));
        files.insert("/other.ipa".to_owned(), (200, other));
        files.insert("/junk.ipa".to_owned(), (200, b"not a zip".to_vec()));
        // Manifests: the app, one naming com.example.field but serving
        // another app, one serving something that is not an app.
        for (name, ipa) in [("field", "field"), ("liar", "other"), ("junk", "junk")] {
            files.insert(format!("/{name}.plist"), (200, ipa::manifest(&info, &format!("{base}/{ipa}.ipa"))));
        }
        files
    })
    .await;
    let mut dev = device(None, Some(&cert));

    ok(&mut dev, &manifest_install(&format!("{base}/field.plist")));
    assert_eq!(dev.apps["manifest.field.plist"].status, "Queued");
    dev.settle_apps().await;
    let a = &dev.apps["com.example.field"];
    assert_eq!((a.status.as_str(), a.version.as_str(), a.adam_id), ("Managed", "2.1", None));
    assert_eq!(a.bundle_size, field.len() as u64);
    assert_eq!(
        dev.fetches,
        [(format!("{base}/field.plist"), 200), (format!("{base}/field.ipa"), 200)]
    );
    let r = ok(
        &mut dev,
        &command(vec![
            ("RequestType", "InstalledApplicationList".into()),
            ("ManagedAppsOnly", true.into()),
        ]),
    );
    let item = r["InstalledApplicationList"].as_array().unwrap()[0]
        .as_dictionary()
        .unwrap()
        .clone();
    assert_eq!(item["AppStoreVendable"].as_boolean(), Some(false));
    assert_eq!(item["Name"].as_string(), Some("Field"));

    // A manifest that is missing, one whose app is not the one it names, one that is not an app.
    for (path, why) in [
        ("/missing.plist", "HTTP 404"),
        ("/liar.plist", "but the app is com.example.other"),
        ("/junk.plist", "not an iOS app archive"),
    ] {
        dev.fetches.clear();
        ok(&mut dev, &manifest_install(&format!("{base}{path}")));
        dev.settle_apps().await;
        let key = format!("manifest.{}", path.trim_start_matches('/'));
        let a = &dev.apps[&key];
        assert_eq!(a.status, "Failed", "{path}");
        assert!(a.failure.as_deref().unwrap().contains(why), "{path}: {:?}", a.failure);
        assert_eq!(
            dev.fetches[0],
            (format!("{base}{path}"), if path == "/missing.plist" { 404 } else { 200 })
        );
    }
    // Not https: refused at once.
    let (status, _) = dev.answer(&manifest_install("http://127.0.0.1:1/a.plist"));
    assert_eq!(status, Status::Error);
    // Still exactly one app installed.
    assert_eq!(installed_ids(&mut dev, true), ["com.example.field"]);
}

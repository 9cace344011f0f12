//! The web console in a real browser: Debian's chromium driven through chromedriver (WebDriver,
//! `fantoccini`), against a real mdmd on 127.0.0.1 and a simulated iPhone that enrolls through an
//! invitation made in the console. Screenshots of the main pages go to `target/console-*.png`.
//! Without chromium and chromedriver the browser test is skipped, unless
//! `MDMD_TEST_REQUIRE_BROWSER=1` (CI installs them and sets it).

mod common;

use common::{Server, API_KEY};
use fantoccini::{Client, Locator};
use serde_json::json;

use common::browser::{browser, browser_available, click_then, start_driver};

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("console-{name}.png")), png).unwrap();
}

async fn sign_in(c: &Client, base: &str, name: &str, secret: &str) {
    c.goto(&format!("{base}/ui/")).await.unwrap();
    // Not signed in: the sign-in form.
    assert!(c.current_url().await.unwrap().path().starts_with("/ui/login"));
    c.find(Locator::Id("name")).await.unwrap().send_keys(name).await.unwrap();
    c.find(Locator::Id("secret")).await.unwrap().send_keys(secret).await.unwrap();
    // The sign-in page has neither navigation nor a message: wait for the page that follows.
    click_then(c, "button[type=submit]", "header, .flash.error").await;
}

/// Upload a file on the profiles page and wait for the message about it.
async fn upload(c: &Client, base: &str, file: &std::path::Path) {
    c.goto(&format!("{base}/ui/profiles")).await.unwrap();
    let input = c.find(Locator::Id("file")).await.unwrap();
    input.send_keys(file.to_str().unwrap()).await.unwrap();
    click_then(c, "form.upload button", ".flash").await;
}

async fn h1(c: &Client) -> String {
    c.find(Locator::Css("h1")).await.unwrap().text().await.unwrap()
}

async fn source(c: &Client) -> String {
    c.source().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_real_browser() {
    if !browser_available() {
        return;
    }
    let srv = Server::start();
    let driver = start_driver().await;
    let c = browser(&driver, 1280).await;
    let base = srv.base.clone();

    // A wrong secret: refused, still on the sign-in page.
    sign_in(&c, &base, "admin", "wrong").await;
    assert!(source(&c).await.contains("Wrong name or secret"));
    // The admin API key signs in as admin.
    sign_in(&c, &base, "admin", API_KEY).await;
    assert_eq!(h1(&c).await, "Dashboard");

    // An invitation made in the console, shown with its QR code.
    c.goto(&format!("{base}/ui/enrollment")).await.unwrap();
    click_then(&c, "form[action='/ui/enrollment/invitations'] button", "#invitation-url").await;
    let link = c.find(Locator::Id("invitation-url")).await.unwrap();
    let url = link.attr("href").await.unwrap().expect("invitation href");
    assert!(c.find(Locator::Css("img.qr")).await.is_ok());
    shot(&c, "enrollment").await;

    // A simulated iPhone enrolls through it (profile, SCEP, Authenticate, TokenUpdate).
    let client = srv.client();
    let der = mdmd::sim::download_profile(&client, &url, None)
        .await
        .expect("profile through the invitation");
    let mut dev = mdmd::sim::SimDevice::from_profile(client.clone(), &der, Some(common::pool_key()))
        .await
        .expect("SCEP");
    dev.enroll().await.expect("enroll");
    dev.session().await.expect("first session");

    // Found in the list by its UDID and by its serial, opened by its link.
    c.goto(&format!("{base}/ui/devices?q={}", dev.udid)).await.unwrap();
    let href = format!("/ui/devices/{}", dev.udid);
    let href_css = format!("a[href='{href}']");
    c.find(Locator::Css(&format!("a[href='{href}']")))
        .await
        .expect("device in the search result");
    // By its reported name, its OS and a recent check-in; not among the stale ones.
    let link = Locator::Css(&href_css);
    for q in [format!("q={}", dev.name), "os=18&seen=1".into(), "os=18.1".into()] {
        c.goto(&format!("{base}/ui/devices?{q}")).await.unwrap();
        assert!(c.find(link).await.is_ok(), "found with {q}");
    }
    for q in ["seen=stale7", "os=17"] {
        c.goto(&format!("{base}/ui/devices?{q}")).await.unwrap();
        assert!(c.find(link).await.is_err(), "not found with {q}");
    }
    c.goto(&format!("{base}/ui/devices")).await.unwrap();
    shot(&c, "devices").await;
    click_then(&c, &format!("a[href='{href}']"), "section.actions").await;
    assert_eq!(c.current_url().await.unwrap().path(), href);
    assert!(source(&c).await.contains(&dev.udid));

    // DeviceInformation from the page; the device answers; its answer is on the page.
    click_then(&c, "form input[name=action][value=information] ~ button", ".flash.ok").await;
    assert!(source(&c).await.contains("DeviceInformation queued"));
    dev.session().await.expect("session");
    c.goto(&format!("{base}{href}")).await.unwrap();
    let page = source(&c).await;
    assert!(page.contains("Acknowledged"), "the result's status is shown");
    assert!(page.contains("QueryResponses"), "the answer is shown decoded");
    assert!(page.contains(&dev.name), "the device's own name, from its answer");
    assert_eq!(h1(&c).await, dev.name, "the page is titled with the reported name");
    shot(&c, "device").await;

    // Erase needs the device's name typed: a wrong one queues nothing.
    c.find(Locator::Id("erase-confirm"))
        .await
        .unwrap()
        .send_keys("not it")
        .await
        .unwrap();
    click_then(&c, "form input[name=action][value=erase] ~ button", ".flash.error").await;
    assert!(source(&c).await.contains("Not erased"));

    // Profiles: a bad upload shows its problem; a good one is listed.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.mobileconfig");
    std::fs::write(&bad, b"this is not a plist").unwrap();
    upload(&c, &base, &bad).await;
    let page = source(&c).await;
    assert!(page.contains("flash error"), "{page}");
    let wifi = common::template(
        "com.example.console.wifi",
        "<dict><key>PayloadType</key><string>com.apple.wifi.managed</string><key>PayloadIdentifier</key><string>com.example.console.wifi.p</string><key>PayloadUUID</key><string>6A9F3D5E-1111-4222-8333-944455556666</string><key>PayloadVersion</key><integer>1</integer><key>SSID_STR</key><string>Corp</string><key>AutoJoin</key><string>yes</string></dict>",
    );
    let badkey = dir.path().join("badkey.mobileconfig");
    std::fs::write(&badkey, &wifi).unwrap();
    upload(&c, &base, &badkey).await;
    let page = source(&c).await;
    assert!(page.contains("AutoJoin"), "the problem is shown next to its key: {page}");
    shot(&c, "profile-problems").await;
    let good = dir.path().join("good.mobileconfig");
    std::fs::write(
        &good,
        common::template(
            "com.example.console.wifi",
            "<dict><key>PayloadType</key><string>com.apple.wifi.managed</string><key>PayloadIdentifier</key><string>com.example.console.wifi.p</string><key>PayloadUUID</key><string>6A9F3D5E-1111-4222-8333-944455556666</string><key>PayloadVersion</key><integer>1</integer><key>SSID_STR</key><string>Corp</string><key>AutoJoin</key><true/></dict>",
        ),
    )
    .unwrap();
    upload(&c, &base, &good).await;
    assert!(source(&c).await.contains("Uploaded"));
    assert_eq!(c.current_url().await.unwrap().path(), "/ui/profiles/com.example.console.wifi");

    // Certificates: the device's identity is listed.
    c.goto(&format!("{base}/ui/certificates")).await.unwrap();
    assert!(source(&c).await.contains(&dev.udid));
    shot(&c, "certificates").await;
    c.goto(&format!("{base}/ui/")).await.unwrap();
    assert!(
        source(&c).await.contains("<p class=\"big\">1</p>"),
        "one enrolled device on the dashboard"
    );
    assert!(
        source(&c).await.contains("1 enrolled and 1 checked in within 30 days"),
        "the chart counts it"
    );
    let page = source(&c).await;
    assert!(
        page.contains(" acknowledged (this instance)") && !page.contains(">0 acknowledged"),
        "the device's results are counted"
    );
    assert!(page.contains("no receivers configured"), "webhooks are off here");
    shot(&c, "dashboard").await;

    // At phone width the device page still works.
    let phone = browser(&driver, 390).await;
    sign_in(&phone, &base, "admin", API_KEY).await;
    phone.goto(&format!("{base}{href}")).await.unwrap();
    assert_eq!(h1(&phone).await, dev.name);
    shot(&phone, "device-phone").await;
    phone.close().await.unwrap();

    // Sign-out ends the session.
    click_then(&c, "form.who button", "#secret").await;
    c.goto(&format!("{base}/ui/devices")).await.unwrap();
    assert!(c.current_url().await.unwrap().path().starts_with("/ui/login"));

    // A read-only account sees the device but no action.
    let viewer = srv
        .admin()
        .post("/v1/accounts", json!({"name": "viewer", "role": "read-only"}))
        .await
        .expect("account");
    let secret = viewer["secret"].as_str().unwrap().to_owned();
    sign_in(&c, &base, "viewer", &secret).await;
    c.goto(&format!("{base}{href}")).await.unwrap();
    assert_eq!(h1(&c).await, dev.name);
    assert!(c.find(Locator::Css("section.actions")).await.is_err(), "no actions for read-only");
    c.close().await.unwrap();
}

/// The sign-in flow over plain HTTP(S) requests: (session cookie, CSRF token of its pages).
async fn session(srv: &Server, name: &str, secret: &str) -> (reqwest::Client, String, String) {
    let pem = std::fs::read(srv.certs_dir().join("ca.pem")).unwrap();
    let http = mdmd::sim::http_client_builder(Some(&pem))
        .unwrap()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let form = http.get(format!("{}/ui/login", srv.base)).send().await.unwrap();
    let login_cookie = cookie(&form, "mdmd_ui_login");
    let html = form.text().await.unwrap();
    let token = between(&html, "name=\"csrf\" value=\"", "\"");
    let r = http
        .post(format!("{}/ui/login", srv.base))
        .header("cookie", format!("mdmd_ui_login={login_cookie}"))
        .form(&[("csrf", token.as_str()), ("name", name), ("secret", secret), ("next", "/ui/")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let sess = cookie(&r, "mdmd_ui");
    let page = http
        .get(format!("{}/ui/", srv.base))
        .header("cookie", format!("mdmd_ui={sess}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("default-src 'none'") && !csp.contains("script-src"), "{csp}");
    let html = page.text().await.unwrap();
    (http, sess, between(&html, "name=\"csrf\" value=\"", "\""))
}

/// A console form posted with a session cookie (redirects not followed).
async fn post_form<T: serde::Serialize + ?Sized>(
    http: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    session: &str,
    form: &T,
) -> reqwest::Response {
    http.post(url)
        .header("cookie", format!("mdmd_ui={session}"))
        .form(form)
        .send()
        .await
        .unwrap()
}

/// A console page's HTML, with a session cookie.
async fn get_page(http: &reqwest::Client, url: &str, session: &str) -> String {
    let r = http.get(url).header("cookie", format!("mdmd_ui={session}")).send().await.unwrap();
    r.text().await.unwrap()
}

fn cookie(r: &reqwest::Response, name: &str) -> String {
    for v in r.headers().get_all("set-cookie") {
        let v = v.to_str().unwrap();
        if let Some(rest) = v.strip_prefix(&format!("{name}=")) {
            for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Max-Age="] {
                assert!(v.contains(flag), "{v}");
            }
            return rest.split(';').next().unwrap().to_owned();
        }
    }
    panic!("no {name} cookie");
}

fn between(s: &str, a: &str, b: &str) -> String {
    let start = s.find(a).expect(a) + a.len();
    s[start..][..s[start..].find(b).unwrap()].to_owned()
}

/// No browser needed: CSRF, roles and rate limits, checked on the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_refuses_forged_forms_and_read_only_actions() {
    let srv = Server::start();
    let dev = srv.enrolled().await;
    let (http, sess, csrf) = session(&srv, "admin", API_KEY).await;
    let action = format!("{}/ui/devices/{}/actions", srv.base, dev.udid);
    let before = srv.admin().get(&format!("/v1/devices/{}/commands", dev.udid)).await.unwrap()["commands"]
        .as_array()
        .unwrap()
        .len();
    // Without the token, or with another: 403, not a redirect, and nothing queued.
    for form in [vec![("action", "information")], vec![("action", "information"), ("csrf", "forged")]] {
        let r = post_form(&http, &action, &sess, &form).await;
        assert_eq!(r.status(), 403);
    }
    // Without a session: 403 too.
    let r = http
        .post(&action)
        .form(&[("action", "information"), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let after = |n: usize| {
        let srv = &srv;
        let udid = dev.udid.clone();
        async move {
            let list = srv.admin().get(&format!("/v1/devices/{udid}/commands")).await.unwrap();
            assert_eq!(list["commands"].as_array().unwrap().len(), n);
        }
    };
    after(before).await;
    // With it: queued.
    let r = post_form(&http, &action, &sess, &[("action", "information"), ("csrf", csrf.as_str())]).await;
    assert_eq!(r.status(), 303);
    assert!(r.headers()["location"].to_str().unwrap().contains("done="));
    after(before + 1).await;

    // A read-only account with a valid token still cannot act: the API's role check refuses.
    let viewer = srv
        .admin()
        .post("/v1/accounts", json!({"name": "ro", "role": "read-only"}))
        .await
        .unwrap();
    let (http2, sess2, csrf2) = session(&srv, "ro", viewer["secret"].as_str().unwrap()).await;
    let r = post_form(&http2, &action, &sess2, &[("action", "lock"), ("csrf", csrf2.as_str())]).await;
    assert!(
        r.headers()["location"].to_str().unwrap().contains("error="),
        "refused with its reason"
    );
    after(before + 1).await;
    let page = get_page(&http2, &format!("{}/ui/devices/{}", srv.base, dev.udid), &sess2).await;
    assert!(page.contains(&dev.udid) && !page.contains("Actions"));

    // Deleting the account ends its console session.
    let (st, _) = srv.admin().call(reqwest::Method::DELETE, "/v1/accounts/ro", None).await.unwrap();
    assert_eq!(st, 200);
    let r = http2
        .get(format!("{}/ui/devices/{}", srv.base, dev.udid))
        .header("cookie", format!("mdmd_ui={sess2}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(r.headers()["location"].to_str().unwrap().starts_with("/ui/login"));

    // The device's identity certificate is in its API view (and so on its page).
    let admin = srv.admin();
    let view = admin.get(&format!("/v1/devices/{}", dev.udid)).await.unwrap();
    let serial = view["identity_certificate"]["serial"].as_str().expect("identity serial").to_owned();
    let cert = admin.get(&format!("/v1/certificates/{serial}")).await.unwrap();
    assert_eq!(cert["enrollment"], json!(dev.udid));
    assert_eq!(view["identity_certificate"]["revoked"], json!(false));
    let page = get_page(&http, &format!("{}/ui/devices/{}", srv.base, dev.udid), &sess).await;
    assert!(page.contains(&serial), "the page shows the identity's serial");

    // A profile installed from its page to every device of a set.
    let pc = json!({"Type": "com.apple.configuration.passcode.settings", "Identifier": "pc",
        "Payload": {"RequirePasscode": true}});
    let (st, v) = admin.call(reqwest::Method::PUT, "/v1/declarations", Some(pc)).await.unwrap();
    assert_eq!(st, 200, "{v}");
    for path in [
        "/v1/sets/staff/declarations/pc".to_owned(),
        format!("/v1/devices/{}/sets/staff", dev.udid),
    ] {
        let (st, v) = admin.call(reqwest::Method::PUT, &path, None).await.unwrap();
        assert_eq!(st, 200, "{path}: {v}");
    }
    admin
        .post_bytes(
            "/v1/profiles",
            common::template(
                "com.example.console.set",
                "<dict><key>PayloadType</key><string>com.apple.mobiledevice.passwordpolicy</string><key>PayloadIdentifier</key><string>com.example.console.set.p</string><key>PayloadUUID</key><string>7A9F3D5E-1111-4222-8333-944455556666</string><key>PayloadVersion</key><integer>1</integer><key>allowSimple</key><true/></dict>",
            ),
        )
        .await
        .unwrap();
    let r = post_form(
        &http,
        format!("{}/ui/profiles/com.example.console.set/actions", srv.base),
        &sess,
        &[("action", "install"), ("csrf", csrf.as_str()), ("targets", ""), ("set", "staff")],
    )
    .await;
    let to = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(to.contains("done="), "{to}");
    let state = common::device_profile(&srv, &dev.udid, "com.example.console.set").await;
    assert!(!state.is_null(), "queued to the set's device");

    // Failed sign-ins are limited per address: after ten wrong secrets (--auth-fail-per-source)
    // even the right one waits there (tests/limits.rs: another address still signs in).
    let pem = std::fs::read(srv.certs_dir().join("ca.pem")).unwrap();
    let raw = mdmd::sim::http_client_builder(Some(&pem))
        .unwrap()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let attempt = |secret: String| {
        let raw = raw.clone();
        let base = srv.base.clone();
        async move {
            let form = raw.get(format!("{base}/ui/login")).send().await.unwrap();
            let lc = cookie(&form, "mdmd_ui_login");
            let html = form.text().await.unwrap();
            let token = between(&html, "name=\"csrf\" value=\"", "\"");
            raw.post(format!("{base}/ui/login"))
                .header("cookie", format!("mdmd_ui_login={lc}"))
                .form(&[("csrf", token.as_str()), ("name", "admin"), ("secret", secret.as_str())])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    for _ in 0..10 {
        assert_eq!(attempt("wrong".into()).await, 303);
    }
    assert_eq!(attempt(API_KEY.into()).await, 429);
    // A sign-in form without its token is refused too.
    let r = raw
        .post(format!("{}/ui/login", srv.base))
        .form(&[("name", "admin"), ("secret", API_KEY)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

/// Groups and blueprints pages: what a read-only account sees (members,
/// state per device, the plan), and a NAC account is shown the API's refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_shows_groups_blueprints_and_their_state() {
    let srv = Server::start_with(&["--inventory-interval", "0"]);
    let mut dev = srv.enrolled().await;
    let admin = srv.admin();
    admin
        .call(
            reqwest::Method::PUT,
            "/v1/groups/pilot",
            Some(serde_json::json!({"members": [dev.udid]})),
        )
        .await
        .unwrap();
    admin
        .call(
            reqwest::Method::PUT,
            "/v1/blueprints/pilot-setup",
            Some(serde_json::json!({"groups": ["pilot"], "enrollment_commands": [{"RequestType": "SecurityInfo"}]})),
        )
        .await
        .unwrap();
    // The blueprint's command is queued for the member; the device answers it.
    assert!(
        common::wait_until(std::time::Duration::from_secs(20), || async {
            admin.get(&format!("/v1/devices/{}/commands", dev.udid)).await.unwrap()["commands"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["request_type"] == "SecurityInfo")
        })
        .await
    );
    dev.session().await.unwrap();
    let ro = srv.account("viewer", "read-only");
    let (http, sess, _) = session(&srv, "viewer", &ro).await;
    let groups = get_page(&http, &format!("{}/ui/groups", srv.base), &sess).await;
    assert!(groups.contains("pilot") && groups.contains("static"), "{groups}");
    let group = get_page(&http, &format!("{}/ui/groups/pilot", srv.base), &sess).await;
    assert!(group.contains(&dev.udid) && group.contains("pilot-setup"), "{group}");
    common::wait_until(std::time::Duration::from_secs(20), || async {
        get_page(&http, &format!("{}/ui/blueprints/pilot-setup", srv.base), &sess)
            .await
            .contains("converged")
    })
    .await;
    let bp = get_page(&http, &format!("{}/ui/blueprints/pilot-setup?plan=true", srv.base), &sess).await;
    assert!(bp.contains("converged") && bp.contains(&dev.udid), "{bp}");
    assert!(bp.contains("0 devices affected"), "{bp}");
    let device = get_page(&http, &format!("{}/ui/devices/{}", srv.base, dev.udid), &sess).await;
    assert!(
        device.contains("Groups and blueprints") && device.contains("pilot-setup"),
        "{device}"
    );
    // A NAC account may not read blueprints: the page shows the API's refusal.
    let nac = srv.account("ise", "nac");
    let (http, sess, _) = session(&srv, "ise", &nac).await;
    let page = get_page(&http, &format!("{}/ui/blueprints", srv.base), &sess).await;
    assert!(!page.contains("pilot-setup"), "{page}");
}

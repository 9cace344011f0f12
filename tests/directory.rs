//! The organisation's directory and identity provider: mdmd against a real
//! OpenLDAP slapd (`common::ldap`) and a real OpenID provider
//! (`common::oidc`). `mod harness` checks the stand-ins themselves.
//!
//! Without slapd, or node and `npm ci` in tests/oidc, these tests skip (saying
//! so); `MDMD_TEST_REQUIRE_DIRECTORY=1` (CI) makes that a failure.

mod common;

/// The stand-ins do what the other tests rely on.
mod harness {
    use std::path::Path;
    use std::process::Command;

    use base64::Engine as _;
    use serde_json::Value;
    use sha2::Digest as _;

    use super::common::ldap::Slapd;
    use super::common::oidc::{Idp, Tamper, OTHER_AUDIENCE, WRONG_NONCE};

    /// Run an ldap-utils tool against slapd: (exit code, stdout, stderr).
    fn ldap_tool(tool: &str, args: &[&str], ca: Option<&Path>) -> (i32, String, String) {
        let mut cmd = Command::new(tool);
        cmd.args(args).env_remove("LDAPTLS_CACERT");
        if let Some(ca) = ca {
            cmd.env("LDAPTLS_CACERT", ca).env("LDAPTLS_REQCERT", "demand");
        }
        let out = cmd.output().unwrap_or_else(|e| panic!("{tool} (ldap-utils): {e}"));
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn whoami(url: &str, dn: &str, pw: &str, extra: &[&str], ca: Option<&Path>) -> (i32, String, String) {
        let mut args = vec!["-x", "-H", url, "-D", dn, "-w", pw];
        args.extend_from_slice(extra);
        ldap_tool("ldapwhoami", &args, ca)
    }

    /// `ldapsearch` as the service account: the DNs found.
    fn search(d: &Slapd, base: &str, filter: &str, attrs: &[&str]) -> (i32, String) {
        let mut args = vec![
            "-LLL",
            "-x",
            "-H",
            &d.url,
            "-D",
            &d.bind_dn,
            "-w",
            &d.bind_password,
            "-b",
            base,
            filter,
        ];
        args.extend_from_slice(attrs);
        let (rc, out, err) = ldap_tool("ldapsearch", &args, None);
        (rc, format!("{out}{err}"))
    }

    fn dns(ldif: &str) -> Vec<&str> {
        ldif.lines().filter_map(|l| l.strip_prefix("dn: ")).collect()
    }

    #[test]
    fn slapd_serves_the_test_tree() {
        let Some(d) = Slapd::start() else { return };
        let alice = d.user_dn("alice");

        let (rc, out, err) = whoami(&d.url, &alice, "alice-pw", &[], None);
        assert_eq!(rc, 0, "alice binds: {out}{err}\n{}", d.log());
        assert!(out.contains("uid=alice,ou=people,dc=example,dc=org"), "{out}");
        assert_eq!(
            whoami(&d.url, &alice, "wrong", &[], None).0,
            49,
            "a wrong password is invalidCredentials"
        );
        assert_eq!(whoami(&d.url, &d.user_dn("bob"), "bob-pw", &[], None).0, 0, "bob binds");
        // Carol's password is right, but the ppolicy lock refuses her.
        assert_eq!(whoami(&d.url, &d.user_dn("carol"), "carol-pw", &[], None).0, 49, "carol is locked");
        // Wrong passwords do not lock alice out (pwdMaxFailure is high).
        assert_eq!(whoami(&d.url, &alice, "alice-pw", &[], None).0, 0, "alice still binds");

        // The service account reads people and groups, and finds groups by member.
        let (rc, out) = search(&d, &format!("ou=people,{}", d.base_dn), "(objectClass=inetOrgPerson)", &["uid"]);
        assert_eq!((rc, dns(&out).len()), (0, 3), "{out}");
        let (rc, out) = search(&d, &d.base_dn, "(uid=alice)", &["mail", "cn", "displayName", "userPassword"]);
        assert_eq!(rc, 0, "{out}");
        assert!(
            out.contains("mail: alice@example.org") && out.contains("displayName: Alice Archer"),
            "{out}"
        );
        assert!(!out.contains("userPassword"), "userPassword is readable by nobody: {out}");
        let filter = format!("(|(member={alice})(uniqueMember={alice}))");
        let (rc, out) = search(&d, &format!("ou=groups,{}", d.base_dn), &filter, &["cn"]);
        assert_eq!(rc, 0, "{out}");
        assert_eq!(
            dns(&out),
            ["cn=mdm-users,ou=groups,dc=example,dc=org", "cn=sales,ou=groups,dc=example,dc=org"],
            "{out}"
        );
        let (_, out) = search(&d, &d.base_dn, &format!("(uniqueMember={})", d.user_dn("bob")), &["cn"]);
        assert_eq!(dns(&out), ["cn=sales,ou=groups,dc=example,dc=org"], "{out}");
        // How a user filter leaves the locked account out.
        let (_, out) = search(&d, &d.base_dn, "(&(uid=carol)(!(pwdAccountLockedTime=*)))", &["uid"]);
        assert!(dns(&out).is_empty(), "{out}");
        let (_, out) = search(&d, &d.base_dn, "(&(uid=alice)(!(pwdAccountLockedTime=*)))", &["uid"]);
        assert_eq!(dns(&out).len(), 1, "{out}");

        // Anonymous reads nothing of the tree.
        let (_, out, err) = ldap_tool("ldapsearch", &["-LLL", "-x", "-H", &d.url, "-b", &d.base_dn, "(uid=alice)"], None);
        assert!(dns(&out).is_empty(), "anonymous read: {out}{err}");

        // TLS: ldaps and StartTLS with the test CA.
        let (rc, out, err) = whoami(&d.ldaps_url, &alice, "alice-pw", &[], Some(&d.ca_pem));
        assert_eq!(rc, 0, "ldaps: {out}{err}");
        let (rc, out, err) = whoami(&d.url, &alice, "alice-pw", &["-ZZ"], Some(&d.ca_pem));
        assert_eq!(rc, 0, "StartTLS: {out}{err}");
        // ... and not with another CA.
        let other_ca = Path::new("/etc/ssl/certs/ca-certificates.crt");
        if other_ca.is_file() {
            let (rc, ..) = whoami(&d.ldaps_url, &alice, "alice-pw", &[], Some(other_ca));
            assert_ne!(rc, 0, "slapd's certificate must not verify against the system CAs");
        }
    }

    #[test]
    fn slapd_stops_and_starts_again() {
        let Some(mut d) = Slapd::start() else { return };
        let port: u16 = d.url.rsplit(':').next().unwrap().parse().unwrap();
        d.stop();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "the directory is down");
        assert_ne!(whoami(&d.url, &d.user_dn("alice"), "alice-pw", &[], None).0, 0);
        d.start_again();
        let (rc, out, err) = whoami(&d.url, &d.user_dn("alice"), "alice-pw", &[], None);
        assert_eq!(rc, 0, "same port, same data: {out}{err}");
    }

    const REDIRECT: &str = "http://127.0.0.1:1/cb";

    fn http() -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap()
    }

    async fn get_json(url: &str) -> Value {
        let r = http().get(url).send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(r.status().is_success(), "{url}: {}", r.status());
        r.json().await.expect("JSON")
    }

    /// An authorization request as a relying party makes it.
    struct Authz {
        url: String,
        state: String,
        nonce: String,
        verifier: String,
    }

    fn authorize(idp: &Idp, discovery: &Value) -> Authz {
        let rand = || uuid::Uuid::new_v4().simple().to_string();
        let (state, nonce, verifier) = (rand(), rand(), format!("{}{}", rand(), rand()));
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
        let mut url = reqwest::Url::parse(discovery["authorization_endpoint"].as_str().unwrap()).unwrap();
        url.query_pairs_mut()
            .append_pair("client_id", &idp.client_id)
            .append_pair("redirect_uri", REDIRECT)
            .append_pair("response_type", "code")
            .append_pair("scope", "openid email profile groups")
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        Authz {
            url: url.to_string(),
            state,
            nonce,
            verifier,
        }
    }

    /// Log in and exchange the code: the token endpoint's answer.
    async fn sign_in(idp: &Idp, discovery: &Value, user: &str, password: &str, basic: bool) -> (Authz, Value) {
        let a = authorize(idp, discovery);
        let back = idp.login(&a.url, user, password).await.expect("login");
        let back = reqwest::Url::parse(&back).unwrap();
        assert_eq!(back.as_str().split('?').next(), Some(REDIRECT), "{back}");
        let q: std::collections::HashMap<_, _> = back.query_pairs().into_owned().collect();
        assert_eq!(q.get("state"), Some(&a.state), "{back}");
        let code = q.get("code").unwrap_or_else(|| panic!("no code: {back}"));
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &a.verifier),
        ];
        let token_endpoint = discovery["token_endpoint"].as_str().unwrap();
        let req = http().post(token_endpoint);
        let req = if basic {
            req.basic_auth(&idp.client_id, Some(&idp.client_secret)).form(&form)
        } else {
            let mut f = form.to_vec();
            f.extend([("client_id", idp.client_id.as_str()), ("client_secret", idp.client_secret.as_str())]);
            req.form(&f)
        };
        let r = req.send().await.expect("token endpoint");
        let status = r.status();
        let v: Value = r.json().await.expect("token JSON");
        assert!(status.is_success(), "token endpoint: {status} {v}");
        (a, v)
    }

    /// Check an ID token against the provider's JWKS (signature, issuer, audience, expiry): its claims.
    async fn verify(idp: &Idp, discovery: &Value, id_token: &str) -> Result<Value, jsonwebtoken::errors::Error> {
        let jwks: jsonwebtoken::jwk::JwkSet =
            serde_json::from_value(get_json(discovery["jwks_uri"].as_str().unwrap()).await).expect("JWKS");
        let kid = jsonwebtoken::decode_header(id_token)?.kid.expect("kid");
        let jwk = jwks.find(&kid).unwrap_or_else(|| panic!("kid {kid} not in the JWKS"));
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        v.set_audience(&[&idp.client_id]);
        v.set_issuer(&[&idp.issuer]);
        v.leeway = 0;
        jsonwebtoken::decode::<Value>(id_token, &jsonwebtoken::DecodingKey::from_jwk(jwk)?, &v).map(|t| t.claims)
    }

    /// A JWT's claims, unverified.
    fn payload(jwt: &str) -> Value {
        let b64 = jwt.split('.').nth(1).expect("JWT");
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b64).expect("base64")).expect("JSON")
    }

    async fn jwks_kids(discovery: &Value) -> Vec<String> {
        get_json(discovery["jwks_uri"].as_str().unwrap()).await["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn idp_logs_in_and_issues_id_tokens() {
        let Some(mut idp) = Idp::start(&[REDIRECT.to_owned()]) else {
            return;
        };
        let discovery = get_json(&format!("{}/.well-known/openid-configuration", idp.issuer)).await;
        assert_eq!(discovery["issuer"], idp.issuer.as_str(), "{discovery}");
        for endpoint in ["authorization_endpoint", "token_endpoint", "jwks_uri"] {
            let url = discovery[endpoint].as_str().unwrap();
            assert!(url.starts_with(&idp.issuer), "{endpoint} {url} goes through the front");
        }
        assert_eq!(discovery["code_challenge_methods_supported"], serde_json::json!(["S256"]));

        // A wrong password: the form again, no redirect to the client.
        let a = authorize(&idp, &discovery);
        let err = idp.login(&a.url, "alice", "not-alice-pw").await.expect_err("wrong password");
        assert!(
            err.contains("id=\"login\"") && err.contains("Invalid username or password"),
            "{err}"
        );
        let err = idp
            .login(&authorize(&idp, &discovery).url, "mallory", "x")
            .await
            .expect_err("unknown user");
        assert!(err.contains("id=\"login\""), "{err}");

        // Alice, client_secret_basic.
        let (a, tokens) = sign_in(&idp, &discovery, "alice", "alice-pw", true).await;
        let id_token = tokens["id_token"].as_str().expect("id_token");
        let claims = verify(&idp, &discovery, id_token).await.expect("valid ID token");
        assert_eq!(claims["sub"], "alice", "{claims}");
        assert_eq!(claims["nonce"], a.nonce.as_str(), "{claims}");
        assert_eq!(claims["email"], "alice@example.org", "{claims}");
        assert_eq!(claims["name"], "Alice Archer", "{claims}");
        assert_eq!(claims["preferred_username"], "alice", "{claims}");
        assert_eq!(claims["groups"], serde_json::json!(["mdm-admins", "sales"]), "{claims}");

        // Nadia, client_secret_post: no groups.
        let (_, tokens) = sign_in(&idp, &discovery, "nadia", "nadia-pw", false).await;
        let claims = verify(&idp, &discovery, tokens["id_token"].as_str().unwrap()).await.expect("valid");
        assert_eq!(claims["groups"], serde_json::json!([]), "{claims}");

        // Without PKCE the provider refuses the request (back to the client with an error).
        let mut url = reqwest::Url::parse(&authorize(&idp, &discovery).url).unwrap();
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .into_owned()
            .filter(|(k, _)| !k.starts_with("code_challenge"))
            .collect();
        url.query_pairs_mut().clear().extend_pairs(kept);
        let back = idp.login(url.as_str(), "alice", "alice-pw").await.expect("back to the client");
        assert!(
            back.starts_with(REDIRECT) && !back.contains("code="),
            "no code without PKCE: {back}"
        );
        assert!(back.contains("error=invalid_request"), "{back}");

        // A new key: a new kid, the old one gone from the JWKS; tokens verify with the new one.
        let old = jwks_kids(&discovery).await;
        assert_eq!(old, [idp.kid()]);
        idp.rotate_key();
        let new = jwks_kids(&discovery).await;
        assert_eq!(new.len(), 1);
        assert_ne!(new, old, "rotate_key changes the kid");
        let (_, tokens) = sign_in(&idp, &discovery, "oscar", "oscar-pw", true).await;
        let claims = verify(&idp, &discovery, tokens["id_token"].as_str().unwrap()).await.expect("valid");
        assert_eq!(claims["groups"], serde_json::json!(["mdm-operators"]), "{claims}");

        // Down, then up again on the same issuer.
        let port: u16 = idp.issuer.rsplit(':').next().unwrap().parse().unwrap();
        idp.stop();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "the provider is down");
        idp.start_again();
        assert_eq!(jwks_kids(&discovery).await, new, "same key after start_again");
        let (_, tokens) = sign_in(&idp, &discovery, "rita", "rita-pw", false).await;
        let claims = verify(&idp, &discovery, tokens["id_token"].as_str().unwrap()).await.expect("valid");
        assert_eq!(claims["groups"], serde_json::json!(["mdm-readers"]), "{claims}");

        // Other redirect URIs: the old one is refused (an error page, no redirect).
        idp.set_redirect_uris(&["http://127.0.0.1:2/elsewhere".to_owned()]);
        let err = idp
            .login(&authorize(&idp, &discovery).url, "alice", "alice-pw")
            .await
            .expect_err("unregistered");
        assert!(err.contains("redirect_uri"), "{err}");
    }

    #[tokio::test]
    async fn idp_front_tampers_with_id_tokens() {
        let Some(idp) = Idp::start(&[REDIRECT.to_owned()]) else { return };
        let discovery = get_json(&format!("{}/.well-known/openid-configuration", idp.issuer)).await;
        use jsonwebtoken::errors::ErrorKind;

        idp.tamper(Tamper::BadSignature);
        let (_, t) = sign_in(&idp, &discovery, "alice", "alice-pw", true).await;
        let e = verify(&idp, &discovery, t["id_token"].as_str().unwrap())
            .await
            .expect_err("bad signature");
        assert!(matches!(e.kind(), ErrorKind::InvalidSignature), "{e:?}");

        idp.tamper(Tamper::WrongNonce);
        let (a, t) = sign_in(&idp, &discovery, "alice", "alice-pw", true).await;
        let claims = verify(&idp, &discovery, t["id_token"].as_str().unwrap())
            .await
            .expect("validly signed");
        assert_eq!(claims["nonce"], WRONG_NONCE);
        assert_ne!(claims["nonce"], a.nonce.as_str());

        idp.tamper(Tamper::ExpiredToken);
        let (_, t) = sign_in(&idp, &discovery, "alice", "alice-pw", true).await;
        let e = verify(&idp, &discovery, t["id_token"].as_str().unwrap())
            .await
            .expect_err("expired");
        assert!(matches!(e.kind(), ErrorKind::ExpiredSignature), "{e:?}");

        idp.tamper(Tamper::OtherAudience);
        let (_, t) = sign_in(&idp, &discovery, "alice", "alice-pw", true).await;
        let e = verify(&idp, &discovery, t["id_token"].as_str().unwrap())
            .await
            .expect_err("other audience");
        assert!(matches!(e.kind(), ErrorKind::InvalidAudience), "{e:?}");
        assert_eq!(payload(t["id_token"].as_str().unwrap())["aud"], OTHER_AUDIENCE);

        idp.tamper(Tamper::None);
        let (a, t) = sign_in(&idp, &discovery, "alice", "alice-pw", true).await;
        let claims = verify(&idp, &discovery, t["id_token"].as_str().unwrap())
            .await
            .expect("valid again");
        assert_eq!(claims["nonce"], a.nonce.as_str());
    }
}

// ------------------------------------------------------------------ mdmd against them

use std::time::{Duration, Instant};

use common::ldap::Slapd;
use common::oidc::{Idp, Tamper};
use common::Server;
use serde_json::Value;

/// An HTTPS client that trusts the server's CA and follows no redirect (a
/// browser's hops, one at a time).
fn hop_client(srv: &Server) -> reqwest::Client {
    let pem = std::fs::read(srv.certs_dir().join("ca.pem")).expect("ca.pem");
    mdmd::sim::http_client_builder(Some(&pem))
        .expect("client")
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// The server's public URL (what it puts in profiles and redirect URIs).
fn public(srv: &Server) -> String {
    srv.base.replace("https://127.0.0.1:", "https://localhost:")
}

/// A file only its owner reads, holding `secret`.
fn secret_file(dir: &std::path::Path, name: &str, secret: &str) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let p = dir.join(name);
    std::fs::write(&p, secret).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p.display().to_string()
}

fn ldap_flags(d: &Slapd, url: &str, pw_file: &str) -> Vec<String> {
    vec![
        "--ldap-url".into(),
        url.into(),
        "--ldap-ca".into(),
        d.ca_pem.display().to_string(),
        "--ldap-base-dn".into(),
        d.base_dn.clone(),
        "--ldap-bind-dn".into(),
        d.bind_dn.clone(),
        "--ldap-bind-password-file".into(),
        pw_file.into(),
        "--ldap-required-group".into(),
        format!("cn=mdm-users,ou=groups,{}", d.base_dn),
        "--directory-timeout".into(),
        "3".into(),
    ]
}

async fn enroll_get(srv: &Server, user: &str, pw: &str) -> (u16, Vec<u8>) {
    let r = srv
        .client()
        .get(format!("{}/mdm/enroll", srv.base))
        .basic_auth(user, Some(pw))
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.bytes().await.unwrap().to_vec())
}

async fn device_json(srv: &Server, id: &str) -> Value {
    srv.admin().get(&format!("/v1/devices/{id}")).await.expect("device")
}

#[tokio::test]
async fn ldap_sign_in_gates_enrollment_and_the_enrollment_records_the_user() {
    let Some(mut d) = Slapd::start() else { return };
    let keep = tempfile::tempdir().unwrap();
    let pw_file = secret_file(keep.path(), "bind-pw", &d.bind_password);
    let mut flags = ldap_flags(&d, &d.url.clone(), &pw_file);
    flags.push("--ldap-starttls".into());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let srv = Server::start_logged(&flags);

    // The right password of a member of the required group: the profile, and the enrollment is alice's.
    let (s, der) = enroll_get(&srv, "alice", "alice-pw").await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&der));
    let dev = mdmd::sim::SimDevice::from_profile(srv.client(), &der, Some(common::pool_key()))
        .await
        .unwrap();
    dev.enroll().await.unwrap();
    let v = device_json(&srv, &dev.udid).await;
    let u = &v["user"];
    assert_eq!(u["username"], "alice", "{v}");
    assert_eq!(u["email"], "alice@example.org");
    assert_eq!(u["full_name"], "Alice Archer");
    assert_eq!(u["method"], "ldap");
    let groups: Vec<&str> = u["groups"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(groups.contains(&"mdm-users") && groups.contains(&"sales"), "{groups:?}");

    // Cisco ISE's username query (and the API's ?user=) find alice's device.
    let admin = srv.admin();
    let found = admin.get("/v1/devices?user=alice").await.unwrap();
    assert!(found.to_string().contains(&dev.udid), "{found}");
    let found = admin.get("/v1/devices?user=alice@example.org").await.unwrap();
    assert!(found.to_string().contains(&dev.udid), "{found}");
    let nac = srv.account("ise", "nac");
    let r = srv
        .client()
        .get(format!(
            "{}/ciscoise/mdm/api/v2/devices/?paging=0&querycriteria=username&value=alice&filter=all",
            srv.base
        ))
        .basic_auth("ise", Some(&nac))
        .send()
        .await
        .unwrap();
    let body = r.text().await.unwrap();
    assert!(body.contains(&dev.serial), "ISE username query: {body}");
    let (st, body) = admin
        .call(
            reqwest::Method::PUT,
            &format!("/v1/devices/{}/attributes", dev.udid),
            Some(serde_json::json!({"USERNAME": "a.archer"})),
        )
        .await
        .unwrap();
    assert_eq!(st, 200, "{body}");
    let found = admin.get("/v1/devices?user=a.archer").await.unwrap();
    assert!(found.to_string().contains(&dev.udid), "{found}");

    // Group rules read who enrolled the device and their directory groups.
    let (st, body) = admin
        .call(
            reqwest::Method::PUT,
            "/v1/groups/directory-sales",
            Some(serde_json::json!({"rule": "\"sales\" in device.user.groups && device.user.method == \"ldap\""})),
        )
        .await
        .unwrap();
    assert_eq!(st, 200, "{body}");
    let member = common::wait_until(Duration::from_secs(15), || async {
        admin
            .get("/v1/groups/directory-sales")
            .await
            .map(|g| g.to_string().contains(&dev.udid))
            .unwrap_or(false)
    })
    .await;
    assert!(member, "{}", admin.get("/v1/groups/directory-sales").await.unwrap());

    // Wrong password, a disabled account, a filter metacharacter, an empty password: 401.
    for (user, pw) in [
        ("alice", "wrong"),
        ("carol", "carol-pw"),
        ("*", "alice-pw"),
        ("alice)(uid=*", "x"),
        ("alice", ""),
    ] {
        let (s, body) = enroll_get(&srv, user, pw).await;
        assert_eq!(s, 401, "{user}: {}", String::from_utf8_lossy(&body));
    }
    // Right password, outside the required group: 403, and it says why.
    let (s, body) = enroll_get(&srv, "bob", "bob-pw").await;
    assert_eq!(s, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("bob may not enroll"));

    // The directory down: 503 with a clear message, quickly; back up: works again.
    d.stop();
    let t0 = Instant::now();
    let (s, body) = enroll_get(&srv, "alice", "alice-pw").await;
    assert_eq!(s, 503, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("directory cannot be reached"));
    assert!(t0.elapsed() < Duration::from_secs(10), "took {:?}", t0.elapsed());
    let health = srv.admin().get("/v1/health").await.unwrap();
    assert!(health["warnings"].to_string().contains("LDAP"), "{health}");
    d.start_again();
    let (s, _) = enroll_get(&srv, "alice", "alice-pw").await;
    assert_eq!(s, 200);
    let health = srv.admin().get("/v1/health").await.unwrap();
    assert!(!health["warnings"].to_string().contains("LDAP"), "{health}");

    // The service account's password is nowhere in the store, the certificates or the log.
    assert!(!srv.log_text().contains(&d.bind_password), "the bind password was logged");
    for f in walk(srv.dir.path()) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(
            !bytes.windows(d.bind_password.len()).any(|w| w == d.bind_password.as_bytes()),
            "the bind password is in {}",
            f.display()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The cookie a response sets, as `name=value`.
fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or("").to_owned())
}

/// A browser's sign-in through mdmd and the identity provider: GET `start` at
/// mdmd (a redirect to the IdP and the sealed cookie), sign in there, then
/// GET mdmd's callback with the cookie. The callback's response.
async fn browser_sign_in(srv: &Server, idp: &Idp, start: &str, user: &str, pw: &str) -> reqwest::Response {
    let c = hop_client(srv);
    let (callback, cookie) = idp_round(srv, idp, &c, start, user, pw).await;
    c.get(callback).header(reqwest::header::COOKIE, cookie).send().await.unwrap()
}

/// The first two hops: (mdmd's callback URL with code and state, mdmd's sign-in cookie).
async fn idp_round(srv: &Server, idp: &Idp, c: &reqwest::Client, start: &str, user: &str, pw: &str) -> (String, String) {
    let r = c.get(format!("{}{start}", srv.base)).send().await.unwrap();
    assert_eq!(r.status(), 302, "{start}: {:?}", r.text().await);
    let cookie = set_cookie(&r, "mdmd_signin").expect("sign-in cookie");
    let to = r.headers()[reqwest::header::LOCATION].to_str().unwrap().to_owned();
    assert!(to.starts_with(&idp.issuer), "{to}");
    let callback = idp.login(&to, user, pw).await.unwrap_or_else(|e| panic!("IdP login: {e}"));
    assert!(callback.starts_with(&format!("{}/auth/oidc/callback", public(srv))), "{callback}");
    (callback, cookie)
}

fn oidc_flags(idp: &Idp, secret_file: &str) -> Vec<String> {
    [
        "--oidc-issuer",
        &idp.issuer,
        "--oidc-client-id",
        &idp.client_id,
        "--oidc-client-secret-file",
        secret_file,
        "--oidc-scopes",
        "email,profile,groups",
        "--oidc-name",
        "Example IdP",
        "--oidc-admin-group",
        "mdm-admins",
        "--oidc-operator-group",
        "mdm-operators",
        "--oidc-read-only-group",
        "mdm-readers",
        "--directory-timeout",
        "3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[tokio::test]
async fn oidc_sign_in_for_enrollment_and_the_console_checks_everything_the_idp_says() {
    let Some(mut idp) = Idp::start(&["http://127.0.0.1:1/placeholder".to_owned()]) else {
        return;
    };
    let keep = tempfile::tempdir().unwrap();
    let sf = secret_file(keep.path(), "client-secret", &idp.client_secret);
    let flags = oidc_flags(&idp, &sf);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let srv = Server::start_with(&flags);
    idp.set_redirect_uris(&[format!("{}/auth/oidc/callback", public(&srv))]);

    // Enrollment: no credentials → the IdP; back with a code → the profile, recorded as alice's.
    let r = browser_sign_in(&srv, &idp, "/mdm/enroll", "alice", "alice-pw").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()[reqwest::header::CONTENT_TYPE], "application/x-apple-aspen-config");
    let der = r.bytes().await.unwrap();
    let dev = mdmd::sim::SimDevice::from_profile(srv.client(), &der, Some(common::pool_key()))
        .await
        .unwrap();
    dev.enroll().await.unwrap();
    let v = device_json(&srv, &dev.udid).await;
    assert_eq!(v["user"]["username"], "alice", "{v}");
    assert_eq!(v["user"]["method"], "oidc");
    assert_eq!(v["user"]["email"], "alice@example.org");
    assert_eq!(v["user"]["groups"], serde_json::json!(["mdm-admins", "sales"]));

    // Console: each group maps to its role; no console group, no session.
    for (user, role) in [
        ("alice", Some("admin")),
        ("oscar", Some("operator")),
        ("rita", Some("read-only")),
        ("nadia", None),
    ] {
        let r = browser_sign_in(&srv, &idp, "/ui/sso?next=/ui/devices", user, &format!("{user}-pw")).await;
        match role {
            Some(role) => {
                assert_eq!(r.status(), 200, "{user}");
                let session = set_cookie(&r, "mdmd_ui").expect("session cookie");
                let page = hop_client(&srv)
                    .get(format!("{}/ui/devices", srv.base))
                    .header(reqwest::header::COOKIE, session)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(page.status(), 200, "{user}");
                let html = page.text().await.unwrap();
                assert!(html.contains(&format!("{user} ({role})")), "{user}: {html}");
            }
            None => {
                assert_eq!(r.status(), 403, "{user}");
                assert!(set_cookie(&r, "mdmd_ui").is_none());
            }
        }
    }

    // Whatever the IdP's token endpoint answers is checked: signature, nonce, expiry, audience.
    for t in [
        Tamper::BadSignature,
        Tamper::WrongNonce,
        Tamper::ExpiredToken,
        Tamper::OtherAudience,
    ] {
        idp.tamper(t);
        let r = browser_sign_in(&srv, &idp, "/mdm/enroll", "alice", "alice-pw").await;
        assert_eq!(r.status(), 403, "{t:?}");
        assert_ne!(r.headers()[reqwest::header::CONTENT_TYPE], "application/x-apple-aspen-config");
    }
    idp.tamper(Tamper::None);

    // A callback replayed (same code, same cookie) is refused; so is a cookie from another sign-in.
    let c = hop_client(&srv);
    let (callback, cookie) = idp_round(&srv, &idp, &c, "/mdm/enroll", "alice", "alice-pw").await;
    let first = c.get(&callback).header(reqwest::header::COOKIE, &cookie).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let again = c.get(&callback).header(reqwest::header::COOKIE, &cookie).send().await.unwrap();
    assert_eq!(again.status(), 403, "a replayed code");
    let (callback2, _) = idp_round(&srv, &idp, &c, "/mdm/enroll", "alice", "alice-pw").await;
    let crossed = c.get(&callback2).header(reqwest::header::COOKIE, &cookie).send().await.unwrap();
    assert_eq!(crossed.status(), 403, "state from another sign-in");
    let none = c.get(&callback2).send().await.unwrap();
    assert_eq!(none.status(), 400, "no sign-in cookie");

    // The IdP rotates its signing key: picked up without a restart.
    idp.rotate_key();
    let r = browser_sign_in(&srv, &idp, "/mdm/enroll", "alice", "alice-pw").await;
    assert_eq!(r.status(), 200, "after key rotation");

    // The IdP down between sign-in and callback: 503, in bounded time.
    let (callback, cookie) = idp_round(&srv, &idp, &c, "/mdm/enroll", "alice", "alice-pw").await;
    idp.stop();
    let t0 = Instant::now();
    let r = c.get(&callback).header(reqwest::header::COOKIE, &cookie).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
}

#[tokio::test]
async fn account_driven_user_enrollment_with_the_directory() {
    let Some(d) = Slapd::start() else { return };
    let keep = tempfile::tempdir().unwrap();
    let pw_file = secret_file(keep.path(), "bind-pw", &d.bind_password);
    let mut flags = ldap_flags(&d, &d.ldaps_url.clone(), &pw_file);
    flags.extend(["--account-driven".into(), "byod,adde".into()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let srv = Server::start_with(&flags);
    let c = hop_client(&srv);

    // Service discovery names both kinds.
    let doc: Value = c
        .get(format!(
            "{}/.well-known/com.apple.remotemanagement?user-identifier=alice%40example.org&model-family=iPhone",
            srv.base
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let versions: Vec<&str> = doc["Servers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["Version"].as_str())
        .collect();
    assert_eq!(versions, ["mdm-byod", "mdm-adde"], "{doc}");

    // A personal iPhone: 401 with Apple's challenge, the web sign-in, the 308, the profile.
    let (base_url, body, ch) = mdmd::sim::account::discover(&c, &srv.base, "alice@example.org", "mdm-byod")
        .await
        .unwrap();
    assert_eq!(ch.url, format!("{}/mdm/account/byod/signin", public(&srv)));
    // Wrong password: the form again, 401; nothing handed back.
    let bad = mdmd::sim::account::directory_signin(&c, &ch.url, "alice@example.org", "alice", "nope").await;
    assert!(bad.is_err());
    let loc = mdmd::sim::account::directory_signin(&c, &ch.url, "alice@example.org", "alice", "alice-pw")
        .await
        .unwrap();
    let token = mdmd::sim::account::token_from_location(&loc).expect("token");
    let profile = mdmd::sim::account::fetch_profile(&c, &base_url, &body, &token)
        .await
        .unwrap()
        .expect("profile");
    // The token is used up: a replay is a fresh 401 challenge.
    let replay = c
        .post(&base_url)
        .bearer_auth(&token)
        .header(reqwest::header::CONTENT_TYPE, "application/pkcs7-signature")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 401);
    assert!(replay.headers()[reqwest::header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .contains("apple-as-web"));
    // A made-up token too.
    let fake = mdmd::sim::account::fetch_profile(&c, &base_url, &body, "made-up").await.unwrap();
    assert_eq!(fake.err().map(|e| e.0), Some(401));

    let p = mdmd::sim::pki::read_profile(&profile).unwrap();
    assert_eq!(p.enrollment_mode.as_deref(), Some("BYOD"));
    assert_eq!(p.assigned_managed_apple_id.as_deref(), Some("alice@example.org"));
    let dev = mdmd::sim::SimDevice::from_profile(srv.client(), &profile, Some(common::pool_key()))
        .await
        .unwrap();
    let eid = dev.enrollment_id.clone().expect("a User Enrollment");
    dev.enroll().await.unwrap();
    let v = device_json(&srv, &eid).await;
    assert_eq!(v["udid"], Value::Null, "{v}");
    assert_eq!(v["user_enrollment_id"], eid.as_str());
    assert_eq!(v["user"]["username"], "alice");
    assert_eq!(v["user"]["method"], "account-driven-ldap");
    assert_eq!(v["user"]["managed_apple_id"], "alice@example.org");

    // Apple's User Enrollment limits: a personal device cannot be erased or restricted.
    let admin = srv.admin();
    for rt in ["EraseDevice", "RestartDevice", "DeviceLocation"] {
        let r = admin
            .post(
                "/v1/commands",
                serde_json::json!({"targets": [eid], "command": {"RequestType": rt}}),
            )
            .await;
        let e = r.expect_err(rt);
        assert!(e.to_string().contains("User Enrollment"), "{rt}: {e}");
    }
    let ok = admin
        .post(
            "/v1/commands",
            serde_json::json!({"targets": [eid], "command": {"RequestType": "ProfileList"}}),
        )
        .await;
    assert!(ok.is_ok(), "{ok:?}");

    // An organisation's iPhone through mdm-adde: a device enrollment with its UDID.
    let dev2 = mdmd::sim::account::enroll_with_directory(hop_client(&srv), &srv.base, "mdm-adde", "alice@example.org", "alice", "alice-pw")
        .await
        .unwrap();
    assert!(dev2.enrollment_id.is_none());
    assert_eq!(dev2.profile.as_ref().unwrap().enrollment_mode.as_deref(), Some("ADDE"));
    dev2.enroll().await.unwrap();
    let v = device_json(&srv, &dev2.udid).await;
    assert_eq!(v["user"]["username"], "alice", "{v}");

    // The same from the command line: `mdmd sim account-enroll`, both kinds.
    for (kind, what) in [("byod", "User Enrollment"), ("adde", "device enrollment")] {
        let (ok, out, err) = srv.cli(&[
            "sim",
            "account-enroll",
            "--email",
            "alice@example.org",
            "--user",
            "alice:alice-pw",
            "--kind",
            kind,
        ]);
        assert!(ok && out.contains(what), "{kind}: {out} {err}");
    }

    // bob is not in the enrollment group: no token.
    let (_, _, ch) = mdmd::sim::account::discover(&c, &srv.base, "bob@example.org", "mdm-byod")
        .await
        .unwrap();
    let r = c
        .post(&ch.url)
        .form(&[("user", "bob"), ("password", "bob-pw")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn account_driven_enrollment_with_the_identity_provider_and_an_invitation_for_a_user() {
    let Some(mut idp) = Idp::start(&["http://127.0.0.1:1/placeholder".to_owned()]) else {
        return;
    };
    let keep = tempfile::tempdir().unwrap();
    let sf = secret_file(keep.path(), "client-secret", &idp.client_secret);
    let mut flags = oidc_flags(&idp, &sf);
    flags.extend(["--account-driven".into(), "byod".into()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let srv = Server::start_with(&flags);
    idp.set_redirect_uris(&[format!("{}/auth/oidc/callback", public(&srv))]);
    let c = hop_client(&srv);

    let (base_url, body, ch) = mdmd::sim::account::discover(&c, &srv.base, "oscar@example.org", "mdm-byod")
        .await
        .unwrap();
    let path = ch.url.strip_prefix(&public(&srv)).unwrap().to_owned();
    let r = browser_sign_in(
        &srv,
        &idp,
        &format!("{path}?user-identifier=oscar%40example.org"),
        "oscar",
        "oscar-pw",
    )
    .await;
    assert_eq!(r.status(), 308);
    let loc = r.headers()[reqwest::header::LOCATION].to_str().unwrap().to_owned();
    let token = mdmd::sim::account::token_from_location(&loc).expect("token");
    let profile = mdmd::sim::account::fetch_profile(&c, &base_url, &body, &token)
        .await
        .unwrap()
        .expect("profile");
    let dev = mdmd::sim::SimDevice::from_profile(srv.client(), &profile, None).await.unwrap();
    dev.enroll().await.unwrap();
    let v = device_json(&srv, &dev.id()).await;
    assert_eq!(v["user"]["username"], "oscar", "{v}");
    assert_eq!(v["user"]["method"], "account-driven-oidc");

    // An invitation issued to a user records that user.
    let (ok, out, err) = srv.cli(&["invite", "--user", "dora", "--email", "dora@example.org", "--full-name", "Dora D"]);
    assert!(ok, "{err}");
    let url = out.lines().next().unwrap().to_owned();
    let der = mdmd::sim::download_profile(&srv.client(), &url, None).await.unwrap();
    let dev = mdmd::sim::SimDevice::from_profile(srv.client(), &der, Some(common::pool_key()))
        .await
        .unwrap();
    dev.enroll().await.unwrap();
    let v = device_json(&srv, &dev.udid).await;
    assert_eq!(v["user"]["username"], "dora", "{v}");
    assert_eq!(v["user"]["full_name"], "Dora D");
    assert_eq!(v["user"]["method"], "invitation");
}

/// Console sign-in at the identity provider in a real browser: the cookies'
/// SameSite rules, the IdP's form and the hand-back to the console as Chromium does them.
#[tokio::test]
async fn console_sign_in_with_the_identity_provider_in_a_real_browser() {
    if !common::browser::browser_available() {
        return;
    }
    let Some(mut idp) = Idp::start(&["http://127.0.0.1:1/placeholder".to_owned()]) else {
        return;
    };
    let keep = tempfile::tempdir().unwrap();
    let sf = secret_file(keep.path(), "client-secret", &idp.client_secret);
    let flags = oidc_flags(&idp, &sf);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let srv = Server::start_with(&flags);
    let base = public(&srv);
    idp.set_redirect_uris(&[format!("{base}/auth/oidc/callback")]);
    let driver = common::browser::start_driver().await;
    let c = common::browser::browser(&driver, 1200).await;
    c.goto(&format!("{base}/ui/devices")).await.unwrap();
    assert!(c.current_url().await.unwrap().path().starts_with("/ui/login"));
    // "Sign in with Example IdP" → the IdP's form.
    common::browser::click_then(&c, "#sso", "#login").await;
    assert!(c.current_url().await.unwrap().as_str().starts_with(&idp.issuer));
    c.find(fantoccini::Locator::Id("login"))
        .await
        .unwrap()
        .send_keys("oscar")
        .await
        .unwrap();
    c.find(fantoccini::Locator::Id("password"))
        .await
        .unwrap()
        .send_keys("oscar-pw")
        .await
        .unwrap();
    // Back at the console, signed in as an operator, on the page asked for.
    common::browser::click_then(&c, "#submit", "header").await;
    let url = c.current_url().await.unwrap();
    assert_eq!(url.path(), "/ui/devices", "{url}");
    let header = c.find(fantoccini::Locator::Css("header")).await.unwrap().text().await.unwrap();
    assert!(header.contains("oscar (operator)"), "{header}");
    c.close().await.unwrap();
}

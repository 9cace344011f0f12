//! The OpenAPI description (`GET /v1/openapi.json`) generates clients: every
//! operation has typed request and response schemas (derived from the Rust
//! types with utoipa), real answers of a real server match those schemas
//! (a JSON Schema validator, errors included), and a real generator
//! (`openapi-python-client`, PyPI) turns it into typed models.
//!
//! The generator is gated like the validator in tests/operations.rs:
//! `MDMD_TEST_REQUIRE_OPENAPI=1` (CI) makes a missing tool a failure;
//! otherwise the step is skipped with a message.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{json, Value};

/// A schema `$ref`'d or inline, resolved one level against the document.
fn resolve<'a>(spec: &'a Value, s: &'a Value) -> &'a Value {
    match s.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.trim_start_matches("#/components/schemas/");
            &spec["components"]["schemas"][name]
        }
        None => s,
    }
}

/// Free-form on purpose: Apple's content, passed through, said so.
fn documented_free_form(s: &Value) -> bool {
    s.get("additionalProperties") == Some(&Value::Bool(true)) && s.get("description").and_then(Value::as_str).is_some_and(|d| !d.is_empty())
}

/// A schema with a shape: properties, a composition, a map of typed values,
/// an array, a scalar; or documented free-form.
fn typed(spec: &Value, s: &Value) -> bool {
    let s = resolve(spec, s);
    if s.get("properties").is_some() || s.get("oneOf").is_some() || s.get("allOf").is_some() || s.get("anyOf").is_some() {
        return true;
    }
    if s.get("additionalProperties").is_some_and(Value::is_object) {
        return true;
    }
    documented_free_form(s)
}

/// Every object schema in the components without a shape (`{"type": "object"}`
/// and nothing else), by where it is.
fn bare_objects(v: &Value, at: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            let is_object = match o.get("type") {
                Some(Value::String(t)) => t == "object",
                Some(Value::Array(a)) => a.iter().any(|t| t == "object"),
                _ => false,
            };
            let shaped = ["properties", "oneOf", "allOf", "anyOf", "$ref"].iter().any(|k| o.contains_key(*k))
                || o.get("additionalProperties").is_some_and(Value::is_object);
            if is_object && !shaped && !documented_free_form(v) {
                out.push(at.to_owned());
            }
            for (k, x) in o {
                bare_objects(x, &format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                bare_objects(x, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Validate `body` against `schema` (which may `$ref` the document's components).
fn check(spec: &Value, schema: &Value, body: &Value) -> Result<(), String> {
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "allOf": [schema],
        "components": spec["components"],
    });
    let v = jsonschema::validator_for(&root).map_err(|e| format!("schema does not compile: {e}"))?;
    let errors: Vec<String> = v.iter_errors(body).map(|e| format!("{} (at {})", e, e.instance_path())).collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Calls the admin API and validates every answer against the description.
struct Conformance<'a> {
    srv: &'a Server,
    spec: &'a Value,
    client: reqwest::Client,
    checked: BTreeSet<String>,
    failures: Vec<String>,
}

impl Conformance<'_> {
    /// Call `method path` (the document's `template` names the operation) with
    /// a body and its content type; validate the answer; return its JSON.
    async fn call(&mut self, method: &str, template: &str, path: &str, body: Option<(&str, Vec<u8>)>) -> Value {
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let mut req = self.client.request(m, format!("{}{}", self.srv.base, path)).bearer_auth(API_KEY);
        if let Some((ct, b)) = body {
            req = req.header("content-type", ct).body(b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = r.bytes().await.unwrap();
        let what = format!("{method} {path} -> {status}");
        let op = &self.spec["paths"][template][method];
        assert!(op.is_object(), "{method} {template} is not described");
        let Some(resp) = op["responses"].get(status.to_string()) else {
            self.failures
                .push(format!("{what}: status not described ({})", String::from_utf8_lossy(&bytes)));
            return Value::Null;
        };
        self.checked.insert(format!("{method} {template} {status}"));
        let content = resp["content"].as_object().cloned().unwrap_or_default();
        if content.is_empty() {
            if !bytes.is_empty() {
                self.failures.push(format!("{what}: a body where none is described"));
            }
            return Value::Null;
        }
        let media = ct.split(';').next().unwrap_or("").trim().to_owned();
        let Some(c) = content.get(&media) else {
            self.failures.push(format!("{what}: content type {media:?} not described"));
            return Value::Null;
        };
        if media != "application/json" {
            return Value::Null;
        }
        let body: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                self.failures.push(format!("{what}: not JSON: {e}"));
                return Value::Null;
            }
        };
        if let Err(e) = check(self.spec, &c["schema"], &body) {
            self.failures.push(format!("{what}: {e}\n    body: {}", crate_text(&body)));
        }
        body
    }

    async fn json(&mut self, method: &str, template: &str, path: &str, body: Value) -> Value {
        self.call(
            method,
            template,
            path,
            Some(("application/json", serde_json::to_vec(&body).unwrap())),
        )
        .await
    }
}

fn crate_text(v: &Value) -> String {
    let s = v.to_string();
    s.chars().take(600).collect()
}

#[tokio::test]
async fn openapi_every_operation_is_typed_and_real_answers_match_it() {
    let srv = Server::start();
    let spec = srv.admin().get("/v1/openapi.json").await.unwrap();
    assert_eq!(spec["openapi"], "3.1.0");
    let paths = spec["paths"].as_object().unwrap();

    // Every operation: a typed success answer, a typed JSON body, the error
    // schema on its errors, typed query parameters.
    let mut untyped = Vec::new();
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            let id = format!("{method} {path}");
            let responses = op["responses"].as_object().unwrap();
            let ok_schema = responses
                .iter()
                .find(|(s, _)| s.starts_with('2'))
                .map(|(_, r)| r["content"]["application/json"]["schema"].clone());
            let mut success = 0;
            for (status, r) in responses {
                let code: u16 = status.parse().unwrap();
                let json_schema = &r["content"]["application/json"]["schema"];
                if (200..300).contains(&code) {
                    success += 1;
                    if r["content"].is_object() && json_schema.is_object() && !typed(&spec, json_schema) {
                        untyped.push(format!("{id}: {status} answer"));
                    }
                } else if code >= 400 && Some(json_schema) == ok_schema.as_ref() {
                    // The success body with another status (503 unavailable, 502 a failed sync).
                } else if code >= 400 && !json_schema.is_object() {
                    untyped.push(format!("{id}: {status} has no error schema"));
                } else if code >= 400 && json_schema.get("$ref").and_then(Value::as_str) != Some("#/components/schemas/Error") {
                    untyped.push(format!("{id}: {status} is not the Error schema"));
                }
            }
            assert!(success > 0, "{id}: no success answer described");
            for code in ["400", "404", "500", "503"] {
                assert!(responses.contains_key(code), "{id}: {code} not described");
            }
            if !["/health", "/healthz", "/readyz", "/.well-known/jwks.json"].contains(&path.as_str()) {
                for code in ["401", "403"] {
                    assert!(responses.contains_key(code), "{id}: {code} not described");
                }
            }
            if let Some(b) = op.get("requestBody") {
                if let Some(s) = b["content"].get("application/json").map(|c| &c["schema"]) {
                    if !typed(&spec, s) {
                        untyped.push(format!("{id}: JSON request body"));
                    }
                }
            }
            for p in op["parameters"].as_array().into_iter().flatten() {
                if p["schema"].get("type").is_none() && p["schema"].get("$ref").is_none() {
                    untyped.push(format!("{id}: parameter {} has no type", p["name"]));
                }
            }
        }
    }
    let mut bare = Vec::new();
    bare_objects(&spec["components"]["schemas"], "#/components/schemas", &mut bare);
    untyped.extend(bare.into_iter().map(|b| format!("{b}: an object without properties")));
    assert!(untyped.is_empty(), "untyped in the description:\n{}", untyped.join("\n"));
    let error = &spec["components"]["schemas"]["Error"];
    assert_eq!(error["required"], json!(["error"]), "{error}");
    // Query parameters come from the handlers' types.
    let list = &spec["paths"]["/v1/devices"]["get"]["parameters"];
    for name in ["after", "limit", "serial", "model", "os"] {
        assert!(
            list.as_array().unwrap().iter().any(|p| p["name"] == name && p["in"] == "query"),
            "GET /v1/devices: no query parameter {name}: {list}"
        );
    }

    // The validator does check: a wrong body fails.
    let devices = &spec["paths"]["/v1/devices"]["get"]["responses"]["200"]["content"]["application/json"]["schema"];
    assert!(check(&spec, devices, &json!({"devices": "no", "next": null})).is_err());
    assert!(check(&spec, devices, &json!({"devices": [{"id": 1}], "next": null})).is_err());
    assert!(check(&spec, devices, &json!({"devices": [], "next": null})).is_ok());

    // Real answers, success and error, against the description.
    let mut c = Conformance {
        srv: &srv,
        spec: &spec,
        client: srv.client(),
        checked: BTreeSet::new(),
        failures: Vec::new(),
    };
    let mut d = srv.enrolled().await;
    let udid = d.udid.clone();
    let _ = d.session().await;
    c.json("put", "/v1/groups/{name}", "/v1/groups/oa-group", json!({"members": [udid]}))
        .await;
    c.json(
        "put",
        "/v1/groups/{name}",
        "/v1/groups/oa-rule",
        json!({"rule": "device.os_version != ''"}),
    )
    .await;
    let profile = template("com.example.openapi", "");
    c.call(
        "post",
        "/v1/profiles",
        "/v1/profiles",
        Some(("application/x-apple-aspen-config", profile)),
    )
    .await;
    c.json(
        "put",
        "/v1/blueprints/{name}",
        "/v1/blueprints/oa-bp",
        json!({"groups": ["oa-group"], "profiles": ["com.example.openapi"]}),
    )
    .await;
    c.json(
        "put",
        "/v1/blueprints/{name}",
        "/v1/blueprints/oa-bp?dry_run=true",
        json!({"groups": ["oa-group"], "profiles": ["com.example.openapi"]}),
    )
    .await;
    c.json(
        "post",
        "/v1/accounts",
        "/v1/accounts",
        json!({"name": "oa-reader", "role": "read-only"}),
    )
    .await;
    c.json("post", "/v1/accounts", "/v1/accounts", json!({"name": "oa-bad", "role": "nobody"}))
        .await;
    c.json("post", "/v1/access-tokens", "/v1/access-tokens", json!({})).await;
    c.json(
        "post",
        "/v1/commands",
        "/v1/commands",
        json!({"targets": [udid], "command": {"RequestType": "DeviceInformation", "Queries": ["DeviceName", "OSVersion"]}}),
    )
    .await;
    let cmd = c
        .json(
            "post",
            "/v1/commands",
            "/v1/commands",
            json!({"targets": [udid], "command": {"RequestType": "SecurityInfo"}}),
        )
        .await;
    c.json(
        "post",
        "/v1/commands",
        "/v1/commands",
        json!({"targets": [udid], "command": {"RequestType": "NoSuchThing"}}),
    )
    .await;
    c.json(
        "post",
        "/v1/profiles/{id}/install",
        "/v1/profiles/com.example.openapi/install",
        json!({"targets": [udid]}),
    )
    .await;
    c.call("post", "/v1/devices/{id}/inventory", &format!("/v1/devices/{udid}/inventory"), None)
        .await;
    let _ = d.session().await;
    c.json(
        "put",
        "/v1/declarations",
        "/v1/declarations",
        json!({"Type": "com.apple.configuration.management.test", "Identifier": "oa.test", "Payload": {"Echo": "hello"}}),
    )
    .await;
    c.call(
        "put",
        "/v1/sets/{set}/declarations/{identifier}",
        "/v1/sets/oa-set/declarations/oa.test",
        None,
    )
    .await;
    c.call(
        "put",
        "/v1/devices/{id}/sets/{set}",
        &format!("/v1/devices/{udid}/sets/oa-set"),
        None,
    )
    .await;
    c.json(
        "put",
        "/v1/devices/{id}/attributes",
        &format!("/v1/devices/{udid}/attributes"),
        json!({"USERNAME": "oa"}),
    )
    .await;
    c.json(
        "post",
        "/v1/devices/{id}/approve-reenroll",
        &format!("/v1/devices/{udid}/approve-reenroll"),
        json!({"expires_in": 600}),
    )
    .await;
    c.json(
        "post",
        "/v1/enrollments/invitations",
        "/v1/enrollments/invitations",
        json!({"user": "oa"}),
    )
    .await;
    c.json("post", "/v1/push", "/v1/push", json!({"targets": [udid]})).await;
    c.json("post", "/v1/access/verify", "/v1/access/verify", json!({"token": "nope"}))
        .await;
    c.call("post", "/v1/reconcile", "/v1/reconcile", None).await;
    c.call("post", "/v1/reconcile", &format!("/v1/reconcile?device={udid}"), None).await;
    let _ = d.session().await;
    let cert = c.call("get", "/v1/certificates", "/v1/certificates", None).await;
    let serial = cert["certificates"][0]["serial"].as_str().unwrap_or("00").to_owned();

    // Every GET, with the names made above (or unknown ones: 404s).
    let fill = |p: &str| {
        p.replace("{id}", &udid)
            .replace("{uuid}", cmd["command_uuid"].as_str().unwrap_or("none"))
            .replace("{serial}", &serial)
            .replace("{set}", "oa-set")
            .replace("{identifier}", "oa.test")
    };
    let gets: Vec<String> = paths
        .iter()
        .filter(|(_, ops)| ops.get("get").is_some())
        .map(|(p, _)| p.clone())
        .collect();
    for p in &gets {
        let names: &[&str] = match p.as_str() {
            "/v1/groups/{name}" => &["oa-group", "nope"],
            "/v1/blueprints/{name}" | "/v1/blueprints/{name}/plan" | "/v1/blueprints/{name}/status" => &["oa-bp", "nope"],
            "/v1/profiles/{id}" => &["com.example.openapi", "nope"],
            "/v1/declarations/{id}" => &["oa.test", "nope"],
            _ => &["nope"],
        };
        for n in names {
            let real = if p == "/v1/profiles/{id}" || p == "/v1/declarations/{id}" {
                p.replace("{id}", n)
            } else {
                fill(p).replace("{name}", n)
            };
            c.call("get", p, &real, None).await;
        }
    }
    c.call("get", "/v1/devices", &format!("/v1/devices?serial={}", "nope"), None).await;
    c.call("get", "/v1/devices", "/v1/devices?model=x", None).await;
    c.call(
        "get",
        "/v1/status",
        "/v1/status?item=device.operating-system.version&op=eq&value=17",
        None,
    )
    .await;
    c.call("get", "/v1/compliance", "/v1/compliance?status=bogus", None).await;
    c.call("get", "/v1/devices/{id}", "/v1/devices/nope", None).await;

    // Changes and removals.
    c.call(
        "delete",
        "/v1/devices/{id}/sets/{set}",
        &format!("/v1/devices/{udid}/sets/oa-set"),
        None,
    )
    .await;
    c.call(
        "delete",
        "/v1/sets/{set}/declarations/{identifier}",
        "/v1/sets/oa-set/declarations/oa.test",
        None,
    )
    .await;
    c.call("delete", "/v1/declarations/{id}", "/v1/declarations/oa.test", None).await;
    c.call("delete", "/v1/blueprints/{name}", "/v1/blueprints/oa-bp", None).await;
    c.call("delete", "/v1/groups/{name}", "/v1/groups/oa-rule", None).await;
    c.call("delete", "/v1/groups/{name}", "/v1/groups/nope", None).await;
    c.call("delete", "/v1/accounts/{name}", "/v1/accounts/oa-reader", None).await;
    c.call("delete", "/v1/profiles/{id}", "/v1/profiles/com.example.openapi?remove=true", None)
        .await;
    c.call("delete", "/v1/devices/{id}/commands", &format!("/v1/devices/{udid}/commands"), None)
        .await;
    c.call("post", "/v1/certificates/{serial}/revoke", "/v1/certificates/nope/revoke", None)
        .await;
    c.call("post", "/v1/devices/{id}/unenroll", &format!("/v1/devices/{udid}/unenroll"), None)
        .await;
    // Errors: no credentials, bad JSON.
    let r = c.client.get(format!("{}/v1/devices", srv.base)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    let s = &spec["paths"]["/v1/devices"]["get"]["responses"]["401"]["content"]["application/json"]["schema"];
    check(&spec, s, &body).unwrap();
    c.call("post", "/v1/push", "/v1/push", Some(("application/json", b"{".to_vec())))
        .await;

    assert!(
        c.failures.is_empty(),
        "{} answer(s) do not match the description:\n{}",
        c.failures.len(),
        c.failures.join("\n")
    );
    let ok = c.checked.iter().filter(|k| k.ends_with(" 200") || k.ends_with(" 201")).count();
    let errors = c.checked.iter().filter(|k| k.ends_with(" 400") || k.ends_with(" 404")).count();
    eprintln!(
        "{} (operation, status) pairs checked: {ok} successes, {errors} errors",
        c.checked.len()
    );
    assert!(ok >= 50, "only {ok} successful answers checked: {:?}", c.checked);
    assert!(errors >= 10, "only {errors} error answers checked");

    // A real generator: typed models for the operations.
    generate_python_client(&srv, &spec);
}

/// `openapi-python-client` (PyPI) generates a client; every JSON operation
/// parses into a generated model, never a bare dict or Any.
fn generate_python_client(srv: &Server, spec: &Value) {
    let require = std::env::var("MDMD_TEST_REQUIRE_OPENAPI").is_ok();
    let file = srv.dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(spec).unwrap()).unwrap();
    if let Ok(keep) = std::env::var("MDMD_TEST_OPENAPI_OUT") {
        std::fs::write(keep, serde_json::to_vec_pretty(spec).unwrap()).unwrap();
    }
    let out_dir = srv.dir.path().join("client");
    // Uploads and downloads as is (PEM, S/MIME, profiles, metrics) are bytes to a client.
    let raw: BTreeSet<&str> = spec["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|ops| ops.as_object().unwrap().values())
        .flat_map(|op| {
            let body = op["requestBody"]["content"].as_object().into_iter().flat_map(|c| c.keys());
            let answers = op["responses"]
                .as_object()
                .into_iter()
                .flat_map(|r| r.values())
                .flat_map(|r| r["content"].as_object().into_iter().flat_map(|c| c.keys()));
            body.chain(answers).map(String::as_str).collect::<Vec<_>>()
        })
        .filter(|m| *m != "application/json")
        .collect();
    let overrides: Vec<String> = raw.iter().map(|m| format!("  {m}: application/octet-stream")).collect();
    let config = srv.dir.path().join("generator.yaml");
    std::fs::write(&config, format!("content_type_overrides:\n{}\n", overrides.join("\n"))).unwrap();
    let out = std::process::Command::new("openapi-python-client")
        .args(["generate", "--meta", "none", "--fail-on-warning", "--config"])
        .arg(&config)
        .arg("--path")
        .arg(&file)
        .arg("--output-path")
        .arg(&out_dir)
        .output();
    let o = match out {
        Ok(o) => o,
        Err(e) if !require => {
            eprintln!("openapi-python-client not installed ({e}; pip install openapi-python-client): client generation skipped");
            return;
        }
        Err(e) => panic!("openapi-python-client: {e}"),
    };
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "openapi-python-client failed:\n{text}");
    assert!(!text.contains("Warning"), "openapi-python-client warned:\n{text}");
    // Every operation module's parsed 200/201 answer is a generated model.
    let mut untyped = Vec::new();
    let mut modules = 0;
    let api = out_dir.join("api");
    for tag in std::fs::read_dir(&api).unwrap().flatten().filter(|t| t.path().is_dir()) {
        for m in std::fs::read_dir(tag.path()).unwrap().flatten() {
            let name = m.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".py") || name == "__init__.py" {
                continue;
            }
            modules += 1;
            let src = std::fs::read_to_string(m.path()).unwrap();
            // `def _parse_response(...) -> X | None:`
            let Some(sig) = src.split("def _parse_response(").nth(1) else {
                untyped.push(format!("{name}: no _parse_response"));
                continue;
            };
            let ret = sig
                .split("->")
                .nth(1)
                .and_then(|r| r.split(':').next())
                .unwrap_or("")
                .trim()
                .to_owned();
            let raw = [
                "healthz",
                "metrics",
                "public_key",
                "enrollments_profile",
                "delete_v1_apps_id",
                "delete_v1_apps_and_books",
            ]
            .iter()
            .any(|r| name.contains(r));
            if !raw && (ret.contains("Any") || ret.contains("dict[") || ret == "None" || ret.is_empty()) {
                untyped.push(format!("{name}: parses into {ret:?}"));
            }
        }
    }
    let described: usize = spec["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|o| o.as_object().unwrap().len())
        .sum();
    assert_eq!(modules, described, "one module per operation");
    assert!(untyped.is_empty(), "untyped generated operations:\n{}", untyped.join("\n"));
    let models = std::fs::read_dir(out_dir.join("models")).unwrap().count();
    assert!(models > 50, "only {models} generated models");
}

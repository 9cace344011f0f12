//! The real `VppClient` against the real stand-in, over HTTP on 127.0.0.1.

use std::time::Duration;

use super::*;
use crate::vpp::{ContentToken, VppClient, VppError};

const WAIT: Duration = Duration::from_secs(2);

async fn pair() -> (VppStandIn, VppClient) {
    let apple = VppStandIn::start("Example Org").await.unwrap();
    let token = ContentToken::parse(apple.token_file().as_bytes()).unwrap();
    let client = VppClient::new(&apple.url(), token, http()).unwrap();
    (apple, client)
}

fn serials(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("C02SIM{i:06}")).collect()
}

/// One HTTP client for the tests (building one loads the system's CAs).
fn http() -> reqwest::Client {
    static HTTP: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    // No idle connections: each test has its own runtime, and a pooled
    // connection must not outlive the one that made it.
    HTTP.get_or_init(|| {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("an HTTP client")
    })
    .clone()
}

/// A raw request with this stand-in's token, for what the client never sends.
async fn raw(apple: &VppStandIn, method: &str, path: &str, body: Option<(&str, &str)>) -> (u16, Value) {
    let mut r = http()
        .request(method.parse().unwrap(), format!("{}{path}", apple.url()))
        .bearer_auth(apple.token_file());
    if let Some((ct, b)) = body {
        r = r.header("content-type", ct).body(b.to_owned());
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn token_file_and_config() {
    let (apple, client) = pair().await;
    let t = client.token();
    assert_eq!(t.org_name, "Example Org");
    assert!(!t.expired(crate::clock::now()));
    assert!(t.expires_at > crate::clock::now() + 360 * 86_400);
    let c = client.config().await.unwrap();
    assert_eq!(c.location_name.as_deref(), Some("Example Org"));
    assert_eq!(c.country.as_deref(), Some("US"));
    assert_eq!(c.location_id, None);
    assert!(c.uid.as_deref().is_some_and(|u| u.len() == 16));
    let exp = c.token_expiration.as_deref().and_then(crate::vpp::parse_time);
    assert_eq!(exp, Some(t.expires_at));
    assert_eq!(c.raw["defaultPlatform"], "volumestore");
    let st = apple.stats();
    assert_eq!((st.requests, st.refused), (1, 0));
    assert_eq!(st.calls["GET /client/config"], 1);
    let expired = ContentToken::parse(apple.expired_token_file().as_bytes()).unwrap();
    assert!(expired.expired(crate::clock::now()) && expired.org_name == "Example Org");
}

#[tokio::test]
async fn assets_across_pages() {
    let (apple, client) = pair().await;
    assert!(client.assets().await.unwrap().is_empty());
    for i in 0..8 {
        apple.add_app(&format!("40870978{i}"), 10 + i);
    }
    apple.add_book("361309726", 5);
    let assets = client.assets().await.unwrap();
    assert_eq!(assets.len(), 9);
    let ids: Vec<&str> = assets.iter().map(|a| a.adam_id.as_str()).collect();
    assert_eq!(ids[0], "361309726");
    assert_eq!(
        ids[1..],
        [
            "408709780",
            "408709781",
            "408709782",
            "408709783",
            "408709784",
            "408709785",
            "408709786",
            "408709787"
        ]
    );
    let app = &assets[3];
    assert_eq!((app.pricing_param.as_str(), app.product_type.as_str()), ("STDQ", "App"));
    assert!(app.device_assignable && app.revocable);
    assert_eq!((app.assigned_count, app.available_count, app.total_count), (0, 12, 12));
    assert!(!assets[0].device_assignable && assets[0].product_type == "Book");
    // 1 (empty) + 3 pages of 3.
    assert_eq!(apple.stats().calls["GET /assets"], 4);
    apple.set_page_size(100);
    assert_eq!(client.assets().await.unwrap().len(), 9);
    assert_eq!(apple.stats().calls["GET /assets"], 5);
}

#[tokio::test]
async fn associate_pending_then_complete() {
    let (apple, client) = pair().await;
    apple.add_app("408709785", 5);
    apple.set_event_delay(2);
    let devices = serials(4);
    let events = client.associate("408709785", "STDQ", &devices).await.unwrap();
    assert_eq!(events.len(), 1);
    for _ in 0..2 {
        let st = client.event(&events[0]).await.unwrap();
        assert_eq!(st.status, "PENDING");
        assert_eq!(st.event_type.as_deref(), Some("ASSOCIATE"));
        assert_eq!((st.completed, st.requested), (0, 4));
        // Nothing happens before Apple gets to it.
        assert_eq!(apple.licences("408709785"), (0, 5));
    }
    let st = client.event(&events[0]).await.unwrap();
    assert_eq!((st.status.as_str(), st.completed, st.requested), ("COMPLETE", 4, 4));
    assert!(st.failures.is_empty());
    assert_eq!(apple.licences("408709785"), (4, 1));
    assert!(devices.iter().all(|s| apple.assigned("408709785", s)));
    assert!(!apple.assigned("408709785", "OTHER") && !apple.assigned("1", &devices[0]));

    let all = client.assignments(Some("408709785"), None).await.unwrap();
    let mut got: Vec<&str> = all.iter().filter_map(|a| a.serial_number.as_deref()).collect();
    got.sort_unstable();
    assert_eq!(got, devices.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(all.iter().all(|a| a.adam_id == "408709785" && a.pricing_param == "STDQ"));
    let one = client.assignments(None, Some(&devices[2])).await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].serial_number.as_deref(), Some(devices[2].as_str()));
    assert!(client.assignments(Some("999"), None).await.unwrap().is_empty());
    let a = client.assets().await.unwrap();
    assert_eq!((a[0].assigned_count, a[0].available_count), (4, 1));

    // Again (and a duplicate in the list): the holders keep theirs, no licence spent.
    apple.set_event_delay(0);
    let mut again = devices.clone();
    again.push(format!(" {} ", devices[0]));
    let events = client.associate("408709785", "STDQ", &again).await.unwrap();
    let st = client.wait_event(&events[0], WAIT).await.unwrap();
    assert_eq!((st.completed, st.requested), (4, 4));
    assert_eq!(apple.licences("408709785"), (4, 1));
    // No serials: nothing to ask.
    assert!(client.associate("408709785", "STDQ", &[]).await.unwrap().is_empty());
    assert_eq!(apple.stats().associations, 2);
}

#[tokio::test]
async fn associate_beyond_the_pool_fails_those_serials() {
    let (apple, client) = pair().await;
    apple.add_app("408709785", 2);
    let devices = serials(3);
    let events = client.associate("408709785", "STDQ", &devices).await.unwrap();
    let failures = match client.wait_event(&events[0], WAIT).await {
        Err(VppError::EventFailed(f)) => f,
        other => panic!("{other:?}"),
    };
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].serial_number.as_deref(), Some(devices[2].as_str()));
    assert_eq!(failures[0].adam_id.as_deref(), Some("408709785"));
    assert_eq!(failures[0].error_number, Some(9709));
    assert_eq!(apple.licences("408709785"), (2, 0));
    // The two that fit got theirs; Apple says FAILED with what went through.
    let st = client.event(&events[0]).await.unwrap();
    assert_eq!((st.status.as_str(), st.completed, st.requested), ("FAILED", 2, 3));
    let err = VppError::EventFailed(failures).to_string();
    assert!(err.contains(&devices[2]) && err.contains("9709"), "{err}");

    // An app the organisation has no licences of at all.
    let events = client.associate("111111111", "STDQ", &devices[..1]).await.unwrap();
    match client.wait_event(&events[0], WAIT).await {
        Err(VppError::EventFailed(f)) => {
            assert_eq!(f.len(), 1);
            assert_eq!((f[0].adam_id.as_deref(), f[0].error_number), (Some("111111111"), Some(9709)));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn disassociate_releases() {
    let (apple, client) = pair().await;
    apple.add_app("408709785", 3);
    apple.set_event_delay(0);
    let devices = serials(3);
    let events = client.associate("408709785", "STDQ", &devices).await.unwrap();
    client.wait_event(&events[0], WAIT).await.unwrap();
    assert_eq!(apple.licences("408709785"), (3, 0));

    // One that holds a licence and one that never had one: the first is released.
    let ask = vec![devices[0].clone(), "NEVER0000001".to_owned()];
    let events = client.disassociate("408709785", "STDQ", &ask).await.unwrap();
    match client.wait_event(&events[0], WAIT).await {
        Err(VppError::EventFailed(f)) => {
            assert_eq!(f.len(), 1);
            assert_eq!(f[0].serial_number.as_deref(), Some("NEVER0000001"));
            assert_eq!(f[0].error_number, Some(9610));
        }
        other => panic!("{other:?}"),
    }
    let st = client.event(&events[0]).await.unwrap();
    assert_eq!((st.event_type.as_deref(), st.completed, st.requested), (Some("DISASSOCIATE"), 1, 2));
    assert_eq!(apple.licences("408709785"), (2, 1));
    assert!(!apple.assigned("408709785", &devices[0]) && apple.assigned("408709785", &devices[1]));

    let events = client.disassociate("408709785", "STDQ", &devices[1..]).await.unwrap();
    let st = client.wait_event(&events[0], WAIT).await.unwrap();
    assert_eq!((st.status.as_str(), st.completed), ("COMPLETE", 2));
    assert_eq!(apple.licences("408709785"), (0, 3));
    assert!(client.assignments(None, None).await.unwrap().is_empty());
    // The freed licence goes to another device.
    let events = client.associate("408709785", "STDQ", &["NEW000000001".to_owned()]).await.unwrap();
    client.wait_event(&events[0], WAIT).await.unwrap();
    assert!(apple.assigned("408709785", "NEW000000001"));
    assert_eq!(apple.stats().disassociations, 2);
}

#[tokio::test]
async fn more_serials_than_apple_takes_go_in_chunks() {
    let (apple, client) = pair().await;
    apple.add_app("408709785", 1001);
    apple.set_event_delay(0);
    let devices = serials(1001);
    let events = client.associate("408709785", "STDQ", &devices).await.unwrap();
    assert_eq!(events.len(), 2);
    for e in &events {
        client.wait_event(e, WAIT).await.unwrap();
    }
    assert_eq!(apple.licences("408709785"), (1001, 0));
    assert_eq!(apple.stats().associations, 2);
}

#[tokio::test]
async fn throttling_waited_out_or_returned() {
    let (apple, client) = pair().await;
    // Retry-After: 0, twice: waited out within the default policy.
    apple.throttle_next(2, 0);
    assert_eq!(client.config().await.unwrap().location_name.as_deref(), Some("Example Org"));
    assert_eq!(apple.stats().throttled, 2);
    // Longer than the client waits (60 s): returned at once.
    apple.throttle_next(1, 120);
    let t0 = std::time::Instant::now();
    assert!(matches!(client.assets().await, Err(VppError::Throttled { retry_after_secs: 120 })));
    assert!(t0.elapsed() < Duration::from_secs(1));
    // More throttled answers than attempts.
    let client = client.with_retry(3, Duration::from_secs(1));
    apple.throttle_next(5, 0);
    assert!(matches!(client.config().await, Err(VppError::Throttled { retry_after_secs: 0 })));
    let st = apple.stats();
    assert_eq!((st.throttled, st.requests), (6, 7));
    apple.throttle_next(0, 0);
    client.config().await.unwrap();
}

#[tokio::test]
async fn revoked_expired_and_wrong_tokens_are_refused() {
    let (apple, client) = pair().await;
    client.config().await.unwrap();
    apple.revoke_token();
    match client.config().await {
        Err(VppError::TokenRejected(m)) => assert!(m.contains("revoked"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(apple.stats().refused, 1);

    let expired = ContentToken::parse(apple.expired_token_file().as_bytes()).unwrap();
    let c = VppClient::new(&apple.url(), expired, http()).unwrap();
    match c.assets().await {
        Err(e @ VppError::TokenRejected(_)) => {
            let m = e.to_string();
            assert!(m.contains("expired") && m.contains("Apple Business Manager"), "{m}");
        }
        other => panic!("{other:?}"),
    }

    // Another organisation's token: refused and counted.
    let other = VppStandIn::start("Other Org").await.unwrap();
    let theirs = ContentToken::parse(other.token_file().as_bytes()).unwrap();
    let c = VppClient::new(&apple.url(), theirs, http()).unwrap();
    match c.associate("408709785", "STDQ", &serials(1)).await {
        Err(VppError::TokenRejected(m)) => assert!(m.contains("9622"), "{m}"),
        other => panic!("{other:?}"),
    }
    let st = apple.stats();
    assert_eq!((st.refused, st.associations), (3, 0));
    assert_eq!(st.last_refusal.as_deref(), Some("an unknown token"));

    // No Authorization, or not Bearer.
    let r = http().get(format!("{}/assets", apple.url())).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["errorNumber"], 9722);
    let r = http()
        .get(format!("{}/assets", apple.url()))
        .header("authorization", format!("Basic {}", apple.token_file()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["errorNumber"], 9722);
    assert_eq!(apple.stats().refused, 5);
}

#[tokio::test]
async fn strict_about_what_apple_checks() {
    let (apple, client) = pair().await;
    apple.add_app("408709785", 5);
    apple.add_book("361309726", 5);
    let post = |path: &'static str, body: String| {
        let apple = &apple;
        async move { raw(apple, "POST", path, Some(("application/json", body.as_str()))).await }
    };
    let number = |r: (u16, Value)| (r.0, r.1["errorNumber"].as_i64());

    assert_eq!(number(post("/assets/associate", "{not json".into()).await), (400, Some(9602)));
    assert_eq!(number(post("/assets/associate", "[]".into()).await), (400, Some(9602)));
    assert_eq!(
        number(raw(&apple, "POST", "/assets/associate", Some(("text/plain", "{}"))).await),
        (415, Some(9727))
    );
    assert_eq!(
        number(post("/assets/associate", r#"{"serialNumbers":["A"]}"#.into()).await),
        (400, Some(9718))
    );
    assert_eq!(
        number(post("/assets/associate", r#"{"assets":[{"adamId":"408709785"}]}"#.into()).await),
        (400, Some(9719))
    );
    assert_eq!(
        number(
            post(
                "/assets/associate",
                r#"{"assets":[{"adamId":"408709785"}],"serialNumbers":["A","A"]}"#.into()
            )
            .await
        ),
        (400, Some(9705))
    );
    assert_eq!(
        number(
            post(
                "/assets/associate",
                r#"{"assets":[{"adamId":"408709785"},{"adamId":"408709785","pricingParam":"STDQ"}],"serialNumbers":["A"]}"#.into()
            )
            .await
        ),
        (400, Some(9703))
    );
    assert_eq!(
        number(
            post(
                "/assets/associate",
                r#"{"assets":[{"adamId":"408709785","pricingParam":"GOLD"}],"serialNumbers":["A"]}"#.into()
            )
            .await
        ),
        (400, Some(9602))
    );
    let many = json!({ "assets": [{"adamId": "408709785"}], "serialNumbers": serials(1001) }).to_string();
    assert_eq!(number(post("/assets/associate", many).await), (400, Some(9702)));
    let assets: Vec<Value> = (0..26).map(|i| json!({ "adamId": i.to_string() })).collect();
    let many = json!({ "assets": assets, "serialNumbers": ["A"] }).to_string();
    assert_eq!(number(post("/assets/associate", many).await), (400, Some(9700)));
    assert_eq!(number(raw(&apple, "GET", "/assets/associate", None).await), (405, Some(9726)));
    assert_eq!(number(raw(&apple, "DELETE", "/assets", None).await), (405, Some(9726)));
    assert_eq!(raw(&apple, "GET", "/nothing", None).await.0, 404);
    assert_eq!(number(raw(&apple, "GET", "/assets?pageIndex=7", None).await), (400, Some(9650)));
    assert_eq!(number(raw(&apple, "GET", "/assets?pageIndex=-1", None).await), (400, Some(9602)));
    assert_eq!(number(raw(&apple, "GET", "/assets?revocable=yes", None).await), (400, Some(9602)));
    assert_eq!(
        number(raw(&apple, "GET", "/assets?adamId=1&adamId=2", None).await),
        (400, Some(9602))
    );
    assert_eq!(number(raw(&apple, "GET", "/status", None).await), (400, Some(9602)));
    assert_eq!(
        number(raw(&apple, "GET", "/assignments?sinceVersionId=old", None).await),
        (400, Some(9721))
    );
    // Filters.
    let (s, v) = raw(&apple, "GET", "/assets?productType=Book&deviceAssignable=false", None).await;
    assert_eq!(
        (s, v["assets"][0]["adamId"].as_str(), v["size"].as_u64()),
        (200, Some("361309726"), Some(1))
    );
    let (_, v) = raw(&apple, "GET", "/assets?minAvailableCount=6", None).await;
    assert_eq!(v["size"], 0);
    // Through the client: Apple's number and message.
    match client.event("no-such-event").await {
        Err(VppError::Apple {
            status: 400,
            number: Some(9708),
            message,
        }) => assert_eq!(message, "Unable to find eventId."),
        other => panic!("{other:?}"),
    }
    match client.associate("361309726", "STDQ", &serials(1)).await {
        Err(VppError::Apple {
            status: 400,
            number: Some(9707),
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // Users are not modelled: they fail, the devices go through.
    apple.set_event_delay(0);
    let (s, v) = post(
        "/assets/associate",
        r#"{"assets":[{"adamId":"408709785"}],"serialNumbers":["A"],"clientUserIds":["user101"]}"#.into(),
    )
    .await;
    assert_eq!(s, 200);
    match client.wait_event(v["eventId"].as_str().unwrap(), WAIT).await {
        Err(VppError::EventFailed(f)) => {
            assert_eq!(
                (f.len(), f[0].serial_number.as_deref(), f[0].error_number),
                (1, Some("user101"), Some(9609))
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(apple.assigned("408709785", "A"));
    // Refused requests made no event.
    assert_eq!(apple.stats().associations, 1);
}

#[tokio::test]
async fn wait_event_gives_up_in_time() {
    let (apple, client) = pair().await;
    apple.add_app("408709785", 1);
    apple.set_event_delay(1000);
    let events = client.associate("408709785", "STDQ", &serials(1)).await.unwrap();
    let t0 = std::time::Instant::now();
    match client.wait_event(&events[0], Duration::from_millis(500)).await {
        Err(VppError::Timeout(m)) => assert!(m.contains("PENDING") && m.contains("0 of 1"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_millis(1500));
    assert_eq!(apple.licences("408709785"), (0, 1));
}

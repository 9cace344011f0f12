//! Rules shared by mdmd's clients of Apple's services (ADE, Apps and
//! Books): which service URLs are allowed, the fields of a token file, and
//! text cut to a bound for messages. Below `service`; imports nothing of ours.

/// The service URL, normalised (no trailing `/`): `https://`, or `http://`
/// only to a loopback host (127.0.0.0/8, ::1, localhost — a local stand-in);
/// no credentials, query or fragment. `Err` says why not.
pub fn service_url(base: &str) -> Result<String, String> {
    let u = reqwest::Url::parse(base.trim()).map_err(|e| format!("{:?}: {e}", bounded(base, 200)))?;
    if u.query().is_some() || u.fragment().is_some() || !u.username().is_empty() || u.password().is_some() {
        return Err(format!(
            "{}: no credentials, query or fragment in the service URL",
            bounded(base, 200)
        ));
    }
    let Some(host) = u.host_str() else {
        return Err(format!("{}: no host", bounded(base, 200)));
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match u.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(format!(
                "{}: plain http only to a loopback address (a local stand-in); Apple's service is https",
                bounded(base, 200)
            ))
        }
        s => return Err(format!("{}: unsupported scheme {s}", bounded(base, 200))),
    }
    Ok(u.as_str().trim_end_matches('/').to_owned())
}

/// A required string field of a token file's JSON: present, non-empty after
/// trimming, at most `max` bytes, no control characters. `what` names the
/// token in the message ("server token").
pub fn token_field(obj: &serde_json::Map<String, serde_json::Value>, name: &str, what: &str, max: usize) -> Result<String, String> {
    let s = match obj.get(name) {
        None | Some(serde_json::Value::Null) => return Err(format!("the {what} has no {name}")),
        Some(serde_json::Value::String(s)) => s.trim(),
        Some(_) => return Err(format!("the {what}'s {name} is not a string")),
    };
    if s.is_empty() {
        return Err(format!("the {what}'s {name} is empty"));
    }
    if s.len() > max {
        return Err(format!("the {what}'s {name} is {} characters long (at most {max})", s.len()));
    }
    if s.chars().any(char::is_control) {
        return Err(format!("the {what}'s {name} contains control characters"));
    }
    Ok(s.to_owned())
}

/// `s` cut to at most `max` bytes on a character boundary.
pub fn bounded(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A token's expiry as health and the console say it: expired, or expiring
/// within `warn` seconds of `now`; None otherwise. `what` names the token
/// ("ADE server token main"), `renew` says how to replace it.
pub fn expiry_problem(what: &str, renew: &str, expires_at: i64, now: i64, warn: i64) -> Option<String> {
    let when = crate::clock::rfc3339(expires_at).unwrap_or_default();
    if expires_at <= now {
        Some(format!("{what} expired at {when}: {renew}"))
    } else if expires_at - now < warn {
        let days = (expires_at - now) / 86_400;
        Some(format!(
            "{what} expires in {days} days ({when}): renew it in Apple Business Manager"
        ))
    } else {
        None
    }
}

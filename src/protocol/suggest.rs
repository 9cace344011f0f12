//! "Did you mean …?" for names an admin types: request types and
//! DeviceInformation query names, checked against Apple's schema. Similarity
//! is `strsim`'s normalised Damerau–Levenshtein, case folded.

use super::schema::{Schema, SchemaError};

/// How alike two names must be (0..1) to be offered.
const CLOSE: f64 = 0.7;

/// The candidate most like `name`, when one is close enough.
/// A name of four or more characters that begins a candidate (`DeviceInfo`)
/// counts as close too.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let n = name.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| {
            let l = c.to_ascii_lowercase();
            let prefix = n.len() >= 4 && l.starts_with(&n);
            (
                c,
                if prefix {
                    1.0
                } else {
                    strsim::normalized_damerau_levenshtein(&n, &l)
                },
            )
        })
        .filter(|(_, s)| *s >= CLOSE)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(c, _)| c)
}

/// `unknown request type "X"`, with the closest known one.
pub fn unknown_request_type(schema: &Schema, rt: &str) -> String {
    match closest(rt, schema.commands.keys().map(String::as_str)) {
        Some(c) => format!("unknown request type {rt:?}; did you mean {c:?}?"),
        None => format!("unknown request type {rt:?} (mdmd cmd --help lists them)"),
    }
}

/// DeviceInformation `Queries` that iOS does not have: an error naming each
/// (at most 10), with the closest real query.
pub fn check_queries(schema: &Schema, queries: &[&str]) -> Result<(), SchemaError> {
    if schema.device_queries.is_empty() {
        return Ok(());
    }
    let known = |q: &str| schema.device_queries.iter().any(|d| d.name == q);
    let problems: Vec<String> = queries
        .iter()
        .filter(|q| !known(q))
        .take(10)
        .map(|q| match closest(q, schema.device_queries.iter().map(|d| d.name.as_str())) {
            Some(c) => format!("{q:?} is not a query iOS answers; did you mean {c:?}?"),
            None => format!("{q:?} is not a query iOS answers"),
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SchemaError {
            path: "Queries".into(),
            problem: problems.join("; "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_names_are_offered_far_ones_are_not() {
        let s = Schema::get();
        assert!(unknown_request_type(s, "DeviceInfomation").contains("did you mean \"DeviceInformation\""));
        assert!(unknown_request_type(s, "profilelist").contains("\"ProfileList\""));
        assert!(unknown_request_type(s, "DeviceInfo").contains("did you mean \"DeviceInformation\""));
        assert!(!unknown_request_type(s, "MakeCoffee").contains("did you mean"));
        assert!(check_queries(s, &["SerialNumber", "OSVersion"]).is_ok());
        let e = check_queries(s, &["SerialNumbr", "Nonsense"]).unwrap_err();
        assert!(e.problem.contains("did you mean \"SerialNumber\""), "{e:?}");
        assert!(e.problem.contains("\"Nonsense\" is not a query iOS answers"), "{e:?}");
    }
}

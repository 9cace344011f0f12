//! Dynamic group rules: expressions in Google's Common Expression Language
//! (CEL, <https://cel.dev>), evaluated by the `cel` crate over one device
//! object (documented in docs/groups.md and built by `device_object`).
//!
//! A rule is admin input, so it is bounded before it is parsed: at most
//! `MAX_RULE_LEN` bytes, brackets nested at most `MAX_NESTING` deep, parsed on
//! a thread with its own large stack (the crate's parser is recursive; it also
//! stops at its own recursion limit). It may name one variable, `device`, and
//! the standard functions plus `version_cmp(a, b)`, which compares dotted
//! versions numerically (`version_cmp("17.10", "17.9") == 1`). A rule that
//! does not evaluate to `true` for a device — false, another type, or an error
//! such as a missing attribute — leaves the device out of the group.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use serde_json::{json, Value as Json};

use crate::store::{ComplianceRecord, Enrollment, InventoryItem};

pub const MAX_RULE_LEN: usize = 2048;
pub const MAX_NESTING: usize = 32;
/// How deep the parsed expression may be (operators chain: `a && b && c …`).
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuleError {
    #[error("the rule is empty")]
    Empty,
    #[error("the rule is longer than {MAX_RULE_LEN} bytes")]
    TooLong,
    #[error("the rule nests brackets deeper than {MAX_NESTING}")]
    TooDeep,
    #[error("the rule does not parse: {0}")]
    Syntax(String),
    #[error("the rule names {0:?}; rules may only read `device` (see docs/groups.md)")]
    UnknownVariable(String),
    #[error("the rule cannot be evaluated: {0}")]
    Invalid(String),
}

/// A compiled rule.
pub struct Rule {
    pub source: String,
    program: cel::Program,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Rule({:?})", self.source)
    }
}

fn env() -> &'static Arc<cel::Env> {
    static ENV: OnceLock<Arc<cel::Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(cel::Env::stdlib()))
}

/// How deep brackets nest outside string literals.
fn nesting(src: &str) -> usize {
    let (mut depth, mut most, mut quote, mut escaped) = (0usize, 0usize, None::<char>, false);
    for c in src.chars() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => quote = Some(c),
            '(' | '[' | '{' => {
                depth += 1;
                most = most.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    most
}

/// The depth of an expression tree.
fn depth(e: &cel::IdedExpr) -> usize {
    use cel::common::ast::{EntryExpr, Expr};
    let kids: Vec<&cel::IdedExpr> = match &e.expr {
        Expr::Call(c) => c.target.iter().map(|b| b.as_ref()).chain(c.args.iter()).collect(),
        Expr::Comprehension(c) => vec![&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step, &c.result],
        Expr::List(l) => l.elements.iter().collect(),
        Expr::Map(cel::common::ast::MapExpr { entries }) | Expr::Struct(cel::common::ast::StructExpr { entries, .. }) => entries
            .iter()
            .flat_map(|en| match &en.expr {
                EntryExpr::MapEntry(me) => vec![&me.key, &me.value],
                EntryExpr::StructField(f) => vec![&f.value],
            })
            .collect(),
        Expr::Select(sel) => vec![sel.operand.as_ref()],
        _ => Vec::new(),
    };
    1 + kids.into_iter().map(depth).max().unwrap_or(0)
}

/// Compare dotted versions numerically ("17.10" > "17.9"; missing parts are 0;
/// a part that is not a number compares as text).
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let mut x = a.trim().split('.');
    let mut y = b.trim().split('.');
    loop {
        match (x.next(), y.next()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (p, q) => {
                let (p, q) = (p.unwrap_or("0"), q.unwrap_or("0"));
                let o = match (p.parse::<u64>(), q.parse::<u64>()) {
                    (Ok(m), Ok(n)) => m.cmp(&n),
                    _ => p.cmp(q),
                };
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

/// The context rules about one device run in (build it once per device).
pub fn context(device: &cel::Value) -> cel::Context<'static, 'static> {
    let mut ctx = cel::Context::with_env(env().clone());
    // The name is ours and not the standard library's, so this cannot fail.
    let _ = ctx.add_function("version_cmp", |a: Arc<String>, b: Arc<String>| -> i64 {
        match version_cmp(&a, &b) {
            std::cmp::Ordering::Less => -1,
            std::cmp::Ordering::Equal => 0,
            std::cmp::Ordering::Greater => 1,
        }
    });
    ctx.add_variable_from_value("device", device.clone());
    ctx
}

/// A device object for rules, from JSON (see `device_object`).
pub fn to_cel(device: &Json) -> cel::Value {
    cel::to_value(device).unwrap_or(cel::Value::Null)
}

impl Rule {
    pub fn compile(src: &str) -> Result<Rule, RuleError> {
        let src = src.trim();
        if src.is_empty() {
            return Err(RuleError::Empty);
        }
        if src.len() > MAX_RULE_LEN {
            return Err(RuleError::TooLong);
        }
        if nesting(src) > MAX_NESTING {
            return Err(RuleError::TooDeep);
        }
        let owned = src.to_owned();
        // The parser recurses: give it a stack of its own, whatever thread we are on.
        let parsed = std::thread::Builder::new()
            .name("rule-parse".into())
            .stack_size(64 << 20)
            .spawn(move || {
                std::panic::catch_unwind(|| {
                    let p = env().compile(&owned).map_err(|e| e.to_string())?;
                    // Evaluation recurses too, on whatever thread evaluates.
                    if depth(p.expression()) > MAX_DEPTH {
                        return Err(format!("the expression nests deeper than {MAX_DEPTH}"));
                    }
                    Ok(p)
                })
                .unwrap_or_else(|_| Err("the parser failed on this input".into()))
            })
            .map_err(|e| RuleError::Syntax(e.to_string()))?
            .join()
            .unwrap_or_else(|_| Err("the parser failed on this input".into()));
        let program = parsed.map_err(|e| RuleError::Syntax(e.lines().next().unwrap_or_default().to_owned()))?;
        if let Some(v) = program.references().variables().into_iter().find(|v| *v != "device") {
            return Err(RuleError::UnknownVariable(v.to_owned()));
        }
        let rule = Rule {
            source: src.to_owned(),
            program,
        };
        // Against a device with every documented field: a call to a function
        // that does not exist, or one on the wrong types, shows up now.
        match rule.eval(&to_cel(&sample_device())) {
            Err(e @ (cel::ExecutionError::NoSuchOverload(_) | cel::ExecutionError::UndeclaredReference(_))) if !matches!(&e, cel::ExecutionError::UndeclaredReference(n) if n.as_str() == "device") => {
                Err(RuleError::Invalid(e.to_string()))
            }
            _ => Ok(rule),
        }
    }

    fn eval(&self, device: &cel::Value) -> Result<cel::Value, cel::ExecutionError> {
        self.eval_in(&context(device))
    }

    fn eval_in(&self, ctx: &cel::Context<'_, '_>) -> Result<cel::Value, cel::ExecutionError> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.program.execute(ctx))) {
            Ok(r) => r,
            Err(_) => Err(cel::ExecutionError::InternalError("evaluation failed".into())),
        }
    }

    /// Is the device in? (Anything but `true` is no.)
    pub fn matches(&self, device: &cel::Value) -> bool {
        matches!(self.eval(device), Ok(cel::Value::Bool(true)))
    }

    /// `matches` in a device's `context`, for several rules about one device.
    pub fn matches_in(&self, ctx: &cel::Context<'_, '_>) -> bool {
        matches!(self.eval_in(ctx), Ok(cel::Value::Bool(true)))
    }
}

/// What a rule sees as `device` (docs/groups.md lists every field).
pub struct DeviceFacts<'a> {
    pub enrollment: &'a Enrollment,
    pub inventory: &'a [InventoryItem],
    pub compliance: Option<&'a ComplianceRecord>,
    /// DDM status items: name → value.
    pub ddm: BTreeMap<String, Json>,
}

fn inventory_value<'a>(inv: &'a [InventoryItem], kind: &str, key: &str) -> Option<&'a Json> {
    inv.iter().find(|i| i.kind == kind).and_then(|i| i.data.get(key))
}

/// The device object rules read.
pub fn device_object(f: &DeviceFacts<'_>) -> Json {
    let e = f.enrollment;
    let i = &e.info;
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    let os = i.os_version.clone().unwrap_or_default();
    let os_parts: Vec<i64> = os.split('.').filter_map(|p| p.parse().ok()).collect();
    // An ADE profile's supervision, or what the device said (its inventory, then its facts).
    let supervised = e.ade.as_ref().is_some_and(|a| a.supervised)
        || inventory_value(f.inventory, "DeviceInformation", "IsSupervised")
            .or_else(|| inventory_value(f.inventory, "DeviceInformation", "QueryResponses").and_then(|q| q.get("IsSupervised")))
            .and_then(Json::as_bool)
            .or(e.info.is_supervised)
            .unwrap_or(false);
    let username = e.username().unwrap_or_default();
    let user = json!({
        "name": username,
        "username": username,
        "email": e.email().unwrap_or_default(),
        "full_name": e.full_name().unwrap_or_default(),
        "groups": e.user.as_ref().map(|u| u.groups.clone()).unwrap_or_default(),
        "method": e.user.as_ref().map(|u| u.method.clone()).unwrap_or_default(),
    });
    json!({
        "id": e.id,
        "udid": s(&e.udid),
        "serial": s(&i.serial_number),
        "model": s(&i.product_name),
        "model_name": s(&i.model_name),
        "model_number": s(&i.model),
        "name": s(&i.device_name),
        "os_version": os,
        "os": os_parts,
        "build": s(&i.build_version),
        "imei": s(&i.imei),
        "meid": s(&i.meid),
        "phone_number": s(&i.phone_number),
        "supervised": supervised,
        "ade": e.ade.is_some(),
        "abm_server": e.ade.as_ref().map(|a| a.server.clone()).unwrap_or_default(),
        "kind": serde_json::to_value(e.kind).unwrap_or(Json::Null),
        "enrolled": e.active && e.checked_out_at.is_none(),
        "enrolled_at": e.enrolled_at,
        "awaiting_configuration": e.awaiting_configuration,
        "attributes": e.attributes,
        "user": user,
        "compliance": f.compliance.map_or("unknown", |c| c.state.as_str()),
        "compliance_reasons": f.compliance.map(|c| c.reasons.clone()).unwrap_or_default(),
        "ddm": f.ddm,
    })
}

/// A device with every field set, to check rules against when they are stored.
fn sample_device() -> Json {
    let mut e = Enrollment::blank("SAMPLE", "SAMPLE", crate::protocol::EnrollmentKind::Device, "", 0);
    e.udid = Some("SAMPLE".into());
    e.info.os_version = Some("17.0".into());
    e.info.product_name = Some("iPhone16,1".into());
    device_object(&DeviceFacts {
        enrollment: &e,
        inventory: &[],
        compliance: None,
        ddm: BTreeMap::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(attrs: &[(&str, &str)], model: &str, os: &str, supervised: bool) -> cel::Value {
        let mut e = Enrollment::blank("D1", "D1", crate::protocol::EnrollmentKind::Device, "", 0);
        e.info.product_name = Some(model.into());
        e.info.os_version = Some(os.into());
        e.attributes = attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let inv = vec![InventoryItem {
            kind: "DeviceInformation".into(),
            reported_at: 0,
            data: json!({"QueryResponses": {"IsSupervised": supervised}}),
        }];
        let mut ddm = BTreeMap::new();
        ddm.insert("device.operating-system.version".to_owned(), json!(os));
        to_cel(&device_object(&DeviceFacts {
            enrollment: &e,
            inventory: &inv,
            compliance: None,
            ddm,
        }))
    }

    #[test]
    fn the_issue_examples() {
        let sales = dev(&[("DEPARTMENT", "sales")], "iPhone16,1", "17.10", false);
        let ops = dev(&[("DEPARTMENT", "ops")], "iPhone16,1", "17.9", true);
        let r = Rule::compile(r#"device.attributes.DEPARTMENT == "sales""#).unwrap();
        assert!(r.matches(&sales) && !r.matches(&ops));
        let r = Rule::compile(r#"device.model == "iPhone16,1" && !device.supervised"#).unwrap();
        assert!(r.matches(&sales) && !r.matches(&ops));
        let r = Rule::compile(r#"version_cmp(device.os_version, "17.9") > 0"#).unwrap();
        assert!(r.matches(&sales), "17.10 is after 17.9");
        assert!(!r.matches(&ops));
        let r = Rule::compile(r#"device.compliance == "unknown""#).unwrap();
        assert!(r.matches(&sales));
        let r = Rule::compile(r#"device.ddm["device.operating-system.version"] == "17.9""#).unwrap();
        assert!(r.matches(&ops) && !r.matches(&sales));
        // A missing attribute is an error: not a member, not a failure.
        let r = Rule::compile(r#"device.attributes.TEAM == "x""#).unwrap();
        assert!(!r.matches(&sales));
        let r = Rule::compile(r#"has(device.attributes.TEAM)"#).unwrap();
        assert!(!r.matches(&sales));
    }

    #[test]
    fn hostile_rules_are_refused_cleanly() {
        assert_eq!(Rule::compile("").unwrap_err(), RuleError::Empty);
        assert_eq!(Rule::compile(&"a".repeat(5000)).unwrap_err(), RuleError::TooLong);
        let deep = format!("{}true{}", "(".repeat(500), ")".repeat(500));
        assert_eq!(Rule::compile(&deep).unwrap_err(), RuleError::TooDeep);
        // Unary chains fold; whatever compiles evaluates without a crash.
        let bangs = format!("{}true", "!".repeat(2000));
        if let Ok(r) = Rule::compile(&bangs) {
            assert!(r.matches(&to_cel(&sample_device())));
        }
        let chain = vec!["true"; 250].join(" && ");
        match Rule::compile(&chain) {
            Ok(r) => assert!(depth(r.program.expression()) <= MAX_DEPTH),
            Err(e) => assert!(matches!(e, RuleError::Syntax(_) | RuleError::TooDeep), "{e}"),
        }
        assert!(matches!(Rule::compile("device.model =="), Err(RuleError::Syntax(_))));
        assert!(matches!(Rule::compile("devcie.model == 1"), Err(RuleError::UnknownVariable(_))));
        assert!(matches!(Rule::compile("nosuch(device.model)"), Err(RuleError::Invalid(_))));
        // A string with brackets inside does not count as nesting.
        assert!(Rule::compile(&format!("device.name == \"{}\"", "(".repeat(100))).is_ok());
    }

    #[test]
    fn versions() {
        use std::cmp::Ordering::*;
        assert_eq!(version_cmp("17.10", "17.9"), Greater);
        assert_eq!(version_cmp("17", "17.0.0"), Equal);
        assert_eq!(version_cmp("16.7.2", "17"), Less);
    }
}

//! Fuzz the admin JSON bodies on their way to a device: `POST /v1/commands`
//! (`{"command": {JSON} | "<plist XML>"}` or a bare command) through the
//! schema into a plist command, and declarations through their validator.
//! Whatever is accepted must read back as a device would (within
//! `protocol::limits`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use mdmd::protocol::{limits, Command};
use mdmd::service::commands::{CommandInput, Commander};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<Value>(data) else { return };
    let _ = mdmd::protocol::declarative::validate(&v);
    let input = match v.get("command") {
        Some(Value::String(xml)) => match limits::parse_dictionary(xml.as_bytes()) {
            Ok(d) => CommandInput::Plist(d),
            Err(_) => return,
        },
        Some(c) => CommandInput::Json(c.clone()),
        None => CommandInput::Json(v.clone()),
    };
    if let Ok((d, _)) = Commander::validated(input) {
        let cmd = Command::new(d).expect("a validated command has a RequestType");
        let back = Command::from_xml(&cmd.to_xml()).expect("an accepted command reads back within the limits");
        assert_eq!(back.command, cmd.command);
    }
});

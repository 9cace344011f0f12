//! Check-in and report parsing, schema validation, command serialisation.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

use mdmd::protocol::checkin::CheckinRequest;
use mdmd::protocol::schema::Schema;
use mdmd::protocol::{Command, CommandReport};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/fixtures/nanomdm-device-captures/{name}", env!("CARGO_MANIFEST_DIR"))).expect("fixture")
}

fn bench(c: &mut Criterion) {
    let auth = fixture("Authenticate.2.plist");
    let token = fixture("TokenUpdate.1.plist");
    let report = fixture("DeviceInformation.1.plist");
    c.bench_function("parse Authenticate", |b| {
        b.iter(|| CheckinRequest::parse(black_box(&auth)).expect("parse"))
    });
    c.bench_function("parse TokenUpdate", |b| {
        b.iter(|| CheckinRequest::parse(black_box(&token)).expect("parse"))
    });
    c.bench_function("parse command report", |b| {
        b.iter(|| CommandReport::parse(black_box(&report)).expect("parse"))
    });
    let json = serde_json::json!({"RequestType": "DeviceInformation", "Queries": ["OSVersion", "SerialNumber", "BatteryLevel", "WiFiMAC"]});
    Schema::get();
    c.bench_function("validate DeviceInformation command", |b| {
        b.iter(|| Schema::get().json_to_command(black_box(&json)).expect("valid"))
    });
    let dict = Schema::get().json_to_command(&json).expect("valid");
    let cmd = Command::new(dict).expect("command");
    c.bench_function("serialise command", |b| b.iter(|| black_box(&cmd).to_xml()));
}

criterion_group!(benches, bench);
criterion_main!(benches);

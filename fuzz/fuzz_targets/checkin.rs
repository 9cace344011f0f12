//! Fuzz the device request parsing: any bytes as a check-in or command report.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mdmd::protocol::parse_request(data);
});

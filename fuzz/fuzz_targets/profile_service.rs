//! Fuzz the profile-service body (a CMS SignedData whose content is the
//! device-attributes plist: `service::profile_service::read_body`) and the
//! template upload reader (a plain or CMS-signed `.mobileconfig`:
//! `profiles::parse_any`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mdmd::service::profile_service::read_body(data);
    let _ = mdmd::profiles::parse_any(data);
});

//! Fuzz the SCEP PKIOperation parser (`pki::scep::parse_request`: PKCS#7
//! SignedData → EnvelopedData → PKCS#10, the fast `cms`/`x509-cert` path with
//! OpenSSL's as the fallback) and the PKCS#10 parser on its own. The CA is the
//! fixture one, so `fixtures/scep-request/PKCSReq.der` decrypts and mutations
//! of it reach the CSR inside.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mdmd::pki::ca::{CaConfig, Pki};

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/scep-request");
        let read = |f: &str| std::fs::read(format!("{fixtures}/{f}")).expect("the SCEP fixture");
        let cert = openssl::x509::X509::from_pem(&read("ca.pem")).expect("ca.pem");
        // The fixture key is PEM-encrypted with an empty passphrase; the CA dir wants it plain.
        let key = openssl::pkey::PKey::private_key_from_pem_passphrase(&read("ca.key"), b"").expect("ca.key");
        let dir = std::env::temp_dir().join(format!("mdmd-fuzz-scep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a certs dir for the fuzz CA");
        std::fs::write(dir.join("ca.pem"), cert.to_pem().expect("PEM")).expect("ca.pem");
        mdmd::pki::write_secret(&dir.join("ca.key"), &key.private_key_to_pem_pkcs8().expect("PEM")).expect("ca.key");
        let cfg = CaConfig {
            certs_dir: dir,
            public_host: "localhost".into(),
            ..Default::default()
        };
        Pki::load_or_create(&cfg).expect("the fixture CA")
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = mdmd::pki::scep::parse_request(pki(), data);
    let _ = mdmd::pki::fastscep::Csr::parse(data.to_vec());
});

//! An ADE iPhone on first boot, as Apple's documentation describes it:
//! Setup Assistant asks Apple's activation service for the device's cloud
//! configuration (here the stand-in's `/sim/activation`), POSTs its
//! MachineInfo — signed by its device certificate — to the configuration's
//! URL, installs the enrollment profile it gets (SCEP, then Authenticate and
//! TokenUpdate saying `AwaitingConfiguration` when the profile awaits
//! configuration), and stays in Setup Assistant until the server sends
//! `DeviceConfigured`. It reports itself supervised when the configuration
//! says so. Also what ABM does with a server token: `seal_token_file`.

use anyhow::Context as _;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::x509::X509;

use super::{pki, SimDevice};
use crate::ade::ServerToken;

/// What Apple's activation told the device (the parts a device acts on).
#[derive(Debug, Clone, Default)]
pub struct CloudConfiguration {
    pub url: String,
    pub supervised: bool,
    pub await_configured: bool,
    pub mandatory: bool,
    pub raw: serde_json::Value,
}

/// Ask the stand-in's activation service what this serial should do.
/// `Ok(None)`: no profile is assigned (a real device sets up unmanaged).
pub async fn activation(client: &reqwest::Client, abm: &str, serial: &str) -> anyhow::Result<Option<CloudConfiguration>> {
    let resp = client
        .post(format!("{}/sim/activation", abm.trim_end_matches('/')))
        .json(&serde_json::json!({ "serial_number": serial }))
        .send()
        .await?;
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !resp.status().is_success() {
        anyhow::bail!("activation: HTTP {}", resp.status());
    }
    let raw: serde_json::Value = resp.json().await?;
    let b = |k: &str| raw.get(k).and_then(serde_json::Value::as_bool).unwrap_or(false);
    Ok(Some(CloudConfiguration {
        url: raw
            .get("ConfigurationURL")
            .and_then(serde_json::Value::as_str)
            .context("the cloud configuration has no ConfigurationURL")?
            .to_owned(),
        supervised: b("IsSupervised"),
        await_configured: b("AwaitDeviceConfigured"),
        mandatory: b("IsMandatory"),
        raw,
    }))
}

/// First boot: MachineInfo to the configuration's URL, the enrollment
/// profile installed, Authenticate and TokenUpdate sent. `udid` and `serial`
/// are the device's; `device_cert` its Apple device certificate (self-signed
/// with CN = UDID when none is given, as without an attestation CA).
pub async fn first_boot(
    client: reqwest::Client,
    conf: &CloudConfiguration,
    udid: &str,
    serial: &str,
    device_cert: Option<&pki::SimIdentity>,
) -> anyhow::Result<SimDevice> {
    let own = match device_cert {
        Some(c) => c.clone(),
        None => {
            let key = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048)?)?;
            let mut n = openssl::x509::X509NameBuilder::new()?;
            n.append_entry_by_text("CN", udid)?;
            pki::SimIdentity {
                cert: pki::self_signed(&key, &n.build())?,
                key,
            }
        }
    };
    let mut probe = SimDevice::new(&super::origin(&conf.url), "", client.clone());
    probe.udid = udid.to_owned();
    probe.serial = serial.to_owned();
    let info = machine_info(&probe);
    let profile = probe.post_attributes(&conf.url, &info, &own).await.context("MachineInfo")?;
    let mut dev = SimDevice::from_profile(client, &profile, None)
        .await
        .context("the ADE enrollment profile")?;
    dev.udid = udid.to_owned();
    dev.serial = serial.to_owned();
    // iOS 13 and later supervise every ADE device, whatever the profile says.
    dev.supervised = true;
    dev.awaiting_configuration = conf.await_configured;
    dev.enroll().await.context("Authenticate and TokenUpdate")?;
    Ok(dev)
}

/// The MachineInfo an iPhone sends (Apple's `other/machineinfo.yaml`).
pub fn machine_info(dev: &SimDevice) -> plist::Dictionary {
    let mut d = plist::Dictionary::new();
    d.insert("UDID".into(), dev.udid.clone().into());
    d.insert("SERIAL".into(), dev.serial.clone().into());
    d.insert("PRODUCT".into(), dev.product_name.clone().into());
    d.insert("VERSION".into(), dev.build_version.clone().into());
    d.insert("OS_VERSION".into(), dev.os_version.clone().into());
    d.insert("IMEI".into(), "35 000000 000000 0".into());
    d.insert("LANGUAGE".into(), "en-US".into());
    d
}

/// Run the command loop until DeviceConfigured lets Setup Assistant go on
/// (or `max_sessions` sessions pass). Returns the request types handled.
pub async fn until_configured(dev: &mut SimDevice, max_sessions: usize, pause: std::time::Duration) -> anyhow::Result<Vec<String>> {
    let mut seen = Vec::new();
    for _ in 0..max_sessions {
        for h in dev.session().await? {
            seen.push(h.request_type.clone());
        }
        if !dev.awaiting_configuration {
            return Ok(seen);
        }
        tokio::time::sleep(pause).await;
    }
    anyhow::bail!("still in Setup Assistant after {max_sessions} sessions (handled: {seen:?})")
}

/// What ABM does: encrypt a token's plaintext to a server's certificate, as
/// an S/MIME message (for the simulator and tests).
pub fn seal_token_file(token: &ServerToken, to: &X509) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    let json = serde_json::json!({
        "consumer_key": token.consumer_key,
        "consumer_secret": token.consumer_secret,
        "access_token": token.access_token,
        "access_secret": token.access_secret,
        "access_token_expiry": token.access_token_expiry,
    });
    let plain = format!(
        "Content-Type: text/plain;charset=UTF-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n-----BEGIN MESSAGE-----\n{json}\n-----END MESSAGE-----\n"
    );
    let mut certs = openssl::stack::Stack::new()?;
    certs.push(to.clone())?;
    let p7 = Pkcs7::encrypt(&certs, plain.as_bytes(), openssl::symm::Cipher::aes_256_cbc(), Pkcs7Flags::BINARY)?;
    p7.to_smime(&[], Pkcs7Flags::empty())
}

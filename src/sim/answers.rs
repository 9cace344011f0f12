//! Realistic command responses of an iPhone on iOS 18. Values for
//! DeviceInformation queries come from a table of typical answers, and the
//! type of any other query from Apple's response schema. The app commands
//! are `apps`'.

use plist::{Dictionary, Value};

use super::SimDevice;
use crate::protocol::schema::{KeySpec, Schema};
use crate::protocol::{Command, Status};

fn d(pairs: Vec<(&str, Value)>) -> Dictionary {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

pub fn error_chain(code: i64, domain: &str, text: &str) -> Value {
    Value::Array(vec![Value::Dictionary(d(vec![
        ("ErrorCode", code.into()),
        ("ErrorDomain", domain.into()),
        ("LocalizedDescription", text.into()),
        ("USEnglishDescription", text.into()),
    ]))])
}

/// An Error chain like the one iOS gives an unsupervised device asked for a
/// supervised-only command or setting.
fn not_supervised(what: &str) -> Value {
    error_chain(
        12081,
        "MCMDMErrorDomain",
        &format!("{what} is only available on supervised devices."),
    )
}

fn default_for(spec: &KeySpec) -> Value {
    match spec.ty.as_str() {
        "s" => Value::String(String::new()),
        "i" => 0.into(),
        "r" => Value::Real(0.0),
        "b" => false.into(),
        "d" => Value::Data(Vec::new()),
        "t" => Value::Date(std::time::SystemTime::now().into()),
        "a" => Value::Array(Vec::new()),
        _ => Value::Dictionary(Dictionary::new()),
    }
}

/// What a User Enrollment never reports: whatever identifies the hardware or its owner.
const HIDDEN_IN_USER_ENROLLMENT: &[&str] = &[
    "UDID",
    "SerialNumber",
    "IMEI",
    "MEID",
    "ICCID",
    "PhoneNumber",
    "WiFiMAC",
    "BluetoothMAC",
    "EASDeviceIdentifier",
    "DeviceName",
];

fn query_value(dev: &SimDevice, q: &str) -> Option<Value> {
    if dev.enrollment_id.is_some() && HIDDEN_IN_USER_ENROLLMENT.contains(&q) {
        return None;
    }
    Some(match q {
        "UDID" => dev.udid.clone().into(),
        "DeviceName" => dev.name.clone().into(),
        "OSVersion" => dev.os_version.clone().into(),
        "BuildVersion" => dev.build_version.clone().into(),
        "ProductName" => dev.product_name.clone().into(),
        "ModelName" => "iPhone".into(),
        "Model" => "MTLT3LL/A".into(),
        "ModelNumber" => "MTLT3".into(),
        "SerialNumber" => dev.serial.clone().into(),
        "IMEI" => "35 661206 023489 1".into(),
        "MEID" => "35661206023489".into(),
        "DeviceCapacity" => Value::Real(119.1),
        "AvailableDeviceCapacity" => Value::Real(61.3),
        "BatteryLevel" => Value::Real(0.82),
        "CellularTechnology" => 3.into(),
        "ModemFirmwareVersion" => "2.10.03".into(),
        "IsSupervised" => dev.supervised.into(),
        "IsMultiUser"
        | "IsActivationLockEnabled"
        | "IsDoNotDisturbInEffect"
        | "IsMDMLostModeEnabled"
        | "IsRoaming"
        | "AwaitingConfiguration"
        | "DataRoamingEnabled"
        | "PersonalHotspotEnabled" => false.into(),
        "IsDeviceLocatorServiceEnabled" | "IsCloudBackupEnabled" | "VoiceRoamingEnabled" => true.into(),
        "WiFiMAC" => dev.wifi_mac.clone().into(),
        "BluetoothMAC" => dev.bluetooth_mac().into(),
        "ICCID" => "8901 4104 2712 3456 7890".into(),
        "PhoneNumber" => "+1 555 0100".into(),
        "CurrentCarrierNetwork" | "SIMCarrierNetwork" | "SubscriberCarrierNetwork" => "Carrier".into(),
        "CarrierSettingsVersion" => "60.0".into(),
        "SubscriberMCC" | "CurrentMCC" => "310".into(),
        "SubscriberMNC" | "CurrentMNC" => "410".into(),
        "TimeZone" => "Europe/Berlin".into(),
        "PushToken" => Value::Data(dev.token.clone()),
        "EASDeviceIdentifier" => format!("EAS{}", &dev.serial).into(),
        _ => return None,
    })
}

fn device_information(dev: &SimDevice, cmd: &Command) -> Dictionary {
    let specs = Schema::get()
        .command("DeviceInformation")
        .map(|c| c.resp.clone())
        .unwrap_or_default();
    let qr_spec: Vec<KeySpec> = specs
        .iter()
        .find(|s| s.name == "QueryResponses")
        .map(|s| s.sub.clone())
        .unwrap_or_default();
    let mut out = Dictionary::new();
    if let Some(Value::Array(qs)) = cmd.command.get("Queries") {
        for q in qs.iter().filter_map(Value::as_string) {
            let v = match (query_value(dev, q), qr_spec.iter().find(|s| s.name == q)) {
                (Some(v), _) => v,
                (None, _) if dev.enrollment_id.is_some() && HIDDEN_IN_USER_ENROLLMENT.contains(&q) => continue,
                // Known to the schema but not to our table: a typed empty value.
                (None, Some(spec)) if spec.sub.is_empty() => default_for(spec),
                // Unknown queries (and structured ones we do not model) are skipped, as devices do.
                _ => continue,
            };
            out.insert(q.to_owned(), v);
        }
    }
    d(vec![("QueryResponses", Value::Dictionary(out))])
}

fn cn(cert: &openssl::x509::X509) -> String {
    cert.subject_name()
        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .next()
        .map(|e| String::from_utf8_lossy(e.data().as_slice()).into_owned())
        .unwrap_or_default()
}

fn security_info(dev: &SimDevice) -> Dictionary {
    // Data protection (file-level encryption) is on exactly when a passcode is set.
    let p = dev.passcode;
    d(vec![(
        "SecurityInfo",
        Value::Dictionary(d(vec![
            ("HardwareEncryptionCaps", (if p { 3 } else { 1 }).into()),
            ("PasscodePresent", p.into()),
            ("PasscodeCompliant", p.into()),
            ("PasscodeCompliantWithProfiles", p.into()),
            ("PasscodeLockGracePeriodEnforced", 0.into()),
            ("AutoLockTime", 30.into()),
            (
                "ManagementStatus",
                Value::Dictionary(d(vec![("EnrolledViaDEP", false.into()), ("IsUserEnrollment", false.into())])),
            ),
        ])),
    )])
}

fn profile_entry(identifier: &str, uuid: &str, name: &str, encrypted: bool, payloads: &[Dictionary]) -> Value {
    let content = payloads
        .iter()
        .map(|p| {
            let mut item = Dictionary::new();
            for k in [
                "PayloadType",
                "PayloadVersion",
                "PayloadIdentifier",
                "PayloadUUID",
                "PayloadDisplayName",
            ] {
                if let Some(v) = p.get(k) {
                    item.insert(k.into(), v.clone());
                }
            }
            Value::Dictionary(item)
        })
        .collect();
    Value::Dictionary(d(vec![
        ("PayloadIdentifier", identifier.into()),
        ("PayloadUUID", uuid.into()),
        ("PayloadVersion", 1.into()),
        ("PayloadDisplayName", name.into()),
        ("PayloadOrganization", "mdmd".into()),
        ("PayloadRemovalDisallowed", false.into()),
        ("HasRemovalPasscode", false.into()),
        ("IsEncrypted", encrypted.into()),
        ("IsManaged", true.into()),
        ("PayloadContent", Value::Array(content)),
    ]))
}

/// Answer a command like an iPhone: Ok(response keys) for Acknowledged, or
/// Err((status, ErrorChain)).
pub fn respond(dev: &mut SimDevice, cmd: &Command) -> Result<Dictionary, (Status, Value)> {
    let c = &cmd.command;
    if !dev.supervised && Schema::get().command(&cmd.request_type).is_some_and(|s| s.supervised) {
        return Err((Status::Error, not_supervised(&cmd.request_type)));
    }
    if let Some(r) = super::apps::respond(dev, cmd) {
        return r;
    }
    Ok(match cmd.request_type.as_str() {
        "DeviceInformation" => device_information(dev, cmd),
        "SecurityInfo" => security_info(dev),
        "ProfileList" => {
            let mut list = Vec::new();
            if let Some(p) = &dev.profile {
                list.push(profile_entry(
                    &p.identifier,
                    "6F1C2B7E-8C2F-4C8B-9C5B-0D3A2E1F4A11",
                    "Device management",
                    false,
                    &[],
                ));
            }
            list.extend(
                dev.profiles
                    .iter()
                    .map(|(id, p)| profile_entry(id, &p.uuid, &p.display_name, p.encrypted, &p.payloads)),
            );
            d(vec![("ProfileList", Value::Array(list))])
        }
        "InstallProfile" => {
            // Without the network (see `SimDevice::install_profile` for the
            // full path with SCEP): verify, decrypt and record.
            let payload = match c.get("Payload") {
                Some(Value::Data(b)) => b.clone(),
                _ => {
                    return Err((
                        Status::CommandFormatError,
                        error_chain(12021, "MCMDMErrorDomain", "Payload missing"),
                    ))
                }
            };
            let trust = dev.profile.as_ref().and_then(|p| p.ca.clone());
            match super::pki::open_profile(&payload, trust.as_ref(), dev.identity.as_ref()) {
                Ok((top, encrypted)) => {
                    let s = |k: &str| top.get(k).and_then(Value::as_string).unwrap_or_default().to_owned();
                    let payloads = top
                        .get("PayloadContent")
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(|p| p.as_dictionary().cloned()).collect())
                        .unwrap_or_default();
                    dev.profiles.insert(
                        s("PayloadIdentifier"),
                        super::InstalledProfile {
                            uuid: s("PayloadUUID"),
                            display_name: s("PayloadDisplayName"),
                            encrypted,
                            payloads,
                            identities: Vec::new(),
                        },
                    );
                    Dictionary::new()
                }
                Err(e) => {
                    return Err((
                        Status::Error,
                        error_chain(1000, "MCProfileErrorDomain", &format!("The profile could not be installed: {e:#}")),
                    ))
                }
            }
        }
        "RemoveProfile" => {
            let id = c.get("Identifier").and_then(Value::as_string).unwrap_or("");
            // The enrollment profile itself: the device leaves management
            // (CheckOutWhenRemoved), taking what came with it.
            if dev.profile.as_ref().is_some_and(|p| p.identifier == id) {
                dev.unenrolled = true;
                dev.profiles.clear();
                dev.apps.retain(|_, a| a.management_flags & 1 == 0);
                return Ok(Dictionary::new());
            }
            if dev.profiles.remove(id).is_none() {
                return Err((
                    Status::Error,
                    error_chain(1003, "MCProfileErrorDomain", "The profile is not installed."),
                ));
            }
            Dictionary::new()
        }
        "CertificateList" => {
            // The device's MDM identity and the CA that the enrollment profile installed.
            let mut list = Vec::new();
            if let Some(i) = &dev.identity {
                list.push(Value::Dictionary(d(vec![
                    ("CommonName", cn(&i.cert).into()),
                    ("IsIdentity", true.into()),
                    ("Data", Value::Data(i.cert.to_der().unwrap_or_default())),
                ])));
            }
            for (_, i) in dev.profiles.values().flat_map(|p| p.identities.iter()) {
                list.push(Value::Dictionary(d(vec![
                    ("CommonName", cn(&i.cert).into()),
                    ("IsIdentity", true.into()),
                    ("Data", Value::Data(i.cert.to_der().unwrap_or_default())),
                ])));
            }
            if let Some(ca) = dev.profile.as_ref().and_then(|p| p.ca.as_ref()) {
                list.push(Value::Dictionary(d(vec![
                    ("CommonName", cn(ca).into()),
                    ("IsIdentity", false.into()),
                    ("Data", Value::Data(ca.to_der().unwrap_or_default())),
                ])));
            }
            d(vec![("CertificateList", Value::Array(list))])
        }
        "InstallProvisioningProfile" => {
            let data = c.get("ProvisioningProfile").and_then(Value::as_data).unwrap_or_default();
            let parsed = crate::profiles::signed_content(data)
                .and_then(|b| plist::from_bytes::<Dictionary>(&b).ok())
                .and_then(|p| {
                    let uuid = p.get("UUID")?.as_string()?.to_owned();
                    let name = p.get("Name").and_then(Value::as_string).unwrap_or_default().to_owned();
                    Some((uuid, name, p.get("ExpirationDate").and_then(Value::as_date)))
                });
            match parsed {
                Some((uuid, name, exp)) => {
                    dev.provisioning.insert(uuid, (name, exp));
                    Dictionary::new()
                }
                None => {
                    return Err((
                        Status::Error,
                        error_chain(1000, "MCProvisioningProfileErrorDomain", "The provisioning profile is not valid."),
                    ))
                }
            }
        }
        "RemoveProvisioningProfile" => {
            let uuid = c.get("UUID").and_then(Value::as_string).unwrap_or("");
            if dev.provisioning.remove(uuid).is_none() {
                return Err((
                    Status::Error,
                    error_chain(
                        1003,
                        "MCProvisioningProfileErrorDomain",
                        "The provisioning profile is not installed.",
                    ),
                ));
            }
            Dictionary::new()
        }
        "ProvisioningProfileList" => d(vec![(
            "ProvisioningProfileList",
            Value::Array(
                dev.provisioning
                    .iter()
                    .map(|(uuid, (name, exp))| {
                        let mut item = d(vec![("UUID", uuid.clone().into()), ("Name", name.clone().into())]);
                        if let Some(e) = exp {
                            item.insert("ExpiryDate".into(), Value::Date(*e));
                        }
                        Value::Dictionary(item)
                    })
                    .collect(),
            ),
        )]),
        "Restrictions" => d(vec![
            ("ProfileRestrictions", Value::Dictionary(Dictionary::new())),
            (
                "GlobalRestrictions",
                Value::Dictionary(d(vec![
                    ("restrictedBool", Value::Dictionary(Dictionary::new())),
                    ("restrictedValue", Value::Dictionary(Dictionary::new())),
                    ("intersection", Value::Dictionary(Dictionary::new())),
                    ("union", Value::Dictionary(Dictionary::new())),
                ])),
            ),
        ]),
        "DeviceConfigured" => {
            // Only in Setup Assistant (an ADE enrollment that awaits configuration).
            if !dev.awaiting_configuration {
                return Err((
                    Status::Error,
                    error_chain(12070, "MCMDMErrorDomain", "The device is not awaiting configuration."),
                ));
            }
            dev.awaiting_configuration = false;
            Dictionary::new()
        }
        "DeviceLock" => {
            if c.contains_key("Message") || c.contains_key("PhoneNumber") {
                d(vec![("MessageResult", "Success".into())])
            } else {
                Dictionary::new()
            }
        }
        "ClearPasscode" => {
            if c.get("UnlockToken").and_then(Value::as_data) != Some(dev.unlock_token.as_slice()) {
                return Err((
                    Status::Error,
                    error_chain(12076, "MCMDMErrorDomain", "The unlock token is invalid."),
                ));
            }
            Dictionary::new()
        }
        "EraseDevice" => {
            dev.erased = true;
            Dictionary::new()
        }
        "Settings" => {
            // Devices answer with an array of per-item results (the YAML says dictionary).
            let items = match c.get("Settings") {
                Some(Value::Array(a)) => a.clone(),
                _ => Vec::new(),
            };
            let results = items
                .iter()
                .map(|i| {
                    let x = i.as_dictionary();
                    let item = x.and_then(|x| x.get("Item")).and_then(Value::as_string).unwrap_or("");
                    if item == "ApplicationConfiguration" {
                        let id = x.and_then(|x| x.get("Identifier")).and_then(Value::as_string).unwrap_or("");
                        let config = x.and_then(|x| x.get("Configuration")).and_then(Value::as_dictionary).cloned();
                        super::apps::set_configuration(dev, id, config);
                    }
                    // An item only a supervised device takes fails on its own.
                    let alone = Dictionary::from_iter([
                        ("RequestType".to_owned(), Value::from("Settings")),
                        ("Settings".to_owned(), Value::Array(vec![i.clone()])),
                    ]);
                    if !dev.supervised && Schema::get().supervised_only_command(&alone).is_some() {
                        return Value::Dictionary(d(vec![
                            ("Item", item.into()),
                            ("Status", "Error".into()),
                            ("ErrorChain", not_supervised(item)),
                        ]));
                    }
                    Value::Dictionary(d(vec![("Item", item.into()), ("Status", "Acknowledged".into())]))
                })
                .collect();
            d(vec![("Settings", Value::Array(results))])
        }
        "RestartDevice" | "ShutDownDevice" | "EnableLostMode" | "DisableLostMode" | "PlayLostModeSound" | "ClearRestrictionsPassword" => {
            Dictionary::new()
        }
        other => match Schema::get().command(other) {
            // Anything else an iPhone supports: its required response keys, typed.
            Some(s) if s.ios => s
                .resp
                .iter()
                .filter(|k| k.required == 1 && k.name != "ANY")
                .map(|k| (k.name.clone(), default_for(k)))
                .collect(),
            Some(_) => {
                return Err((
                    Status::Error,
                    error_chain(12021, "MCMDMErrorDomain", "The command is not supported on this device."),
                ))
            }
            None => {
                return Err((
                    Status::CommandFormatError,
                    error_chain(12021, "MCMDMErrorDomain", "Unknown request type."),
                ))
            }
        },
    })
}

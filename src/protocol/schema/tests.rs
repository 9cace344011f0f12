use super::*;
use serde_json::json;

#[test]
fn table_parses_and_covers_the_deployment_guide() {
    let s = Schema::get();
    for rt in [
        "DeviceInformation",
        "SecurityInfo",
        "ProfileList",
        "InstallProfile",
        "RemoveProfile",
        "CertificateList",
        "InstalledApplicationList",
        "DeviceLock",
        "EraseDevice",
        "ClearPasscode",
        "Settings",
        "Restrictions",
        "InstallApplication",
        "ManagedApplicationList",
        "ProvisioningProfileList",
    ] {
        assert!(s.command(rt).is_some(), "{rt}");
    }
    assert_eq!(s.checkin.len(), 9);
}

fn dict(j: Json) -> plist::Dictionary {
    match convert_any(&j, "") {
        Ok(plist::Value::Dictionary(d)) => d,
        other => panic!("not a dictionary: {other:?}"),
    }
}

fn profile(payloads: Vec<Json>, top: Json) -> plist::Dictionary {
    let mut p = json!({
        "PayloadType": "Configuration", "PayloadVersion": 1,
        "PayloadIdentifier": "com.example.p", "PayloadUUID": "6F1C2B7E-8C2F-4C8B-9C5B-0D3A2E1F4A11",
        "PayloadContent": payloads,
    });
    if let (Some(o), Json::Object(extra)) = (p.as_object_mut(), top) {
        o.extend(extra);
    }
    dict(p)
}

fn payload(ty: &str, keys: Json) -> Json {
    let mut p = json!({"PayloadType": ty, "PayloadVersion": 1, "PayloadIdentifier": format!("com.example.{ty}"),
        "PayloadUUID": "0D3A2E1F-8C2F-4C8B-9C5B-6F1C2B7E4A11"});
    if let (Some(o), Json::Object(extra)) = (p.as_object_mut(), keys) {
        o.extend(extra);
    }
    p
}

#[test]
fn supervised_only_commands_come_from_the_table() {
    let s = Schema::get();
    let c = |j: Json| s.supervised_only_command(&dict(j));
    // The command itself.
    for rt in ["RestartDevice", "ShutDownDevice", "DeviceConfigured"] {
        assert_eq!(c(json!({"RequestType": rt})).as_deref(), Some(rt));
    }
    assert_eq!(
        c(json!({"RequestType": "EnableLostMode", "Message": "lost"})).as_deref(),
        Some("EnableLostMode")
    );
    // Not supervised-only.
    assert_eq!(c(json!({"RequestType": "DeviceLock"})), None);
    assert_eq!(c(json!({"RequestType": "ProfileList"})), None);
    assert_eq!(c(json!({"RequestType": "EraseDevice"})), None);
    // Query names flagged supervised are values of string items, not request keys.
    assert_eq!(
        c(json!({"RequestType": "DeviceInformation", "Queries": ["MaximumResidentUsers", "QuotaSize", "OSVersion"]})),
        None
    );
    // Settings: the alternative its Item names.
    assert_eq!(
        c(json!({"RequestType": "Settings", "Settings": [
            {"Item": "DataRoaming", "Enabled": false},
            {"Item": "DeviceName", "DeviceName": "Kiosk 1"}
        ]}))
        .as_deref(),
        Some("Settings[1] (DeviceName)")
    );
    assert_eq!(
        c(json!({"RequestType": "Settings", "Settings": [{"Item": "Bluetooth", "Enabled": true}]})).as_deref(),
        Some("Settings[0] (Bluetooth)")
    );
    assert_eq!(
        c(json!({"RequestType": "Settings", "Settings": [{"Item": "TimeZone", "TimeZone": "Europe/Berlin"}]})).as_deref(),
        Some("Settings[0] (TimeZone)")
    );
    assert_eq!(
        c(json!({"RequestType": "Settings", "Settings": [
            {"Item": "DataRoaming", "Enabled": false},
            {"Item": "ApplicationConfiguration", "Identifier": "com.example.app", "Configuration": {"k": "v"}}
        ]})),
        None
    );
    // Every flagged command or key comes from Apple's schema, not from us.
    let flagged: Vec<&String> = s.commands.iter().filter(|(_, c)| c.supervised).map(|(n, _)| n).collect();
    assert!(flagged.len() >= 10, "{flagged:?}");
    assert!(!s.command("DeviceInformation").unwrap().supervised);
}

#[test]
fn supervised_only_profiles() {
    let s = Schema::get();
    let p = |payloads: Vec<Json>, top: Json| s.supervised_only_profile(&profile(payloads, top));
    let wifi = payload("com.apple.wifi.managed", json!({"SSID_STR": "corp", "EncryptionType": "WPA2"}));
    assert_eq!(p(vec![wifi.clone()], json!({})), None);
    // A payload only supervised devices take.
    assert_eq!(
        p(
            vec![
                wifi.clone(),
                payload("com.apple.app.lock", json!({"App": {"Identifier": "com.example.kiosk"}}))
            ],
            json!({})
        )
        .as_deref(),
        Some("a com.apple.app.lock payload")
    );
    assert_eq!(
        p(
            vec![payload("com.apple.proxy.http.global", json!({"ProxyType": "Auto"}))],
            json!({})
        )
        .as_deref(),
        Some("a com.apple.proxy.http.global payload")
    );
    // A top-level key.
    assert_eq!(
        p(vec![wifi.clone()], json!({"PayloadRemovalDisallowed": true})).as_deref(),
        Some("PayloadRemovalDisallowed")
    );
    // Restrictions: a supervised-only key set away from its default…
    let r = |keys: Json| p(vec![payload(RESTRICTIONS, keys)], json!({}));
    assert_eq!(
        r(json!({"allowCamera": false, "allowAppInstallation": false})).as_deref(),
        Some("com.apple.applicationaccess: allowAppInstallation")
    );
    assert_eq!(
        r(json!({"forceAutomaticDateAndTime": true})).as_deref(),
        Some("com.apple.applicationaccess: forceAutomaticDateAndTime")
    );
    assert_eq!(
        r(json!({"enforcedSoftwareUpdateDelay": 60})).as_deref(),
        Some("com.apple.applicationaccess: enforcedSoftwareUpdateDelay")
    );
    assert_eq!(
        r(json!({"blockedAppBundleIDs": ["com.example.game"]})).as_deref(),
        Some("com.apple.applicationaccess: blockedAppBundleIDs")
    );
    // …but not one left at it, nor a key any device takes.
    assert_eq!(r(json!({"allowAppInstallation": true, "allowCamera": false})), None);
    assert_eq!(r(json!({"enforcedSoftwareUpdateDelay": 30})), None);
    // Every restriction at Apple's default (as admins' restriction profiles often list them).
    let all: serde_json::Map<String, Json> = s
        .payload(RESTRICTIONS)
        .unwrap()
        .keys
        .iter()
        .filter_map(|k| k.default.clone().map(|d| (k.name.clone(), d)))
        .collect();
    assert!(all.len() > 90, "{}", all.len());
    assert_eq!(r(Json::Object(all)), None);
}

#[test]
fn validates_and_converts() {
    let s = Schema::get();
    let d = s
        .json_to_command(&json!({"RequestType": "DeviceInformation", "Queries": ["OSVersion", "SerialNumber"]}))
        .unwrap();
    assert!(matches!(d.get("Queries"), Some(plist::Value::Array(a)) if a.len() == 2));
    let e = s.json_to_command(&json!({"RequestType": "DeviceInformation"})).unwrap_err();
    assert_eq!(e.path, "Queries");
    let e = s
        .json_to_command(&json!({"RequestType": "DeviceInformation", "Queries": "OSVersion"}))
        .unwrap_err();
    assert!(e.problem.contains("expected array"), "{e}");
    let e = s.json_to_command(&json!({"RequestType": "NoSuchThing"})).unwrap_err();
    assert_eq!(e.path, "RequestType");
    let e = s.json_to_command(&json!({"RequestType": "ProfileList", "Bogus": 1})).unwrap_err();
    assert_eq!(e.path, "Bogus");
    let d = s
        .json_to_command(&json!({"RequestType": "InstallProfile", "Payload": "aGVsbG8="}))
        .unwrap();
    assert_eq!(d.get("Payload"), Some(&plist::Value::Data(b"hello".to_vec())));
    let e = s
        .json_to_command(&json!({"RequestType": "InstallProfile", "Payload": "%%%"}))
        .unwrap_err();
    assert!(e.problem.contains("base64"));
    let e = s.json_to_command(&json!({"RequestType": "DeviceLock", "Message": 5})).unwrap_err();
    assert_eq!(e.path, "Message");
    // Settings items are alternatives, chosen by what fits.
    let d = s
        .json_to_command(&json!({"RequestType": "Settings", "Settings": [
            {"Item": "DataRoaming", "Enabled": false},
            {"Item": "ApplicationConfiguration", "Identifier": "com.example.app", "Configuration": {"k": "v"}}
        ]}))
        .unwrap();
    assert!(matches!(d.get("Settings"), Some(plist::Value::Array(a)) if a.len() == 2));
    let e = s
        .json_to_command(&json!({"RequestType": "Settings", "Settings": [{"Item": "DataRoaming", "Enabled": "no"}]}))
        .unwrap_err();
    assert_eq!(e.path, "Settings[0].Enabled", "{e}");
    let f = s.check_command_plist(&d);
    assert!(f.errors.is_empty(), "{f:?}");
}

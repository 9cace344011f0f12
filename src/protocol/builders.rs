//! Typed builders for the deployment-guide command set. Each builds the
//! JSON form the admin API takes (`data` as base64, the same shape as
//! Apple's schema); the server validates it against the schema like any
//! other command. Commands not listed here can be sent as raw JSON or plist.

use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::schema::Schema;

/// One MDM command with its arguments.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandSpec {
    DeviceLock {
        pin: Option<String>,
        message: Option<String>,
        phone_number: Option<String>,
    },
    EraseDevice {
        pin: Option<String>,
        preserve_data_plan: bool,
        disallow_proximity_setup: bool,
    },
    /// The UnlockToken is filled in by the server from escrow.
    ClearPasscode,
    /// Empty `queries`: every query key in Apple's schema.
    DeviceInformation {
        queries: Vec<String>,
    },
    SecurityInfo,
    CertificateList {
        managed_only: bool,
    },
    ProfileList {
        managed_only: bool,
    },
    /// A `.mobileconfig` (the server validates, fills, encrypts and signs it).
    InstallProfile {
        mobileconfig: Vec<u8>,
    },
    RemoveProfile {
        identifier: String,
    },
    ProvisioningProfileList {
        managed_only: bool,
    },
    InstallProvisioningProfile {
        profile: Vec<u8>,
    },
    RemoveProvisioningProfile {
        uuid: String,
    },
    InstallApplication {
        app: AppSource,
        /// 1: remove the app when the MDM profile is removed; 4: prevent backup of its data; 5: both.
        management_flags: Option<i64>,
        /// Managed app configuration (may use `$VARIABLES`).
        configuration: Option<Map<String, Value>>,
    },
    RemoveApplication {
        identifier: String,
    },
    InstalledApplicationList {
        identifiers: Vec<String>,
        managed_apps_only: bool,
    },
    ManagedApplicationList {
        identifiers: Vec<String>,
    },
    ManagedApplicationConfiguration {
        identifiers: Vec<String>,
    },
    Restrictions {
        profile_restrictions: bool,
    },
    Settings(Vec<Setting>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum AppSource {
    ITunesStoreId(i64),
    ManifestUrl(String),
    Identifier(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Setting {
    DataRoaming(bool),
    VoiceRoaming(bool),
    /// Managed app configuration for an installed managed app.
    ApplicationConfiguration {
        identifier: String,
        configuration: Map<String, Value>,
    },
}

fn put(o: &mut Map<String, Value>, k: &str, v: Option<impl Into<Value>>) {
    if let Some(v) = v {
        o.insert(k.into(), v.into());
    }
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Every DeviceInformation query iOS answers, from Apple's schema.
pub fn all_device_queries() -> Vec<String> {
    let s = Schema::get();
    if !s.device_queries.is_empty() {
        return s.device_queries.iter().map(|q| q.name.clone()).collect();
    }
    s.command("DeviceInformation")
        .and_then(|c| c.resp.iter().find(|k| k.name == "QueryResponses"))
        .map(|q| q.sub.iter().map(|k| k.name.clone()).filter(|n| n != "ANY").collect())
        .unwrap_or_default()
}

impl CommandSpec {
    pub fn request_type(&self) -> &'static str {
        use CommandSpec::*;
        match self {
            DeviceLock { .. } => "DeviceLock",
            EraseDevice { .. } => "EraseDevice",
            ClearPasscode => "ClearPasscode",
            DeviceInformation { .. } => "DeviceInformation",
            SecurityInfo => "SecurityInfo",
            CertificateList { .. } => "CertificateList",
            ProfileList { .. } => "ProfileList",
            InstallProfile { .. } => "InstallProfile",
            RemoveProfile { .. } => "RemoveProfile",
            ProvisioningProfileList { .. } => "ProvisioningProfileList",
            InstallProvisioningProfile { .. } => "InstallProvisioningProfile",
            RemoveProvisioningProfile { .. } => "RemoveProvisioningProfile",
            InstallApplication { .. } => "InstallApplication",
            RemoveApplication { .. } => "RemoveApplication",
            InstalledApplicationList { .. } => "InstalledApplicationList",
            ManagedApplicationList { .. } => "ManagedApplicationList",
            ManagedApplicationConfiguration { .. } => "ManagedApplicationConfiguration",
            Restrictions { .. } => "Restrictions",
            Settings(_) => "Settings",
        }
    }

    /// The command as the admin API's JSON.
    pub fn to_json(&self) -> Value {
        use CommandSpec::*;
        let mut o = Map::new();
        o.insert("RequestType".into(), self.request_type().into());
        match self {
            DeviceLock {
                pin,
                message,
                phone_number,
            } => {
                put(&mut o, "PIN", pin.clone());
                put(&mut o, "Message", message.clone());
                put(&mut o, "PhoneNumber", phone_number.clone());
            }
            EraseDevice {
                pin,
                preserve_data_plan,
                disallow_proximity_setup,
            } => {
                put(&mut o, "PIN", pin.clone());
                if *preserve_data_plan {
                    o.insert("PreserveDataPlan".into(), true.into());
                }
                if *disallow_proximity_setup {
                    o.insert("DisallowProximitySetup".into(), true.into());
                }
            }
            ClearPasscode | SecurityInfo => {}
            DeviceInformation { queries } => {
                let q = if queries.is_empty() {
                    all_device_queries()
                } else {
                    queries.clone()
                };
                o.insert("Queries".into(), json!(q));
            }
            CertificateList { managed_only } | ProfileList { managed_only } | ProvisioningProfileList { managed_only } => {
                if *managed_only {
                    o.insert("ManagedOnly".into(), true.into());
                }
            }
            InstallProfile { mobileconfig } => {
                o.insert("Payload".into(), b64(mobileconfig).into());
            }
            RemoveProfile { identifier } => {
                o.insert("Identifier".into(), identifier.clone().into());
            }
            InstallProvisioningProfile { profile } => {
                o.insert("ProvisioningProfile".into(), b64(profile).into());
            }
            RemoveProvisioningProfile { uuid } => {
                o.insert("UUID".into(), uuid.clone().into());
            }
            InstallApplication {
                app,
                management_flags,
                configuration,
            } => {
                match app {
                    AppSource::ITunesStoreId(n) => o.insert("iTunesStoreID".into(), (*n).into()),
                    AppSource::ManifestUrl(u) => o.insert("ManifestURL".into(), u.clone().into()),
                    AppSource::Identifier(i) => o.insert("Identifier".into(), i.clone().into()),
                };
                put(&mut o, "ManagementFlags", *management_flags);
                if let Some(c) = configuration {
                    o.insert("Configuration".into(), Value::Object(c.clone()));
                }
            }
            RemoveApplication { identifier } => {
                o.insert("Identifier".into(), identifier.clone().into());
            }
            InstalledApplicationList {
                identifiers,
                managed_apps_only,
            } => {
                if !identifiers.is_empty() {
                    o.insert("Identifiers".into(), json!(identifiers));
                }
                if *managed_apps_only {
                    o.insert("ManagedAppsOnly".into(), true.into());
                }
            }
            ManagedApplicationList { identifiers } => {
                if !identifiers.is_empty() {
                    o.insert("Identifiers".into(), json!(identifiers));
                }
            }
            ManagedApplicationConfiguration { identifiers } => {
                o.insert("Identifiers".into(), json!(identifiers));
            }
            Restrictions { profile_restrictions } => {
                if *profile_restrictions {
                    o.insert("ProfileRestrictions".into(), true.into());
                }
            }
            Settings(items) => {
                let items: Vec<Value> = items
                    .iter()
                    .map(|s| match s {
                        Setting::DataRoaming(b) => json!({"Item": "DataRoaming", "Enabled": b}),
                        Setting::VoiceRoaming(b) => json!({"Item": "VoiceRoaming", "Enabled": b}),
                        Setting::ApplicationConfiguration { identifier, configuration } => {
                            json!({"Item": "ApplicationConfiguration", "Identifier": identifier, "Configuration": configuration})
                        }
                    })
                    .collect();
                o.insert("Settings".into(), Value::Array(items));
            }
        }
        Value::Object(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every builder's output is accepted by the schema validator.
    #[test]
    fn every_builder_validates() {
        let cfg: Map<String, Value> = serde_json::from_value(json!({"user": "$USERNAME", "server": "https://x"})).unwrap();
        let all = vec![
            CommandSpec::DeviceLock {
                pin: Some("123456".into()),
                message: Some("Call IT".into()),
                phone_number: Some("+1 555 0100".into()),
            },
            CommandSpec::EraseDevice {
                pin: None,
                preserve_data_plan: true,
                disallow_proximity_setup: true,
            },
            CommandSpec::DeviceInformation { queries: vec![] },
            CommandSpec::SecurityInfo,
            CommandSpec::CertificateList { managed_only: true },
            CommandSpec::ProfileList { managed_only: false },
            CommandSpec::InstallProfile {
                mobileconfig: b"x".to_vec(),
            },
            CommandSpec::RemoveProfile { identifier: "a.b".into() },
            CommandSpec::ProvisioningProfileList { managed_only: false },
            CommandSpec::InstallProvisioningProfile { profile: b"p".to_vec() },
            CommandSpec::RemoveProvisioningProfile { uuid: "U".into() },
            CommandSpec::InstallApplication {
                app: AppSource::ITunesStoreId(361309726),
                management_flags: Some(1),
                configuration: Some(cfg.clone()),
            },
            CommandSpec::InstallApplication {
                app: AppSource::ManifestUrl("https://x/manifest.plist".into()),
                management_flags: None,
                configuration: None,
            },
            CommandSpec::RemoveApplication {
                identifier: "com.x".into(),
            },
            CommandSpec::InstalledApplicationList {
                identifiers: vec![],
                managed_apps_only: true,
            },
            CommandSpec::ManagedApplicationList {
                identifiers: vec!["com.x".into()],
            },
            CommandSpec::ManagedApplicationConfiguration {
                identifiers: vec!["com.x".into()],
            },
            CommandSpec::Restrictions {
                profile_restrictions: true,
            },
            CommandSpec::Settings(vec![
                Setting::DataRoaming(false),
                Setting::VoiceRoaming(true),
                Setting::ApplicationConfiguration {
                    identifier: "com.x".into(),
                    configuration: cfg,
                },
            ]),
        ];
        for c in all {
            let j = c.to_json();
            Schema::get()
                .json_to_command(&j)
                .unwrap_or_else(|e| panic!("{}: {e}", c.request_type()));
        }
        assert!(all_device_queries().len() > 30);
        // ClearPasscode needs the UnlockToken the server fills in.
        assert!(Schema::get().json_to_command(&CommandSpec::ClearPasscode.to_json()).is_err());
    }
}

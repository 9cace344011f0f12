//! What devices can be found by (`InventoryStore::find`), and the lookup
//! entries each enrollment contributes to the index both backends keep.

use serde::{Deserialize, Serialize};

use super::*;

/// What devices can be found by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LookupKey {
    Udid,
    Serial,
    Imei,
    Meid,
    WifiMac,
    Phone,
    User,
    /// The device GUID (`Enrollment::device_guid`) NACs know devices by.
    Guid,
}

impl LookupKey {
    pub const ALL: [LookupKey; 8] = [
        LookupKey::Udid,
        LookupKey::Serial,
        LookupKey::Imei,
        LookupKey::Meid,
        LookupKey::WifiMac,
        LookupKey::Phone,
        LookupKey::User,
        LookupKey::Guid,
    ];

    pub fn parse(s: &str) -> Option<LookupKey> {
        Some(match s.to_ascii_lowercase().as_str() {
            "udid" => LookupKey::Udid,
            "serial" | "serialnumber" | "serial_number" => LookupKey::Serial,
            "imei" => LookupKey::Imei,
            "meid" => LookupKey::Meid,
            "mac" | "macaddress" | "wifi_mac" | "wifimac" => LookupKey::WifiMac,
            "phone" | "phone_number" | "phonenumber" => LookupKey::Phone,
            "user" | "username" => LookupKey::User,
            "guid" => LookupKey::Guid,
            _ => return None,
        })
    }

    /// The form values are indexed and searched in: MACs as 12 lowercase hex
    /// digits, phone numbers and IMEI/MEID as their digits (MEID: hex,
    /// lowercase), the rest trimmed and lowercased.
    pub fn normalize(self, v: &str) -> String {
        match self {
            LookupKey::WifiMac | LookupKey::Meid => v.chars().filter(char::is_ascii_hexdigit).map(|c| c.to_ascii_lowercase()).collect(),
            LookupKey::Phone | LookupKey::Imei => v.chars().filter(char::is_ascii_digit).collect(),
            _ => v.trim().to_lowercase(),
        }
    }
}

impl Enrollment {
    /// A User Enrollment (a personal device, known by its EnrollmentID, never its UDID).
    pub fn is_user_enrollment(&self) -> bool {
        self.udid.is_none() && self.user_enrollment_id.is_some()
    }

    /// Who enrolled the device, for its device channel (a user channel is its own user).
    fn enrolled_by(&self) -> Option<&EnrollUser> {
        self.user.as_ref().filter(|_| self.id == self.device)
    }

    /// The device's user name: an admin-set `USERNAME`, else who enrolled it, else the user channel's.
    pub fn username(&self) -> Option<String> {
        self.attributes
            .get("USERNAME")
            .cloned()
            .or_else(|| self.enrolled_by().map(|u| u.username.clone()))
            .or_else(|| self.user_short_name.clone())
            .filter(|u| !u.is_empty())
    }

    /// The device's user's email: an admin-set `EMAIL`, else who enrolled it.
    pub fn email(&self) -> Option<String> {
        self.attributes
            .get("EMAIL")
            .cloned()
            .or_else(|| self.enrolled_by().and_then(|u| u.email.clone()))
            .filter(|u| !u.is_empty())
    }

    /// The device's user's full name: an admin-set `FULL_NAME`, else who enrolled it, else the user channel's.
    pub fn full_name(&self) -> Option<String> {
        self.attributes
            .get("FULL_NAME")
            .cloned()
            .or_else(|| self.enrolled_by().and_then(|u| u.full_name.clone()))
            .or_else(|| self.user_long_name.clone())
            .filter(|u| !u.is_empty())
    }

    /// A stable GUID for the device channel (from its id), in the upper-case
    /// 8-4-4-4-12 form Cisco ISE uses.
    pub fn device_guid(&self) -> String {
        use sha2::Digest as _;
        let h = sha2::Sha256::digest(format!("mdmd-device-guid:{}", self.device).as_bytes());
        let x = hex::encode_upper(&h[..16]);
        format!("{}-{}-{}-{}-{}", &x[..8], &x[8..12], &x[12..16], &x[16..20], &x[20..32])
    }

    /// The lookup entries this record contributes: (key, normalised value,
    /// the device channel found by it). User channels contribute their user.
    pub fn lookup_keys(&self) -> Vec<(LookupKey, String, String)> {
        let mut out = Vec::new();
        let mut add = |k: LookupKey, v: Option<&String>| {
            if let Some(v) = v {
                let n = k.normalize(v);
                if !n.is_empty() && !out.iter().any(|(k2, v2, _): &(LookupKey, String, String)| *k2 == k && *v2 == n) {
                    out.push((k, n, self.device.clone()));
                }
            }
        };
        if self.id == self.device {
            add(LookupKey::Udid, self.udid.as_ref().or(Some(&self.id)));
            add(LookupKey::Serial, self.info.serial_number.as_ref());
            add(LookupKey::Imei, self.info.imei.as_ref());
            add(LookupKey::Meid, self.info.meid.as_ref());
            add(LookupKey::WifiMac, self.info.wifi_mac.as_ref());
            add(LookupKey::Phone, self.info.phone_number.as_ref());
            add(LookupKey::Guid, Some(&self.device_guid()));
            add(LookupKey::User, self.attributes.get("USERNAME"));
            add(LookupKey::User, self.attributes.get("EMAIL"));
            if let Some(u) = &self.user {
                add(LookupKey::User, Some(&u.username));
                add(LookupKey::User, u.email.as_ref());
            }
        }
        add(LookupKey::User, self.user_short_name.as_ref());
        out
    }
}

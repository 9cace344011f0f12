//! `mdmd devices`: list, show and find enrollments; their commands and
//! profiles; attributes, inventory refresh, approved re-enrollment.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::client::{enc, AdminClient, ClientOpts, Method};
use super::{print, show, table};

#[derive(Args)]
pub struct DevicesArgs {
    #[command(subcommand)]
    what: Option<DevicesCmd>,
    #[command(flatten)]
    client: ClientOpts,
}

impl DevicesArgs {
    pub async fn run(self) -> anyhow::Result<()> {
        let a = self.client.admin()?;
        self.what.unwrap_or(DevicesCmd::List { after: None, limit: 100 }).run(&a).await
    }
}

#[derive(Subcommand)]
pub enum DevicesCmd {
    /// List enrollments (paged: --after the last id of the previous page).
    List {
        #[arg(long)]
        after: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one enrollment.
    Show { id: String },
    /// Show an enrollment's commands, pending and finished.
    Commands { id: String },
    /// Clear an enrollment's pending commands.
    Clear { id: String },
    /// The profiles mdmd tracks on an enrollment (pending, installed, failed, removed, missing).
    Profiles { id: String },
    /// Allow the next enrollment of this device with a new identity (a wiped or replaced phone)
    /// to take over its active enrollment: once, within --expires-in seconds.
    ApproveReenroll {
        id: String,
        #[arg(long, default_value_t = 3600)]
        expires_in: i64,
    },
    /// Set attributes used by profile variables, e.g. `USERNAME=alice EMAIL=alice@example.com`
    /// (an empty value removes one).
    Set {
        id: String,
        #[arg(required = true, value_name = "KEY=VALUE")]
        attributes: Vec<String>,
    },
    /// End management of a device: mdmd removes its enrollment profile (RemoveProfile). The
    /// device then removes everything mdmd installed with it (profiles, managed apps whose
    /// flags say so), checks out, and stops answering; its licences go back. It can enroll
    /// again later like a new device.
    Unenroll { id: String },
    /// Queue an inventory refresh now (DeviceInformation, SecurityInfo, CertificateList,
    /// ProfileList, InstalledApplicationList).
    Refresh { id: String },
    /// Find devices by what they reported: KIND is udid, serial, imei, meid, mac, phone or user
    /// (MACs and phone numbers in any spelling), e.g. `mdmd devices find mac F0-5C-77-1A-2B-3C`.
    Find { kind: String, value: String },
}

impl DevicesCmd {
    pub async fn run(self, a: &AdminClient) -> anyhow::Result<()> {
        let render: Option<fn(&Value) -> String> = match &self {
            DevicesCmd::List { .. } => Some(table::devices),
            DevicesCmd::Show { .. } => Some(table::device),
            DevicesCmd::Commands { .. } => Some(table::device_commands),
            _ => None,
        };
        let v = match self {
            DevicesCmd::List { after, limit } => {
                let mut path = format!("/v1/devices?limit={limit}");
                if let Some(a) = after {
                    path.push_str(&format!("&after={}", enc(&a)));
                }
                a.get(&path).await?
            }
            DevicesCmd::Show { id } => a.get(&format!("/v1/devices/{}", enc(&id))).await?,
            DevicesCmd::Commands { id } => a.get(&format!("/v1/devices/{}/commands", enc(&id))).await?,
            DevicesCmd::Profiles { id } => a.get(&format!("/v1/devices/{}/profiles", enc(&id))).await?,
            DevicesCmd::ApproveReenroll { id, expires_in } => {
                a.post(
                    &format!("/v1/devices/{}/approve-reenroll", enc(&id)),
                    json!({"expires_in": expires_in}),
                )
                .await?
            }
            DevicesCmd::Unenroll { id } => a.post(&format!("/v1/devices/{}/unenroll", enc(&id)), json!({})).await?,
            DevicesCmd::Set { id, attributes } => {
                let mut m = serde_json::Map::new();
                for kv in attributes {
                    let (k, v) = kv.split_once('=').context("attributes are KEY=VALUE")?;
                    m.insert(k.to_owned(), Value::String(v.to_owned()));
                }
                a.send(Method::PUT, &format!("/v1/devices/{}/attributes", enc(&id)), Some(Value::Object(m)))
                    .await?
                    .ok_200()?
            }
            DevicesCmd::Refresh { id } => a
                .send(Method::POST, &format!("/v1/devices/{}/inventory", enc(&id)), Some(json!({})))
                .await?
                .ok_200()?,
            DevicesCmd::Find { kind, value } => {
                let key = match kind.as_str() {
                    "udid" | "serial" | "imei" | "meid" | "mac" | "phone" | "user" => kind.clone(),
                    other => anyhow::bail!("find by {other:?}: udid, serial, imei, meid, mac, phone or user"),
                };
                a.get(&format!("/v1/devices?{key}={}", enc(&value))).await?
            }
            DevicesCmd::Clear { id } => a
                .send(Method::DELETE, &format!("/v1/devices/{}/commands", enc(&id)), None)
                .await?
                .ok_200()?,
        };
        match render {
            Some(r) => show(&v, r),
            None => print(&v),
        }
        Ok(())
    }
}

//! `mdmd groups`: static and dynamic device groups.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::client::{enc, AdminClient, ClientOpts, Method};
use super::table::table;
use super::{print, show};

#[derive(Args)]
pub struct GroupsArgs {
    #[command(subcommand)]
    what: GroupsCmd,
    #[command(flatten)]
    client: ClientOpts,
}

impl GroupsArgs {
    pub async fn run(self) -> anyhow::Result<()> {
        let a = self.client.admin()?;
        self.what.run(&a).await
    }
}

#[derive(Subcommand)]
pub enum GroupsCmd {
    /// Create or replace a group: static (`--member`) or dynamic (`--rule`).
    ///
    /// Static members are UDIDs or serial numbers; a rule is a CEL expression
    /// over `device` (docs/groups.md lists its fields), e.g.
    /// `mdmd groups set sales --rule 'device.attributes.DEPARTMENT == "sales"'`.
    Set {
        /// Letters, digits, '.', '-', '_' (at most 64).
        name: String,
        /// A UDID or serial number (repeat for each member).
        #[arg(long = "member", conflicts_with = "rule", required_unless_present = "rule")]
        members: Vec<String>,
        /// A CEL expression over `device`, e.g. `device.model == "iPhone16,1" && !device.supervised`.
        #[arg(long)]
        rule: Option<String>,
    },
    /// Every group.
    List,
    /// One group with its current members and the blueprints that use it.
    Show {
        name: String,
        /// At most this many members.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Delete a group (no blueprint may use it).
    Rm { name: String },
}

fn groups_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| {
            let (kind, def) = match g["rule"].as_str() {
                Some(r) => ("dynamic", r.to_owned()),
                None => ("static", format!("{} members", g["members"].as_array().map_or(0, Vec::len))),
            };
            vec![g["name"].as_str().unwrap_or("").to_owned(), kind.to_owned(), def]
        })
        .collect();
    table(&["NAME", "KIND", "DEFINITION"], &rows)
}

impl GroupsCmd {
    pub async fn run(self, a: &AdminClient) -> anyhow::Result<()> {
        match self {
            GroupsCmd::Set { name, members, rule } => {
                let body = match rule {
                    Some(r) => json!({ "rule": r }),
                    None => json!({ "members": members }),
                };
                print(&a.send(Method::PUT, &format!("/v1/groups/{}", enc(&name)), Some(body)).await?.ok()?);
            }
            GroupsCmd::List => show(&a.get("/v1/groups").await?, groups_table),
            GroupsCmd::Show { name, limit } => print(&a.get(&format!("/v1/groups/{}?limit={limit}", enc(&name))).await?),
            GroupsCmd::Rm { name } => print(&a.send(Method::DELETE, &format!("/v1/groups/{}", enc(&name)), None).await?.ok()?),
        }
        Ok(())
    }
}

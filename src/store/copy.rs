//! `mdmd db copy`: move every record from one backend to another, then read
//! the target back and compare counts and content digests table by table.

use std::collections::BTreeMap;

use super::{CopyStore, Result, Row, StoreError, Table};

const PAGE: usize = 2000;

/// Rows and an order-independent digest (sum of per-row SHA-256 prefixes) of one table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Tally {
    pub rows: u64,
    pub checksum: u64,
}

impl Tally {
    fn add(&mut self, r: &Row) {
        self.rows += 1;
        self.checksum = self.checksum.wrapping_add(r.digest());
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CopyReport {
    pub from: String,
    pub to: String,
    pub tables: BTreeMap<&'static str, (Tally, Tally)>,
}

impl CopyReport {
    pub fn verified(&self) -> bool {
        self.tables.values().all(|(a, b)| a == b)
    }
}

/// Every row of one table, page by page.
pub async fn scan(s: &dyn CopyStore, table: Table, mut each: impl FnMut(Vec<Row>) -> Result<()>) -> Result<()> {
    let mut after: Option<String> = None;
    loop {
        let page = s.export(table, after.clone(), PAGE).await?;
        let Some(last) = page.last() else { return Ok(()) };
        let next = last.cursor();
        if after.as_ref() == Some(&next) {
            return Err(StoreError::Corrupt(format!("{}: paging did not advance", table.name())));
        }
        after = Some(next);
        let full = page.len() == PAGE;
        each(page)?;
        if !full {
            return Ok(());
        }
    }
}

/// The tally of every table of a store.
pub async fn tally(s: &dyn CopyStore) -> Result<BTreeMap<&'static str, Tally>> {
    let mut out = BTreeMap::new();
    for t in Table::ALL {
        let mut tally = Tally::default();
        scan(s, t, |rows| {
            rows.iter().for_each(|r| tally.add(r));
            Ok(())
        })
        .await?;
        out.insert(t.name(), tally);
    }
    Ok(out)
}

/// Copy everything from `from` into `to` (which should be empty), then verify.
pub async fn copy_all(from: &dyn CopyStore, to: &dyn CopyStore) -> Result<CopyReport> {
    let mut source = BTreeMap::new();
    for t in Table::ALL {
        let mut tally = Tally::default();
        let mut after: Option<String> = None;
        loop {
            let page = from.export(t, after.clone(), PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.cursor());
            let full = page.len() == PAGE;
            page.iter().for_each(|r| tally.add(r));
            to.import(page).await?;
            if !full {
                break;
            }
        }
        source.insert(t.name(), tally);
    }
    let target = tally(to).await?;
    let tables = source
        .into_iter()
        .map(|(name, a)| (name, (a, target.get(name).copied().unwrap_or_default())))
        .collect();
    Ok(CopyReport {
        from: from.describe(),
        to: to.describe(),
        tables,
    })
}

//! redb: moving an installation between backends (`CopyStore`): every
//! table exported page by page in key order, imported as exported.

use ::redb::TableDefinition;

use super::*;

/// `(lower bound, skip-equal)` for a paged scan over string keys.
pub(super) fn after_bound(after: &Option<String>) -> std::ops::Bound<&str> {
    match after {
        Some(a) => std::ops::Bound::Excluded(a.as_str()),
        None => std::ops::Bound::Unbounded,
    }
}

#[async_trait]
impl CopyStore for RedbStore {
    async fn export(&self, table: Table, after: Option<String>, limit: usize) -> Result<Vec<Row>> {
        self.read(|txn| {
            let mut out = Vec::new();
            // Tables keyed by one string.
            let simple = |def: TableDefinition<&str, &[u8]>, out: &mut Vec<Row>, f: &dyn Fn(&str, &[u8]) -> Result<Row>| -> Result<()> {
                let t = txn.open_table(def)?;
                for item in t.range::<&str>((after_bound(&after), std::ops::Bound::Unbounded))?.take(limit) {
                    let (k, v) = item?;
                    out.push(f(k.value(), v.value())?);
                }
                Ok(())
            };
            match table {
                Table::Settings => simple(SETTINGS, &mut out, &|k, v| {
                    Ok(Row::Setting {
                        name: k.to_owned(),
                        setting: dec(v)?,
                    })
                })?,
                Table::Certs => simple(CERTS, &mut out, &|_, v| Ok(Row::Cert(dec(v)?)))?,
                Table::Enrollments => simple(ENROLLMENTS, &mut out, &|_, v| Ok(Row::Enrollment(dec(v)?)))?,
                Table::Templates => simple(TEMPLATES, &mut out, &|_, v| Ok(Row::Template(dec(v)?)))?,
                Table::Commands => simple(COMMANDS, &mut out, &|_, v| Ok(Row::Command(dec(v)?)))?,
                Table::Secrets => {
                    let t = txn.open_table(SECRETS)?;
                    let start: (u8, String) = match &after {
                        Some(a) => {
                            let (k, h) = split_cursor(a);
                            (k.parse().unwrap_or(0), h.to_owned())
                        }
                        None => (0, String::new()),
                    };
                    for item in t.range((start.0, start.1.as_str())..)? {
                        let (k, v) = item?;
                        let (kind, hash) = k.value();
                        if after.is_some() && (kind, hash) == (start.0, start.1.as_str()) {
                            continue;
                        }
                        let Some(kind) = SecretKind::from_u8(kind) else { continue };
                        out.push(Row::Secret {
                            kind,
                            hash: hash.to_owned(),
                            secret: dec(v.value())?,
                        });
                        if out.len() >= limit {
                            break;
                        }
                    }
                }
                Table::Deliveries => {
                    let t = txn.open_table(DELIVERIES)?;
                    let commands = txn.open_table(COMMANDS)?;
                    let start = after.as_deref().map(split_cursor).unwrap_or(("", ""));
                    let mut cmd: Option<CommandRecord> = None;
                    for item in t.range(start..)? {
                        let (k, v) = item?;
                        let (uuid, enrollment) = k.value();
                        if after.is_some() && (uuid, enrollment) == start {
                            continue;
                        }
                        if cmd.as_ref().is_none_or(|c| c.uuid != uuid) {
                            cmd = load_command(&commands, uuid)?;
                        }
                        let mut delivery = delivery_from(v.value(), cmd.as_ref())?;
                        delivery.enrollment = enrollment.to_owned();
                        out.push(Row::Delivery {
                            command_uuid: uuid.to_owned(),
                            enrollment: enrollment.to_owned(),
                            delivery,
                        });
                        if out.len() >= limit {
                            break;
                        }
                    }
                }
                Table::Compliance => simple(COMPLIANCE, &mut out, &|k, v| {
                    Ok(Row::Compliance {
                        enrollment: k.to_owned(),
                        record: dec(v)?,
                    })
                })?,
                Table::Records => {
                    let t = txn.open_table(RECORDS)?;
                    let start = after.as_deref().map(split_cursor).unwrap_or(("", ""));
                    for item in t.range(start..)? {
                        let (k, v) = item?;
                        let (collection, key) = k.value();
                        if after.is_some() && (collection, key) == start {
                            continue;
                        }
                        out.push(Row::Record {
                            collection: collection.to_owned(),
                            key: key.to_owned(),
                            record: dec(v.value())?,
                        });
                        if out.len() >= limit {
                            break;
                        }
                    }
                }
                Table::Inventory => {
                    let t = txn.open_table(INVENTORY)?;
                    let start = after.as_deref().map(split_cursor).unwrap_or(("", ""));
                    for item in t.range(start..)? {
                        let (k, v) = item?;
                        let (enrollment, kind) = k.value();
                        if after.is_some() && (enrollment, kind) == start {
                            continue;
                        }
                        out.push(Row::Inventory {
                            enrollment: enrollment.to_owned(),
                            item: dec(v.value())?,
                        });
                        if out.len() >= limit {
                            break;
                        }
                    }
                }
                Table::DeviceProfiles => {
                    let t = txn.open_table(DEVICE_PROFILES)?;
                    let start = after.as_deref().map(split_cursor).unwrap_or(("", ""));
                    for item in t.range(start..)? {
                        let (k, v) = item?;
                        let (enrollment, identifier) = k.value();
                        if after.is_some() && (enrollment, identifier) == start {
                            continue;
                        }
                        let mut profile: DeviceProfile = dec(v.value())?;
                        profile.enrollment = enrollment.to_owned();
                        profile.identifier = identifier.to_owned();
                        out.push(Row::DeviceProfile {
                            enrollment: enrollment.to_owned(),
                            identifier: identifier.to_owned(),
                            profile,
                        });
                        if out.len() >= limit {
                            break;
                        }
                    }
                }
            }
            Ok(out)
        })
    }

    async fn import(&self, rows: Vec<Row>) -> Result<()> {
        self.write(move |txn| {
            let mut max_seq = 0;
            for row in rows {
                match row {
                    Row::Setting { name, setting } => {
                        txn.open_table(SETTINGS)?.insert(name.as_str(), enc(&setting)?.as_slice())?;
                    }
                    Row::Cert(c) => {
                        txn.open_table(CERTS)?.insert(c.sha256.as_str(), enc(&c)?.as_slice())?;
                        txn.open_table(CERT_SERIALS)?.insert(c.serial.as_str(), c.sha256.as_str())?;
                    }
                    Row::Secret { kind, hash, secret } => {
                        txn.open_table(SECRETS)?
                            .insert((kind as u8, hash.as_str()), enc(&secret)?.as_slice())?;
                    }
                    Row::Enrollment(e) => put_enrollment(txn, &e)?,
                    Row::Template(t) => {
                        txn.open_table(TEMPLATES)?.insert(t.identifier.as_str(), enc(&t)?.as_slice())?;
                    }
                    Row::Command(c) => {
                        max_seq = max_seq.max(c.seq);
                        txn.open_table(COMMANDS)?.insert(c.uuid.as_str(), enc(&c)?.as_slice())?;
                    }
                    Row::Delivery {
                        command_uuid,
                        enrollment,
                        delivery,
                    } => {
                        let key = (enrollment.as_str(), delivery.seq);
                        txn.open_table(HISTORY)?.insert(key, command_uuid.as_str())?;
                        if delivery.status.is_pending() {
                            let nn = delivery.status == DeliveryStatus::NotNow;
                            txn.open_table(QUEUE)?.insert(key, queue_value(nn, &command_uuid).as_slice())?;
                        }
                        txn.open_table(DELIVERIES)?
                            .insert((command_uuid.as_str(), enrollment.as_str()), enc(&delivery)?.as_slice())?;
                    }
                    Row::DeviceProfile {
                        enrollment,
                        identifier,
                        profile,
                    } => {
                        txn.open_table(DEVICE_PROFILES)?
                            .insert((enrollment.as_str(), identifier.as_str()), enc(&profile)?.as_slice())?;
                        txn.open_table(PROFILE_DEVICES)?
                            .insert((identifier.as_str(), enrollment.as_str()), ())?;
                    }
                    Row::Inventory { enrollment, item } => {
                        txn.open_table(INVENTORY)?
                            .insert((enrollment.as_str(), item.kind.as_str()), enc(&item)?.as_slice())?;
                    }
                    Row::Compliance { enrollment, record } => {
                        txn.open_table(COMPLIANCE)?.insert(enrollment.as_str(), enc(&record)?.as_slice())?;
                    }
                    Row::Record { collection, key, record } => {
                        txn.open_table(RECORDS)?
                            .insert((collection.as_str(), key.as_str()), enc(&record)?.as_slice())?;
                    }
                }
            }
            if max_seq > 0 {
                let mut meta = txn.open_table(META)?;
                let cur = meta.get("seq")?.map(|v| v.value()).unwrap_or(0);
                if max_seq > cur {
                    meta.insert("seq", max_seq)?;
                }
            }
            Ok(())
        })
        .await
    }

    fn describe(&self) -> String {
        "redb".into()
    }
}

//! PostgreSQL: moving an installation between backends (`CopyStore`):
//! every table exported page by page in key order, imported as exported.

use super::*;

async fn import_tx(tx: &Transaction<'_>, rows_in: Vec<Row>) -> Result<()> {
    let mut max_seq = 0i64;
    for row in rows_in {
        match row {
            Row::Setting { name, setting } => {
                exec(
                    tx,
                    "INSERT INTO settings (name, value, updated_at, version) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at, version = EXCLUDED.version",
                    &[&name, &setting.value, &setting.updated_at, &(setting.version as i64)],
                )
                .await?;
            }
            Row::Cert(c) => put_cert(tx, &c).await?,
            Row::Secret { kind, hash, secret } => put_secret(tx, kind, &hash, &secret).await?,
            Row::Enrollment(e) => put_enrollment(tx, &e).await?,
            Row::Template(t) => {
                exec(
                    tx,
                    "INSERT INTO templates (identifier, data) VALUES ($1, $2) ON CONFLICT (identifier) DO UPDATE SET data = EXCLUDED.data",
                    &[&t.identifier, &to_json(&t)?],
                )
                .await?;
            }
            Row::Command(c) => {
                max_seq = max_seq.max(c.seq as i64);
                insert_commands(tx, std::slice::from_ref(&c)).await?;
            }
            Row::Delivery {
                command_uuid,
                enrollment,
                delivery: d,
            } => {
                let chain = if d.error_chain.is_empty() {
                    None
                } else {
                    Some(to_json(&d.error_chain)?)
                };
                exec(
                    tx,
                    "INSERT INTO deliveries (enrollment, seq, command_uuid, status, queued_at, updated_at, not_now_count, error_chain, result) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    &[
                        &enrollment,
                        &(d.seq as i64),
                        &command_uuid,
                        &status_str(d.status),
                        &d.queued_at,
                        &d.updated_at,
                        &(d.not_now_count as i32),
                        &chain,
                        &d.result,
                    ],
                )
                .await?;
            }
            Row::DeviceProfile {
                enrollment,
                identifier,
                profile,
            } => put_device_profile(tx, &enrollment, &identifier, &profile).await?,
            Row::Inventory { enrollment, item } => put_inventory_row(tx, &enrollment, &item).await?,
            Row::Compliance { enrollment, record } => put_compliance_row(tx, &enrollment, &record).await?,
            Row::Record { collection, key, record } => {
                exec(
                    tx,
                    "INSERT INTO records (collection, key, version, updated_at, value) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (collection, key) DO UPDATE SET version = EXCLUDED.version, updated_at = EXCLUDED.updated_at, value = EXCLUDED.value",
                    &[&collection, &key, &(record.version as i64), &record.updated_at, &record.value],
                )
                .await?;
            }
        }
    }
    if max_seq > 0 {
        exec(
            tx,
            "SELECT setval('command_seq', GREATEST($1, (SELECT last_value FROM command_seq)))",
            &[&max_seq],
        )
        .await?;
    }
    Ok(())
}

#[async_trait]
impl CopyStore for PgStore {
    async fn export(&self, table: Table, after: Option<String>, limit: usize) -> Result<Vec<Row>> {
        let limit = limit.min(i64::MAX as usize) as i64;
        if table == Table::Deliveries && after.is_none() {
            // Open fan-outs settle first: every pending target then has its row, as on redb.
            self.settle_fanouts(i64::MAX).await?;
        }
        self.read(|c| async move {
            let c = &c;
            let (a, b) = after.as_deref().map(split_cursor).unwrap_or(("", ""));
            let first = after.is_none();
            let out = match table {
                Table::Settings => rows(
                    c,
                    "SELECT name, value, updated_at, version FROM settings WHERE $1 OR name > $2 ORDER BY name LIMIT $3",
                    &[&first, &a, &limit],
                )
                .await?
                .iter()
                .map(|r| {
                    Ok(Row::Setting {
                        name: r.get(0),
                        setting: Setting {
                            value: r.get(1),
                            updated_at: r.get(2),
                            version: r.get::<_, i64>(3) as u64,
                        },
                    })
                })
                .collect::<Result<Vec<_>>>()?,
                Table::Certs => rows(
                    c,
                    "SELECT data FROM certs WHERE $1 OR sha256 > $2 ORDER BY sha256 LIMIT $3",
                    &[&first, &a, &limit],
                )
                .await?
                .iter()
                .map(|r| Ok(Row::Cert(json(r, 0)?)))
                .collect::<Result<Vec<_>>>()?,
                Table::Secrets => {
                    let kind: i16 = a.parse().unwrap_or(0);
                    rows(
                        c,
                        "SELECT kind, hash, data FROM secrets WHERE $1 OR (kind, hash) > ($2, $3) ORDER BY kind, hash LIMIT $4",
                        &[&first, &kind, &b, &limit],
                    )
                    .await?
                    .iter()
                    .filter_map(|r| {
                        let kind = SecretKind::from_u8(r.get::<_, i16>(0) as u8)?;
                        Some(json(r, 2).map(|secret| Row::Secret {
                            kind,
                            hash: r.get(1),
                            secret,
                        }))
                    })
                    .collect::<Result<Vec<_>>>()?
                }
                Table::Enrollments => rows(
                    c,
                    "SELECT data FROM enrollments WHERE $1 OR id > $2 ORDER BY id LIMIT $3",
                    &[&first, &a, &limit],
                )
                .await?
                .iter()
                .map(|r| Ok(Row::Enrollment(json(r, 0)?)))
                .collect::<Result<Vec<_>>>()?,
                Table::Templates => rows(
                    c,
                    "SELECT data FROM templates WHERE $1 OR identifier > $2 ORDER BY identifier LIMIT $3",
                    &[&first, &a, &limit],
                )
                .await?
                .iter()
                .map(|r| Ok(Row::Template(json(r, 0)?)))
                .collect::<Result<Vec<_>>>()?,
                Table::Commands => rows(
                    c,
                    "SELECT uuid, seq, request_type, created_at, targets, profile, body, supersede FROM commands WHERE $1 OR uuid > $2 ORDER BY uuid LIMIT $3",
                    &[&first, &a, &limit],
                )
                .await?
                .iter()
                .map(|r| Ok(Row::Command(command_row(r)?)))
                .collect::<Result<Vec<_>>>()?,
                Table::Deliveries => {
                    let sql = format!(
                        "SELECT {DELIVERY_COLS}, d.command_uuid FROM deliveries d WHERE $1 OR (d.command_uuid, d.enrollment) > ($2, $3) ORDER BY d.command_uuid, d.enrollment LIMIT $4"
                    );
                    rows(c, &sql, &[&first, &a, &b, &limit])
                        .await?
                        .iter()
                        .map(|r| {
                            let delivery = delivery_row(r, 0)?;
                            Ok(Row::Delivery {
                                command_uuid: r.try_get(8)?,
                                enrollment: delivery.enrollment.clone(),
                                delivery,
                            })
                        })
                        .collect::<Result<Vec<_>>>()?
                }
                Table::Records => rows(
                    c,
                    "SELECT collection, key, version, updated_at, value FROM records WHERE $1 OR (collection, key) > ($2, $3) ORDER BY collection, key LIMIT $4",
                    &[&first, &a, &b, &limit],
                )
                .await?
                .iter()
                .map(|r| {
                    Ok(Row::Record {
                        collection: r.try_get(0)?,
                        key: r.try_get(1)?,
                        record: record_row(r, 2)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?,
                Table::Inventory => rows(
                    c,
                    "SELECT enrollment, data FROM inventory WHERE $1 OR (enrollment, kind) > ($2, $3) ORDER BY enrollment, kind LIMIT $4",
                    &[&first, &a, &b, &limit],
                )
                .await?
                .iter()
                .map(|r| {
                    Ok(Row::Inventory {
                        enrollment: r.try_get(0)?,
                        item: json(r, 1)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?,
                Table::Compliance => rows(
                    c,
                    "SELECT enrollment, data FROM compliance WHERE $1 OR enrollment > $2 ORDER BY enrollment LIMIT $3",
                    &[&first, &a, &limit],
                )
                .await?
                .iter()
                .map(|r| {
                    Ok(Row::Compliance {
                        enrollment: r.try_get(0)?,
                        record: json(r, 1)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?,
                Table::DeviceProfiles => rows(
                    c,
                    "SELECT enrollment, identifier, data FROM device_profiles WHERE $1 OR (enrollment, identifier) > ($2, $3) ORDER BY enrollment, identifier LIMIT $4",
                    &[&first, &a, &b, &limit],
                )
                .await?
                .iter()
                .map(|r| {
                    let profile = device_profile_row(r)?;
                    Ok(Row::DeviceProfile {
                        enrollment: profile.enrollment.clone(),
                        identifier: profile.identifier.clone(),
                        profile,
                    })
                })
                .collect::<Result<Vec<_>>>()?,
            };
            Ok(out)
        })
        .await
    }

    async fn import(&self, rows_in: Vec<Row>) -> Result<()> {
        self.write(rows_in, import_tx).await
    }

    fn describe(&self) -> String {
        format!("PostgreSQL at {}", self.url_shown)
    }
}

//! redb: issued certificates and single-use secrets (`PkiStore`).

use super::*;

fn consume_in(txn: &WriteTransaction, kind: SecretKind, hash: &str, now: i64) -> Result<Consumed> {
    let mut t = txn.open_table(SECRETS)?;
    let cur: Option<OneTimeSecret> = dec_opt(t.get((kind as u8, hash))?)?;
    let outcome = OneTimeSecret::consume(cur, now);
    if let Consumed::Ok(s) = &outcome {
        t.insert((kind as u8, hash), enc(s)?.as_slice())?;
    }
    Ok(outcome)
}

#[async_trait]
impl PkiStore for RedbStore {
    async fn record_cert(&self, cert: IssuedCert) -> Result<()> {
        self.write(move |txn| {
            txn.open_table(CERTS)?.insert(cert.sha256.as_str(), enc(&cert)?.as_slice())?;
            txn.open_table(CERT_SERIALS)?.insert(cert.serial.as_str(), cert.sha256.as_str())?;
            Ok(())
        })
        .await
    }

    async fn cert_by_hash(&self, sha256: &str) -> Result<Option<IssuedCert>> {
        self.read(|txn| {
            let t = txn.open_table(CERTS)?;
            let r = dec_opt(t.get(sha256)?)?;
            Ok(r)
        })
    }

    async fn cert_by_serial(&self, serial: &str) -> Result<Option<IssuedCert>> {
        let hash = self.read(|txn| Ok(txn.open_table(CERT_SERIALS)?.get(serial)?.map(|v| v.value().to_owned())))?;
        match hash {
            Some(h) => self.cert_by_hash(&h).await,
            None => Ok(None),
        }
    }

    async fn certs(&self, after: Option<String>, limit: usize) -> Result<Vec<IssuedCert>> {
        let hashes: Vec<String> = self.read(|txn| {
            let t = txn.open_table(CERT_SERIALS)?;
            let iter = match &after {
                Some(a) => t.range::<&str>((std::ops::Bound::Excluded(a.as_str()), std::ops::Bound::Unbounded))?,
                None => t.range::<&str>(..)?,
            };
            iter.take(limit)
                .map(|r| r.map(|(_, v)| v.value().to_owned()).map_err(StoreError::from))
                .collect()
        })?;
        let mut out = Vec::with_capacity(hashes.len());
        for h in hashes {
            if let Some(c) = self.cert_by_hash(&h).await? {
                out.push(c);
            }
        }
        Ok(out)
    }

    async fn revoke_cert(&self, serial: &str, now: i64) -> Result<bool> {
        let serial = serial.to_owned();
        self.write(move |txn| {
            let Some(hash) = txn.open_table(CERT_SERIALS)?.get(serial.as_str())?.map(|v| v.value().to_owned()) else {
                return Ok(false);
            };
            let mut certs = txn.open_table(CERTS)?;
            let cur: Option<IssuedCert> = dec_opt(certs.get(hash.as_str())?)?;
            let Some(mut c) = cur else { return Ok(false) };
            if c.revoke(now) {
                certs.insert(hash.as_str(), enc(&c)?.as_slice())?;
            }
            Ok(true)
        })
        .await
    }

    async fn add_secret(&self, kind: SecretKind, hash: &str, rec: OneTimeSecret) -> Result<()> {
        let hash = hash.to_owned();
        self.write(move |txn| {
            txn.open_table(SECRETS)?
                .insert((kind as u8, hash.as_str()), enc(&rec)?.as_slice())?;
            Ok(())
        })
        .await
    }

    async fn secret(&self, kind: SecretKind, hash: &str) -> Result<Option<OneTimeSecret>> {
        self.read(|txn| dec_opt(txn.open_table(SECRETS)?.get((kind as u8, hash))?))
    }

    async fn consume_secret(&self, kind: SecretKind, hash: &str, now: i64) -> Result<Consumed> {
        let hash = hash.to_owned();
        self.write(move |txn| consume_in(txn, kind, &hash, now)).await
    }

    async fn record_cert_consuming(&self, cert: IssuedCert, kind: SecretKind, hash: &str, now: i64) -> Result<Consumed> {
        let hash = hash.to_owned();
        self.write(move |txn| {
            let outcome = consume_in(txn, kind, &hash, now)?;
            if let Consumed::Ok(_) = &outcome {
                txn.open_table(CERTS)?.insert(cert.sha256.as_str(), enc(&cert)?.as_slice())?;
                txn.open_table(CERT_SERIALS)?.insert(cert.serial.as_str(), cert.sha256.as_str())?;
            }
            Ok(outcome)
        })
        .await
    }

    async fn prune_secrets(&self, expired_before: i64, limit: usize) -> Result<u64> {
        // Find them with a read transaction (no writer time), delete in one write that checks again.
        let due: Vec<(u8, String)> = self.read(move |txn| {
            let t = txn.open_table(SECRETS)?;
            let mut due = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                let (kind, hash) = k.value();
                if let Ok(s) = serde_json::from_slice::<OneTimeSecret>(v.value()) {
                    if s.expires_at < expired_before {
                        due.push((kind, hash.to_owned()));
                        if due.len() >= limit {
                            break;
                        }
                    }
                }
            }
            Ok(due)
        })?;
        if due.is_empty() {
            return Ok(0);
        }
        self.write(move |txn| {
            let mut t = txn.open_table(SECRETS)?;
            let mut n = 0;
            for (kind, hash) in &due {
                let cur: Option<OneTimeSecret> = dec_opt(t.get((*kind, hash.as_str()))?)?;
                if cur.is_some_and(|s| s.expires_at < expired_before) {
                    t.remove((*kind, hash.as_str()))?;
                    n += 1;
                }
            }
            Ok(n)
        })
        .await
    }
}

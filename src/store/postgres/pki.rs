//! PostgreSQL: issued certificates and single-use secrets (`PkiStore`).

use super::*;

pub(super) async fn put_secret(tx: &Transaction<'_>, kind: SecretKind, hash: &str, rec: &OneTimeSecret) -> Result<()> {
    exec(
        tx,
        "INSERT INTO secrets (kind, hash, data) VALUES ($1, $2, $3) ON CONFLICT (kind, hash) DO UPDATE SET data = EXCLUDED.data",
        &[&(kind as i16), &hash, &to_json(rec)?],
    )
    .await?;
    Ok(())
}

pub(super) async fn put_cert(tx: &Transaction<'_>, c: &IssuedCert) -> Result<()> {
    exec(
        tx,
        "INSERT INTO certs (sha256, serial, data) VALUES ($1, $2, $3) ON CONFLICT (sha256) DO UPDATE SET serial = EXCLUDED.serial, data = EXCLUDED.data",
        &[&c.sha256, &c.serial, &to_json(c)?],
    )
    .await?;
    Ok(())
}

async fn consume_in(tx: &Transaction<'_>, kind: SecretKind, hash: &str, now: i64) -> Result<Consumed> {
    let cur: Option<OneTimeSecret> = match opt(
        tx,
        "SELECT data FROM secrets WHERE kind = $1 AND hash = $2 FOR UPDATE",
        &[&(kind as i16), &hash],
    )
    .await?
    {
        Some(r) => Some(json(&r, 0)?),
        None => None,
    };
    let outcome = OneTimeSecret::consume(cur, now);
    if let Consumed::Ok(s) = &outcome {
        put_secret(tx, kind, hash, s).await?;
    }
    Ok(outcome)
}

async fn record_cert_tx(tx: &Transaction<'_>, cert: IssuedCert) -> Result<()> {
    put_cert(tx, &cert).await
}

async fn revoke_cert_tx(tx: &Transaction<'_>, (serial, now): (String, i64)) -> Result<bool> {
    let Some(r) = opt(tx, "SELECT data FROM certs WHERE serial = $1 FOR UPDATE", &[&serial]).await? else {
        return Ok(false);
    };
    let mut c: IssuedCert = json(&r, 0)?;
    if c.revoke(now) {
        put_cert(tx, &c).await?;
    }
    Ok(true)
}

async fn add_secret_tx(tx: &Transaction<'_>, (kind, hash, rec): (SecretKind, String, OneTimeSecret)) -> Result<()> {
    put_secret(tx, kind, &hash, &rec).await
}

async fn prune_secrets_tx(tx: &Transaction<'_>, (expired_before, limit): (i64, i64)) -> Result<u64> {
    exec(
        tx,
        "DELETE FROM secrets WHERE (kind, hash) IN (SELECT kind, hash FROM secrets \
         WHERE (data->>'expires_at')::bigint < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
        &[&expired_before, &limit],
    )
    .await
}

async fn consume_secret_tx(tx: &Transaction<'_>, (kind, hash, now): (SecretKind, String, i64)) -> Result<Consumed> {
    consume_in(tx, kind, &hash, now).await
}

async fn record_cert_consuming_tx(
    tx: &Transaction<'_>,
    (cert, kind, hash, now): (IssuedCert, SecretKind, String, i64),
) -> Result<Consumed> {
    let outcome = consume_in(tx, kind, &hash, now).await?;
    if let Consumed::Ok(_) = &outcome {
        put_cert(tx, &cert).await?;
    }
    Ok(outcome)
}

#[async_trait]
impl PkiStore for PgStore {
    async fn record_cert(&self, cert: IssuedCert) -> Result<()> {
        self.write(cert, record_cert_tx).await
    }

    async fn cert_by_hash(&self, sha256: &str) -> Result<Option<IssuedCert>> {
        self.read(|c| async move {
            opt(&c, "SELECT data FROM certs WHERE sha256 = $1", &[&sha256])
                .await?
                .map(|r| json(&r, 0))
                .transpose()
        })
        .await
    }

    async fn cert_by_serial(&self, serial: &str) -> Result<Option<IssuedCert>> {
        self.read(|c| async move {
            opt(&c, "SELECT data FROM certs WHERE serial = $1", &[&serial])
                .await?
                .map(|r| json(&r, 0))
                .transpose()
        })
        .await
    }

    async fn certs(&self, after: Option<String>, limit: usize) -> Result<Vec<IssuedCert>> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.read(|c| async move {
            let r = match &after {
                Some(a) => {
                    rows(
                        &c,
                        "SELECT data FROM certs WHERE serial > $1 ORDER BY serial LIMIT $2",
                        &[a, &limit],
                    )
                    .await?
                }
                None => rows(&c, "SELECT data FROM certs ORDER BY serial LIMIT $1", &[&limit]).await?,
            };
            r.iter().map(|r| json(r, 0)).collect()
        })
        .await
    }

    async fn revoke_cert(&self, serial: &str, now: i64) -> Result<bool> {
        let serial = serial.to_owned();
        self.write((serial, now), revoke_cert_tx).await
    }

    async fn add_secret(&self, kind: SecretKind, hash: &str, rec: OneTimeSecret) -> Result<()> {
        let hash = hash.to_owned();
        self.write((kind, hash, rec), add_secret_tx).await
    }

    async fn prune_secrets(&self, expired_before: i64, limit: usize) -> Result<u64> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.write((expired_before, limit), prune_secrets_tx).await
    }

    async fn secret(&self, kind: SecretKind, hash: &str) -> Result<Option<OneTimeSecret>> {
        self.read(|c| async move {
            opt(
                &c,
                "SELECT data FROM secrets WHERE kind = $1 AND hash = $2",
                &[&(kind as i16), &hash],
            )
            .await?
            .map(|r| json(&r, 0))
            .transpose()
        })
        .await
    }

    async fn consume_secret(&self, kind: SecretKind, hash: &str, now: i64) -> Result<Consumed> {
        let hash = hash.to_owned();
        self.write((kind, hash, now), consume_secret_tx).await
    }

    async fn record_cert_consuming(&self, cert: IssuedCert, kind: SecretKind, hash: &str, now: i64) -> Result<Consumed> {
        let hash = hash.to_owned();
        self.write((cert, kind, hash, now), record_cert_consuming_tx).await
    }
}

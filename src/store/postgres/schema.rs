//! The PostgreSQL schema: versioned migrations, applied at start and by
//! `mdmd db migrate`, each once, serialised across instances by an advisory
//! lock.

use super::*;

/// Versioned schema changes, applied in order, each once, each in its own transaction.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "initial schema",
        r#"
CREATE TABLE settings (
    name text COLLATE "C" PRIMARY KEY,
    value bytea NOT NULL,
    updated_at bigint NOT NULL,
    version bigint NOT NULL
);
CREATE TABLE leases (
    name text COLLATE "C" PRIMARY KEY,
    holder text NOT NULL,
    expires_at_ms bigint NOT NULL
);
CREATE TABLE enrollments (
    id text COLLATE "C" PRIMARY KEY,
    device text COLLATE "C" NOT NULL,
    data jsonb NOT NULL
);
CREATE INDEX enrollments_device ON enrollments (device);
CREATE SEQUENCE command_seq;
CREATE TABLE commands (
    uuid text COLLATE "C" PRIMARY KEY,
    seq bigint NOT NULL,
    request_type text NOT NULL,
    created_at bigint NOT NULL,
    targets bigint NOT NULL,
    profile jsonb,
    body bytea NOT NULL
);
CREATE TABLE deliveries (
    enrollment text COLLATE "C" NOT NULL,
    seq bigint NOT NULL,
    command_uuid text COLLATE "C" NOT NULL REFERENCES commands (uuid),
    status text NOT NULL,
    queued_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    not_now_count integer NOT NULL DEFAULT 0,
    error_chain jsonb,
    result bytea,
    PRIMARY KEY (enrollment, seq)
);
CREATE UNIQUE INDEX deliveries_by_command ON deliveries (command_uuid, enrollment);
CREATE INDEX deliveries_pending ON deliveries (enrollment, seq) WHERE status IN ('Pending', 'NotNow');
CREATE TABLE certs (
    sha256 text COLLATE "C" PRIMARY KEY,
    serial text COLLATE "C" NOT NULL UNIQUE,
    data jsonb NOT NULL
);
CREATE TABLE secrets (
    kind smallint NOT NULL,
    hash text COLLATE "C" NOT NULL,
    data jsonb NOT NULL,
    PRIMARY KEY (kind, hash)
);
CREATE TABLE templates (
    identifier text COLLATE "C" PRIMARY KEY,
    data jsonb NOT NULL
);
CREATE TABLE device_profiles (
    enrollment text COLLATE "C" NOT NULL,
    identifier text COLLATE "C" NOT NULL,
    data jsonb NOT NULL,
    PRIMARY KEY (enrollment, identifier)
);
CREATE INDEX device_profiles_by_identifier ON device_profiles (identifier, enrollment);
"#,
    ),
    (
        2,
        "inventory, lookups, compliance",
        r#"
CREATE TABLE lookups (
    key smallint NOT NULL,
    value text COLLATE "C" NOT NULL,
    source text COLLATE "C" NOT NULL,
    enrollment text COLLATE "C" NOT NULL,
    PRIMARY KEY (key, value, source)
);
CREATE INDEX lookups_by_source ON lookups (source);
CREATE TABLE inventory (
    enrollment text COLLATE "C" NOT NULL,
    kind text COLLATE "C" NOT NULL,
    reported_at bigint NOT NULL,
    data jsonb NOT NULL,
    PRIMARY KEY (enrollment, kind)
);
CREATE TABLE compliance (
    enrollment text COLLATE "C" PRIMARY KEY,
    state text NOT NULL,
    data jsonb NOT NULL
);
CREATE INDEX compliance_by_state ON compliance (state, enrollment);
"#,
    ),
    (
        3,
        "records (accounts, access tokens)",
        r#"
CREATE TABLE records (
    collection text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    version bigint NOT NULL,
    updated_at bigint NOT NULL,
    value jsonb NOT NULL,
    PRIMARY KEY (collection, key)
);
"#,
    ),
    (4, "lookup index: device GUIDs (rebuilt)", "DELETE FROM lookups;"),
    (
        5,
        "webhook outbox",
        "CREATE TABLE outbox (seq bigserial PRIMARY KEY, next_at bigint NOT NULL, data jsonb NOT NULL);
CREATE INDEX outbox_due ON outbox (next_at, seq);",
    ),
    (
        6,
        "command replacement keys",
        "ALTER TABLE commands ADD COLUMN supersede text COLLATE \"C\";",
    ),
    (
        7,
        "command fan-outs",
        r#"
CREATE TABLE fanouts (
    seq bigint PRIMARY KEY,
    command_uuid text COLLATE "C" NOT NULL UNIQUE REFERENCES commands (uuid),
    targets bigint NOT NULL
);
CREATE TABLE fanout_targets (
    command_uuid text COLLATE "C" NOT NULL,
    first_id text COLLATE "C" NOT NULL,
    ids text[] COLLATE "C" NOT NULL,
    PRIMARY KEY (command_uuid, first_id)
);
"#,
    ),
    (
        8,
        "sweep schedule",
        r#"
CREATE TABLE schedule (
    kind text COLLATE "C" NOT NULL,
    id text COLLATE "C" NOT NULL,
    due_at bigint NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX schedule_due ON schedule (kind, due_at, id);
"#,
    ),
];

/// Serialises migrations across instances (`pg_advisory_xact_lock`).
const MIGRATION_LOCK: i64 = 0x6d646d64_0001;

impl PgStore {
    /// Apply every migration not yet applied; returns the versions applied now.
    pub async fn migrate(&self) -> Result<Vec<i32>> {
        self.bounded(async {
            let mut c = self.pool.get().await?;
            c.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
            )
            .await
            ?;
            let mut applied = Vec::new();
            for (version, name, sql) in MIGRATIONS {
                let tx = c.transaction().await?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
                let done = tx
                    .query_opt("SELECT 1 FROM schema_migrations WHERE version = $1", &[version])
                    .await
                    ?
                    .is_some();
                if !done {
                    tx.batch_execute(sql).await?;
                    if *version == 2 || *version == 4 {
                        // Index the enrollments stored before the index existed.
                        for r in tx.query("SELECT data FROM enrollments", &[]).await? {
                            let e: Enrollment = json(&r, 0)?;
                            put_lookups(&tx, &e).await?;
                        }
                    }
                    tx.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", &[version, name])
                        .await
                        ?;
                    applied.push(*version);
                }
                tx.commit().await?;
            }
            Ok(applied)
        })
        .await
    }

    /// (version, name, applied) for every known migration.
    pub async fn migration_status(&self) -> Result<Vec<(i32, String, bool)>> {
        self.bounded(async {
            let c = self.pool.get().await?;
            let exists = c
                .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
                .await?
                .get::<_, bool>(0);
            let done: Vec<i32> = if exists {
                c.query("SELECT version FROM schema_migrations", &[])
                    .await?
                    .iter()
                    .map(|r| r.get(0))
                    .collect()
            } else {
                Vec::new()
            };
            Ok(MIGRATIONS.iter().map(|(v, n, _)| (*v, (*n).to_owned(), done.contains(v))).collect())
        })
        .await
    }
}

//! `postgres`: each `records` job upserted into `<table_prefix><resource>` in one statement (one
//! transaction), the table created on first use.
//!
//! A table holds `id` (the key), `data` (the whole record, `jsonb`), `updated_at` (the source's),
//! `synced_at`, and the fields people filter on as generated columns read from `data`. An
//! upsert never replaces a record with an older one (`WHERE updated_at <=`), so a job replayed
//! after a newer one changes nothing: delivering twice is harmless. A PostgreSQL that cannot be
//! reached makes jobs wait (`POSTGRES_UNAVAILABLE`, attempts not spent), looked at again every
//! few seconds; one that refuses the data fails the job (`POSTGRES_REJECTED`).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use ferry_shared::job::Payload;
use ferry_shared::protocol::{AttemptDetail, LeasedJob, Outcome};
use ferry_shared::target::Postgres;
use tokio_postgres::NoTls;

use super::error_chain as chain;

/// A job whose database is unreachable is looked at again after this long.
const UNAVAILABLE_WAIT_MS: u64 = 5_000;

pub struct PostgresConnector {
    cfg: Postgres,
    pool: Result<Pool, String>,
    /// Tables known to exist; held while one is created.
    tables: tokio::sync::Mutex<HashSet<String>>,
}

/// Why an attempt did not commit.
enum PgError {
    /// Unreachable, down, restarting, out of connections: try again later.
    Unavailable(String),
    /// The database refused the statement: trying again will not change it.
    Rejected(String),
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        let text = chain(&e);
        match e.code().map(|c| c.code()) {
            // Connection exceptions, shutdown, resources, serialization and deadlock.
            Some(c)
                if c.starts_with("08")
                    || c.starts_with("57")
                    || c.starts_with("53")
                    || c == "40001"
                    || c == "40P01" =>
            {
                PgError::Unavailable(text)
            }
            Some(_) => PgError::Rejected(text),
            // No SQL state: the connection itself failed.
            None => PgError::Unavailable(text),
        }
    }
}

impl PostgresConnector {
    pub fn new(cfg: Postgres) -> Self {
        let pool = pool(&cfg);
        if let Err(e) = &pool {
            tracing::error!(error = %e, "the postgres target's url is not usable");
        }
        Self {
            cfg,
            pool,
            tables: tokio::sync::Mutex::new(HashSet::new()),
        }
    }

    pub async fn deliver(&self, job: &LeasedJob) -> (Outcome, AttemptDetail) {
        let started = Instant::now();
        let Payload::Records(r) = &job.payload else {
            return super::not_taken(job, "postgres");
        };
        let table = format!("{}{}", self.cfg.table_prefix, r.resource);
        let result = self.upsert(&table, &r.resource, &r.records).await;
        let mut detail = AttemptDetail {
            duration_ms: Some(started.elapsed().as_millis() as u64),
            ..AttemptDetail::default()
        };
        let outcome = match result {
            Ok(n) => Outcome::Created {
                target_ref: format!("{table}: {n} of {} upserted", r.records.len()),
            },
            Err(PgError::Unavailable(e)) => {
                detail.excerpt = Some(e.clone());
                Outcome::Wait {
                    reason_code: "POSTGRES_UNAVAILABLE".into(),
                    reason_text: format!("PostgreSQL cannot be reached: {e}"),
                    after_ms: Some(UNAVAILABLE_WAIT_MS),
                }
            }
            Err(PgError::Rejected(e)) => {
                detail.excerpt = Some(e.clone());
                Outcome::Failed {
                    reason_code: "POSTGRES_REJECTED".into(),
                    reason_text: format!("PostgreSQL refused the records: {e}"),
                }
            }
        };
        (outcome, detail)
    }

    /// Upserts `records` into `table`; answers how many rows changed (an older version of a
    /// record than the table's changes none).
    async fn upsert(
        &self,
        table: &str,
        resource: &str,
        records: &[serde_json::Value],
    ) -> Result<u64, PgError> {
        let pool = self
            .pool
            .as_ref()
            .map_err(|e| PgError::Rejected(e.clone()))?;
        let client = pool.get().await.map_err(|e| match e {
            // The server answered: a wrong database or password is refused, not waited out.
            deadpool_postgres::PoolError::Backend(e) => PgError::from(e),
            other => PgError::Unavailable(chain(&other)),
        })?;
        self.ensure_table(&client, table, resource).await?;
        // One row per id (the latest), as one statement may not touch a row twice.
        let mut latest: HashMap<&str, (&str, &serde_json::Value)> = HashMap::new();
        for r in records {
            let (Some(id), Some(at)) = (r["id"].as_str(), r["updated_at"].as_str()) else {
                continue;
            };
            let newer = latest.get(id).is_none_or(|(seen, _)| later(at, seen));
            if newer {
                latest.insert(id, (at, r));
            }
        }
        let (mut ids, mut data, mut at) = (Vec::new(), Vec::new(), Vec::new());
        for (id, (updated, record)) in latest {
            ids.push(id);
            data.push(record.to_string());
            at.push(updated);
        }
        let sql = format!(
            "INSERT INTO \"{table}\" (id, data, updated_at, synced_at) \
             SELECT id, data::jsonb, updated_at::timestamptz, now() \
             FROM unnest($1::text[], $2::text[], $3::text[]) AS r(id, data, updated_at) \
             ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data, \
             updated_at = EXCLUDED.updated_at, synced_at = now() \
             WHERE \"{table}\".updated_at <= EXCLUDED.updated_at"
        );
        let run = async {
            let statement = client.prepare_cached(&sql).await?;
            client.execute(&statement, &[&ids, &data, &at]).await
        };
        match run.await {
            Ok(n) => Ok(n),
            // Dropped by someone since it was made: made again by the next attempt.
            Err(e) if e.code().is_some_and(|c| c.code() == "42P01") => {
                self.tables.lock().await.remove(table);
                Err(PgError::Unavailable(chain(&e)))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn ensure_table(
        &self,
        client: &deadpool_postgres::Client,
        table: &str,
        resource: &str,
    ) -> Result<(), PgError> {
        let mut known = self.tables.lock().await;
        if known.contains(table) {
            return Ok(());
        }
        if let Err(e) = client.batch_execute(&create_table(table, resource)).await {
            // Another worker creating the same table at once: the next attempt finds it.
            let racing = e
                .code()
                .is_some_and(|c| ["23505", "42P07"].contains(&c.code()));
            return Err(match racing {
                true => PgError::Unavailable(chain(&e)),
                false => e.into(),
            });
        }
        tracing::info!(table, "table ready");
        known.insert(table.to_string());
        Ok(())
    }
}

/// Whether RFC 3339 time `a` is after `b` (as instants; text order when either is unreadable).
fn later(a: &str, b: &str) -> bool {
    match (
        chrono::DateTime::parse_from_rfc3339(a),
        chrono::DateTime::parse_from_rfc3339(b),
    ) {
        (Ok(a), Ok(b)) => a > b,
        _ => a > b,
    }
}

fn pool(cfg: &Postgres) -> Result<Pool, String> {
    let mut pg: tokio_postgres::Config = cfg
        .url
        .parse()
        .map_err(|e| format!("target.url is not a PostgreSQL URL: {e}"))?;
    let timeout = Duration::from_millis(cfg.timeout_ms);
    pg.connect_timeout(timeout);
    pg.application_name("ferry-worker");
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(cfg.pool_size as usize)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .build()
        .map_err(|e| e.to_string())
}

/// The fields people filter on, per resource Ferry knows: column name and expression over
/// `data`. (Amounts are numeric only when they read as numbers.)
fn columns(resource: &str) -> &'static [(&'static str, &'static str)] {
    match resource {
        "companies" => &[
            ("name", "data->>'name'"),
            ("vat_number", "data->>'vat_number'"),
            ("email", "data->'emails'->0->>'email'"),
            ("website", "data->>'website'"),
            ("status", "data->>'status'"),
        ],
        "contacts" => &[
            ("first_name", "data->>'first_name'"),
            ("last_name", "data->>'last_name'"),
            ("email", "data->'emails'->0->>'email'"),
            ("company_id", "data->'company'->>'id'"),
        ],
        "deals" => &[
            ("title", "data->>'title'"),
            ("status", "data->>'status'"),
            ("reference", "data->>'reference'"),
            ("customer_id", "data->'lead'->'customer'->>'id'"),
            (
                "estimated_value",
                "numeric:data->'estimated_value'->>'amount'",
            ),
        ],
        "invoices" => &[
            ("invoice_number", "data->>'invoice_number'"),
            ("status", "data->>'status'"),
            ("invoice_date", "data->>'invoice_date'"),
            ("customer_id", "data->'invoicee'->'customer'->>'id'"),
            ("total", "numeric:data->'total'->'payable'->>'amount'"),
        ],
        "users" => &[
            ("first_name", "data->>'first_name'"),
            ("last_name", "data->>'last_name'"),
            ("email", "data->>'email'"),
            ("status", "data->>'status'"),
        ],
        "departments" => &[("name", "data->>'name'"), ("status", "data->>'status'")],
        _ => &[],
    }
}

/// The DDL of a resource's table (idempotent).
fn create_table(table: &str, resource: &str) -> String {
    let mut cols = String::new();
    for (name, expr) in columns(resource) {
        let col = match expr.strip_prefix("numeric:") {
            Some(e) => format!(
                ",\n  {name} numeric GENERATED ALWAYS AS \
                 (CASE WHEN ({e}) ~ '^-?[0-9]+(\\.[0-9]+)?$' THEN ({e})::numeric END) STORED"
            ),
            None => format!(",\n  {name} text GENERATED ALWAYS AS ({expr}) STORED"),
        };
        cols.push_str(&col);
    }
    format!(
        "CREATE TABLE IF NOT EXISTS \"{table}\" (\n  id text PRIMARY KEY,\n  data jsonb NOT NULL,\n  \
         updated_at timestamptz NOT NULL,\n  synced_at timestamptz NOT NULL DEFAULT now(){cols}\n);\n\
         CREATE INDEX IF NOT EXISTS \"{table}_updated_at\" ON \"{table}\" (updated_at);"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_resource_gets_its_columns_and_an_unknown_one_the_record() {
        let ddl = create_table("teamleader_deals", "deals");
        assert!(ddl.contains("title text GENERATED ALWAYS AS (data->>'title') STORED"));
        assert!(ddl.contains("estimated_value numeric GENERATED"));
        let other = create_table("teamleader_projects", "projects");
        assert!(other.contains("data jsonb NOT NULL"));
        assert!(!other.contains("GENERATED"));
    }

    #[test]
    fn times_compare_as_instants() {
        assert!(later(
            "2026-12-01T10:00:01+00:00",
            "2026-12-01T11:00:00+02:00"
        ));
        assert!(!later(
            "2026-12-01T10:00:00+01:00",
            "2026-12-01T10:00:00+00:00"
        ));
    }
}

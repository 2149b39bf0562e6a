//! Firehose's Redshift destination, loaded into PostgreSQL.
//!
//! [`Postgres`] is the `ripstream_firehose::redshift::TableLoader` the
//! binary wires: for each staged file it connects to the ClusterJDBCURL's
//! host with the destination's Username and Password (plain TCP, no TLS:
//! meant for a database on the same host or a trusted network; under the
//! operator's allow-list of networks, to the host's addresses inside it
//! only, resolved and checked here), and in one
//! transaction records the file in the load manifest table
//! [`MANIFEST_TABLE`] (`stream`, `object_key` primary key, `loaded_at`) and
//! runs `COPY table (columns) FROM STDIN (FORMAT csv)` with the rows
//! Firehose's `copy` module translated from the Redshift COPY options. A
//! file whose key is recorded already is not copied again, so a crash
//! between the commit and Firehose's checkpoint loads nothing twice. The
//! manifest row is inserted first (`ON CONFLICT DO NOTHING`): a concurrent
//! load of the same file waits on the row's lock and then finds it.
//!
//! This crate is the only one linking `tokio-postgres`; `ripstream-firehose`
//! knows only the trait.

use std::pin::pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt;
use ripstream_firehose::Networks;
use ripstream_firehose::redshift::{
    BoxFuture, LoadError, LoadJob, LoadOutcome, LoadTarget, MANIFEST_TABLE, TableLoader,
};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};
use tracing::{debug, warn};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one load may take, end to end (a database that accepts the
/// connection and then hangs must not stall the stream for ever).
const LOAD_TIMEOUT: Duration = Duration::from_secs(900);
/// COPY data is sent in chunks of this size.
const CHUNK: usize = 1 << 20;

/// The environment variable of the crash tests (debug builds only): when
/// set at start-up, the process aborts right after a COPY commits, before
/// Firehose's checkpoint, as a `kill -9` there would.
pub const ABORT_AFTER_COPY_ENV: &str = "RIPSTREAM_TEST_ABORT_AFTER_COPY";

/// Loads staged files into PostgreSQL.
#[derive(Debug, Default)]
pub struct Postgres {
    abort_after_commit: bool,
}

impl Postgres {
    pub fn new() -> Postgres {
        Postgres {
            // Read once at start-up, never from a request, and compiled
            // out of release builds.
            abort_after_commit: cfg!(debug_assertions)
                && std::env::var_os(ABORT_AFTER_COPY_ENV).is_some(),
        }
    }
}

/// A database error as the code AWS's Redshift delivery logs show.
fn refused(e: &tokio_postgres::Error, t: &LoadTarget) -> LoadError {
    let Some(db) = e.as_db_error() else {
        return LoadError::Unreachable {
            host: t.cluster.host.clone(),
            port: t.cluster.port,
            message: e.to_string(),
        };
    };
    let c = db.code();
    let code = if *c == SqlState::INVALID_PASSWORD
        || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    {
        "Redshift.AuthenticationFailed"
    } else if *c == SqlState::INVALID_CATALOG_NAME {
        "Redshift.DatabaseNotFound"
    } else if *c == SqlState::UNDEFINED_TABLE {
        "Redshift.TableNotFound"
    } else if *c == SqlState::UNDEFINED_COLUMN {
        "Redshift.ColumnNotFound"
    } else if *c == SqlState::INSUFFICIENT_PRIVILEGE {
        "Redshift.InsufficientPrivilege"
    } else if c.code().starts_with("08") || c.code().starts_with("57") {
        // Connection exceptions and operator interventions (shutdown).
        return LoadError::Unreachable {
            host: t.cluster.host.clone(),
            port: t.cluster.port,
            message: db.message().to_string(),
        };
    } else {
        "Redshift.CopyFailed"
    };
    let mut message = db.message().to_string();
    if let Some(d) = db.detail() {
        message.push_str(": ");
        message.push_str(d);
    }
    if let Some(w) = db.where_() {
        message.push_str(" (");
        message.push_str(w);
        message.push(')');
    }
    LoadError::Refused { code, message }
}

/// A name as SQL needs it quoted.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// DataTableColumns' names as they are in the table: unquoted ones folded
/// to lower case (as PostgreSQL and Redshift fold them), quoted ones as
/// written.
fn column_name(col: &str) -> String {
    match col.strip_prefix('"').and_then(|c| c.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => col.to_lowercase(),
    }
}

async fn connect(t: &LoadTarget, networks: Option<&Networks>) -> Result<Client, LoadError> {
    let mut cfg = tokio_postgres::Config::new();
    match networks {
        None => {
            cfg.host(&t.cluster.host);
        }
        Some(n) => {
            // Resolved and checked here, then connected to by address
            // (`hostaddr`, one per permitted address, tried in order): were
            // tokio-postgres given the name, it would resolve it again,
            // and the second answer need not be the first.
            let unreachable = |message: String| LoadError::Unreachable {
                host: t.cluster.host.clone(),
                port: t.cluster.port,
                message,
            };
            let addrs =
                tokio::time::timeout(CONNECT_TIMEOUT, n.resolve(&t.cluster.host, t.cluster.port))
                    .await
                    .map_err(|_| {
                        unreachable(format!("cannot resolve {}: timed out", t.cluster.host))
                    })?
                    .map_err(|e| unreachable(e.to_string()))?;
            for a in addrs {
                cfg.host(&t.cluster.host).hostaddr(a.ip());
            }
        }
    }
    cfg.port(t.cluster.port)
        .dbname(&t.cluster.database)
        .user(&t.username)
        .password(&t.password)
        .application_name("ripstream-firehose")
        .connect_timeout(CONNECT_TIMEOUT);
    let (client, connection) = cfg.connect(NoTls).await.map_err(|e| refused(&e, t))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            debug!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

impl Postgres {
    async fn run(&self, job: LoadJob<'_>) -> Result<LoadOutcome, LoadError> {
        let t = job.target;
        let mut client = connect(t, job.networks).await?;
        let err = |e: tokio_postgres::Error| refused(&e, t);
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {MANIFEST_TABLE} (
                     stream text NOT NULL,
                     object_key text PRIMARY KEY,
                     loaded_at timestamptz NOT NULL DEFAULT now())"
            ))
            .await
            .map_err(err)?;
        // The names the COPY loads, and the names JSON keys are matched to.
        let (list, names) = match &t.columns {
            Some(cols) => (
                cols.join(", "),
                cols.iter().map(|c| column_name(c)).collect(),
            ),
            None => {
                let rows = client
                    .query(
                        "SELECT attname::text FROM pg_attribute
                          WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped
                            AND attgenerated = ''
                          ORDER BY attnum
                          LIMIT 1600",
                        &[&t.table],
                    )
                    .await
                    .map_err(err)?;
                let names: Vec<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
                let list = names
                    .iter()
                    .map(|n| quote_ident(n))
                    .collect::<Vec<_>>()
                    .join(", ");
                (list, names)
            }
        };
        let translated = (job.translate)(&names);
        let tx = client.transaction().await.map_err(err)?;
        let recorded = tx
            .execute(
                &format!(
                    "INSERT INTO {MANIFEST_TABLE} (stream, object_key) VALUES ($1, $2) ON CONFLICT (object_key) DO NOTHING"
                ),
                &[&job.stream, &job.object],
            )
            .await
            .map_err(err)?;
        if recorded == 0 {
            tx.rollback().await.map_err(err)?;
            return Ok(LoadOutcome {
                already_loaded: true,
                rows: 0,
                errors: translated.errors,
            });
        }
        let mut rows = 0;
        if translated.rows > 0 {
            // Table and column names were checked at create time: plain or
            // double-quoted identifiers only.
            let stmt = format!("COPY {} ({list}) FROM STDIN WITH (FORMAT csv)", t.table);
            let sink = tx.copy_in::<_, Bytes>(&stmt).await.map_err(err)?;
            let mut sink = pin!(sink);
            let csv = Bytes::from(translated.csv);
            let mut at = 0;
            while at < csv.len() {
                let end = (at + CHUNK).min(csv.len());
                sink.feed(csv.slice(at..end)).await.map_err(err)?;
                at = end;
            }
            rows = sink.as_mut().finish().await.map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        if self.abort_after_commit {
            warn!(object = %job.object, "{ABORT_AFTER_COPY_ENV} is set: aborting after the COPY commit, before the checkpoint");
            std::process::abort();
        }
        Ok(LoadOutcome {
            already_loaded: false,
            rows,
            errors: translated.errors,
        })
    }
}

impl TableLoader for Postgres {
    fn load<'a>(&'a self, job: LoadJob<'a>) -> BoxFuture<'a, Result<LoadOutcome, LoadError>> {
        Box::pin(async move {
            let (host, port) = (job.target.cluster.host.clone(), job.target.cluster.port);
            match tokio::time::timeout(LOAD_TIMEOUT, self.run(job)).await {
                Ok(r) => r,
                Err(_) => Err(LoadError::Unreachable {
                    host,
                    port,
                    message: format!("the load did not finish within {}s", LOAD_TIMEOUT.as_secs()),
                }),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fold_as_postgresql_folds_them() {
        assert_eq!(column_name("Name"), "name");
        assert_eq!(column_name("\"Name\""), "Name");
        assert_eq!(column_name("\"a\"\"b\""), "a\"b");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}

//! Firehose's Iceberg destination appends to the tables of the Glue subset
//! in the embedded object store (`ripstream-iceberg`): the binary bridges
//! the crates, so Firehose knows neither Glue nor the `iceberg` crate.

use ripstream_firehose::iceberg::{
    Appended, CommitTag, IcebergTables, Operation, Refused, TableError, TableRef,
};
use ripstream_firehose::sink::BoxFuture;
use ripstream_iceberg::{Op, Prefix, TableError as IcebergError, Tables};

/// The environment variable of the crash test (debug builds only): when
/// set at start-up, the process aborts right after an append commits,
/// before Firehose's checkpoint, as a `kill -9` there would.
pub const ABORT_AFTER_COMMIT_ENV: &str = "RIPSTREAM_TEST_ABORT_AFTER_ICEBERG_COMMIT";

#[derive(Debug, Clone)]
pub struct GlueIcebergTables {
    tables: Tables,
    abort_after_commit: bool,
}

impl GlueIcebergTables {
    pub fn new(tables: Tables) -> GlueIcebergTables {
        GlueIcebergTables {
            tables,
            // Read once at start-up, never from a request, and compiled
            // out of release builds.
            abort_after_commit: cfg!(debug_assertions)
                && std::env::var_os(ABORT_AFTER_COMMIT_ENV).is_some(),
        }
    }
}

fn error(e: IcebergError) -> TableError {
    let code = e.code().to_string();
    match e {
        IcebergError::Unusable(message) | IcebergError::NotAuthorized(message) => {
            TableError::Unusable { code, message }
        }
        IcebergError::Unavailable(message) => TableError::Unavailable { code, message },
    }
}

/// The directories a stream was authorized for, as stored.
fn scope(allowed: &[String]) -> Result<Vec<Prefix>, TableError> {
    allowed
        .iter()
        .map(|l| {
            Prefix::dir(l).map_err(|e| TableError::Unusable {
                code: IcebergError::NotAuthorized(String::new())
                    .code()
                    .to_string(),
                message: format!(
                    "The stream's stored location {l} is not one: {}",
                    e.message()
                ),
            })
        })
        .collect()
}

impl IcebergTables for GlueIcebergTables {
    fn locations<'a>(&'a self, t: &'a TableRef) -> BoxFuture<'a, Result<Vec<String>, TableError>> {
        Box::pin(async move {
            let l = self
                .tables
                .locations(&t.database, &t.table)
                .await
                .map_err(error)?;
            Ok(l.iter().map(Prefix::to_string).collect())
        })
    }

    fn check<'a>(
        &'a self,
        t: &'a TableRef,
        allowed: &'a [String],
    ) -> BoxFuture<'a, Result<(), TableError>> {
        Box::pin(async move {
            self.tables
                .check(&t.database, &t.table, &t.unique_keys, &scope(allowed)?)
                .await
                .map_err(error)
        })
    }

    fn committed<'a>(
        &'a self,
        t: &'a TableRef,
        allowed: &'a [String],
        writer: &'a str,
    ) -> BoxFuture<'a, Result<Option<(u64, u64)>, TableError>> {
        Box::pin(async move {
            self.tables
                .committed(&t.database, &t.table, writer, &scope(allowed)?)
                .await
                .map_err(error)
        })
    }

    fn append<'a>(
        &'a self,
        t: &'a TableRef,
        allowed: &'a [String],
        records: &'a [&'a [u8]],
        ops: &'a [Operation],
        tag: &'a CommitTag,
    ) -> BoxFuture<'a, Result<Appended, TableError>> {
        Box::pin(async move {
            let tag = ripstream_iceberg::CommitTag {
                writer: tag.writer.clone(),
                start: tag.start,
                end: tag.end,
            };
            let ops: Vec<Op> = ops
                .iter()
                .map(|o| match o {
                    Operation::Insert => Op::Insert,
                    Operation::Update => Op::Update,
                    Operation::Delete => Op::Delete,
                })
                .collect();
            let out = self
                .tables
                .write(
                    &t.database,
                    &t.table,
                    records,
                    &ops,
                    &t.unique_keys,
                    &tag,
                    &scope(allowed)?,
                )
                .await
                .map_err(error)?;
            if self.abort_after_commit && out.snapshot_id.is_some() && !out.duplicate {
                tracing::warn!(database = %t.database, table = %t.table, "{ABORT_AFTER_COMMIT_ENV} is set: aborting after the Iceberg commit, before the checkpoint");
                std::process::abort();
            }
            Ok(Appended {
                rows: out.rows,
                duplicate: out.duplicate,
                refused: out
                    .rejected
                    .into_iter()
                    .map(|r| Refused {
                        index: r.index,
                        code: r.code.to_string(),
                        message: r.message,
                    })
                    .collect(),
            })
        })
    }
}

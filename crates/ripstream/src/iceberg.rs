//! Firehose's Iceberg destination appends to the tables of the Glue subset
//! in the embedded object store (`ripstream-iceberg`): the binary bridges
//! the crates, so Firehose knows neither Glue nor the `iceberg` crate.

use ripstream_firehose::iceberg::{
    Appended, CommitTag, IcebergTables, Refused, TableError, TableRef,
};
use ripstream_firehose::sink::BoxFuture;
use ripstream_iceberg::{TableError as IcebergError, Tables};

#[derive(Debug, Clone)]
pub struct GlueIcebergTables(Tables);

impl GlueIcebergTables {
    pub fn new(tables: Tables) -> GlueIcebergTables {
        GlueIcebergTables(tables)
    }
}

fn error(e: IcebergError) -> TableError {
    let code = e.code().to_string();
    match e {
        IcebergError::Unusable(message) => TableError::Unusable { code, message },
        IcebergError::Unavailable(message) => TableError::Unavailable { code, message },
    }
}

impl IcebergTables for GlueIcebergTables {
    fn check<'a>(&'a self, t: &'a TableRef) -> BoxFuture<'a, Result<(), TableError>> {
        Box::pin(async move { self.0.check(&t.database, &t.table).await.map_err(error) })
    }

    fn committed<'a>(
        &'a self,
        t: &'a TableRef,
        writer: &'a str,
    ) -> BoxFuture<'a, Result<Option<(u64, u64)>, TableError>> {
        Box::pin(async move {
            self.0
                .committed(&t.database, &t.table, writer)
                .await
                .map_err(error)
        })
    }

    fn append<'a>(
        &'a self,
        t: &'a TableRef,
        records: &'a [&'a [u8]],
        tag: &'a CommitTag,
    ) -> BoxFuture<'a, Result<Appended, TableError>> {
        Box::pin(async move {
            let tag = ripstream_iceberg::CommitTag {
                writer: tag.writer.clone(),
                start: tag.start,
                end: tag.end,
            };
            let out = self
                .0
                .append(&t.database, &t.table, records, &tag)
                .await
                .map_err(error)?;
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

//! The AWS Glue Data Catalog subset that Firehose's record format
//! conversion reads schemas from: databases, tables and archived table
//! versions of the account's one catalog.
//!
//! Everything lives in one document space of the shared catalog
//! ([`SPACE`]), so a change that touches several entries (DeleteDatabase
//! removing its tables and their versions, UpdateTable archiving the
//! previous version) is one durable transaction. The whole space is held in
//! memory too (a schema catalog is small) and written through: the catalog
//! first, then the memory view, under one lock for all changes.
//!
//! Names are stored lower-cased, as Glue folds database and table names for
//! Hive compatibility, and looked up the same way. Column types are stored
//! as given: Glue accepts any string there, and it is the converter that
//! parses them (module [`hive`]) when it reads a table.

pub mod api;
pub mod error;
pub mod hive;
mod ops;
mod pattern;
mod store;

use std::sync::Arc;

use ripstream_log::Clock;
use ripstream_meta::Catalog;
use ripstream_runtime::ServiceContext;
use tracing::info;

pub use error::{Error, Result};

/// The catalog's document space holding every database, table and table
/// version.
pub const SPACE: &str = "glue/catalog";

/// The Glue service. Cheap to clone.
#[derive(Clone)]
pub struct Glue {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Glue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Glue")
            .field("region", &self.inner.region)
            .field("account", &self.inner.account)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub region: String,
    pub account: String,
    pub clock: Arc<dyn Clock>,
    pub catalog: Arc<Catalog>,
    pub state: parking_lot::RwLock<store::State>,
    /// Serializes changes: each reads the state, commits, then updates it.
    pub control: tokio::sync::Mutex<()>,
}

/// Runs blocking work (redb commits) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(Error::internal)?
}

impl Glue {
    /// Opens the service in the server's shared context, loading the
    /// catalog's databases and tables.
    pub fn open_in(ctx: &ServiceContext) -> Result<Glue> {
        let state = store::State::load(&ctx.catalog)?;
        info!(
            databases = state.databases.len(),
            tables = state.tables.len(),
            "glue data catalog opened"
        );
        Ok(Glue {
            inner: Arc::new(Inner {
                region: ctx.region.clone(),
                account: ctx.account_id.clone(),
                clock: ctx.clock.clone(),
                catalog: ctx.catalog.clone(),
                state: parking_lot::RwLock::new(state),
                control: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The account whose catalog this is (the catalog id).
    pub fn account(&self) -> &str {
        &self.inner.account
    }

    /// `arn:<partition>:glue:<region>:<account>:<resource>`.
    pub fn arn(&self, resource: &str) -> String {
        self.arn_in(&self.inner.account, resource)
    }

    /// The ARN of a resource of another account's catalog (a request's
    /// `CatalogId`), which policies are evaluated on as named.
    pub fn arn_in(&self, account: &str, resource: &str) -> String {
        format!(
            "arn:{}:glue:{}:{account}:{resource}",
            ripstream_iam::partition(&self.inner.region),
            self.inner.region,
        )
    }
}

#[cfg(test)]
mod tests;

//! The durable catalog: streams, shards, tags and server settings, on redb.
//!
//! Every change is one redb write transaction, committed with an fsync before
//! the call returns, so the catalog is always a consistent snapshot after a
//! crash. Records are stored as JSON so that new optional fields can be added
//! without a migration (`#[serde(default)]`).
//!
//! ```
//! use ripstream_meta::{Catalog, StreamRecord};
//! let dir = tempfile::tempdir().unwrap();
//! let catalog = Catalog::open(&dir.path().join("meta.redb")).unwrap();
//! let epoch = catalog.begin_epoch().unwrap();
//! assert_eq!(epoch, 1);
//! let mut s = StreamRecord::new("orders", 7, 1_700_000_000_000);
//! s.retention_hours = 48;
//! catalog.put_stream(&s).unwrap();
//! assert_eq!(catalog.streams().unwrap()[0].retention_hours, 48);
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

const STREAMS: TableDefinition<&str, &[u8]> = TableDefinition::new("streams");
const SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("settings");
/// Documents of other services (the DynamoDB-compatible tables), keyed by
/// `space \0 key` so that one space is one contiguous range.
const DOCUMENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("documents");

/// Errors of the catalog.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// redb failed (its error kept as the cause, for the logs).
    #[error("metadata store error: {0}")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("metadata store error: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("corrupt metadata record {key}: {source}")]
    Decode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

macro_rules! store_err {
    ($($t:ty),*) => {$(
        impl From<$t> for MetaError {
            fn from(e: $t) -> Self {
                MetaError::Store(Box::new(e))
            }
        }
    )*};
}
store_err!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Lifecycle state of a stream, as Kinesis names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StreamStatus {
    Creating,
    Deleting,
    Active,
    Updating,
}

impl StreamStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamStatus::Creating => "CREATING",
            StreamStatus::Deleting => "DELETING",
            StreamStatus::Active => "ACTIVE",
            StreamStatus::Updating => "UPDATING",
        }
    }
}

/// Capacity mode of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StreamMode {
    Provisioned,
    OnDemand,
}

impl StreamMode {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamMode::Provisioned => "PROVISIONED",
            StreamMode::OnDemand => "ON_DEMAND",
        }
    }
}

/// How records are placed on shards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RecordDistribution {
    /// By the MD5 of the partition key (or the explicit hash key).
    #[default]
    UserPartitionKey,
    /// Evenly across shards, ignoring keys.
    Auto,
}

impl RecordDistribution {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordDistribution::UserPartitionKey => "USER_PARTITION_KEY",
            RecordDistribution::Auto => "AUTO",
        }
    }
}

/// Lifecycle state of an enhanced fan-out consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConsumerStatus {
    Creating,
    Deleting,
    Active,
}

impl ConsumerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsumerStatus::Creating => "CREATING",
            ConsumerStatus::Deleting => "DELETING",
            ConsumerStatus::Active => "ACTIVE",
        }
    }
}

/// An enhanced fan-out consumer registered on a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerRecord {
    pub name: String,
    pub created_ms: i64,
    pub status: ConsumerStatus,
    /// When the current CREATING or DELETING state ends.
    #[serde(default)]
    pub status_until_ms: i64,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Resource policy document (JSON), if any.
    #[serde(default)]
    pub policy: Option<String>,
}

/// A reshard made durable whose UPDATING state has not ended yet. AWS shows
/// the new layout only once the stream is ACTIVE again, so until then readers
/// of the shard list are shown the shards as they were before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingReshard {
    /// The lowest index of the shards it created (all above the older ones).
    pub first_new_shard: u32,
    /// When its UPDATING state ends. A record still carrying it once that
    /// state is over (and any later one, which ends at another time) is stale.
    pub until_ms: i64,
}

/// A closed shard's end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEnd {
    pub closed_ms: i64,
    pub ending_sequence_number: String,
}

/// One shard of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    /// The number in `shardId-000000000000`; never reused within a stream.
    pub index: u32,
    pub starting_hash_key: u128,
    pub ending_hash_key: u128,
    pub created_ms: i64,
    #[serde(default)]
    pub parent: Option<u32>,
    #[serde(default)]
    pub adjacent_parent: Option<u32>,
    #[serde(default)]
    pub end: Option<ShardEnd>,
    /// The creation second the shard's sequence numbers carry in AWS's layout
    /// (at least one above its parents', so children number above them).
    /// `None` for shards created before that layout: they keep the legacy one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq_created_s: Option<u64>,
}

/// Server-side encryption settings of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    /// The KeyId as the client gave it (an id, ARN or alias), shown by DescribeStream.
    pub key_id: String,
    /// The keyring's id of that key, used to encrypt.
    #[serde(default)]
    pub resolved_key_id: String,
}

/// A stream and everything the catalog knows about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRecord {
    pub name: String,
    /// Internal id, unique for the life of the data directory: a stream deleted
    /// and created again under the same name gets a new one.
    pub uid: u64,
    pub created_ms: i64,
    pub status: StreamStatus,
    /// When the current CREATING, UPDATING or DELETING state ends.
    #[serde(default)]
    pub status_until_ms: i64,
    pub mode: StreamMode,
    pub retention_hours: u32,
    pub shards: Vec<ShardRecord>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub shard_level_metrics: BTreeSet<String>,
    #[serde(default)]
    pub encryption: Option<Encryption>,
    pub max_record_size_kib: u32,
    #[serde(default)]
    pub warm_throughput_mibps: Option<u32>,
    #[serde(default)]
    pub record_distribution: RecordDistribution,
    #[serde(default)]
    pub consumers: Vec<ConsumerRecord>,
    /// Resource policy document (JSON), if any.
    #[serde(default)]
    pub policy: Option<String>,
    /// The reshard the current UPDATING state is publishing, if it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_reshard: Option<PendingReshard>,
    /// Deleted while still CREATING: its shards never became visible, so
    /// DescribeStream lists none while it is DELETING, as AWS does.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted_while_creating: bool,
}

impl StreamRecord {
    /// A new provisioned stream with no shards, 24 h retention and 1 MiB records.
    pub fn new(name: &str, uid: u64, created_ms: i64) -> StreamRecord {
        StreamRecord {
            name: name.to_string(),
            uid,
            created_ms,
            status: StreamStatus::Creating,
            status_until_ms: created_ms,
            mode: StreamMode::Provisioned,
            retention_hours: 24,
            shards: Vec::new(),
            tags: BTreeMap::new(),
            shard_level_metrics: BTreeSet::new(),
            encryption: None,
            max_record_size_kib: 1024,
            warm_throughput_mibps: None,
            record_distribution: RecordDistribution::UserPartitionKey,
            consumers: Vec::new(),
            policy: None,
            pending_reshard: None,
            deleted_while_creating: false,
        }
    }

    /// The index the next new shard takes.
    pub fn next_shard_index(&self) -> u32 {
        self.shards.iter().map(|s| s.index + 1).max().unwrap_or(0)
    }
}

/// The catalog.
#[derive(Debug)]
pub struct Catalog {
    db: Database,
}

impl Catalog {
    /// Opens or creates the catalog file.
    pub fn open(path: &Path) -> Result<Catalog, MetaError> {
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        tx.open_table(STREAMS)?;
        tx.open_table(SETTINGS)?;
        tx.commit()?;
        Ok(Catalog { db })
    }

    /// Every stream, in name order.
    pub fn streams(&self) -> Result<Vec<StreamRecord>, MetaError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(STREAMS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            let rec = serde_json::from_slice(v.value()).map_err(|source| MetaError::Decode {
                key: k.value().to_string(),
                source,
            })?;
            out.push(rec);
        }
        Ok(out)
    }

    /// Inserts or replaces a stream.
    pub fn put_stream(&self, stream: &StreamRecord) -> Result<(), MetaError> {
        let bytes = serde_json::to_vec(stream).map_err(MetaError::Encode)?;
        let tx = self.db.begin_write()?;
        tx.open_table(STREAMS)?
            .insert(stream.name.as_str(), bytes.as_slice())?;
        tx.commit()?;
        Ok(())
    }

    /// Removes a stream.
    pub fn remove_stream(&self, name: &str) -> Result<(), MetaError> {
        let tx = self.db.begin_write()?;
        tx.open_table(STREAMS)?.remove(name)?;
        tx.commit()?;
        Ok(())
    }

    /// Starts a new leader epoch: one more than any before it, durable before it is used.
    pub fn begin_epoch(&self) -> Result<u64, MetaError> {
        self.increment("epoch")
    }

    /// Next value of a named counter (1 on first use).
    pub fn next_id(&self, counter: &str) -> Result<u64, MetaError> {
        self.increment(&format!("counter/{counter}"))
    }

    fn increment(&self, key: &str) -> Result<u64, MetaError> {
        let tx = self.db.begin_write()?;
        let next = {
            let mut t = tx.open_table(SETTINGS)?;
            let cur = match t.get(key)? {
                Some(v) => {
                    let b = v.value();
                    let mut w = [0u8; 8];
                    if b.len() == 8 {
                        w.copy_from_slice(b);
                    }
                    u64::from_le_bytes(w)
                }
                None => 0,
            };
            let next = cur + 1;
            t.insert(key, next.to_le_bytes().as_slice())?;
            next
        };
        tx.commit()?;
        Ok(next)
    }

    /// Every document of a space, in key order.
    pub fn documents(&self, space: &str) -> Result<Vec<Document>, MetaError> {
        let tx = self.db.begin_read()?;
        let table = match tx.open_table(DOCUMENTS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let (start, end) = space_range(space);
        let prefix = start.len();
        let mut out = Vec::new();
        for entry in table.range(start.as_slice()..end.as_slice())? {
            let (k, v) = entry?;
            out.push((k.value()[prefix..].to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Applies puts (`Some`) and deletes (`None`) to documents of a space in
    /// one durable transaction.
    pub fn write_documents(
        &self,
        space: &str,
        changes: &[(&[u8], Option<&[u8]>)],
    ) -> Result<(), MetaError> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(DOCUMENTS)?;
            let (mut key, _) = space_range(space);
            let prefix = key.len();
            for (k, v) in changes {
                key.truncate(prefix);
                key.extend_from_slice(k);
                match v {
                    Some(v) => {
                        t.insert(key.as_slice(), *v)?;
                    }
                    None => {
                        t.remove(key.as_slice())?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Deletes every document of a space.
    pub fn delete_space(&self, space: &str) -> Result<(), MetaError> {
        self.delete_space_and(space, space, &[])
    }

    /// Deletes every document of `space` and the document `key` of `other`,
    /// in one transaction (a table's items and its description).
    pub fn delete_space_and(&self, space: &str, other: &str, key: &[u8]) -> Result<(), MetaError> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(DOCUMENTS)?;
            let (start, end) = space_range(space);
            t.retain_in(start.as_slice()..end.as_slice(), |_, _| false)?;
            let (mut k, _) = space_range(other);
            k.extend_from_slice(key);
            t.remove(k.as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// A setting's value, if set.
    pub fn setting(&self, key: &str) -> Result<Option<Vec<u8>>, MetaError> {
        let tx = self.db.begin_read()?;
        Ok(tx
            .open_table(SETTINGS)?
            .get(key)?
            .map(|v| v.value().to_vec()))
    }

    /// Stores a setting.
    pub fn put_setting(&self, key: &str, value: &[u8]) -> Result<(), MetaError> {
        let tx = self.db.begin_write()?;
        tx.open_table(SETTINGS)?.insert(key, value)?;
        tx.commit()?;
        Ok(())
    }

    /// A setting's value, created with `init` (and stored durably) if absent.
    pub fn setting_or_init(
        &self,
        key: &str,
        init: impl FnOnce() -> Vec<u8>,
    ) -> Result<Vec<u8>, MetaError> {
        {
            let tx = self.db.begin_read()?;
            if let Some(v) = tx.open_table(SETTINGS)?.get(key)? {
                return Ok(v.value().to_vec());
            }
        }
        let tx = self.db.begin_write()?;
        let value = {
            let mut t = tx.open_table(SETTINGS)?;
            let existing = t.get(key)?.map(|v| v.value().to_vec());
            match existing {
                Some(v) => v,
                None => {
                    let v = init();
                    t.insert(key, v.as_slice())?;
                    v
                }
            }
        };
        tx.commit()?;
        Ok(value)
    }
}

/// A stored document: key and value bytes.
pub type Document = (Vec<u8>, Vec<u8>);

/// The key range `[space \0, space \x01)` that holds one space's documents.
fn space_range(space: &str) -> (Vec<u8>, Vec<u8>) {
    let mut start = space.as_bytes().to_vec();
    let mut end = start.clone();
    start.push(0);
    end.push(1);
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_survive_reopen_and_epochs_increase() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        {
            let c = Catalog::open(&path).unwrap();
            assert_eq!(c.begin_epoch().unwrap(), 1);
            let mut s = StreamRecord::new("a", 1, 5);
            s.shards.push(ShardRecord {
                index: 0,
                starting_hash_key: 0,
                ending_hash_key: u128::MAX,
                created_ms: 5,
                parent: None,
                adjacent_parent: None,
                end: None,
                seq_created_s: Some(7),
            });
            s.tags.insert("k".into(), "v".into());
            c.put_stream(&s).unwrap();
            c.put_stream(&StreamRecord::new("b", 2, 6)).unwrap();
            c.remove_stream("b").unwrap();
            assert_eq!(c.setting_or_init("key", || vec![1, 2]).unwrap(), vec![1, 2]);
        }
        let c = Catalog::open(&path).unwrap();
        assert_eq!(c.begin_epoch().unwrap(), 2);
        let streams = c.streams().unwrap();
        assert_eq!(streams.len(), 1);
        assert_eq!(streams[0].shards[0].ending_hash_key, u128::MAX);
        assert_eq!(streams[0].tags["k"], "v");
        assert_eq!(streams[0].shards[0].seq_created_s, Some(7));
        assert_eq!(c.setting_or_init("key", || vec![9]).unwrap(), vec![1, 2]);
        assert_eq!(c.next_id("stream").unwrap(), 1);
        assert_eq!(c.next_id("stream").unwrap(), 2);
    }

    #[test]
    fn shards_written_before_the_aws_sequence_layout_read_as_legacy() {
        // A shard as the catalog stored it before `seq_created_s` existed.
        let old = r#"{"index":0,"starting_hash_key":0,"ending_hash_key":5,"created_ms":9,"parent":null,"adjacent_parent":null,"end":null}"#;
        let shard: ShardRecord = serde_json::from_str(old).unwrap();
        assert_eq!(shard.seq_created_s, None);
        // And is written back the same way.
        assert_eq!(serde_json::to_string(&shard).unwrap(), old);
    }

    #[test]
    fn document_spaces_are_separate_and_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        {
            let c = Catalog::open(&path).unwrap();
            assert!(c.documents("a").unwrap().is_empty());
            c.write_documents("a", &[(b"k1", Some(b"v1")), (b"k2", Some(b"v2"))])
                .unwrap();
            c.write_documents("ab", &[(b"k1", Some(b"other"))]).unwrap();
            c.write_documents("a", &[(b"k2", None)]).unwrap();
        }
        let c = Catalog::open(&path).unwrap();
        assert_eq!(
            c.documents("a").unwrap(),
            vec![(b"k1".to_vec(), b"v1".to_vec())]
        );
        c.delete_space("a").unwrap();
        assert!(c.documents("a").unwrap().is_empty());
        assert_eq!(c.documents("ab").unwrap().len(), 1);
    }
}

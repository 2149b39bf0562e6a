//! A table: its description (schema, indexes, billing) and its items, kept
//! in memory in key order and written through to the metadata store.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::DynamoError;
use crate::value::{AttributeValue, Item, item_size, item_to_json};

/// Largest item DynamoDB stores.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;
/// Deepest nesting of maps and lists DynamoDB stores.
pub const MAX_NESTING: usize = 32;

/// Refuses values nested deeper than DynamoDB allows.
pub fn check_nesting(item: &Item) -> Result<(), DynamoError> {
    if item.values().any(|v| v.depth() > MAX_NESTING) {
        return Err(DynamoError::Validation(
            "Nesting Levels have exceeded supported limits".into(),
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyElement {
    pub name: String,
    /// `S`, `N` or `B`.
    pub attr_type: String,
}

/// A key schema: hash key and optional range key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeySchema {
    pub hash: KeyElement,
    pub range: Option<KeyElement>,
}

impl KeySchema {
    pub fn to_json(&self) -> Value {
        let mut v = vec![json!({"AttributeName": self.hash.name, "KeyType": "HASH"})];
        if let Some(r) = &self.range {
            v.push(json!({"AttributeName": r.name, "KeyType": "RANGE"}));
        }
        Value::Array(v)
    }

    pub fn names(&self) -> impl Iterator<Item = &KeyElement> {
        std::iter::once(&self.hash).chain(self.range.as_ref())
    }

    /// The key attributes of an item, if it has all of them.
    pub fn key_of(&self, item: &Item) -> Option<Item> {
        let mut k = Item::new();
        for e in self.names() {
            k.insert(e.name.clone(), item.get(&e.name)?.clone());
        }
        Some(k)
    }

    /// Canonical bytes of an item's key under this schema.
    pub fn encode(&self, item: &Item) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        for e in self.names() {
            let v = item.get(&e.name)?;
            let bytes: Vec<u8> = match v {
                AttributeValue::S(s) => s.as_bytes().to_vec(),
                AttributeValue::N(n) => n.to_string().into_bytes(),
                AttributeValue::B(b) => b.clone(),
                _ => return None,
            };
            out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            out.extend_from_slice(&bytes);
        }
        Some(out)
    }

    /// Canonical bytes of an item's hash key alone.
    pub fn encode_hash(&self, item: &Item) -> Option<Vec<u8>> {
        KeySchema {
            hash: self.hash.clone(),
            range: None,
        }
        .encode(item)
    }

    /// Ordering of two items by range key (then nothing): the order of a Query.
    pub fn range_order(&self, a: &Item, b: &Item) -> Ordering {
        match &self.range {
            Some(r) => match (a.get(&r.name), b.get(&r.name)) {
                (Some(x), Some(y)) => x.compare(y).unwrap_or(Ordering::Equal),
                _ => Ordering::Equal,
            },
            None => Ordering::Equal,
        }
    }
}

/// A secondary index.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Index {
    pub name: String,
    pub key: KeySchema,
    /// `ALL`, `KEYS_ONLY` or `INCLUDE`.
    pub projection: String,
    pub non_key_attributes: Vec<String>,
    pub read_capacity: i64,
    pub write_capacity: i64,
    /// Local secondary index (shares the table's hash key).
    pub local: bool,
}

/// Everything DescribeTable reports, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableMeta {
    pub name: String,
    pub id: String,
    pub key: KeySchema,
    /// Attribute definitions as given: name to type.
    pub attribute_definitions: Vec<KeyElement>,
    pub indexes: Vec<Index>,
    pub created_secs: f64,
    pub billing_mode: String,
    pub read_capacity: i64,
    pub write_capacity: i64,
    #[serde(default)]
    pub deletion_protection: bool,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub ttl_attribute: Option<String>,
    #[serde(default)]
    pub point_in_time_recovery: bool,
    #[serde(default)]
    pub table_class: Option<String>,
}

/// A table with its items.
#[derive(Debug)]
pub struct Table {
    pub meta: TableMeta,
    /// Items by canonical key bytes.
    pub items: BTreeMap<Vec<u8>, Item>,
    pub bytes: usize,
    /// Set by DeleteTable, for requests that found the table just before.
    pub dropped: bool,
}

impl Table {
    pub fn arn(meta: &TableMeta, region: &str, account: &str) -> String {
        format!("arn:aws:dynamodb:{region}:{account}:table/{}", meta.name)
    }

    /// The TableDescription of DescribeTable and friends.
    pub fn describe(&self, region: &str, account: &str, status: &str) -> Value {
        let m = &self.meta;
        let arn = Table::arn(m, region, account);
        let mut d = Map::new();
        d.insert(
            "AttributeDefinitions".into(),
            Value::Array(
                m.attribute_definitions
                    .iter()
                    .map(|a| json!({"AttributeName": a.name, "AttributeType": a.attr_type}))
                    .collect(),
            ),
        );
        d.insert("TableName".into(), json!(m.name));
        d.insert("KeySchema".into(), m.key.to_json());
        d.insert("TableStatus".into(), json!(status));
        d.insert("CreationDateTime".into(), json!(m.created_secs));
        let throughput = |r: i64, w: i64| json!({"NumberOfDecreasesToday": 0, "ReadCapacityUnits": r, "WriteCapacityUnits": w});
        d.insert(
            "ProvisionedThroughput".into(),
            throughput(m.read_capacity, m.write_capacity),
        );
        d.insert("TableSizeBytes".into(), json!(self.bytes));
        d.insert("ItemCount".into(), json!(self.items.len()));
        d.insert("TableArn".into(), json!(arn));
        d.insert("TableId".into(), json!(m.id));
        if m.billing_mode == "PAY_PER_REQUEST" {
            d.insert(
                "BillingModeSummary".into(),
                json!({"BillingMode": "PAY_PER_REQUEST", "LastUpdateToPayPerRequestDateTime": m.created_secs}),
            );
        }
        for local in [false, true] {
            let idx: Vec<Value> = m
                .indexes
                .iter()
                .filter(|i| i.local == local)
                .map(|i| {
                    let (count, size) = self
                        .items
                        .values()
                        .filter(|it| i.key.key_of(it).is_some())
                        .fold((0usize, 0usize), |(c, s), it| (c + 1, s + item_size(it)));
                    let mut projection = Map::new();
                    projection.insert("ProjectionType".into(), json!(i.projection));
                    if !i.non_key_attributes.is_empty() {
                        projection.insert("NonKeyAttributes".into(), json!(i.non_key_attributes));
                    }
                    let mut v = Map::new();
                    v.insert("IndexName".into(), json!(i.name));
                    v.insert("KeySchema".into(), i.key.to_json());
                    v.insert("Projection".into(), Value::Object(projection));
                    if !local {
                        v.insert("IndexStatus".into(), json!("ACTIVE"));
                        v.insert(
                            "ProvisionedThroughput".into(),
                            throughput(i.read_capacity, i.write_capacity),
                        );
                    }
                    v.insert("IndexSizeBytes".into(), json!(size));
                    v.insert("ItemCount".into(), json!(count));
                    v.insert("IndexArn".into(), json!(format!("{arn}/index/{}", i.name)));
                    Value::Object(v)
                })
                .collect();
            if !idx.is_empty() {
                let key = if local {
                    "LocalSecondaryIndexes"
                } else {
                    "GlobalSecondaryIndexes"
                };
                d.insert(key.into(), Value::Array(idx));
            }
        }
        d.insert(
            "DeletionProtectionEnabled".into(),
            json!(m.deletion_protection),
        );
        if let Some(class) = &m.table_class {
            d.insert("TableClassSummary".into(), json!({"TableClass": class}));
        }
        Value::Object(d)
    }

    /// Checks a key given in a request (exactly the key attributes, right
    /// types) and returns its canonical bytes.
    pub fn check_key(&self, key: &Item) -> Result<Vec<u8>, DynamoError> {
        let schema = &self.meta.key;
        let mismatch =
            || DynamoError::Validation("The provided key element does not match the schema".into());
        if key.len() != schema.names().count() {
            return Err(mismatch());
        }
        for e in schema.names() {
            let v = key.get(&e.name).ok_or_else(mismatch)?;
            if v.type_name() != e.attr_type {
                return Err(mismatch());
            }
            check_not_empty(&e.name, v)?;
        }
        schema.encode(key).ok_or_else(mismatch)
    }

    /// Checks a whole item for PutItem (key present with the right types,
    /// index keys typed right, size) and returns its key bytes.
    pub fn check_item(&self, item: &Item) -> Result<Vec<u8>, DynamoError> {
        for e in self.meta.key.names() {
            let Some(v) = item.get(&e.name) else {
                return Err(DynamoError::Validation(format!(
                    "One or more parameter values were invalid: Missing the key {} in the item",
                    e.name
                )));
            };
            if v.type_name() != e.attr_type {
                return Err(DynamoError::Validation(format!(
                    "One or more parameter values were invalid: Type mismatch for key {} expected: {} actual: {}",
                    e.name,
                    e.attr_type,
                    v.type_name()
                )));
            }
            check_not_empty(&e.name, v)?;
        }
        self.check_index_keys(item)?;
        check_nesting(item)?;
        if item_size(item) > MAX_ITEM_BYTES {
            return Err(DynamoError::Validation(
                "Item size has exceeded the maximum allowed size".into(),
            ));
        }
        self.meta
            .key
            .encode(item)
            .ok_or_else(|| DynamoError::Internal("key encoding failed".into()))
    }

    /// Index key attributes, where present, must have the declared type.
    pub fn check_index_keys(&self, item: &Item) -> Result<(), DynamoError> {
        for idx in &self.meta.indexes {
            for e in idx.key.names() {
                if let Some(v) = item.get(&e.name) {
                    if v.type_name() != e.attr_type {
                        return Err(DynamoError::Validation(format!(
                            "One or more parameter values were invalid: Type mismatch for Index Key {} Expected: {} Actual: {} IndexName: {}",
                            e.name,
                            e.attr_type,
                            v.type_name(),
                            idx.name
                        )));
                    }
                    if matches!(v, AttributeValue::S(s) if s.is_empty())
                        || matches!(v, AttributeValue::B(b) if b.is_empty())
                    {
                        return Err(DynamoError::Validation(format!(
                            "One or more parameter values are not valid. A value specified for a secondary index key is not supported. The AttributeValue for a key attribute cannot contain an empty string value. IndexName: {}, IndexKey: {}",
                            idx.name, e.name
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    pub fn index(&self, name: &str) -> Result<&Index, DynamoError> {
        self.meta
            .indexes
            .iter()
            .find(|i| i.name == name)
            .ok_or_else(|| {
                DynamoError::Validation(format!(
                    "The table does not have the specified index: {name}"
                ))
            })
    }

    /// Replaces (or removes) one item, keeping the size total right.
    pub fn store(&mut self, key: Vec<u8>, item: Option<Item>) {
        if let Some(old) = self.items.remove(&key) {
            self.bytes = self.bytes.saturating_sub(item_size(&old));
        }
        if let Some(item) = item {
            self.bytes += item_size(&item);
            self.items.insert(key, item);
        }
    }
}

fn check_not_empty(name: &str, v: &AttributeValue) -> Result<(), DynamoError> {
    if matches!(v, AttributeValue::S(s) if s.is_empty())
        || matches!(v, AttributeValue::B(b) if b.is_empty())
    {
        return Err(DynamoError::Validation(format!(
            "One or more parameter values are not valid. The AttributeValue for a key attribute cannot contain an empty {} value. Key: {name}",
            if matches!(v, AttributeValue::S(_)) {
                "string"
            } else {
                "binary"
            }
        )));
    }
    Ok(())
}

/// The stored form of an item.
pub fn item_bytes(item: &Item) -> Vec<u8> {
    serde_json::to_vec(&Value::Object(item_to_json(item))).unwrap_or_default()
}

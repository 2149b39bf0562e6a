//! The operations.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{Map, Value, json};

use crate::error::DynamoError;
use crate::expr::{
    Comparator, Condition, Operand, Path, Placeholders, UpdateAction, apply_update,
    parse_condition, parse_projection, parse_update, project,
};
use crate::legacy;
use crate::table::{Index, KeyElement, KeySchema, Table, TableMeta, item_bytes};
use crate::value::{AttributeValue, Item, item_member, item_size, item_to_json};
use crate::{Dynamo, TABLES_SPACE, items_space};

type Req = Map<String, Value>;

/// A parsed PutItem or DeleteItem.
struct SimpleWrite {
    table: Arc<Mutex<Table>>,
    condition: Option<Condition>,
    return_old: bool,
    old_on_failure: bool,
}

/// Locks a table, unless DeleteTable dropped it after the request found it.
fn live(table: &Arc<Mutex<Table>>) -> Result<parking_lot::MutexGuard<'_, Table>, DynamoError> {
    let t = table.lock();
    if t.dropped {
        return Err(DynamoError::not_found());
    }
    Ok(t)
}

/// Most data one Scan or Query page reads.
const PAGE_BYTES: usize = 1024 * 1024;

fn invalid(msg: impl std::fmt::Display) -> DynamoError {
    DynamoError::Validation(format!("One or more parameter values were invalid: {msg}"))
}

fn str_of<'a>(req: &'a Req, k: &str) -> Option<&'a str> {
    req.get(k).and_then(Value::as_str)
}

fn map_of<'a>(req: &'a Req, k: &str) -> Option<&'a Map<String, Value>> {
    req.get(k).and_then(Value::as_object)
}

fn table_name(req: &Req) -> Result<&str, DynamoError> {
    str_of(req, "TableName").ok_or_else(|| {
        DynamoError::Validation(
            "1 validation error detected: Value null at 'tableName' failed to satisfy constraint: Member must not be null".into(),
        )
    })
}

fn now_secs() -> f64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    ms as f64 / 1000.0
}

/// Refuses a request that mixes expression and legacy parameters.
fn no_mixing(req: &Req, legacy: &[&str], expressions: &[&str]) -> Result<(), DynamoError> {
    let present = |ks: &[&str]| -> Vec<String> {
        ks.iter()
            .filter(|k| req.get(**k).is_some_and(|v| !v.is_null()))
            .map(|k| k.to_string())
            .collect()
    };
    let (l, e) = (present(legacy), present(expressions));
    if !l.is_empty() && !e.is_empty() {
        return Err(DynamoError::Validation(format!(
            "Can not use both expression and non-expression parameters in the same request: Non-expression parameters: {{{}}} Expression parameters: {{{}}}",
            l.join(", "),
            e.join(", ")
        )));
    }
    if e.is_empty() {
        if req
            .get("ExpressionAttributeNames")
            .is_some_and(|v| !v.is_null())
        {
            return Err(DynamoError::Validation(
                "ExpressionAttributeNames can only be specified when using expressions".into(),
            ));
        }
        if req
            .get("ExpressionAttributeValues")
            .is_some_and(|v| !v.is_null())
        {
            return Err(DynamoError::Validation(format!(
                "ExpressionAttributeValues can only be specified when using expressions: {} {} null",
                expressions.join(" and "),
                if expressions.len() > 1 { "are" } else { "is" }
            )));
        }
    }
    Ok(())
}

fn placeholders(req: &Req) -> Result<Placeholders<'_>, DynamoError> {
    let values = map_of(req, "ExpressionAttributeValues");
    if values.is_some_and(|m| m.is_empty()) {
        return Err(DynamoError::Validation(
            "ExpressionAttributeValues must not be empty".into(),
        ));
    }
    let names = map_of(req, "ExpressionAttributeNames");
    if names.is_some_and(|m| m.is_empty()) {
        return Err(DynamoError::Validation(
            "ExpressionAttributeNames must not be empty".into(),
        ));
    }
    Ok(Placeholders::new(names, values))
}

/// The write condition of a request: `ConditionExpression` or `Expected`.
fn write_condition(req: &Req, ph: &mut Placeholders<'_>) -> Result<Option<Condition>, DynamoError> {
    if let Some(src) = str_of(req, "ConditionExpression") {
        return parse_condition("ConditionExpression", src, ph).map(Some);
    }
    match map_of(req, "Expected") {
        Some(e) => legacy::expected(e, str_of(req, "ConditionalOperator")),
        None => Ok(None),
    }
}

/// The projection of a read: `ProjectionExpression` or `AttributesToGet`.
fn projection(req: &Req, ph: &mut Placeholders<'_>) -> Result<Option<Vec<Path>>, DynamoError> {
    if let Some(src) = str_of(req, "ProjectionExpression") {
        return parse_projection(src, ph).map(Some);
    }
    Ok(req
        .get("AttributesToGet")
        .and_then(Value::as_array)
        .map(|a| legacy::attributes_to_get(a)))
}

fn consumed(req: &Req, table: &str, units: f64) -> Option<Value> {
    match str_of(req, "ReturnConsumedCapacity") {
        Some("TOTAL") | Some("INDEXES") => {
            Some(json!({"TableName": table, "CapacityUnits": units}))
        }
        _ => None,
    }
}

fn write_units(item: Option<&Item>) -> f64 {
    item.map(|i| item_size(i).div_ceil(1024).max(1) as f64)
        .unwrap_or(1.0)
}

fn key_element(
    schema: &[Value],
    defs: &[KeyElement],
    what: &str,
) -> Result<KeySchema, DynamoError> {
    let mut hash = None;
    let mut range = None;
    for k in schema {
        let name = k["AttributeName"].as_str().unwrap_or("").to_string();
        let Some(def) = defs.iter().find(|d| d.name == name) else {
            return Err(invalid(format!(
                "Some index key attributes are not defined in AttributeDefinitions. Keys: [{name}], AttributeDefinitions: [{}]",
                defs.iter()
                    .map(|d| d.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        match k["KeyType"].as_str() {
            Some("HASH") if hash.is_none() => hash = Some(def.clone()),
            Some("RANGE") if range.is_none() && hash.is_some() => range = Some(def.clone()),
            _ => {
                return Err(invalid(format!(
                    "Invalid KeySchema: The first KeySchemaElement is not a HASH key type{what}"
                )));
            }
        }
    }
    let hash = hash.ok_or_else(|| {
        invalid(format!(
            "Invalid KeySchema: The first KeySchemaElement is not a HASH key type{what}"
        ))
    })?;
    if range.as_ref().is_some_and(|r| r.name == hash.name) {
        return Err(invalid(format!(
            "Both the Hash Key and the Range Key element in the KeySchema have the same name{what}"
        )));
    }
    Ok(KeySchema { hash, range })
}

fn throughput(v: Option<&Value>) -> (i64, i64) {
    match v {
        Some(t) => (
            t["ReadCapacityUnits"].as_i64().unwrap_or(0),
            t["WriteCapacityUnits"].as_i64().unwrap_or(0),
        ),
        None => (0, 0),
    }
}

fn parse_index(
    v: &Value,
    defs: &[KeyElement],
    table_key: &KeySchema,
    local: bool,
    billing: &str,
) -> Result<Index, DynamoError> {
    let name = v["IndexName"].as_str().unwrap_or("").to_string();
    let key = key_element(
        v["KeySchema"].as_array().map(Vec::as_slice).unwrap_or(&[]),
        defs,
        &format!(" for index {name}"),
    )?;
    if local && (key.hash != table_key.hash || key.range.is_none()) {
        return Err(invalid(format!(
            "Table KeySchema does not have a range key, which is required when specifying a LocalSecondaryIndex; or the index {name} does not share the table's hash key"
        )));
    }
    let projection = v["Projection"]["ProjectionType"]
        .as_str()
        .unwrap_or("ALL")
        .to_string();
    let non_key_attributes: Vec<String> = v["Projection"]["NonKeyAttributes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if projection != "INCLUDE" && !non_key_attributes.is_empty() {
        return Err(invalid(format!(
            "ProjectionType is {projection}, but NonKeyAttributes is specified"
        )));
    }
    let (r, w) = throughput(v.get("ProvisionedThroughput"));
    if !local && billing == "PROVISIONED" && (r == 0 || w == 0) {
        return Err(invalid(format!(
            "ProvisionedThroughput must be specified for index: {name}"
        )));
    }
    Ok(Index {
        name,
        key,
        projection,
        non_key_attributes,
        read_capacity: r,
        write_capacity: w,
        local,
    })
}

impl Dynamo {
    fn region(&self) -> &str {
        &self.inner.cfg.region
    }

    fn account(&self) -> &str {
        &self.inner.cfg.account_id
    }

    fn save_meta(&self, meta: &TableMeta) -> Result<(), DynamoError> {
        let raw = serde_json::to_vec(meta).map_err(|e| DynamoError::failed(e.to_string(), e))?;
        self.inner
            .catalog
            .write_documents(TABLES_SPACE, &[(meta.name.as_bytes(), Some(&raw))])?;
        Ok(())
    }

    pub(crate) fn create_table(&self, req: &Req) -> Result<Value, DynamoError> {
        let name = self.canonical_name(table_name(req)?)?;
        let defs: Vec<KeyElement> = req
            .get("AttributeDefinitions")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|d| KeyElement {
                        name: d["AttributeName"].as_str().unwrap_or("").to_string(),
                        attr_type: d["AttributeType"].as_str().unwrap_or("").to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        for (i, d) in defs.iter().enumerate() {
            if defs[..i].iter().any(|x| x.name == d.name) {
                return Err(invalid(format!(
                    "Duplicate AttributeName in AttributeDefinitions: {}",
                    d.name
                )));
            }
        }
        let key = key_element(
            req.get("KeySchema")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or(&[]),
            &defs,
            "",
        )?;
        let billing = str_of(req, "BillingMode")
            .unwrap_or("PROVISIONED")
            .to_string();
        let (read, write) = throughput(req.get("ProvisionedThroughput"));
        if billing == "PROVISIONED" && req.get("ProvisionedThroughput").is_none() {
            return Err(invalid(
                "ReadCapacityUnits and WriteCapacityUnits must both be specified when BillingMode is PROVISIONED",
            ));
        }
        if billing == "PAY_PER_REQUEST" && req.get("ProvisionedThroughput").is_some() {
            return Err(invalid(
                "Neither ReadCapacityUnits nor WriteCapacityUnits can be specified when BillingMode is PAY_PER_REQUEST",
            ));
        }
        let mut indexes = Vec::new();
        for (field, local) in [
            ("GlobalSecondaryIndexes", false),
            ("LocalSecondaryIndexes", true),
        ] {
            for v in req
                .get(field)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let idx = parse_index(v, &defs, &key, local, &billing)?;
                if indexes.iter().any(|i: &Index| i.name == idx.name) {
                    return Err(invalid(format!("Duplicate index name: {}", idx.name)));
                }
                indexes.push(idx);
            }
        }
        // Every definition must be used by a key of the table or an index.
        let used: Vec<&str> = key
            .names()
            .chain(indexes.iter().flat_map(|i| i.key.names()))
            .map(|e| e.name.as_str())
            .collect();
        if defs.iter().any(|d| !used.contains(&d.name.as_str())) {
            return Err(invalid(
                "Number of attributes in KeySchema does not exactly match number of attributes defined in AttributeDefinitions",
            ));
        }
        let mut tags = BTreeMap::new();
        for t in req
            .get("Tags")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            tags.insert(
                t["Key"].as_str().unwrap_or("").to_string(),
                t["Value"].as_str().unwrap_or("").to_string(),
            );
        }
        let _ddl = self.inner.ddl.lock();
        if self.inner.tables.read().contains_key(&name) {
            return Err(DynamoError::ResourceInUse(format!(
                "Table already exists: {name}"
            )));
        }
        let meta = TableMeta {
            name: name.clone(),
            id: uuid::Uuid::new_v4().to_string(),
            key,
            attribute_definitions: defs,
            indexes,
            created_secs: now_secs(),
            billing_mode: billing,
            read_capacity: read,
            write_capacity: write,
            deletion_protection: req
                .get("DeletionProtectionEnabled")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            tags,
            ttl_attribute: None,
            point_in_time_recovery: false,
            table_class: str_of(req, "TableClass").map(String::from),
        };
        self.save_meta(&meta)?;
        let table = Table {
            meta,
            items: BTreeMap::new(),
            bytes: 0,
            dropped: false,
        };
        // Tables are usable at once: CREATING would only make clients wait.
        let desc = table.describe(self.region(), self.account(), "ACTIVE");
        self.inner
            .tables
            .write()
            .insert(name, Arc::new(Mutex::new(table)));
        Ok(json!({"TableDescription": desc}))
    }

    pub(crate) fn describe_table(&self, req: &Req) -> Result<Value, DynamoError> {
        let table = self.described_table(table_name(req)?)?;
        let t = live(&table)?;
        Ok(json!({"Table": t.describe(self.region(), self.account(), "ACTIVE")}))
    }

    pub(crate) fn delete_table(&self, req: &Req) -> Result<Value, DynamoError> {
        let name = table_name(req)?;
        let _ddl = self.inner.ddl.lock();
        let table = self.described_table(name)?;
        let mut t = live(&table)?;
        if t.meta.deletion_protection {
            return Err(DynamoError::Validation(
                "Resource cannot be deleted as it is currently protected against deletion. Disable deletion protection first.".into(),
            ));
        }
        let desc = t.describe(self.region(), self.account(), "DELETING");
        // The items and the description go in one transaction.
        self.inner.catalog.delete_space_and(
            &items_space(&t.meta.id),
            TABLES_SPACE,
            t.meta.name.as_bytes(),
        )?;
        // Requests that picked the table up before this see it gone.
        t.dropped = true;
        self.inner.tables.write().remove(&t.meta.name);
        Ok(json!({"TableDescription": desc}))
    }

    pub(crate) fn update_table(&self, req: &Req) -> Result<Value, DynamoError> {
        let _ddl = self.inner.ddl.lock();
        let table = self.described_table(table_name(req)?)?;
        let mut t = live(&table)?;
        let mut meta = t.meta.clone();
        if let Some(b) = str_of(req, "BillingMode") {
            meta.billing_mode = b.to_string();
            if b == "PAY_PER_REQUEST" {
                meta.read_capacity = 0;
                meta.write_capacity = 0;
            }
        }
        if let Some(p) = req.get("ProvisionedThroughput") {
            if meta.billing_mode == "PAY_PER_REQUEST" {
                return Err(invalid(
                    "Neither ReadCapacityUnits nor WriteCapacityUnits can be specified when BillingMode is PAY_PER_REQUEST",
                ));
            }
            (meta.read_capacity, meta.write_capacity) = throughput(Some(p));
        }
        if let Some(d) = req
            .get("DeletionProtectionEnabled")
            .and_then(Value::as_bool)
        {
            meta.deletion_protection = d;
        }
        if let Some(c) = str_of(req, "TableClass") {
            meta.table_class = Some(c.to_string());
        }
        for d in req
            .get("AttributeDefinitions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let e = KeyElement {
                name: d["AttributeName"].as_str().unwrap_or("").to_string(),
                attr_type: d["AttributeType"].as_str().unwrap_or("").to_string(),
            };
            if !meta.attribute_definitions.iter().any(|x| x.name == e.name) {
                meta.attribute_definitions.push(e);
            }
        }
        for u in req
            .get("GlobalSecondaryIndexUpdates")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(c) = u.get("Create") {
                let idx = parse_index(
                    c,
                    &meta.attribute_definitions,
                    &meta.key,
                    false,
                    &meta.billing_mode,
                )?;
                if meta.indexes.iter().any(|i| i.name == idx.name) {
                    return Err(invalid(format!(
                        "Attempting to create an index which already exists: {}",
                        idx.name
                    )));
                }
                meta.indexes.push(idx);
            } else if let Some(d) = u.get("Delete") {
                let name = d["IndexName"].as_str().unwrap_or("");
                let before = meta.indexes.len();
                meta.indexes.retain(|i| i.local || i.name != name);
                if meta.indexes.len() == before {
                    return Err(DynamoError::ResourceNotFound(format!(
                        "Requested resource not found: Index: {name} does not exist"
                    )));
                }
            } else if let Some(up) = u.get("Update") {
                let name = up["IndexName"].as_str().unwrap_or("");
                let (r, w) = throughput(up.get("ProvisionedThroughput"));
                let Some(i) = meta.indexes.iter_mut().find(|i| i.name == name) else {
                    return Err(DynamoError::ResourceNotFound(format!(
                        "Requested resource not found: Index: {name} does not exist"
                    )));
                };
                (i.read_capacity, i.write_capacity) = (r, w);
            }
        }
        let check = Table {
            meta: meta.clone(),
            items: BTreeMap::new(),
            bytes: 0,
            dropped: false,
        };
        for item in t.items.values() {
            check.check_index_keys(item)?;
        }
        self.save_meta(&meta)?;
        t.meta = meta;
        Ok(json!({"TableDescription": t.describe(self.region(), self.account(), "ACTIVE")}))
    }

    pub(crate) fn list_tables(&self, req: &Req) -> Result<Value, DynamoError> {
        let limit = req.get("Limit").and_then(Value::as_u64).unwrap_or(100) as usize;
        let start = str_of(req, "ExclusiveStartTableName");
        let tables = self.inner.tables.read();
        let names: Vec<&String> = tables
            .keys()
            .filter(|n| start.is_none_or(|s| n.as_str() > s))
            .collect();
        let page: Vec<&String> = names.iter().take(limit).copied().collect();
        let mut out = json!({"TableNames": page});
        if names.len() > limit
            && let Some(last) = page.last()
        {
            out["LastEvaluatedTableName"] = json!(last);
        }
        Ok(out)
    }

    pub(crate) fn get_item(&self, req: &Req) -> Result<Value, DynamoError> {
        no_mixing(req, &["AttributesToGet"], &["ProjectionExpression"])?;
        let table = self.table(table_name(req)?)?;
        let key = item_member(req.get("Key"))?.unwrap_or_default();
        let mut ph = placeholders(req)?;
        let proj = projection(req, &mut ph)?;
        ph.check_all_used()?;
        let t = live(&table)?;
        let k = t.check_key(&key)?;
        let mut out = Map::new();
        let units = if req.get("ConsistentRead").and_then(Value::as_bool) == Some(true) {
            1.0
        } else {
            0.5
        };
        if let Some(c) = consumed(req, &t.meta.name, units) {
            out.insert("ConsumedCapacity".into(), c);
        }
        if let Some(item) = t.items.get(&k) {
            let item = match &proj {
                Some(p) => project(item, p),
                None => item.clone(),
            };
            out.insert("Item".into(), Value::Object(item_to_json(&item)));
        }
        Ok(Value::Object(out))
    }

    /// Checks the condition against the current item and persists the new
    /// one, all under the table lock; returns the old item.
    fn write(
        &self,
        t: &mut Table,
        key: Vec<u8>,
        condition: Option<&Condition>,
        return_old_on_failure: bool,
        next: impl FnOnce(Option<&Item>) -> Result<Option<Item>, DynamoError>,
    ) -> Result<(Option<Item>, Option<Item>), DynamoError> {
        let old = t.items.get(&key).cloned();
        if let Some(c) = condition {
            let empty = Item::new();
            if !c.eval(old.as_ref().unwrap_or(&empty)) {
                return Err(DynamoError::ConditionalCheckFailed {
                    item: if return_old_on_failure { old } else { None },
                });
            }
        }
        let new = next(old.as_ref())?;
        let raw = new.as_ref().map(item_bytes);
        self.inner.catalog.write_documents(
            &items_space(&t.meta.id),
            &[(key.as_slice(), raw.as_deref())],
        )?;
        t.store(key, new.clone());
        Ok((old, new))
    }

    /// What PutItem and DeleteItem share: the table, the condition, and
    /// which old item to return.
    fn simple_write(&self, req: &Req) -> Result<SimpleWrite, DynamoError> {
        no_mixing(
            req,
            &["Expected", "ConditionalOperator"],
            &["ConditionExpression"],
        )?;
        let rv = str_of(req, "ReturnValues").unwrap_or("NONE");
        if !matches!(rv, "NONE" | "ALL_OLD") {
            return Err(invalid("ReturnValues can only be ALL_OLD or NONE"));
        }
        let table = self.table(table_name(req)?)?;
        let mut ph = placeholders(req)?;
        let condition = write_condition(req, &mut ph)?;
        ph.check_all_used()?;
        Ok(SimpleWrite {
            table,
            condition,
            return_old: rv == "ALL_OLD",
            old_on_failure: str_of(req, "ReturnValuesOnConditionCheckFailure") == Some("ALL_OLD"),
        })
    }

    fn simple_write_output(
        req: &Req,
        t: &Table,
        w: &SimpleWrite,
        old: Option<Item>,
        units: f64,
    ) -> Value {
        let mut out = Map::new();
        if w.return_old
            && let Some(old) = old
        {
            out.insert("Attributes".into(), Value::Object(item_to_json(&old)));
        }
        if let Some(c) = consumed(req, &t.meta.name, units) {
            out.insert("ConsumedCapacity".into(), c);
        }
        Value::Object(out)
    }

    pub(crate) fn put_item(&self, req: &Req) -> Result<Value, DynamoError> {
        let w = self.simple_write(req)?;
        let item = item_member(req.get("Item"))?.unwrap_or_default();
        let mut t = live(&w.table)?;
        let key = t.check_item(&item)?;
        let units = write_units(Some(&item));
        let (old, _) = self.write(&mut t, key, w.condition.as_ref(), w.old_on_failure, |_| {
            Ok(Some(item))
        })?;
        Ok(Dynamo::simple_write_output(req, &t, &w, old, units))
    }

    pub(crate) fn delete_item(&self, req: &Req) -> Result<Value, DynamoError> {
        let w = self.simple_write(req)?;
        let key = item_member(req.get("Key"))?.unwrap_or_default();
        let mut t = live(&w.table)?;
        let k = t.check_key(&key)?;
        let (old, _) = self.write(&mut t, k, w.condition.as_ref(), w.old_on_failure, |_| {
            Ok(None)
        })?;
        let units = write_units(old.as_ref());
        Ok(Dynamo::simple_write_output(req, &t, &w, old, units))
    }

    pub(crate) fn update_item(&self, req: &Req) -> Result<Value, DynamoError> {
        no_mixing(
            req,
            &["AttributeUpdates", "Expected", "ConditionalOperator"],
            &["UpdateExpression", "ConditionExpression"],
        )?;
        let rv = str_of(req, "ReturnValues").unwrap_or("NONE").to_string();
        let table = self.table(table_name(req)?)?;
        let key = item_member(req.get("Key"))?.unwrap_or_default();
        let mut ph = placeholders(req)?;
        let actions: Vec<UpdateAction> = match str_of(req, "UpdateExpression") {
            Some(src) => parse_update(src, &mut ph)?,
            None => match map_of(req, "AttributeUpdates") {
                Some(u) => legacy::attribute_updates(u)?,
                None => Vec::new(),
            },
        };
        let condition = write_condition(req, &mut ph)?;
        ph.check_all_used()?;
        let mut t = live(&table)?;
        let k = t.check_key(&key)?;
        for a in &actions {
            let p = match a {
                UpdateAction::Set(p, _)
                | UpdateAction::Remove(p)
                | UpdateAction::Add(p, _)
                | UpdateAction::Delete(p, _) => p,
            };
            if t.meta.key.names().any(|e| e.name == p.top()) {
                return Err(invalid(format!(
                    "Cannot update attribute {}. This attribute is part of the key",
                    p.top()
                )));
            }
        }
        let on_fail = str_of(req, "ReturnValuesOnConditionCheckFailure") == Some("ALL_OLD");
        let check = |item: &Item| -> Result<(), DynamoError> {
            t.check_index_keys(item)?;
            crate::table::check_nesting(item)?;
            if item_size(item) > crate::table::MAX_ITEM_BYTES {
                return Err(DynamoError::Validation(
                    "Item size to update has exceeded the maximum allowed size".into(),
                ));
            }
            Ok(())
        };
        let checked;
        let next = {
            let old = t.items.get(&k).cloned();
            let mut item = old.clone().unwrap_or_else(|| key.clone());
            // The condition is checked first by `write`; compute the update
            // now so that a failing update never half-applies.
            let applied = apply_update(&mut item, &actions);
            match applied {
                Ok(()) => {
                    checked = check(&item);
                    Some(item)
                }
                Err(e) => {
                    checked = Err(e);
                    None
                }
            }
        };
        let (old, new) = self.write(&mut t, k, condition.as_ref(), on_fail, move |_| {
            checked?;
            Ok(next)
        })?;
        // UPDATED_* return just the paths the update named, nested as in the item.
        let touched: Vec<Path> = actions
            .iter()
            .map(|a| match a {
                UpdateAction::Set(p, _)
                | UpdateAction::Remove(p)
                | UpdateAction::Add(p, _)
                | UpdateAction::Delete(p, _) => p.clone(),
            })
            .collect();
        let pick = |item: Option<&Item>, only_touched: bool| -> Option<Item> {
            let item = item?;
            let out = if only_touched {
                project(item, &touched)
            } else {
                item.clone()
            };
            (!out.is_empty()).then_some(out)
        };
        let attributes = match rv.as_str() {
            "ALL_OLD" => pick(old.as_ref(), false),
            "UPDATED_OLD" => pick(old.as_ref(), true),
            "ALL_NEW" => pick(new.as_ref(), false),
            "UPDATED_NEW" => pick(new.as_ref(), true),
            _ => None,
        };
        let mut out = Map::new();
        if let Some(a) = attributes {
            out.insert("Attributes".into(), Value::Object(item_to_json(&a)));
        }
        if let Some(c) = consumed(req, &t.meta.name, write_units(new.as_ref())) {
            out.insert("ConsumedCapacity".into(), c);
        }
        Ok(Value::Object(out))
    }

    pub(crate) fn scan(&self, req: &Req) -> Result<Value, DynamoError> {
        self.read_items(req, false)
    }

    pub(crate) fn query(&self, req: &Req) -> Result<Value, DynamoError> {
        self.read_items(req, true)
    }

    /// Scan and Query: pick the items, page them, filter and project.
    fn read_items(&self, req: &Req, is_query: bool) -> Result<Value, DynamoError> {
        if is_query {
            no_mixing(
                req,
                &[
                    "AttributesToGet",
                    "QueryFilter",
                    "ConditionalOperator",
                    "KeyConditions",
                ],
                &[
                    "ProjectionExpression",
                    "FilterExpression",
                    "KeyConditionExpression",
                ],
            )?;
        } else {
            no_mixing(
                req,
                &["AttributesToGet", "ScanFilter", "ConditionalOperator"],
                &["ProjectionExpression", "FilterExpression"],
            )?;
        }
        let table = self.table(table_name(req)?)?;
        let mut ph = placeholders(req)?;
        let key_condition = if is_query {
            match str_of(req, "KeyConditionExpression") {
                Some(src) => Some(parse_condition("KeyConditionExpression", src, &mut ph)?),
                None => match map_of(req, "KeyConditions") {
                    Some(k) => legacy::filter(k, None)?,
                    None => None,
                },
            }
        } else {
            None
        };
        let filter = match str_of(req, "FilterExpression") {
            Some(src) => Some(parse_condition("FilterExpression", src, &mut ph)?),
            None => {
                let legacy_filter = if is_query {
                    "QueryFilter"
                } else {
                    "ScanFilter"
                };
                match map_of(req, legacy_filter) {
                    Some(f) => legacy::filter(f, str_of(req, "ConditionalOperator"))?,
                    None => None,
                }
            }
        };
        let proj = projection(req, &mut ph)?;
        ph.check_all_used()?;
        let select = str_of(req, "Select");
        if select == Some("SPECIFIC_ATTRIBUTES") && proj.is_none() {
            return Err(DynamoError::Validation(
                "1 validation error detected: When Select is SPECIFIC_ATTRIBUTES, either ProjectionExpression or AttributesToGet must be specified".into(),
            ));
        }
        if proj.is_some() && matches!(select, Some("ALL_ATTRIBUTES") | Some("COUNT")) {
            return Err(DynamoError::Validation(format!(
                "Cannot specify the AttributesToGet or ProjectionExpression when choosing to get {}",
                select.unwrap_or("")
            )));
        }
        let limit = req.get("Limit").and_then(Value::as_u64).map(|l| l as usize);
        let t = live(&table)?;
        let index = match str_of(req, "IndexName") {
            Some(n) => Some(t.index(n)?.clone()),
            None => None,
        };
        if index.as_ref().is_some_and(|i| !i.local)
            && req.get("ConsistentRead").and_then(Value::as_bool) == Some(true)
        {
            return Err(DynamoError::Validation(
                "Consistent reads are not supported on global secondary indexes".into(),
            ));
        }
        let schema = index.as_ref().map(|i| &i.key).unwrap_or(&t.meta.key);
        let reverse =
            is_query && req.get("ScanIndexForward").and_then(Value::as_bool) == Some(false);
        // The order of a read: table key order for a table Scan; index (or
        // table) hash key, then range key, then table key otherwise.
        let by_index = index.is_some() || is_query;
        let order = |a: &Item, b: &Item| -> std::cmp::Ordering {
            let table_order = || t.meta.key.encode(a).cmp(&t.meta.key.encode(b));
            if by_index {
                schema
                    .encode_hash(a)
                    .cmp(&schema.encode_hash(b))
                    .then_with(|| schema.range_order(a, b))
                    .then_with(table_order)
            } else {
                table_order()
            }
        };
        // The candidate items, in the order this read returns them.
        let mut candidates: Vec<&Item> = t
            .items
            .values()
            .filter(|it| index.is_none() || schema.key_of(it).is_some())
            .collect();
        if is_query {
            let Some(kc) = &key_condition else {
                return Err(DynamoError::Validation(
                    "Either the KeyConditions or KeyConditionExpression parameter must be specified in the request.".into(),
                ));
            };
            check_key_condition(kc, schema)?;
            candidates.retain(|it| kc.eval(it));
        } else if let (Some(seg), Some(total)) = (
            req.get("Segment").and_then(Value::as_u64),
            req.get("TotalSegments").and_then(Value::as_u64),
        ) {
            if seg >= total {
                return Err(DynamoError::Validation(format!(
                    "The Segment parameter is zero-based and must be less than parameter TotalSegments: Segment: {seg} is out of bounds for TotalSegments: {total}"
                )));
            }
            candidates.retain(|it| {
                let k = t.meta.key.encode(it).unwrap_or_default();
                let h = k
                    .iter()
                    .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(*b)));
                h % total == seg
            });
        }
        if by_index {
            candidates.sort_by(|a, b| order(a, b));
        }
        if reverse {
            candidates.reverse();
        }
        // Resume after ExclusiveStartKey, by its key values (the item it
        // names may have changed or gone since).
        if let Some(start) = item_member(req.get("ExclusiveStartKey"))? {
            if t.meta.key.encode(&start).is_none()
                || (index.is_some() && schema.key_of(&start).is_none())
            {
                return Err(DynamoError::Validation(
                    "The provided starting key is invalid: The provided key element does not match the schema".into(),
                ));
            }
            let after = if reverse {
                std::cmp::Ordering::Less
            } else {
                std::cmp::Ordering::Greater
            };
            candidates.retain(|it| order(it, &start) == after);
        }
        let mut scanned = 0usize;
        let mut bytes = 0usize;
        let mut items = Vec::new();
        let mut last = None;
        let mut more = false;
        for it in &candidates {
            if limit.is_some_and(|l| scanned >= l) || bytes >= PAGE_BYTES {
                more = true;
                break;
            }
            scanned += 1;
            bytes += item_size(it);
            last = Some(*it);
            if filter.as_ref().is_none_or(|f| f.eval(it)) {
                items.push(*it);
            }
        }
        // DynamoDB stops at Limit and says where, even when nothing follows.
        let last = last.filter(|_| more || limit.is_some_and(|l| scanned >= l));
        let mut out = Map::new();
        if select != Some("COUNT") {
            let projected: Vec<Value> = items
                .iter()
                .map(|it| {
                    let shown = match (&proj, &index) {
                        (Some(p), _) => project(it, p),
                        (None, Some(idx)) if idx.projection != "ALL" => {
                            let mut keep: Vec<Path> = t
                                .meta
                                .key
                                .names()
                                .chain(idx.key.names())
                                .map(|e| Path::attribute(&e.name))
                                .collect();
                            keep.extend(idx.non_key_attributes.iter().map(|n| Path::attribute(n)));
                            project(it, &keep)
                        }
                        _ => (*it).clone(),
                    };
                    Value::Object(item_to_json(&shown))
                })
                .collect();
            out.insert("Items".into(), Value::Array(projected));
        }
        out.insert("Count".into(), json!(items.len()));
        out.insert("ScannedCount".into(), json!(scanned));
        if let Some(last) = last {
            let mut k = t.meta.key.key_of(last).unwrap_or_default();
            if let Some(idx) = &index
                && let Some(ik) = idx.key.key_of(last)
            {
                k.extend(ik);
            }
            out.insert("LastEvaluatedKey".into(), Value::Object(item_to_json(&k)));
        }
        if let Some(c) = consumed(
            req,
            &t.meta.name,
            (bytes.div_ceil(4096).max(1)) as f64 * 0.5,
        ) {
            out.insert("ConsumedCapacity".into(), c);
        }
        Ok(Value::Object(out))
    }

    pub(crate) fn batch_get_item(&self, req: &Req) -> Result<Value, DynamoError> {
        let mut responses = Map::new();
        let Some(requests) = map_of(req, "RequestItems") else {
            return Err(DynamoError::Validation(
                "The requestItems parameter is required for BatchGetItem".into(),
            ));
        };
        let total: usize = requests
            .values()
            .map(|r| r["Keys"].as_array().map_or(0, Vec::len))
            .sum();
        if total > 100 {
            return Err(DynamoError::Validation(
                "Too many items requested for the BatchGetItem call".into(),
            ));
        }
        for (table, spec) in requests {
            let t = self.table(table)?;
            let mut keys = std::collections::HashSet::new();
            for key in spec["Keys"].as_array().into_iter().flatten() {
                let key = item_member(Some(key))?.unwrap_or_default();
                if !keys.insert(live(&t)?.check_key(&key)?) {
                    return Err(DynamoError::Validation(
                        "Provided list of item keys contains duplicates".into(),
                    ));
                }
            }
        }
        for (table, spec) in requests {
            let mut got = Vec::new();
            for key in spec["Keys"].as_array().into_iter().flatten() {
                let mut one = spec.as_object().cloned().unwrap_or_default();
                one.remove("Keys");
                one.insert("TableName".into(), json!(table));
                one.insert("Key".into(), key.clone());
                let r = self.get_item(&one)?;
                if let Some(item) = r.get("Item") {
                    got.push(item.clone());
                }
            }
            responses.insert(table.clone(), Value::Array(got));
        }
        Ok(json!({"Responses": responses, "UnprocessedKeys": {}}))
    }

    pub(crate) fn batch_write_item(&self, req: &Req) -> Result<Value, DynamoError> {
        let Some(requests) = map_of(req, "RequestItems") else {
            return Err(DynamoError::Validation(
                "The requestItems parameter is required for BatchWriteItem".into(),
            ));
        };
        let total: usize = requests
            .values()
            .map(|r| r.as_array().map_or(0, Vec::len))
            .sum();
        if total > 25 {
            return Err(DynamoError::Validation(
                "1 validation error detected: Value at 'requestItems' failed to satisfy constraint: Map value must satisfy constraint: [Member must have length less than or equal to 25, Member must have length greater than or equal to 1]".into(),
            ));
        }
        // Validate everything before writing anything.
        for (table, writes) in requests {
            let t = self.table(table)?;
            let t = live(&t)?;
            let mut keys = std::collections::HashSet::new();
            for w in writes.as_array().into_iter().flatten() {
                let key = if let Some(p) = w.get("PutRequest") {
                    t.check_item(&item_member(p.get("Item"))?.unwrap_or_default())?
                } else if let Some(d) = w.get("DeleteRequest") {
                    t.check_key(&item_member(d.get("Key"))?.unwrap_or_default())?
                } else {
                    continue;
                };
                if !keys.insert(key) {
                    return Err(DynamoError::Validation(
                        "Provided list of item keys contains duplicates".into(),
                    ));
                }
            }
        }
        for (table, writes) in requests {
            for w in writes.as_array().into_iter().flatten() {
                let mut one = Map::new();
                one.insert("TableName".into(), json!(table));
                if let Some(p) = w.get("PutRequest") {
                    one.insert("Item".into(), p["Item"].clone());
                    self.put_item(&one)?;
                } else if let Some(d) = w.get("DeleteRequest") {
                    one.insert("Key".into(), d["Key"].clone());
                    self.delete_item(&one)?;
                }
            }
        }
        Ok(json!({"UnprocessedItems": {}}))
    }

    fn table_by_arn(&self, req: &Req) -> Result<Arc<Mutex<Table>>, DynamoError> {
        let arn = str_of(req, "ResourceArn").unwrap_or("");
        if !arn.starts_with("arn:") {
            return Err(DynamoError::Validation(format!(
                "Invalid TableArn: Invalid ResourceArn provided as input {arn}"
            )));
        }
        self.table(arn)
    }

    fn update_meta(
        &self,
        table: &Arc<Mutex<Table>>,
        f: impl FnOnce(&mut TableMeta),
    ) -> Result<TableMeta, DynamoError> {
        let mut t = live(table)?;
        let mut meta = t.meta.clone();
        f(&mut meta);
        self.save_meta(&meta)?;
        t.meta = meta.clone();
        Ok(meta)
    }

    pub(crate) fn tag_resource(&self, req: &Req) -> Result<Value, DynamoError> {
        let table = self.table_by_arn(req)?;
        let tags: Vec<(String, String)> = req
            .get("Tags")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|t| {
                (
                    t["Key"].as_str().unwrap_or("").to_string(),
                    t["Value"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        self.update_meta(&table, |m| m.tags.extend(tags))?;
        Ok(json!({}))
    }

    pub(crate) fn untag_resource(&self, req: &Req) -> Result<Value, DynamoError> {
        let table = self.table_by_arn(req)?;
        let keys: Vec<String> = req
            .get("TagKeys")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|k| k.as_str().map(String::from))
            .collect();
        self.update_meta(&table, |m| m.tags.retain(|k, _| !keys.contains(k)))?;
        Ok(json!({}))
    }

    pub(crate) fn list_tags_of_resource(&self, req: &Req) -> Result<Value, DynamoError> {
        let table = self.table_by_arn(req)?;
        let t = live(&table)?;
        let tags: Vec<Value> = t
            .meta
            .tags
            .iter()
            .map(|(k, v)| json!({"Key": k, "Value": v}))
            .collect();
        Ok(json!({"Tags": tags}))
    }

    pub(crate) fn describe_time_to_live(&self, req: &Req) -> Result<Value, DynamoError> {
        let table = self.described_table(table_name(req)?)?;
        let t = live(&table)?;
        Ok(match &t.meta.ttl_attribute {
            Some(a) => {
                json!({"TimeToLiveDescription": {"TimeToLiveStatus": "ENABLED", "AttributeName": a}})
            }
            None => json!({"TimeToLiveDescription": {"TimeToLiveStatus": "DISABLED"}}),
        })
    }

    pub(crate) fn update_time_to_live(&self, req: &Req) -> Result<Value, DynamoError> {
        let table = self.described_table(table_name(req)?)?;
        let spec = req
            .get("TimeToLiveSpecification")
            .cloned()
            .unwrap_or(json!({}));
        let enabled = spec["Enabled"].as_bool().unwrap_or(false);
        let attr = spec["AttributeName"].as_str().unwrap_or("").to_string();
        let current = live(&table)?.meta.ttl_attribute.clone();
        match (&current, enabled) {
            (Some(_), true) => {
                return Err(DynamoError::Validation(
                    "TimeToLive is already enabled".into(),
                ));
            }
            (None, false) => {
                return Err(DynamoError::Validation(
                    "TimeToLive is already disabled".into(),
                ));
            }
            _ => {}
        }
        // Ripstream records the setting; expired items are not deleted.
        self.update_meta(&table, |m| {
            m.ttl_attribute = enabled.then(|| attr.clone());
        })?;
        Ok(json!({"TimeToLiveSpecification": spec}))
    }

    fn continuous_backups(meta: &TableMeta) -> Value {
        let status = if meta.point_in_time_recovery {
            "ENABLED"
        } else {
            "DISABLED"
        };
        json!({"ContinuousBackupsDescription": {
            "ContinuousBackupsStatus": "ENABLED",
            "PointInTimeRecoveryDescription": {"PointInTimeRecoveryStatus": status}
        }})
    }

    pub(crate) fn describe_continuous_backups(&self, req: &Req) -> Result<Value, DynamoError> {
        let table = self.described_table(table_name(req)?)?;
        let t = live(&table)?;
        Ok(Dynamo::continuous_backups(&t.meta))
    }

    pub(crate) fn update_continuous_backups(&self, req: &Req) -> Result<Value, DynamoError> {
        let table = self.described_table(table_name(req)?)?;
        let on = req
            .get("PointInTimeRecoverySpecification")
            .and_then(|s| s["PointInTimeRecoveryEnabled"].as_bool())
            .unwrap_or(false);
        let meta = self.update_meta(&table, |m| m.point_in_time_recovery = on)?;
        Ok(Dynamo::continuous_backups(&meta))
    }
}

/// A Query's key condition must be `hash = :v`, optionally AND one condition
/// on the range key (`=`, `<`, `<=`, `>`, `>=`, BETWEEN, begins_with).
fn check_key_condition(c: &Condition, schema: &KeySchema) -> Result<(), DynamoError> {
    fn parts<'a>(c: &'a Condition, out: &mut Vec<&'a Condition>) -> Result<(), DynamoError> {
        match c {
            Condition::And(a, b) => {
                parts(a, out)?;
                parts(b, out)
            }
            Condition::Or(..) => Err(DynamoError::Validation(
                "Invalid operator used in KeyConditionExpression: OR".into(),
            )),
            Condition::Not(..) => Err(DynamoError::Validation(
                "Invalid operator used in KeyConditionExpression: NOT".into(),
            )),
            other => {
                out.push(other);
                Ok(())
            }
        }
    }
    let mut conds = Vec::new();
    parts(c, &mut conds)?;
    let attr = |c: &Condition| -> Option<String> {
        match c {
            Condition::Compare(Operand::Path(p), _, Operand::Value(_))
            | Condition::Between(Operand::Path(p), Operand::Value(_), Operand::Value(_))
            | Condition::BeginsWith(Operand::Path(p), Operand::Value(_))
                if p.0.len() == 1 =>
            {
                Some(p.top().to_string())
            }
            _ => None,
        }
    };
    let mut has_hash = false;
    let mut seen: Vec<String> = Vec::new();
    for c in &conds {
        let Some(name) = attr(c) else {
            return Err(DynamoError::Validation(
                "Invalid KeyConditionExpression: the condition is not supported on key attributes"
                    .into(),
            ));
        };
        if seen.contains(&name) {
            return Err(DynamoError::Validation(
                "KeyConditionExpressions must only contain one condition per key".into(),
            ));
        }
        seen.push(name.clone());
        let key_type = schema
            .names()
            .find(|e| e.name == name)
            .map(|e| e.attr_type.as_str());
        // Every operand must have the key attribute's type.
        let operands: Vec<&AttributeValue> = match c {
            Condition::Compare(_, _, Operand::Value(v))
            | Condition::BeginsWith(_, Operand::Value(v)) => vec![&**v],
            Condition::Between(_, Operand::Value(lo), Operand::Value(hi)) => vec![&**lo, &**hi],
            _ => Vec::new(),
        };
        if key_type.is_some_and(|t| operands.iter().any(|v| v.type_name() != t)) {
            return Err(DynamoError::Validation(
                "One or more parameter values were invalid: Condition parameter type does not match schema type".into(),
            ));
        }
        if let Condition::BeginsWith(..) = c
            && key_type == Some("N")
        {
            return Err(DynamoError::Validation(
                "Invalid KeyConditionExpression: Incorrect operand type for operator or function; operator or function: begins_with, operand type: N".into(),
            ));
        }
        if let Condition::Between(_, Operand::Value(lo), Operand::Value(hi)) = c
            && lo.compare(hi) == Some(std::cmp::Ordering::Greater)
        {
            return Err(DynamoError::Validation(
                "Invalid KeyConditionExpression: The BETWEEN operator requires upper bound to be greater than or equal to lower bound".into(),
            ));
        }
        if name == schema.hash.name {
            if !matches!(c, Condition::Compare(_, Comparator::Eq, _)) {
                return Err(DynamoError::Validation(
                    "Query key condition not supported".into(),
                ));
            }
            has_hash = true;
        } else if schema.range.as_ref().is_none_or(|r| r.name != name) {
            return Err(DynamoError::Validation(format!(
                "Query condition missed key schema element: {}",
                schema.hash.name
            )));
        } else if matches!(c, Condition::Compare(_, Comparator::Ne, _)) {
            return Err(DynamoError::Validation(
                "Unsupported operator on KeyConditionExpression: operator: <>".into(),
            ));
        }
    }
    if !has_hash || conds.len() > 2 {
        return Err(DynamoError::Validation(format!(
            "Query condition missed key schema element: {}",
            schema.hash.name
        )));
    }
    Ok(())
}

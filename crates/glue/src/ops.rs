//! The operations, on the JSON form of their (model-validated) inputs.

use std::ops::Bound::{Excluded, Included, Unbounded};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::Glue;
use crate::error::{Error, Result};
use crate::pattern::NamePattern;
use crate::store::{Change, DatabaseRec, TableKey, TableRec};

/// Glue's page size bounds (`CatalogGetterPageSize`): 1 to 100, 100 when
/// not given.
pub const MAX_PAGE: usize = 100;
/// Tables BatchDeleteTable takes in one call.
pub const MAX_BATCH_DELETE: usize = 100;
/// Names are at most 255 characters.
const MAX_NAME: usize = 255;

fn invalid(m: impl Into<String>) -> Error {
    Error::InvalidInput(m.into())
}

pub(crate) fn text<'a>(input: &'a Value, key: &str) -> Option<&'a str> {
    input.get(key).and_then(Value::as_str)
}

/// A name as Glue stores it: lower-cased, after the model's checks (the
/// front door validates them too; a library caller may not have).
pub(crate) fn fold(name: &str, what: &str) -> Result<String> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME {
        return Err(invalid(format!(
            "{what} must be between 1 and {MAX_NAME} characters long."
        )));
    }
    if name.chars().any(|c| c.is_control() && c != '\t') {
        return Err(invalid(format!(
            "{what} must not contain control characters."
        )));
    }
    // `/` separates the parts of a table's ARN (`table/<db>/<table>`), so
    // a database named `a/b` would make `table/a/b/c` name two tables; `*`
    // and `?` are IAM's wildcards and `:` separates an ARN's fields.
    if let Some(c) = name.chars().find(|c| matches!(c, '/' | '*' | '?' | ':')) {
        return Err(invalid(format!("{what} must not contain {c:?}.")));
    }
    Ok(name.to_lowercase())
}

/// The folded name at `key` of `input`, which must be there.
pub(crate) fn required_name(input: &Value, key: &str, what: &str) -> Result<String> {
    match text(input, key) {
        Some(n) => fold(n, what),
        None => Err(invalid(format!("{what} is required."))),
    }
}

/// The table a table operation names: `TableInput.Name` for CreateTable and
/// UpdateTable, `Name` or `TableName` for the others.
pub(crate) fn table_name_of(operation: &str, input: &Value) -> Result<String> {
    match operation {
        "CreateTable" | "UpdateTable" => match input.get("TableInput") {
            Some(t) => required_name(t, "Name", "TableInput.Name"),
            None => Err(invalid(
                "TableInput is required: open table formats are not supported yet by this server.",
            )),
        },
        "GetTableVersion" | "GetTableVersions" | "DeleteTableVersion" => {
            required_name(input, "TableName", "TableName")
        }
        _ => required_name(input, "Name", "Name"),
    }
}

fn seconds(ms: i64) -> Value {
    json!(ms as f64 / 1000.0)
}

fn database_not_found(db: &str) -> Error {
    Error::EntityNotFound(format!("Database {db} not found."))
}

fn table_not_found(table: &str) -> Error {
    Error::EntityNotFound(format!("Table {table} not found."))
}

fn version_not_found(table: &str, version: &str) -> Error {
    Error::EntityNotFound(format!("Version {version} of table {table} not found."))
}

/// Refuses members that ask for what this server cannot do, rather than
/// accepting and ignoring them.
fn refuse(input: &Value, keys: &[&str]) -> Result<()> {
    for k in keys {
        if input.get(*k).is_some_and(|v| !v.is_null()) {
            return Err(invalid(format!("{k} is not supported yet by this server.")));
        }
    }
    Ok(())
}

fn page_size(input: &Value) -> Result<usize> {
    match input.get("MaxResults").and_then(Value::as_i64) {
        None => Ok(MAX_PAGE),
        Some(n) if (1..=MAX_PAGE as i64).contains(&n) => Ok(n as usize),
        Some(n) => Err(invalid(format!(
            "MaxResults {n} is not between 1 and {MAX_PAGE}."
        ))),
    }
}

/// A continuation token: the last key of the previous page, opaque to
/// clients. Keyed by name rather than position, so a page boundary holds
/// while entries come and go.
fn token(last: &str) -> String {
    URL_SAFE_NO_PAD.encode(last.as_bytes())
}

fn after(input: &Value) -> Result<Option<String>> {
    let Some(t) = text(input, "NextToken") else {
        return Ok(None);
    };
    if t.is_empty() {
        return Ok(None);
    }
    URL_SAFE_NO_PAD
        .decode(t)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .map(Some)
        .ok_or_else(|| invalid("Invalid NextToken."))
}

/// A version's key in a token: zero-padded, as the versions' documents.
fn version_token(v: u64) -> String {
    token(&format!("{v:020}"))
}

fn after_version(input: &Value) -> Result<Option<u64>> {
    after(input)?
        .map(|a| a.parse().map_err(|_| invalid("Invalid NextToken.")))
        .transpose()
}

/// Counts what a value serializes to without keeping the bytes.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len();
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn json_len<T: Serialize + ?Sized>(v: &T) -> usize {
    let mut c = Counter(0);
    // Serializing maps of JSON values into a counter cannot fail.
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// What Glue adds to a stored input in an output (names, times, ids), a
/// bound rather than the exact count.
const OUTPUT_OVERHEAD: usize = 1024;

/// Takes one page from `items` (in key order, already past the token):
/// at most `size` entries, and no entry that would take the page past
/// `budget` bytes unless the page is empty. Returns clones of just those
/// and, if any entry is left, the last one's key for the next token.
fn take_page<'a, K, T: Clone + 'a>(
    size: usize,
    budget: usize,
    items: impl Iterator<Item = (K, &'a T)>,
    weigh: impl Fn(&T) -> usize,
) -> (Vec<T>, Option<K>) {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let mut last = None;
    for (key, item) in items {
        let w = weigh(item);
        if out.len() == size || (!out.is_empty() && bytes.saturating_add(w) > budget) {
            return (out, last);
        }
        bytes = bytes.saturating_add(w);
        out.push(item.clone());
        last = Some(key);
    }
    (out, None)
}

fn weigh_database(d: &DatabaseRec) -> usize {
    json_len(&d.input) + OUTPUT_OVERHEAD
}

fn weigh_table(t: &TableRec) -> usize {
    json_len(&t.input) + OUTPUT_OVERHEAD
}

/// A version id's number: Glue's are decimal strings, `0` first.
fn version_number(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) || (v.len() > 1 && v.starts_with('0'))
    {
        return None;
    }
    v.parse().ok()
}

/// Glue's default for a database created without default permissions (no
/// Lake Formation): everything to IAM, so IAM policies alone decide.
fn default_permissions() -> Value {
    json!([{
        "Principal": {"DataLakePrincipalIdentifier": "IAM_ALLOWED_PRINCIPALS"},
        "Permissions": ["ALL"]
    }])
}

impl Glue {
    fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    fn database_output(&self, d: &DatabaseRec) -> Value {
        let mut out = d.input.clone();
        out.insert("Name".into(), json!(d.name));
        out.insert("CreateTime".into(), seconds(d.created_ms));
        out.insert("CatalogId".into(), json!(self.inner.account));
        out.entry("CreateTableDefaultPermissions")
            .or_insert_with(default_permissions);
        Value::Object(out)
    }

    fn table_output(&self, t: &TableRec) -> Value {
        let mut out = t.input.clone();
        out.insert("Name".into(), json!(t.name));
        out.insert("DatabaseName".into(), json!(t.database));
        out.insert("CreateTime".into(), seconds(t.created_ms));
        out.insert("UpdateTime".into(), seconds(t.updated_ms));
        out.insert("CreatedBy".into(), json!(t.created_by));
        out.insert("IsRegisteredWithLakeFormation".into(), json!(false));
        out.insert("CatalogId".into(), json!(self.inner.account));
        out.insert("VersionId".into(), json!(t.version.to_string()));
        // Glue answers these two even when the table was created without.
        out.entry("PartitionKeys").or_insert_with(|| json!([]));
        out.entry("Retention").or_insert_with(|| json!(0));
        Value::Object(out)
    }

    /// Refuses an input larger than the server keeps.
    fn bounded(&self, map: Map<String, Value>, what: &str) -> Result<Map<String, Value>> {
        let len = json_len(&map);
        let max = self.inner.config.max_input_bytes;
        if len > max {
            return Err(invalid(format!(
                "{what} is {len} bytes serialized, more than the {max} this server accepts."
            )));
        }
        Ok(map)
    }

    fn limit(what: &str, max: usize) -> Error {
        Error::ResourceNumberLimitExceeded(format!("Number of {what} exceeds the limit of {max}."))
    }

    fn database_input(&self, input: &Value, name: &str) -> Result<Map<String, Value>> {
        let di = input
            .get("DatabaseInput")
            .ok_or_else(|| invalid("DatabaseInput is required."))?;
        refuse(di, &["TargetDatabase", "FederatedDatabase"])?;
        let mut map = di.as_object().cloned().unwrap_or_default();
        map.insert("Name".into(), json!(name));
        self.bounded(map, "DatabaseInput")
    }

    fn table_input(&self, input: &Value, name: &str) -> Result<Map<String, Value>> {
        let ti = input
            .get("TableInput")
            .ok_or_else(|| invalid("TableInput is required."))?;
        refuse(ti, &["TargetTable", "FederatedTable", "ViewDefinition"])?;
        let mut map = ti.as_object().cloned().unwrap_or_default();
        map.insert("Name".into(), json!(name));
        self.bounded(map, "TableInput")
    }

    fn require_database(&self, db: &str) -> Result<()> {
        if self.inner.state.read().databases.contains_key(db) {
            Ok(())
        } else {
            Err(database_not_found(db))
        }
    }

    fn current_table(&self, db: &str, table: &str) -> Result<TableRec> {
        let state = self.inner.state.read();
        if !state.databases.contains_key(db) {
            return Err(database_not_found(db));
        }
        state
            .tables
            .get(&(db.to_string(), table.to_string()))
            .cloned()
            .ok_or_else(|| table_not_found(table))
    }

    pub async fn create_database(&self, input: Value) -> Result<Value> {
        let name = required_name(
            input.get("DatabaseInput").unwrap_or(&Value::Null),
            "Name",
            "DatabaseInput.Name",
        )?;
        if input
            .get("Tags")
            .and_then(Value::as_object)
            .is_some_and(|t| !t.is_empty())
        {
            return Err(invalid("Tags are not supported yet by this server."));
        }
        let map = self.database_input(&input, &name)?;
        let guard = self.inner.control.clone().lock_owned().await;
        {
            let state = self.inner.state.read();
            if state.databases.contains_key(&name) {
                return Err(Error::AlreadyExists("Database already exists.".into()));
            }
            let max = self.inner.config.max_databases;
            if state.databases.len() >= max {
                return Err(Self::limit("databases in the account", max));
            }
        }
        let rec = DatabaseRec {
            name,
            input: map,
            created_ms: self.now_ms(),
        };
        self.inner
            .commit(guard, vec![Change::PutDatabase(rec)])
            .await?;
        Ok(json!({}))
    }

    pub async fn get_database(&self, input: Value) -> Result<Value> {
        let name = required_name(&input, "Name", "Name")?;
        let state = self.inner.state.read();
        let d = state
            .databases
            .get(&name)
            .ok_or_else(|| database_not_found(&name))?;
        Ok(json!({ "Database": self.database_output(d) }))
    }

    pub async fn get_databases(&self, input: Value) -> Result<Value> {
        let names_only = attributes(&input, &[("NAME", "Name")])?;
        // Databases shared from other accounts or federated: none here.
        if matches!(
            text(&input, "ResourceShareType"),
            Some("FOREIGN" | "FEDERATED")
        ) {
            return Ok(json!({ "DatabaseList": [] }));
        }
        let size = page_size(&input)?;
        let lower = after(&input)?.map_or(Unbounded, Excluded);
        let (items, next) = {
            let state = self.inner.state.read();
            let range = state.databases.range::<String, _>((lower, Unbounded));
            let (items, next) = take_page(
                size,
                self.inner.config.page_budget_bytes,
                range,
                weigh_database,
            );
            (items, next.cloned())
        };
        let list: Vec<Value> = items
            .iter()
            .map(|d| project(self.database_output(d), names_only.as_deref()))
            .collect();
        let mut out = json!({ "DatabaseList": list });
        if let Some(n) = next {
            out["NextToken"] = json!(token(&n));
        }
        Ok(out)
    }

    pub async fn update_database(&self, input: Value) -> Result<Value> {
        let name = required_name(&input, "Name", "Name")?;
        let new_name = required_name(
            input.get("DatabaseInput").unwrap_or(&Value::Null),
            "Name",
            "DatabaseInput.Name",
        )?;
        if new_name != name {
            return Err(invalid(format!(
                "Database {name} cannot be renamed to {new_name}: DatabaseInput.Name must be the database's name."
            )));
        }
        let map = self.database_input(&input, &name)?;
        let guard = self.inner.control.clone().lock_owned().await;
        let cur = self
            .inner
            .state
            .read()
            .databases
            .get(&name)
            .cloned()
            .ok_or_else(|| database_not_found(&name))?;
        let rec = DatabaseRec { input: map, ..cur };
        self.inner
            .commit(guard, vec![Change::PutDatabase(rec)])
            .await?;
        Ok(json!({}))
    }

    pub async fn delete_database(&self, input: Value) -> Result<Value> {
        let name = required_name(&input, "Name", "Name")?;
        let guard = self.inner.control.clone().lock_owned().await;
        let changes = {
            let state = self.inner.state.read();
            if !state.databases.contains_key(&name) {
                return Err(database_not_found(&name));
            }
            let mut changes = vec![Change::DeleteDatabase(name.clone())];
            for t in state.tables_of(&name) {
                changes.extend(state.drop_table(&name, &t.name));
            }
            changes
        };
        self.inner.commit(guard, changes).await?;
        Ok(json!({}))
    }

    pub async fn create_table(&self, input: Value, caller: &str) -> Result<Value> {
        refuse(
            &input,
            &["PartitionIndexes", "TransactionId", "OpenTableFormatInput"],
        )?;
        let db = required_name(&input, "DatabaseName", "DatabaseName")?;
        let name = table_name_of("CreateTable", &input)?;
        let map = self.table_input(&input, &name)?;
        let guard = self.inner.control.clone().lock_owned().await;
        {
            let state = self.inner.state.read();
            if !state.databases.contains_key(&db) {
                return Err(database_not_found(&db));
            }
            if state.tables.contains_key(&(db.clone(), name.clone())) {
                return Err(Error::AlreadyExists("Table already exists.".into()));
            }
            let config = &self.inner.config;
            if state.tables.len() >= config.max_tables {
                return Err(Self::limit("tables in the account", config.max_tables));
            }
            let max = config.max_tables_per_database;
            if state.tables_of(&db).take(max).count() >= max {
                return Err(Self::limit(&format!("tables in database {db}"), max));
            }
            // A new table is a version too.
            if state.all_versions() >= config.max_versions {
                return Err(Self::limit(
                    "table versions in the account",
                    config.max_versions,
                ));
            }
        }
        let now = self.now_ms();
        let rec = TableRec {
            database: db,
            name,
            input: map,
            created_ms: now,
            updated_ms: now,
            created_by: caller.to_string(),
            version: 0,
        };
        self.inner
            .commit(guard, vec![Change::PutTable(rec)])
            .await?;
        Ok(json!({}))
    }

    pub async fn get_table(&self, input: Value) -> Result<Value> {
        refuse(&input, &["TransactionId", "QueryAsOfTime"])?;
        let db = required_name(&input, "DatabaseName", "DatabaseName")?;
        let name = table_name_of("GetTable", &input)?;
        let t = self.current_table(&db, &name)?;
        Ok(json!({ "Table": self.table_output(&t) }))
    }

    pub async fn get_tables(&self, input: Value) -> Result<Value> {
        refuse(&input, &["TransactionId", "QueryAsOfTime"])?;
        let db = required_name(&input, "DatabaseName", "DatabaseName")?;
        let only = attributes(&input, &[("NAME", "Name"), ("TABLE_TYPE", "TableType")])?;
        let pattern = match text(&input, "Expression") {
            Some(e) if !e.is_empty() => Some(NamePattern::parse(e)?),
            _ => None,
        };
        if matches!(
            text(&input, "ResourceShareType"),
            Some("FOREIGN" | "FEDERATED")
        ) {
            self.require_database(&db)?;
            return Ok(json!({ "TableList": [] }));
        }
        let size = page_size(&input)?;
        let lower: std::ops::Bound<TableKey> = match after(&input)? {
            Some(a) => Excluded((db.clone(), a)),
            None => Included((db.clone(), String::new())),
        };
        let (items, next) = {
            let state = self.inner.state.read();
            if !state.databases.contains_key(&db) {
                return Err(database_not_found(&db));
            }
            let matching = state
                .tables
                .range((lower, Unbounded))
                .take_while(|((d, _), _)| *d == db)
                .filter(|(_, t)| pattern.as_ref().is_none_or(|p| p.matches(&t.name)))
                .map(|((_, name), t)| (name, t));
            let (items, next) = take_page(
                size,
                self.inner.config.page_budget_bytes,
                matching,
                weigh_table,
            );
            (items, next.cloned())
        };
        let list: Vec<Value> = items
            .iter()
            .map(|t| project(self.table_output(t), only.as_deref()))
            .collect();
        let mut out = json!({ "TableList": list });
        if let Some(n) = next {
            out["NextToken"] = json!(token(&n));
        }
        Ok(out)
    }

    pub async fn update_table(&self, input: Value) -> Result<Value> {
        refuse(
            &input,
            &[
                "TransactionId",
                "ViewUpdateAction",
                "UpdateOpenTableFormatInput",
            ],
        )?;
        let db = required_name(&input, "DatabaseName", "DatabaseName")?;
        let name = table_name_of("UpdateTable", &input)?;
        if let Some(top) = text(&input, "Name")
            && fold(top, "Name")? != name
        {
            return Err(invalid("Name and TableInput.Name name different tables."));
        }
        let map = self.table_input(&input, &name)?;
        let skip_archive = input
            .get("SkipArchive")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let guard = self.inner.control.clone().lock_owned().await;
        let cur = self.current_table(&db, &name)?;
        if let Some(v) = text(&input, "VersionId")
            && v != cur.version.to_string()
        {
            return Err(Error::ConcurrentModification(format!(
                "Table {name} is at version {}, not {v}.",
                cur.version
            )));
        }
        let next = TableRec {
            input: map,
            updated_ms: self.now_ms(),
            version: cur.version + 1,
            ..cur.clone()
        };
        if !skip_archive {
            // Glue refuses an update that would archive a version past the
            // quotas; deleting old versions (DeleteTableVersion) or
            // updating with SkipArchive makes room.
            let state = self.inner.state.read();
            let config = &self.inner.config;
            let key = (db.clone(), name.clone());
            if state.versions_of(&key) >= config.max_versions_per_table {
                return Err(Self::limit(
                    &format!("versions of table {name}"),
                    config.max_versions_per_table,
                ));
            }
            if state.all_versions() >= config.max_versions {
                return Err(Self::limit(
                    "table versions in the account",
                    config.max_versions,
                ));
            }
        }
        let mut changes = vec![Change::PutTable(next)];
        if !skip_archive {
            changes.push(Change::PutVersion(cur));
        }
        self.inner.commit(guard, changes).await?;
        Ok(json!({}))
    }

    pub async fn delete_table(&self, input: Value) -> Result<Value> {
        refuse(&input, &["TransactionId"])?;
        let db = required_name(&input, "DatabaseName", "DatabaseName")?;
        let name = table_name_of("DeleteTable", &input)?;
        let guard = self.inner.control.clone().lock_owned().await;
        self.current_table(&db, &name)?;
        let changes = self.inner.state.read().drop_table(&db, &name);
        self.inner.commit(guard, changes).await?;
        Ok(json!({}))
    }

    pub async fn batch_delete_table(&self, input: Value) -> Result<Value> {
        refuse(&input, &["TransactionId"])?;
        let db = required_name(&input, "DatabaseName", "DatabaseName")?;
        let names = batch_names(&input)?;
        let guard = self.inner.control.clone().lock_owned().await;
        let (changes, errors) = {
            let state = self.inner.state.read();
            if !state.databases.contains_key(&db) {
                return Err(database_not_found(&db));
            }
            let mut changes = Vec::new();
            let mut errors = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for (given, folded) in &names {
                if !seen.insert(folded.clone()) {
                    continue;
                }
                if state.tables.contains_key(&(db.clone(), folded.clone())) {
                    changes.extend(state.drop_table(&db, folded));
                } else {
                    errors.push(json!({
                        "TableName": given,
                        "ErrorDetail": {
                            "ErrorCode": "EntityNotFoundException",
                            "ErrorMessage": format!("Table {folded} not found."),
                        }
                    }));
                }
            }
            (changes, errors)
        };
        if !changes.is_empty() {
            self.inner.commit(guard, changes).await?;
        }
        Ok(json!({ "Errors": errors }))
    }

    pub async fn get_table_version(&self, input: Value) -> Result<Value> {
        let db = required_name(&input, "DatabaseName", "DatabaseName")?;
        let name = table_name_of("GetTableVersion", &input)?;
        let wanted = match text(&input, "VersionId") {
            // Firehose's SchemaConfiguration asks for "LATEST".
            None | Some("LATEST") => None,
            Some(v) => Some(version_number(v).ok_or_else(|| version_not_found(&name, v))?),
        };
        // The table and its versions under one read, so an update between
        // the two cannot make a version seem missing.
        let rec = {
            let state = self.inner.state.read();
            if !state.databases.contains_key(&db) {
                return Err(database_not_found(&db));
            }
            let key = (db.clone(), name.clone());
            let cur = state
                .tables
                .get(&key)
                .ok_or_else(|| table_not_found(&name))?;
            match wanted {
                None => cur.clone(),
                Some(n) if n == cur.version => cur.clone(),
                Some(n) => state
                    .versions
                    .get(&key)
                    .and_then(|m| m.get(&n))
                    .cloned()
                    .ok_or_else(|| version_not_found(&name, &n.to_string()))?,
            }
        };
        Ok(json!({ "TableVersion": self.version_output(&rec) }))
    }

    fn version_output(&self, t: &TableRec) -> Value {
        json!({ "Table": self.table_output(t), "VersionId": t.version.to_string() })
    }

    pub async fn get_table_versions(&self, input: Value) -> Result<Value> {
        let db = required_name(&input, "DatabaseName", "DatabaseName")?;
        let name = table_name_of("GetTableVersions", &input)?;
        let size = page_size(&input)?;
        let after = after_version(&input)?;
        let (items, next) = {
            let state = self.inner.state.read();
            if !state.databases.contains_key(&db) {
                return Err(database_not_found(&db));
            }
            let key = (db.clone(), name.clone());
            let cur = state
                .tables
                .get(&key)
                .ok_or_else(|| table_not_found(&name))?;
            let lower = after.map_or(Unbounded, Excluded);
            // Oldest first, the current version last.
            let all = state
                .versions
                .get(&key)
                .into_iter()
                .flat_map(|m| m.range((lower, Unbounded)))
                .map(|(v, t)| (*v, t))
                .chain(Some((cur.version, cur)).filter(|(v, _)| after.is_none_or(|a| *v > a)));
            take_page(size, self.inner.config.page_budget_bytes, all, weigh_table)
        };
        let list: Vec<Value> = items.iter().map(|t| self.version_output(t)).collect();
        let mut out = json!({ "TableVersions": list });
        if let Some(n) = next {
            out["NextToken"] = json!(version_token(n));
        }
        Ok(out)
    }

    pub async fn delete_table_version(&self, input: Value) -> Result<Value> {
        let db = required_name(&input, "DatabaseName", "DatabaseName")?;
        let name = table_name_of("DeleteTableVersion", &input)?;
        let v = text(&input, "VersionId").ok_or_else(|| invalid("VersionId is required."))?;
        let guard = self.inner.control.clone().lock_owned().await;
        let cur = self.current_table(&db, &name)?;
        let n = version_number(v).ok_or_else(|| version_not_found(&name, v))?;
        if n == cur.version {
            return Err(invalid(format!(
                "Version {v} is the current version of table {name} and cannot be deleted."
            )));
        }
        let archived = self
            .inner
            .state
            .read()
            .versions
            .get(&(db.clone(), name.clone()))
            .is_some_and(|m| m.contains_key(&n));
        if !archived {
            return Err(version_not_found(&name, v));
        }
        self.inner
            .commit(guard, vec![Change::DeleteVersion(db, name, n)])
            .await?;
        Ok(json!({}))
    }
}

/// BatchDeleteTable's names, as given and folded.
pub(crate) fn batch_names(input: &Value) -> Result<Vec<(String, String)>> {
    let list = input
        .get("TablesToDelete")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("TablesToDelete is required."))?;
    if list.len() > MAX_BATCH_DELETE {
        return Err(invalid(format!(
            "TablesToDelete may name at most {MAX_BATCH_DELETE} tables."
        )));
    }
    list.iter()
        .map(|v| {
            let given = v
                .as_str()
                .ok_or_else(|| invalid("TablesToDelete must hold table names."))?;
            Ok((given.to_string(), fold(given, "A table name")?))
        })
        .collect()
}

/// `AttributesToGet`, as the output members to keep (`None`: all). The
/// list must name `NAME`, as Glue requires.
fn attributes(input: &Value, known: &[(&str, &'static str)]) -> Result<Option<Vec<&'static str>>> {
    let Some(list) = input.get("AttributesToGet").and_then(Value::as_array) else {
        return Ok(None);
    };
    let mut keep = Vec::new();
    for a in list {
        let a = a.as_str().unwrap_or_default();
        match known.iter().find(|(k, _)| *k == a) {
            Some((_, member)) => keep.push(*member),
            None => return Err(invalid(format!("AttributesToGet value {a} is not valid."))),
        }
    }
    if !keep.contains(&"Name") {
        return Err(invalid("AttributesToGet must include NAME."));
    }
    Ok(Some(keep))
}

fn project(v: Value, only: Option<&[&str]>) -> Value {
    match (only, v) {
        (Some(keep), Value::Object(map)) => Value::Object(
            map.into_iter()
                .filter(|(k, _)| keep.contains(&k.as_str()))
                .collect(),
        ),
        (_, v) => v,
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn names_fold_to_lower_case_and_are_checked() {
        assert_eq!(fold("Sales_DB", "Name").unwrap(), "sales_db");
        assert_eq!(fold("ÄBC", "Name").unwrap(), "äbc");
        assert!(fold("", "Name").is_err());
        assert!(fold(&"a".repeat(256), "Name").is_err());
        assert!(fold(&"a".repeat(255), "Name").is_ok());
        assert!(fold("a\0b", "Name").is_err());
        assert!(fold("a\nb", "Name").is_err());
        assert!(fold("a\tb", "Name").is_ok());
    }

    #[test]
    fn version_ids_are_canonical_decimals() {
        assert_eq!(version_number("0"), Some(0));
        assert_eq!(version_number("17"), Some(17));
        for bad in ["", "01", "-1", "1.0", "x", "99999999999999999999999"] {
            assert_eq!(version_number(bad), None, "{bad}");
        }
    }

    #[test]
    fn pages_stop_at_their_size_or_byte_budget() {
        let items: Vec<(u32, u32)> = (0..5).map(|i| (i, i)).collect();
        let it = || items.iter().map(|(k, v)| (*k, v));
        let one = |_: &u32| 1;
        assert_eq!(take_page(2, 100, it(), one), (vec![0, 1], Some(1)));
        // Exactly a page full: no token for an empty next page.
        assert_eq!(take_page(5, 100, it(), one), (vec![0, 1, 2, 3, 4], None));
        // The budget ends the page before the entry that would pass it.
        let ten = |_: &u32| 10;
        assert_eq!(take_page(5, 25, it(), ten), (vec![0, 1], Some(1)));
        assert_eq!(take_page(5, 30, it(), ten), (vec![0, 1, 2], Some(2)));
        // One entry larger than the budget still makes a page.
        assert_eq!(take_page(5, 5, it(), ten), (vec![0], Some(0)));
        assert_eq!(
            take_page(5, 5, std::iter::empty::<(u32, &u32)>(), ten),
            (vec![], None)
        );
    }

    #[test]
    fn tokens_round_trip_and_bad_ones_are_invalid() {
        let t = token("events");
        assert_eq!(
            after(&json!({"NextToken": t})).unwrap().as_deref(),
            Some("events")
        );
        assert_eq!(after(&json!({"NextToken": ""})).unwrap(), None);
        assert_eq!(
            after_version(&json!({"NextToken": version_token(42)})).unwrap(),
            Some(42)
        );
        assert!(matches!(
            after(&json!({"NextToken": "!!"})),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            after_version(&json!({"NextToken": token("x")})),
            Err(Error::InvalidInput(_))
        ));
        assert!(page_size(&json!({"MaxResults": 0})).is_err());
        assert!(page_size(&json!({"MaxResults": 101})).is_err());
        assert_eq!(page_size(&json!({})).unwrap(), MAX_PAGE);
    }

    #[test]
    fn names_that_would_make_arns_ambiguous_are_refused() {
        for bad in ["a/b", "a*", "a?", "a:b"] {
            assert!(
                matches!(fold(bad, "Name"), Err(Error::InvalidInput(_))),
                "{bad}"
            );
        }
        assert_eq!(fold("a-b.c_d", "Name").unwrap(), "a-b.c_d");
    }
}

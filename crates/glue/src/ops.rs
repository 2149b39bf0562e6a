//! The operations, on the JSON form of their (model-validated) inputs.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use crate::Glue;
use crate::error::{Error, Result};
use crate::pattern::NamePattern;
use crate::store::{Change, DatabaseRec, TableRec};

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

/// One page of `items` (in key order) after the token's key, and the
/// token of the next page if any item is left.
fn page<'a, T: 'a>(
    input: &Value,
    items: impl Iterator<Item = (String, &'a T)>,
) -> Result<(Vec<&'a T>, Option<String>)> {
    let size = page_size(input)?;
    let after = after(input)?;
    let mut out = Vec::new();
    let mut last = None;
    for (key, item) in items {
        if after.as_ref().is_some_and(|a| key.as_str() <= a.as_str()) {
            continue;
        }
        if out.len() == size {
            return Ok((out, last.as_deref().map(token)));
        }
        out.push(item);
        last = Some(key);
    }
    Ok((out, None))
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

    fn database_input(input: &Value, name: &str) -> Result<Map<String, Value>> {
        let di = input
            .get("DatabaseInput")
            .ok_or_else(|| invalid("DatabaseInput is required."))?;
        refuse(di, &["TargetDatabase", "FederatedDatabase"])?;
        let mut map = di.as_object().cloned().unwrap_or_default();
        map.insert("Name".into(), json!(name));
        Ok(map)
    }

    fn table_input(input: &Value, name: &str) -> Result<Map<String, Value>> {
        let ti = input
            .get("TableInput")
            .ok_or_else(|| invalid("TableInput is required."))?;
        refuse(ti, &["TargetTable", "FederatedTable", "ViewDefinition"])?;
        let mut map = ti.as_object().cloned().unwrap_or_default();
        map.insert("Name".into(), json!(name));
        Ok(map)
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
        let map = Self::database_input(&input, &name)?;
        let _guard = self.inner.control.lock().await;
        if self.inner.state.read().databases.contains_key(&name) {
            return Err(Error::AlreadyExists("Database already exists.".into()));
        }
        let rec = DatabaseRec {
            name,
            input: map,
            created_ms: self.now_ms(),
        };
        self.inner.commit(vec![Change::PutDatabase(rec)]).await?;
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
        let state = self.inner.state.read();
        let (items, next) = page(&input, state.databases.iter().map(|(k, d)| (k.clone(), d)))?;
        let list: Vec<Value> = items
            .into_iter()
            .map(|d| project(self.database_output(d), names_only.as_deref()))
            .collect();
        let mut out = json!({ "DatabaseList": list });
        if let Some(n) = next {
            out["NextToken"] = json!(n);
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
        let map = Self::database_input(&input, &name)?;
        let _guard = self.inner.control.lock().await;
        let cur = self
            .inner
            .state
            .read()
            .databases
            .get(&name)
            .cloned()
            .ok_or_else(|| database_not_found(&name))?;
        let rec = DatabaseRec { input: map, ..cur };
        self.inner.commit(vec![Change::PutDatabase(rec)]).await?;
        Ok(json!({}))
    }

    pub async fn delete_database(&self, input: Value) -> Result<Value> {
        let name = required_name(&input, "Name", "Name")?;
        let _guard = self.inner.control.lock().await;
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
        self.inner.commit(changes).await?;
        Ok(json!({}))
    }

    pub async fn create_table(&self, input: Value, caller: &str) -> Result<Value> {
        refuse(
            &input,
            &["PartitionIndexes", "TransactionId", "OpenTableFormatInput"],
        )?;
        let db = required_name(&input, "DatabaseName", "DatabaseName")?;
        let name = table_name_of("CreateTable", &input)?;
        let map = Self::table_input(&input, &name)?;
        let _guard = self.inner.control.lock().await;
        {
            let state = self.inner.state.read();
            if !state.databases.contains_key(&db) {
                return Err(database_not_found(&db));
            }
            if state.tables.contains_key(&(db.clone(), name.clone())) {
                return Err(Error::AlreadyExists("Table already exists.".into()));
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
        self.inner.commit(vec![Change::PutTable(rec)]).await?;
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
        let state = self.inner.state.read();
        if !state.databases.contains_key(&db) {
            return Err(database_not_found(&db));
        }
        let matching = state
            .tables_of(&db)
            .filter(|t| pattern.as_ref().is_none_or(|p| p.matches(&t.name)))
            .map(|t| (t.name.clone(), t));
        let (items, next) = page(&input, matching)?;
        let list: Vec<Value> = items
            .into_iter()
            .map(|t| project(self.table_output(t), only.as_deref()))
            .collect();
        let mut out = json!({ "TableList": list });
        if let Some(n) = next {
            out["NextToken"] = json!(n);
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
        let map = Self::table_input(&input, &name)?;
        let skip_archive = input
            .get("SkipArchive")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let _guard = self.inner.control.lock().await;
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
        let mut changes = vec![Change::PutTable(next)];
        if !skip_archive {
            changes.push(Change::PutVersion(cur));
        }
        self.inner.commit(changes).await?;
        Ok(json!({}))
    }

    pub async fn delete_table(&self, input: Value) -> Result<Value> {
        refuse(&input, &["TransactionId"])?;
        let db = required_name(&input, "DatabaseName", "DatabaseName")?;
        let name = table_name_of("DeleteTable", &input)?;
        let _guard = self.inner.control.lock().await;
        self.current_table(&db, &name)?;
        let changes = self.inner.state.read().drop_table(&db, &name);
        self.inner.commit(changes).await?;
        Ok(json!({}))
    }

    pub async fn batch_delete_table(&self, input: Value) -> Result<Value> {
        refuse(&input, &["TransactionId"])?;
        let db = required_name(&input, "DatabaseName", "DatabaseName")?;
        let names = batch_names(&input)?;
        let _guard = self.inner.control.lock().await;
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
            self.inner.commit(changes).await?;
        }
        Ok(json!({ "Errors": errors }))
    }

    pub async fn get_table_version(&self, input: Value) -> Result<Value> {
        let db = required_name(&input, "DatabaseName", "DatabaseName")?;
        let name = table_name_of("GetTableVersion", &input)?;
        let cur = self.current_table(&db, &name)?;
        let rec = match text(&input, "VersionId") {
            None => cur,
            Some(v) => {
                let n = version_number(v).ok_or_else(|| version_not_found(&name, v))?;
                if n == cur.version {
                    cur
                } else {
                    self.inner
                        .state
                        .read()
                        .versions
                        .get(&(db.clone(), name.clone()))
                        .and_then(|m| m.get(&n))
                        .cloned()
                        .ok_or_else(|| version_not_found(&name, v))?
                }
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
        let cur = self.current_table(&db, &name)?;
        let state = self.inner.state.read();
        let archived = state.versions.get(&(db.clone(), name.clone()));
        // Oldest first; keys zero-padded so string order is version order.
        let all = archived
            .into_iter()
            .flat_map(|m| m.values())
            .chain(std::iter::once(&cur))
            .map(|t| (format!("{:020}", t.version), t));
        let (items, next) = page(&input, all)?;
        let list: Vec<Value> = items.into_iter().map(|t| self.version_output(t)).collect();
        let mut out = json!({ "TableVersions": list });
        if let Some(n) = next {
            out["NextToken"] = json!(n);
        }
        Ok(out)
    }

    pub async fn delete_table_version(&self, input: Value) -> Result<Value> {
        let db = required_name(&input, "DatabaseName", "DatabaseName")?;
        let name = table_name_of("DeleteTableVersion", &input)?;
        let v = text(&input, "VersionId").ok_or_else(|| invalid("VersionId is required."))?;
        let _guard = self.inner.control.lock().await;
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
            .commit(vec![Change::DeleteVersion(db, name, n)])
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
    fn tokens_resume_after_the_last_key() {
        let items: Vec<(String, u32)> = (0..5).map(|i| (format!("k{i}"), i)).collect();
        let it = || items.iter().map(|(k, v)| (k.clone(), v));
        let (p1, t1) = page(&json!({"MaxResults": 2}), it()).unwrap();
        assert_eq!(p1, vec![&0, &1]);
        let t1 = t1.unwrap();
        let (p2, t2) = page(&json!({"MaxResults": 2, "NextToken": t1}), it()).unwrap();
        assert_eq!(p2, vec![&2, &3]);
        let (p3, t3) = page(&json!({"MaxResults": 2, "NextToken": t2.unwrap()}), it()).unwrap();
        assert_eq!(p3, vec![&4]);
        assert!(t3.is_none());
        // Exactly a page full: no token for an empty next page.
        let (p, t) = page(&json!({"MaxResults": 5}), it()).unwrap();
        assert_eq!(p.len(), 5);
        assert!(t.is_none());
        assert!(matches!(
            page(&json!({"NextToken": "!!"}), it()),
            Err(Error::InvalidInput(_))
        ));
        assert!(page(&json!({"MaxResults": 0}), it()).is_err());
        assert!(page(&json!({"MaxResults": 101}), it()).is_err());
    }
}

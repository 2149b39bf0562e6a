//! Iceberg types and the Hive types Firehose's JSON reader
//! (`ripstream-convert`) knows, both ways: a Glue table's Hive columns
//! become a new table's Iceberg schema, and a table's Iceberg schema
//! becomes the columns records are read against.

use std::sync::Arc;

use iceberg::spec::{
    ListType, MapType, NestedField, NestedFieldRef, PrimitiveType, Schema, StructType, Type,
};
use ripstream_convert::hive::{self, HiveType};

/// Why a schema cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("Column {column} has type {ty:?}, which is not a Hive type: {why}")]
    BadHiveType {
        column: String,
        ty: String,
        why: String,
    },
    #[error("Column {column} has Iceberg type {ty}, which Firehose cannot write yet")]
    Unsupported { column: String, ty: String },
    #[error("The table has no columns.")]
    NoColumns,
    #[error("The Iceberg schema is not valid: {0}")]
    Invalid(String),
}

struct Ids(i32);

impl Ids {
    fn next(&mut self) -> i32 {
        self.0 += 1;
        self.0
    }
}

fn iceberg_type(t: &HiveType, ids: &mut Ids) -> Type {
    let p = |p: PrimitiveType| Type::Primitive(p);
    match t {
        HiveType::Boolean => p(PrimitiveType::Boolean),
        HiveType::TinyInt | HiveType::SmallInt | HiveType::Int => p(PrimitiveType::Int),
        HiveType::BigInt => p(PrimitiveType::Long),
        HiveType::Float => p(PrimitiveType::Float),
        HiveType::Double => p(PrimitiveType::Double),
        HiveType::Decimal { precision, scale } => p(PrimitiveType::Decimal {
            precision: u32::from(*precision),
            scale: u32::from(*scale),
        }),
        HiveType::String | HiveType::Char(_) | HiveType::Varchar(_) => p(PrimitiveType::String),
        HiveType::Binary => p(PrimitiveType::Binary),
        HiveType::Date => p(PrimitiveType::Date),
        HiveType::Timestamp => p(PrimitiveType::Timestamp),
        HiveType::Array(e) => {
            let id = ids.next();
            let elem = iceberg_type(e, ids);
            Type::List(ListType::new(Arc::new(NestedField::list_element(
                id, elem, false,
            ))))
        }
        HiveType::Map(k, v) => {
            let (kid, vid) = (ids.next(), ids.next());
            let (kt, vt) = (iceberg_type(k, ids), iceberg_type(v, ids));
            Type::Map(MapType::new(
                Arc::new(NestedField::map_key_element(kid, kt)),
                Arc::new(NestedField::map_value_element(vid, vt, false)),
            ))
        }
        HiveType::Struct(fields) => {
            let ids_first: Vec<i32> = fields.iter().map(|_| ids.next()).collect();
            let out: Vec<NestedFieldRef> = fields
                .iter()
                .zip(ids_first)
                .map(|(f, id)| {
                    Arc::new(NestedField::optional(id, &f.name, iceberg_type(&f.ty, ids)))
                })
                .collect();
            Type::Struct(StructType::new(out))
        }
    }
}

/// A new table's schema from a Glue table's columns: every column
/// optional, as Hive's are.
pub fn from_hive(columns: &[(String, String)]) -> Result<Schema, SchemaError> {
    if columns.is_empty() {
        return Err(SchemaError::NoColumns);
    }
    let mut ids = Ids(columns.len() as i32);
    let mut fields = Vec::with_capacity(columns.len());
    for (i, (name, ty)) in columns.iter().enumerate() {
        let parsed = hive::parse(ty).map_err(|e| SchemaError::BadHiveType {
            column: name.clone(),
            ty: ty.clone(),
            why: e.to_string(),
        })?;
        fields.push(Arc::new(NestedField::optional(
            i as i32 + 1,
            name,
            iceberg_type(&parsed, &mut ids),
        )));
    }
    Schema::builder()
        .with_fields(fields)
        .build()
        .map_err(|e| SchemaError::Invalid(e.to_string()))
}

fn hive_type(column: &str, t: &Type) -> Result<String, SchemaError> {
    let unsupported = || SchemaError::Unsupported {
        column: column.to_string(),
        ty: t.to_string(),
    };
    Ok(match t {
        Type::Primitive(p) => match p {
            PrimitiveType::Boolean => "boolean".into(),
            PrimitiveType::Int => "int".into(),
            PrimitiveType::Long => "bigint".into(),
            PrimitiveType::Float => "float".into(),
            PrimitiveType::Double => "double".into(),
            PrimitiveType::Decimal { precision, scale } => format!("decimal({precision},{scale})"),
            PrimitiveType::Date => "date".into(),
            // Both are microseconds; a zone-less JSON timestamp is read as
            // UTC for a timestamptz column, as Firehose reads them.
            PrimitiveType::Timestamp | PrimitiveType::Timestamptz => "timestamp".into(),
            PrimitiveType::String => "string".into(),
            PrimitiveType::Binary => "binary".into(),
            PrimitiveType::Time
            | PrimitiveType::TimestampNs
            | PrimitiveType::TimestamptzNs
            | PrimitiveType::Uuid
            | PrimitiveType::Fixed(_) => return Err(unsupported()),
        },
        Type::List(l) => format!("array<{}>", hive_type(column, &l.element_field.field_type)?),
        Type::Map(m) => format!(
            "map<{},{}>",
            hive_type(column, &m.key_field.field_type)?,
            hive_type(column, &m.value_field.field_type)?
        ),
        Type::Struct(s) => {
            let mut parts = Vec::with_capacity(s.fields().len());
            for f in s.fields() {
                parts.push(format!("{}:{}", f.name, hive_type(column, &f.field_type)?));
            }
            format!("struct<{}>", parts.join(","))
        }
    })
}

/// The columns records are read against: each top-level field with its
/// Hive type, in the schema's order.
pub fn to_hive(schema: &Schema) -> Result<Vec<(String, String)>, SchemaError> {
    schema
        .as_struct()
        .fields()
        .iter()
        .map(|f| Ok((f.name.clone(), hive_type(&f.name, &f.field_type)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hive_columns_round_trip() {
        let cols = vec![
            ("id".to_string(), "bigint".to_string()),
            ("name".to_string(), "string".to_string()),
            ("price".to_string(), "decimal(10,2)".to_string()),
            ("at".to_string(), "timestamp".to_string()),
            ("tags".to_string(), "array<string>".to_string()),
            ("attrs".to_string(), "map<string,int>".to_string()),
            (
                "addr".to_string(),
                "struct<city:string,zip:int>".to_string(),
            ),
        ];
        let schema = from_hive(&cols).unwrap();
        assert_eq!(schema.as_struct().fields().len(), 7);
        assert_eq!(schema.as_struct().fields()[0].id, 1);
        // Nested ids follow the top-level ones, all distinct.
        assert!(schema.field_by_name("addr.zip").unwrap().id > 7);
        let back = to_hive(&schema).unwrap();
        assert_eq!(back[0], ("id".into(), "bigint".into()));
        assert_eq!(back[4], ("tags".into(), "array<string>".into()));
        assert_eq!(back[5], ("attrs".into(), "map<string,int>".into()));
        assert_eq!(
            back[6],
            ("addr".into(), "struct<city:string,zip:int>".into())
        );
        assert!(matches!(
            from_hive(&[("x".into(), "nope".into())]),
            Err(SchemaError::BadHiveType { .. })
        ));
        assert_eq!(from_hive(&[]), Err(SchemaError::NoColumns));
        let uuid = Schema::builder()
            .with_fields(vec![Arc::new(NestedField::optional(
                1,
                "u",
                Type::Primitive(PrimitiveType::Uuid),
            ))])
            .build()
            .unwrap();
        assert!(matches!(
            to_hive(&uuid),
            Err(SchemaError::Unsupported { .. })
        ));
    }
}

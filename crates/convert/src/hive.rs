//! Hive column type strings, as a Glue table's `Columns[].Type` holds them,
//! parsed into [`HiveType`]: what Firehose's record format conversion maps
//! to Parquet and ORC types.
//!
//! CreateTable stores whatever string it is given (Glue accepts any); the
//! converter parses the types when it reads the table and refuses a table
//! whose types it cannot read, so a typo shows up where it matters.
//!
//! ```
//! use ripstream_convert::hive::{HiveType, parse};
//! let t = parse("array<struct<id:bigint, price:decimal(10,2)>>").unwrap();
//! assert_eq!(t.to_string(), "array<struct<id:bigint,price:decimal(10,2)>>");
//! assert!(matches!(t, HiveType::Array(_)));
//! ```

use std::collections::HashSet;
use std::fmt;

/// Hive's bounds: `decimal` holds up to 38 digits.
pub const MAX_DECIMAL_PRECISION: u8 = 38;
/// `char(n)` is at most 255 characters.
pub const MAX_CHAR_LENGTH: u32 = 255;
/// `varchar(n)` is at most 65,535 characters.
pub const MAX_VARCHAR_LENGTH: u32 = 65_535;
/// How deep types may nest: far beyond any real schema, and it keeps a
/// hostile type string from exhausting the stack.
pub const MAX_DEPTH: usize = 64;

/// A Hive column type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HiveType {
    Boolean,
    TinyInt,
    SmallInt,
    Int,
    BigInt,
    Float,
    Double,
    /// `decimal(precision, scale)`; bare `decimal` is `decimal(10,0)`.
    Decimal {
        precision: u8,
        scale: u8,
    },
    String,
    Char(u32),
    Varchar(u32),
    Binary,
    Date,
    Timestamp,
    Array(Box<HiveType>),
    /// Keys are always of a primitive type.
    Map(Box<HiveType>, Box<HiveType>),
    Struct(Vec<StructField>),
}

/// A named field of a `struct`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StructField {
    pub name: String,
    pub ty: HiveType,
}

impl HiveType {
    /// Whether the type is neither an array, a map nor a struct.
    pub fn is_primitive(&self) -> bool {
        !matches!(
            self,
            HiveType::Array(_) | HiveType::Map(..) | HiveType::Struct(_)
        )
    }
}

impl fmt::Display for HiveType {
    /// The canonical spelling: lower case, no spaces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HiveType::Boolean => f.write_str("boolean"),
            HiveType::TinyInt => f.write_str("tinyint"),
            HiveType::SmallInt => f.write_str("smallint"),
            HiveType::Int => f.write_str("int"),
            HiveType::BigInt => f.write_str("bigint"),
            HiveType::Float => f.write_str("float"),
            HiveType::Double => f.write_str("double"),
            HiveType::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
            HiveType::String => f.write_str("string"),
            HiveType::Char(n) => write!(f, "char({n})"),
            HiveType::Varchar(n) => write!(f, "varchar({n})"),
            HiveType::Binary => f.write_str("binary"),
            HiveType::Date => f.write_str("date"),
            HiveType::Timestamp => f.write_str("timestamp"),
            HiveType::Array(t) => write!(f, "array<{t}>"),
            HiveType::Map(k, v) => write!(f, "map<{k},{v}>"),
            HiveType::Struct(fields) => {
                f.write_str("struct<")?;
                for (i, field) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write_field_name(f, &field.name)?;
                    write!(f, ":{}", field.ty)?;
                }
                f.write_str(">")
            }
        }
    }
}

/// Whether a field name must be backquoted to read back as itself: it
/// holds what ends an unquoted name, or starts with a backquote, or is
/// empty.
fn needs_quotes(name: &str) -> bool {
    name.is_empty() || name.starts_with('`') || name.chars().any(ends_unquoted_name)
}

fn ends_unquoted_name(c: char) -> bool {
    matches!(c, ':' | ',' | '<' | '>') || c.is_whitespace()
}

fn write_field_name(f: &mut fmt::Formatter<'_>, name: &str) -> fmt::Result {
    if needs_quotes(name) {
        write!(f, "`{}`", name.replace('`', "``"))
    } else {
        f.write_str(name)
    }
}

/// Why a type string is not a Hive type. Positions are byte offsets into
/// the string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HiveTypeError {
    #[error("unknown type {name:?} at {at}")]
    UnknownType { name: String, at: usize },
    #[error("expected {expected} at {at}, found {found}")]
    Expected {
        expected: &'static str,
        found: String,
        at: usize,
    },
    #[error("{0}")]
    OutOfRange(String),
    #[error("map keys must be of a primitive type, not {0}")]
    ComplexMapKey(String),
    #[error("struct field {0} appears more than once")]
    DuplicateField(String),
    #[error("types nest deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// Parses a Hive type string: keywords in any case, whitespace anywhere
/// between tokens.
pub fn parse(s: &str) -> Result<HiveType, HiveTypeError> {
    let mut p = Parser { s, pos: 0 };
    let t = p.ty(0)?;
    p.skip_ws();
    if p.pos < s.len() {
        return Err(p.expected("the end of the type"));
    }
    Ok(t)
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        let rest = &self.s[self.pos..];
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_ws();
        self.s[self.pos..].chars().next()
    }

    fn expected(&mut self, expected: &'static str) -> HiveTypeError {
        let at = self.pos;
        let found = match self.s[self.pos..].chars().next() {
            Some(c) => format!("{c:?}"),
            None => "the end".to_string(),
        };
        HiveTypeError::Expected {
            expected,
            found,
            at,
        }
    }

    fn eat(&mut self, c: char, expected: &'static str) -> Result<(), HiveTypeError> {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            Ok(())
        } else {
            Err(self.expected(expected))
        }
    }

    /// A run of identifier characters (letters, digits, `_`), possibly
    /// empty.
    fn word(&mut self) -> &str {
        self.skip_ws();
        let start = self.pos;
        let rest = &self.s[start..];
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        self.pos += len;
        &self.s[start..start + len]
    }

    fn number(&mut self) -> Result<u64, HiveTypeError> {
        self.skip_ws();
        let at = self.pos;
        let rest = &self.s[at..];
        let len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if len == 0 {
            return Err(self.expected("a number"));
        }
        self.pos += len;
        rest[..len].parse().map_err(|_| {
            HiveTypeError::OutOfRange(format!("{} at {at} is too large", &rest[..len]))
        })
    }

    /// `(n)` after char/varchar, within 1..=max.
    fn length(&mut self, kind: &str, max: u32) -> Result<u32, HiveTypeError> {
        self.eat('(', "(")?;
        let n = self.number()?;
        self.eat(')', ")")?;
        if n == 0 || n > u64::from(max) {
            return Err(HiveTypeError::OutOfRange(format!(
                "{kind} length {n} is not between 1 and {max}"
            )));
        }
        Ok(n as u32)
    }

    fn ty(&mut self, depth: usize) -> Result<HiveType, HiveTypeError> {
        if depth > MAX_DEPTH {
            return Err(HiveTypeError::TooDeep);
        }
        self.skip_ws();
        let at = self.pos;
        let word = self.word().to_ascii_lowercase();
        Ok(match word.as_str() {
            "boolean" => HiveType::Boolean,
            "tinyint" => HiveType::TinyInt,
            "smallint" => HiveType::SmallInt,
            "int" => HiveType::Int,
            "bigint" => HiveType::BigInt,
            "float" => HiveType::Float,
            "double" => HiveType::Double,
            "string" => HiveType::String,
            "binary" => HiveType::Binary,
            "date" => HiveType::Date,
            "timestamp" => HiveType::Timestamp,
            "char" => HiveType::Char(self.length("char", MAX_CHAR_LENGTH)?),
            "varchar" => HiveType::Varchar(self.length("varchar", MAX_VARCHAR_LENGTH)?),
            "decimal" => self.decimal()?,
            "array" => {
                self.eat('<', "<")?;
                let t = self.ty(depth + 1)?;
                self.eat('>', ">")?;
                HiveType::Array(Box::new(t))
            }
            "map" => {
                self.eat('<', "<")?;
                let k = self.ty(depth + 1)?;
                if !k.is_primitive() {
                    return Err(HiveTypeError::ComplexMapKey(k.to_string()));
                }
                self.eat(',', ",")?;
                let v = self.ty(depth + 1)?;
                self.eat('>', ">")?;
                HiveType::Map(Box::new(k), Box::new(v))
            }
            "struct" => self.fields(depth)?,
            "" => return Err(self.expected("a type")),
            _ => return Err(HiveTypeError::UnknownType { name: word, at }),
        })
    }

    fn decimal(&mut self) -> Result<HiveType, HiveTypeError> {
        if self.peek() != Some('(') {
            return Ok(HiveType::Decimal {
                precision: 10,
                scale: 0,
            });
        }
        self.eat('(', "(")?;
        let precision = self.number()?;
        let scale = if self.peek() == Some(',') {
            self.eat(',', ",")?;
            self.number()?
        } else {
            0
        };
        self.eat(')', ")")?;
        if precision == 0 || precision > u64::from(MAX_DECIMAL_PRECISION) {
            return Err(HiveTypeError::OutOfRange(format!(
                "decimal precision {precision} is not between 1 and {MAX_DECIMAL_PRECISION}"
            )));
        }
        if scale > precision {
            return Err(HiveTypeError::OutOfRange(format!(
                "decimal scale {scale} is greater than its precision {precision}"
            )));
        }
        Ok(HiveType::Decimal {
            precision: precision as u8,
            scale: scale as u8,
        })
    }

    /// `<name:type, ...>` after `struct`.
    fn fields(&mut self, depth: usize) -> Result<HiveType, HiveTypeError> {
        self.eat('<', "<")?;
        let mut fields: Vec<StructField> = Vec::new();
        // Hive's field names are case-insensitive.
        let mut seen = HashSet::new();
        loop {
            let name = self.field_name()?;
            if !seen.insert(name.to_lowercase()) {
                return Err(HiveTypeError::DuplicateField(name));
            }
            self.eat(':', ":")?;
            let ty = self.ty(depth + 1)?;
            fields.push(StructField { name, ty });
            match self.peek() {
                Some(',') => self.pos += 1,
                Some('>') => {
                    self.pos += 1;
                    return Ok(HiveType::Struct(fields));
                }
                _ => return Err(self.expected(", or >")),
            }
        }
    }

    /// A field name: any run of characters but `:`, `,`, `<`, `>` and
    /// whitespace (Glue's crawlers name fields after the data's keys,
    /// `user-id` or `a.b` included), or any text between backquotes
    /// (Hive's quoting, with a doubled backquote for one).
    fn field_name(&mut self) -> Result<String, HiveTypeError> {
        if self.peek() == Some('`') {
            self.pos += 1;
            let mut name = String::new();
            loop {
                let rest = &self.s[self.pos..];
                match rest.find('`') {
                    None => {
                        self.pos = self.s.len();
                        return Err(self.expected("a closing `"));
                    }
                    Some(i) => {
                        name.push_str(&rest[..i]);
                        self.pos += i + 1;
                        if self.s[self.pos..].starts_with('`') {
                            name.push('`');
                            self.pos += 1;
                        } else {
                            break;
                        }
                    }
                }
            }
            if name.is_empty() {
                return Err(self.expected("a field name"));
            }
            return Ok(name);
        }
        let start = self.pos;
        let rest = &self.s[start..];
        let len = rest.find(ends_unquoted_name).unwrap_or(rest.len());
        if len == 0 {
            return Err(self.expected("a field name"));
        }
        self.pos += len;
        Ok(rest[..len].to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HiveType::*;

    fn ok(s: &str) -> HiveType {
        parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn every_primitive_in_any_case() {
        let cases = [
            ("boolean", Boolean),
            ("TINYINT", TinyInt),
            ("SmallInt", SmallInt),
            ("int", Int),
            ("bigint", BigInt),
            ("float", Float),
            ("DOUBLE", Double),
            ("string", String),
            ("binary", Binary),
            ("date", Date),
            (" timestamp ", Timestamp),
        ];
        for (s, t) in cases {
            assert_eq!(ok(s), t, "{s}");
            assert!(t.is_primitive());
        }
    }

    #[test]
    fn decimals_default_to_ten_digits_and_check_their_bounds() {
        assert_eq!(
            ok("decimal"),
            Decimal {
                precision: 10,
                scale: 0
            }
        );
        assert_eq!(
            ok("DECIMAL( 38 , 10 )"),
            Decimal {
                precision: 38,
                scale: 10
            }
        );
        assert_eq!(
            ok("decimal(5)"),
            Decimal {
                precision: 5,
                scale: 0
            }
        );
        for bad in [
            "decimal(0,0)",
            "decimal(39,0)",
            "decimal(5,6)",
            "decimal(99999999999999999999999,1)",
        ] {
            assert!(
                matches!(parse(bad), Err(HiveTypeError::OutOfRange(_))),
                "{bad}: {:?}",
                parse(bad)
            );
        }
        assert!(matches!(
            parse("decimal(10,"),
            Err(HiveTypeError::Expected { .. })
        ));
        assert!(matches!(
            parse("decimal(a)"),
            Err(HiveTypeError::Expected { .. })
        ));
    }

    #[test]
    fn char_and_varchar_need_a_length_in_range() {
        assert_eq!(ok("char(10)"), Char(10));
        assert_eq!(ok("VARCHAR (65535)"), Varchar(65535));
        for bad in ["char(0)", "char(256)", "varchar(65536)"] {
            assert!(
                matches!(parse(bad), Err(HiveTypeError::OutOfRange(_))),
                "{bad}"
            );
        }
        for bad in ["char", "varchar", "char()", "varchar(10"] {
            assert!(
                matches!(parse(bad), Err(HiveTypeError::Expected { .. })),
                "{bad}: {:?}",
                parse(bad)
            );
        }
    }

    #[test]
    fn nested_types_whitespace_tolerant() {
        let t = ok(" ARRAY < Struct < id : BIGINT , tags : map < string , array<int> > > > ");
        assert_eq!(
            t,
            Array(Box::new(Struct(vec![
                StructField {
                    name: "id".into(),
                    ty: BigInt
                },
                StructField {
                    name: "tags".into(),
                    ty: Map(Box::new(String), Box::new(Array(Box::new(Int))))
                },
            ])))
        );
        assert_eq!(
            t.to_string(),
            "array<struct<id:bigint,tags:map<string,array<int>>>>"
        );
        assert!(!t.is_primitive());
        // The canonical form reads back as the same type.
        assert_eq!(ok(&t.to_string()), t);
        assert_eq!(
            ok("struct<a:struct<b:struct<c:decimal(4,2)>>>").to_string(),
            "struct<a:struct<b:struct<c:decimal(4,2)>>>"
        );
    }

    #[test]
    fn crawler_field_names_need_no_quotes() {
        let t = ok("struct<user-id:int, a.b:string, $ref:date, é:bigint, a`b:int>");
        let names: Vec<&str> = match &t {
            Struct(fields) => fields.iter().map(|f| f.name.as_str()).collect(),
            other => panic!("{other:?}"),
        };
        assert_eq!(names, vec!["user-id", "a.b", "$ref", "é", "a`b"]);
        assert_eq!(
            parse("struct<é:int,É:string>"),
            Err(HiveTypeError::DuplicateField("É".into()))
        );
    }

    #[test]
    fn display_quotes_names_so_the_output_reads_back() {
        let field = |name: &str| StructField {
            name: name.into(),
            ty: Int,
        };
        let t = Struct(vec![
            field("plain"),
            field("first name"),
            field("a:b"),
            field("x,y"),
            field("<z>"),
            field("`tick"),
            field("mid`tick"),
            field("tab\there"),
        ]);
        let shown = t.to_string();
        assert_eq!(
            shown,
            "struct<plain:int,`first name`:int,`a:b`:int,`x,y`:int,`<z>`:int,```tick`:int,mid`tick:int,`tab\there`:int>"
        );
        assert_eq!(ok(&shown), t);
        let nested = Array(Box::new(Map(Box::new(String), Box::new(t))));
        assert_eq!(ok(&nested.to_string()), nested);
    }

    #[test]
    fn struct_field_names_keep_their_case_and_may_be_quoted() {
        assert_eq!(
            ok("struct<UserId:int,`first name`:string,`a``b`:date>"),
            Struct(vec![
                StructField {
                    name: "UserId".into(),
                    ty: Int
                },
                StructField {
                    name: "first name".into(),
                    ty: String
                },
                StructField {
                    name: "a`b".into(),
                    ty: Date
                },
            ])
        );
        assert_eq!(
            parse("struct<a:int,A:string>"),
            Err(HiveTypeError::DuplicateField("A".into()))
        );
        for bad in [
            "struct<>",
            "struct<a>",
            "struct<a:int",
            "struct<a:int,>",
            "struct<:int>",
            "struct<``:int>",
            "struct<`a:int>",
        ] {
            assert!(
                matches!(parse(bad), Err(HiveTypeError::Expected { .. })),
                "{bad}: {:?}",
                parse(bad)
            );
        }
    }

    #[test]
    fn map_keys_are_primitive() {
        assert_eq!(ok("map<int,string>"), Map(Box::new(Int), Box::new(String)));
        assert_eq!(
            parse("map<array<int>,string>"),
            Err(HiveTypeError::ComplexMapKey("array<int>".into()))
        );
        assert!(matches!(
            parse("map<string>"),
            Err(HiveTypeError::Expected { .. })
        ));
    }

    #[test]
    fn anything_else_is_refused_with_where() {
        assert_eq!(
            parse("integer"),
            Err(HiveTypeError::UnknownType {
                name: "integer".into(),
                at: 0
            })
        );
        assert_eq!(
            parse("array<uuid>"),
            Err(HiveTypeError::UnknownType {
                name: "uuid".into(),
                at: 6
            })
        );
        assert_eq!(
            parse("int int"),
            Err(HiveTypeError::Expected {
                expected: "the end of the type",
                found: "'i'".into(),
                at: 4
            })
        );
        for bad in [
            "",
            "   ",
            "<int>",
            "array",
            "array<>",
            "array<int",
            "int>",
            "map<int,int>>",
            "é",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let ok_depth = format!("{}int{}", "array<".repeat(MAX_DEPTH), ">".repeat(MAX_DEPTH));
        assert!(parse(&ok_depth).is_ok());
        let deep = format!("{}int{}", "array<".repeat(100_000), ">".repeat(100_000));
        assert_eq!(parse(&deep), Err(HiveTypeError::TooDeep));
    }
}

//! Redshift's COPY options, as users write them in `CopyCommand.CopyOptions`,
//! parsed into a [`CopySpec`], and a staged file's bytes translated into
//! the rows PostgreSQL's `COPY ... FROM STDIN (FORMAT csv)` reads.
//!
//! PostgreSQL's COPY has neither `JSON 'auto'` nor Redshift's text-format
//! options, so nothing of Redshift's syntax reaches the database: every
//! format is read here (JSON with serde_json, delimited text and CSV with
//! the `csv` crate) and written out as CSV in one canonical shape (every
//! value quoted, NULL as an unquoted empty field). A record that does not
//! read (not JSON objects, a line with the wrong number of fields) goes to
//! the error output instead of failing the whole file.

use std::fmt;

use serde_json::Value;

/// How a staged file is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// Redshift's default: delimited text, no quoting (`DELIMITER`,
    /// default `|`).
    Text,
    /// `CSV` / `FORMAT AS CSV` (`QUOTE AS`, default `"`).
    Csv,
    /// `JSON 'auto'` or `JSON 'auto ignorecase'`: object keys name columns.
    Json { ignorecase: bool },
}

/// The COPY options of a Redshift destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySpec {
    pub format: Format,
    pub delimiter: u8,
    pub quote: u8,
    /// The staged files are GZIP-compressed (S3Configuration's
    /// CompressionFormat must agree).
    pub gzip: bool,
    /// Lines skipped at the start of each staged file.
    pub ignore_header: u64,
    /// A field equal to this is NULL (Redshift's default `\N`).
    pub null_as: String,
    /// `TIMEFORMAT 'auto'` / `DATEFORMAT 'auto'`: values pass through to
    /// PostgreSQL, whose input parser reads the formats Redshift's `auto`
    /// recognises (ISO 8601, `YYYY-MM-DD HH:MI:SS`, with or without zone).
    pub time_auto: bool,
}

impl Default for CopySpec {
    fn default() -> CopySpec {
        CopySpec {
            format: Format::Text,
            delimiter: b'|',
            quote: b'"',
            gzip: false,
            ignore_header: 0,
            null_as: "\\N".into(),
            time_auto: false,
        }
    }
}

/// The options this server translates, for error messages.
pub const SUPPORTED: &str = "JSON 'auto', JSON 'auto ignorecase', FORMAT AS JSON 'auto', CSV, FORMAT AS CSV, QUOTE AS 'c', DELIMITER 'c', GZIP, IGNOREHEADER n, TIMEFORMAT 'auto', DATEFORMAT 'auto', NULL AS 's'";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Str(String),
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Word(w) => f.write_str(w),
            Token::Str(s) => write!(f, "'{s}'"),
        }
    }
}

/// Words and single-quoted strings (`''` inside one is a quote); `;` and
/// `,` between options are ignored, as Redshift's parser takes them.
fn tokens(s: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() || c == ';' || c == ',' {
            chars.next();
        } else if c == '\'' {
            chars.next();
            let mut text = String::new();
            loop {
                match chars.next() {
                    None => return Err("CopyOptions has an unterminated quoted string.".into()),
                    Some('\'') if chars.peek() == Some(&'\'') => {
                        chars.next();
                        text.push('\'');
                    }
                    Some('\'') => break,
                    Some(ch) => text.push(ch),
                }
            }
            out.push(Token::Str(text));
        } else {
            let mut word = String::new();
            while let Some(&ch) = chars.peek() {
                if ch.is_whitespace() || ch == '\'' || ch == ';' || ch == ',' {
                    break;
                }
                word.push(ch);
                chars.next();
            }
            out.push(Token::Word(word));
        }
    }
    Ok(out)
}

/// One character of DELIMITER or QUOTE (`\t` is a tab, as in Redshift).
fn one_char(option: &str, s: &str) -> Result<u8, String> {
    let s = match s {
        "\\t" => "\t",
        "\\|" => "|",
        other => other,
    };
    match s.as_bytes() {
        [b] if b.is_ascii() && *b != b'\n' && *b != b'\r' => Ok(*b),
        _ => Err(format!(
            "CopyOptions {option} must be one ASCII character, not '{s}'."
        )),
    }
}

/// Parses CopyOptions; anything this server cannot translate is refused,
/// naming the option.
pub fn parse(options: &str) -> Result<CopySpec, String> {
    let toks = tokens(options)?;
    let mut spec = CopySpec::default();
    let (mut csv, mut json, mut delimiter, mut quote) = (false, false, false, false);
    let mut i = 0;
    let word = |i: usize| match toks.get(i) {
        Some(Token::Word(w)) => Some(w.to_ascii_uppercase()),
        _ => None,
    };
    // The value after an option, skipping an optional AS.
    let value = |i: &mut usize, option: &str| -> Result<Token, String> {
        if word(*i).as_deref() == Some("AS") {
            *i += 1;
        }
        let t = toks
            .get(*i)
            .cloned()
            .ok_or_else(|| format!("CopyOptions {option} needs a value."))?;
        *i += 1;
        Ok(t)
    };
    let string = |t: Token, option: &str| match t {
        Token::Str(s) => Ok(s),
        Token::Word(w) => Err(format!(
            "CopyOptions {option} takes a quoted string, not {w}."
        )),
    };
    while i < toks.len() {
        let Some(w) = word(i) else {
            return Err(format!(
                "CopyOptions has {} where an option is expected; supported options: {SUPPORTED}.",
                toks[i]
            ));
        };
        i += 1;
        match w.as_str() {
            "FORMAT" => {
                // FORMAT [AS] CSV | JSON 'auto'
                if word(i).as_deref() == Some("AS") {
                    i += 1;
                }
                match word(i).as_deref() {
                    Some("CSV") => {
                        i += 1;
                        csv = true;
                    }
                    Some("JSON") => {
                        i += 1;
                        json = true;
                        let s = string(value(&mut i, "FORMAT AS JSON")?, "FORMAT AS JSON")?;
                        spec.format = json_format(&s)?;
                    }
                    _ => {
                        return Err(format!(
                            "CopyOptions FORMAT {} is not supported by this server; supported options: {SUPPORTED}.",
                            toks.get(i).map(ToString::to_string).unwrap_or_default()
                        ));
                    }
                }
            }
            "CSV" => csv = true,
            "JSON" => {
                json = true;
                let s = string(value(&mut i, "JSON")?, "JSON")?;
                spec.format = json_format(&s)?;
            }
            "QUOTE" => {
                quote = true;
                let s = string(value(&mut i, "QUOTE")?, "QUOTE")?;
                spec.quote = one_char("QUOTE", &s)?;
            }
            "DELIMITER" => {
                delimiter = true;
                let s = string(value(&mut i, "DELIMITER")?, "DELIMITER")?;
                spec.delimiter = one_char("DELIMITER", &s)?;
            }
            "GZIP" => spec.gzip = true,
            "IGNOREHEADER" => {
                let t = value(&mut i, "IGNOREHEADER")?;
                let n = match &t {
                    Token::Word(w) | Token::Str(w) => w.parse::<u64>().ok(),
                };
                spec.ignore_header = n.ok_or_else(|| {
                    format!("CopyOptions IGNOREHEADER takes a number of lines, not {t}.")
                })?;
            }
            "TIMEFORMAT" | "DATEFORMAT" => {
                let s = string(value(&mut i, &w)?, &w)?;
                if !s.eq_ignore_ascii_case("auto") {
                    return Err(format!(
                        "CopyOptions {w} '{s}' is not supported by this server: only {w} 'auto'."
                    ));
                }
                spec.time_auto = true;
            }
            "NULL" => spec.null_as = string(value(&mut i, "NULL AS")?, "NULL AS")?,
            other => {
                return Err(format!(
                    "CopyOptions option {other} is not supported by this server; supported options: {SUPPORTED}."
                ));
            }
        }
    }
    if csv && json {
        return Err("CopyOptions CSV and JSON cannot be used together.".into());
    }
    if json && (delimiter || quote) {
        return Err("CopyOptions DELIMITER and QUOTE cannot be used with JSON.".into());
    }
    if quote && !csv {
        return Err("CopyOptions QUOTE AS can be used only with CSV.".into());
    }
    if csv {
        spec.format = Format::Csv;
        if !delimiter {
            spec.delimiter = b',';
        }
    }
    Ok(spec)
}

fn json_format(s: &str) -> Result<Format, String> {
    match s.to_ascii_lowercase().as_str() {
        "auto" => Ok(Format::Json { ignorecase: false }),
        "auto ignorecase" => Ok(Format::Json { ignorecase: true }),
        _ => Err(format!(
            "CopyOptions JSON '{s}' is not supported by this server (JSONPaths files are not): only JSON 'auto' and JSON 'auto ignorecase'."
        )),
    }
}

/// A record (or a line of one) that could not be read into a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// The index of the record in the batch.
    pub record: usize,
    pub raw: Vec<u8>,
    pub message: String,
}

/// A staged file as PostgreSQL CSV rows.
#[derive(Debug, Default)]
pub struct Translated {
    pub csv: Vec<u8>,
    pub rows: u64,
    pub errors: Vec<RowError>,
}

/// PostgreSQL's text types cannot hold NUL: a row with one would fail the
/// whole COPY, so it goes to the error output alone.
const NUL_REFUSED: &str = "The record holds a NUL character, which PostgreSQL text cannot store.";

/// Writes one row: every value quoted (so an empty string stays one), NULL
/// as an unquoted empty field (PostgreSQL CSV's default NULL).
fn write_row(out: &mut Vec<u8>, fields: &[Option<&str>]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if let Some(v) = f {
            out.push(b'"');
            for &b in v.as_bytes() {
                if b == b'"' {
                    out.push(b'"');
                }
                out.push(b);
            }
            out.push(b'"');
        }
    }
    out.push(b'\n');
}

/// A JSON value as a column's text: strings as they are, other scalars as
/// their JSON text, objects and arrays as JSON (Redshift's SUPER/varchar
/// reading), null as NULL.
fn json_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Translates a staged file's records (`records`: each record's bytes, in
/// order; their concatenation is the file) for the target `columns` (the
/// COPY's column list, or the table's columns in order).
pub fn translate(spec: &CopySpec, columns: &[String], records: &[&[u8]]) -> Translated {
    match spec.format {
        Format::Json { ignorecase } => translate_json(ignorecase, columns, records),
        _ => translate_delimited(spec, columns, records),
    }
}

fn translate_json(ignorecase: bool, columns: &[String], records: &[&[u8]]) -> Translated {
    let mut out = Translated::default();
    let lower: Vec<String> = columns.iter().map(|c| c.to_lowercase()).collect();
    for (idx, raw) in records.iter().enumerate() {
        let mut rows = Vec::new();
        let mut failure = None;
        for v in serde_json::Deserializer::from_slice(raw).into_iter::<Value>() {
            match v {
                Ok(Value::Object(m)) => {
                    let mut fields: Vec<Option<String>> = vec![None; columns.len()];
                    for (k, v) in &m {
                        let at = if ignorecase {
                            let k = k.to_lowercase();
                            lower.iter().position(|c| *c == k)
                        } else {
                            columns.iter().position(|c| c == k)
                        };
                        if let Some(at) = at {
                            fields[at] = json_text(v);
                        }
                    }
                    if fields.iter().flatten().any(|f| f.contains('\0')) {
                        failure = Some(NUL_REFUSED.to_string());
                        break;
                    }
                    rows.push(fields);
                }
                Ok(other) => {
                    failure = Some(format!(
                        "JSON 'auto' reads objects; the record holds a JSON {}.",
                        match other {
                            Value::Array(_) => "array",
                            Value::String(_) => "string",
                            Value::Number(_) => "number",
                            Value::Bool(_) => "boolean",
                            _ => "null",
                        }
                    ));
                    break;
                }
                Err(e) => {
                    failure = Some(format!("The record is not valid JSON: {e}"));
                    break;
                }
            }
        }
        match failure {
            Some(message) => out.errors.push(RowError {
                record: idx,
                raw: raw.to_vec(),
                message,
            }),
            None => {
                for r in rows {
                    let fields: Vec<Option<&str>> = r.iter().map(|f| f.as_deref()).collect();
                    write_row(&mut out.csv, &fields);
                    out.rows += 1;
                }
            }
        }
    }
    out
}

fn translate_delimited(spec: &CopySpec, columns: &[String], records: &[&[u8]]) -> Translated {
    let mut out = Translated::default();
    let file: Vec<u8> = records.concat();
    // Where each record ends in the file, to name the record of a bad line.
    let mut ends = Vec::with_capacity(records.len());
    let mut at = 0;
    for r in records {
        at += r.len();
        ends.push(at);
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(spec.delimiter)
        .quote(spec.quote)
        .quoting(spec.format == Format::Csv)
        .double_quote(true)
        .from_reader(&file[..]);
    let mut row = csv::ByteRecord::new();
    let mut line = 0u64;
    loop {
        let start = reader.position().byte() as usize;
        match reader.read_byte_record(&mut row) {
            Ok(false) => break,
            Ok(true) => {
                line += 1;
                if line <= spec.ignore_header {
                    continue;
                }
                let end = (reader.position().byte() as usize).min(file.len());
                let record = ends
                    .partition_point(|&e| e <= start)
                    .min(records.len().saturating_sub(1));
                let raw = || file[start.min(end)..end].to_vec();
                if row.len() != columns.len() {
                    out.errors.push(RowError {
                        record,
                        raw: raw(),
                        message: format!(
                            "The line has {} fields; the COPY loads {} columns.",
                            row.len(),
                            columns.len()
                        ),
                    });
                    continue;
                }
                let mut fields = Vec::with_capacity(row.len());
                let mut bad = None;
                for f in row.iter() {
                    match std::str::from_utf8(f) {
                        Ok(s) if s.contains('\0') => {
                            bad = Some(NUL_REFUSED.to_string());
                            break;
                        }
                        Ok(s) if s == spec.null_as => fields.push(None),
                        Ok(s) => fields.push(Some(s)),
                        Err(_) => {
                            bad = Some("The line is not valid UTF-8.".to_string());
                            break;
                        }
                    }
                }
                if let Some(message) = bad {
                    out.errors.push(RowError {
                        record,
                        raw: raw(),
                        message,
                    });
                    continue;
                }
                write_row(&mut out.csv, &fields);
                out.rows += 1;
            }
            Err(e) => {
                // The reader cannot go past a broken file: the rest of it
                // is one error.
                let record = ends
                    .partition_point(|&e| e <= start)
                    .min(records.len().saturating_sub(1));
                out.errors.push(RowError {
                    record,
                    raw: file[start.min(file.len())..].to_vec(),
                    message: format!("The file cannot be read from here: {e}"),
                });
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_users_write_parse() {
        let s = parse("json 'auto'").unwrap();
        assert_eq!(s.format, Format::Json { ignorecase: false });
        let s = parse("FORMAT AS JSON 'auto ignorecase' GZIP TIMEFORMAT 'auto'").unwrap();
        assert_eq!(s.format, Format::Json { ignorecase: true });
        assert!(s.gzip && s.time_auto);
        let s = parse("CSV DELIMITER ';' IGNOREHEADER 1 NULL AS 'NA' QUOTE AS '''';").unwrap();
        assert_eq!(
            (
                s.format,
                s.delimiter,
                s.ignore_header,
                s.null_as.as_str(),
                s.quote
            ),
            (Format::Csv, b';', 1, "NA", b'\'')
        );
        let s = parse("format as csv").unwrap();
        assert_eq!((s.format, s.delimiter), (Format::Csv, b','));
        let s = parse("delimiter '\\t'").unwrap();
        assert_eq!((s.format, s.delimiter), (Format::Text, b'\t'));
        assert_eq!(parse("").unwrap(), CopySpec::default());
    }

    #[test]
    fn other_options_are_refused_by_name() {
        for (opts, named) in [
            ("MAXERROR 10", "MAXERROR"),
            ("JSON 's3://bucket/paths.json'", "JSONPaths"),
            ("FORMAT AS PARQUET", "PARQUET"),
            ("TIMEFORMAT 'epochsecs'", "epochsecs"),
            ("CSV JSON 'auto'", "together"),
            ("QUOTE AS '\"'", "only with CSV"),
            ("DELIMITER '||'", "one ASCII"),
            ("IGNOREHEADER x", "IGNOREHEADER"),
            ("NULL AS", "needs a value"),
            ("JSON 'auto", "unterminated"),
        ] {
            let e = parse(opts).unwrap_err();
            assert!(e.contains(named), "{opts}: {e}");
        }
    }

    #[test]
    fn json_keys_map_to_columns() {
        let c = cols(&["id", "name", "tags"]);
        let recs: Vec<&[u8]> = vec![
            br#"{"id": 1, "name": "a\"b", "extra": true}"#,
            br#"{"ID": 2, "Name": null, "tags": [1,2]}{"id": 3}"#,
            b"not json",
            b"[1]",
        ];
        let t = translate(&parse("JSON 'auto'").unwrap(), &c, &recs);
        assert_eq!(
            String::from_utf8(t.csv).unwrap(),
            "\"1\",\"a\"\"b\",\n,,\"[1,2]\"\n\"3\",,\n"
        );
        assert_eq!(t.rows, 3);
        assert_eq!(
            t.errors.iter().map(|e| e.record).collect::<Vec<_>>(),
            [2, 3]
        );
        // A NUL would fail the whole COPY: that record goes alone.
        let nul: Vec<&[u8]> = vec![br#"{"id": 1, "name": "a\u0000b"}"#, br#"{"id": 2}"#];
        let t = translate(&parse("JSON 'auto'").unwrap(), &c, &nul);
        assert_eq!((t.rows, t.errors.len(), t.errors[0].record), (1, 1, 0));
        let text: Vec<&[u8]> = vec![b"1|a\0b\n", b"2|c\n"];
        let t = translate(&CopySpec::default(), &c[..2], &text);
        assert_eq!((t.rows, t.errors.len()), (1, 1));
        let t = translate(&parse("JSON 'auto ignorecase'").unwrap(), &c, &recs[1..2]);
        assert_eq!(
            String::from_utf8(t.csv).unwrap(),
            "\"2\",,\"[1,2]\"\n\"3\",,\n"
        );
    }

    #[test]
    fn delimited_lines_become_rows() {
        let c = cols(&["a", "b"]);
        let spec = parse("CSV DELIMITER ';' IGNOREHEADER 1 NULL AS 'NA'").unwrap();
        let recs: Vec<&[u8]> = vec![b"a;b\n", b"1;\"x;y\"\n", b"2;NA\n3\n", b"4;\"\"\n"];
        let t = translate(&spec, &c, &recs);
        assert_eq!(
            String::from_utf8(t.csv).unwrap(),
            "\"1\",\"x;y\"\n\"2\",\n\"4\",\"\"\n"
        );
        assert_eq!(t.errors.len(), 1);
        assert_eq!((t.errors[0].record, &t.errors[0].raw[..]), (2, &b"3\n"[..]));
        // Text: pipes, no quoting, \N is NULL.
        let t = translate(&CopySpec::default(), &c, &[b"x|\"q\"\n", b"y|\\N\n"]);
        assert_eq!(
            String::from_utf8(t.csv).unwrap(),
            "\"x\",\"\"\"q\"\"\"\n\"y\",\n"
        );
    }
}

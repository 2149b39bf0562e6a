//! MetadataExtraction's JQ-1.6 queries, evaluated with `jaq`: compiled
//! once per query text (at CreateDeliveryStream / UpdateDestination, where
//! a query that does not compile is an InvalidArgumentException), then run
//! on every record of a dynamically partitioned stream.
//!
//! A query is configured through the API, so what it may do is bounded
//! before it is compiled. Refused, by the tokens of the query:
//! - recursion and unbounded generators: `..`, `recurse`, `range`,
//!   `repeat`, `while`, `until`, `limit`, `combinations`, `paths`,
//!   `leaf_paths`, `walk`, user definitions (`def`), `reduce`, `foreach`,
//!   `label`;
//! - the outside world: `input`, `inputs`, `env`, `$ENV`, `$__loc__`,
//!   `$__prog_args`, `input_filename`, `debug`, `stderr`, `halt`,
//!   `halt_error`, `import`, `include`;
//! - `*` (string repetition allocates without bound: `"a" * 1e12`).
//!
//! Only the query's first output is read, and each key's value is bounded
//! ([`MAX_VALUE_BYTES`]). What remains is linear in the record's size (at
//! most 1,000 KiB) except queries that combine several generators (`,`
//! or `.[]` on both sides of an operator); those are the stream owner's own
//! cost and run on the blocking pool, off the request path.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use jaq_core::load::lex::{StrPart, Tok, Token};
use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, data, unwrap_valr};
use jaq_json::Val;
use parking_lot::Mutex;

/// The longest value a partition key may take (the whole S3 key is at most
/// 1,024 bytes).
pub const MAX_VALUE_BYTES: usize = 512;

/// Names a query may not use (see the module documentation).
const DENIED_WORDS: &[&str] = &[
    "def",
    "reduce",
    "foreach",
    "label",
    "import",
    "include",
    "recurse",
    "range",
    "repeat",
    "while",
    "until",
    "limit",
    "combinations",
    "paths",
    "leaf_paths",
    "walk",
    "input",
    "inputs",
    "env",
    "input_filename",
    "debug",
    "stderr",
    "halt",
    "halt_error",
    // Bindings multiply generators (`.[] as $a | .[] as $b | ...`).
    "as",
    // Serializing can double a value per call; time functions make a
    // retried flush split records differently from its first attempt.
    "tojson",
    "fromjson",
    "now",
    "localtime",
    "strflocaltime",
    "mktime",
    "input_line_number",
];

/// The deepest nesting of brackets a query or a record may have: jaq reads
/// and parses recursively, and a stack overflow aborts the process (a
/// record that did so would do it again on every restart).
pub const MAX_NESTING: usize = 128;

/// The most `+` a query may hold: `.+.` repeated doubles a value each time.
const MAX_PLUS: usize = 8;

/// Whether brackets in `text` nest deeper than `max`. With `json`, brackets
/// inside JSON strings are not counted; a query's brackets all count (a
/// query that deep is not one anybody writes).
pub fn nests_deeper_than(text: &[u8], max: usize, json: bool) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in text {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' if json => in_string = true,
            b'[' | b'{' | b'(' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

const DENIED_VARS: &[&str] = &["$ENV", "$__loc__", "$__prog_args"];

const DENIED_SYMS: &[&str] = &["..", "*", "*="];

type Filter = jaq_core::compile::Filter<jaq_core::Native<data::JustLut<Val>>>;

/// A compiled MetadataExtractionQuery.
pub struct Query {
    text: String,
    filter: Filter,
}

impl std::fmt::Debug for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Query").field("text", &self.text).finish()
    }
}

impl PartialEq for Query {
    fn eq(&self, o: &Query) -> bool {
        self.text == o.text
    }
}
impl Eq for Query {}

/// Why a record has no partition keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("The record is not valid JSON: {0}")]
    NotJson(String),
    #[error("The query failed on the record: {0}")]
    Failed(String),
    #[error("The query produced no output for the record.")]
    NoOutput,
    #[error("The query's output is not a JSON object: {0}")]
    NotObject(String),
    #[error("The value of partition key {0} is {1}, not a string, number or boolean.")]
    BadValue(String, String),
    #[error("The value of partition key {0} is longer than {MAX_VALUE_BYTES} bytes.")]
    TooLong(String),
}

fn check_tokens(tokens: &[Token<&str>]) -> Result<(), String> {
    for Token(s, tok) in tokens {
        match tok {
            Tok::Word if DENIED_WORDS.contains(s) => {
                return Err(format!(
                    "'{s}' is not allowed in a MetadataExtractionQuery on this server (recursion, unbounded generators, definitions and I/O are refused)."
                ));
            }
            Tok::Var if DENIED_VARS.contains(s) => {
                return Err(format!(
                    "'{s}' is not allowed in a MetadataExtractionQuery on this server."
                ));
            }
            Tok::Sym if DENIED_SYMS.contains(s) => {
                return Err(format!(
                    "'{s}' is not allowed in a MetadataExtractionQuery on this server (recursion and repetition are refused)."
                ));
            }
            Tok::Block(inner) => check_tokens(inner)?,
            Tok::Str(parts) => {
                for p in parts {
                    if let StrPart::Term(t) = p {
                        check_tokens(std::slice::from_ref(t))?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Compiled queries by text: a stream's destination is re-read often, its
/// query compiled once.
fn cache() -> &'static Mutex<HashMap<String, Arc<Query>>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Query>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Compiles a query (or returns the one compiled before); the error is the
/// InvalidArgumentException's message.
pub fn compile(text: &str) -> Result<Arc<Query>, String> {
    if let Some(q) = cache().lock().get(text) {
        return Ok(q.clone());
    }
    if nests_deeper_than(text.as_bytes(), MAX_NESTING / 2, false) {
        return Err(format!(
            "The MetadataExtractionQuery nests brackets deeper than {}.",
            MAX_NESTING / 2
        ));
    }
    if text.matches('+').count() > MAX_PLUS {
        return Err(format!(
            "The MetadataExtractionQuery uses + more than {MAX_PLUS} times (each can double a value)."
        ));
    }
    let tokens = jaq_core::load::lex::Lexer::new(text).lex().map_err(|_| {
        format!("The MetadataExtractionQuery {text:?} is not a valid jq expression.")
    })?;
    check_tokens(&tokens)?;
    let defs = jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs());
    let funs = jaq_core::funs()
        .chain(jaq_std::funs())
        .chain(jaq_json::funs());
    let loader = Loader::new(defs);
    let arena = Arena::default();
    let modules = loader
        .load(
            &arena,
            File {
                code: text,
                path: (),
            },
        )
        .map_err(|_| {
            format!("The MetadataExtractionQuery {text:?} is not a valid jq expression.")
        })?;
    let filter = Compiler::default()
        .with_funs(funs)
        .compile(modules)
        .map_err(|errs| {
            let names: Vec<String> = errs
                .iter()
                .flat_map(|(_, es)| es.iter().map(|(name, _)| (*name).to_string()))
                .collect();
            format!(
                "The MetadataExtractionQuery {text:?} does not compile: undefined {}.",
                names.join(", ")
            )
        })?;
    let q = Arc::new(Query {
        text: text.to_string(),
        filter,
    });
    let mut c = cache().lock();
    // Bounded: the texts are those of configured streams (and refused ones
    // are never cached); a server with more distinct queries than this
    // starts over rather than growing.
    if c.len() >= 10_000 {
        c.clear();
    }
    c.insert(text.to_string(), q.clone());
    Ok(q)
}

/// The keys an object-construction query (`{a: .x, "b": .y}`) produces, when
/// every key is a literal; `None` when they depend on the data.
pub fn literal_keys(text: &str) -> Option<Vec<String>> {
    use jaq_core::load::parse::Term;
    let term = jaq_core::load::parse(text, |p| p.term())?;
    let Term::Obj(entries) = term else {
        return None;
    };
    let mut out = Vec::new();
    for (k, _) in &entries {
        match k {
            Term::Str(None, parts) => match &parts[..] {
                [StrPart::Str(s)] => out.push((*s).to_string()),
                [] => out.push(String::new()),
                _ => return None,
            },
            Term::Call(name, args) if args.is_empty() => out.push((*name).to_string()),
            Term::Var(v) => out.push(v.trim_start_matches('$').to_string()),
            _ => return None,
        }
    }
    Some(out)
}

/// A partition key's value as it appears in the prefix.
fn render(key: &str, v: &Val) -> Result<String, EvalError> {
    let s = match v {
        Val::TStr(b) | Val::BStr(b) => String::from_utf8_lossy(b).into_owned(),
        Val::Num(_) | Val::Bool(_) => v.to_string(),
        other => {
            let t = other.to_string();
            let t: String = t.chars().take(64).collect();
            return Err(EvalError::BadValue(key.to_string(), t));
        }
    };
    if s.len() > MAX_VALUE_BYTES {
        return Err(EvalError::TooLong(key.to_string()));
    }
    // Control characters in a key would forge log lines and break the XML
    // of a bucket listing.
    if s.chars().any(char::is_control) {
        return Err(EvalError::BadValue(
            key.to_string(),
            "a string with control characters".into(),
        ));
    }
    Ok(s)
}

impl Query {
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The partition keys of one record: the query's first output, an
    /// object of scalar values.
    pub fn eval(&self, record: &[u8]) -> Result<BTreeMap<String, String>, EvalError> {
        if nests_deeper_than(record, MAX_NESTING, true) {
            return Err(EvalError::NotJson(format!(
                "the record nests deeper than {MAX_NESTING} levels"
            )));
        }
        let input = jaq_json::read::parse_single(record.trim_ascii())
            .map_err(|e| EvalError::NotJson(e.to_string()))?;
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        let first = self
            .filter
            .id
            .run((ctx, input))
            .map(unwrap_valr)
            .next()
            .ok_or(EvalError::NoOutput)?
            .map_err(|e| {
                let m = e.to_string();
                EvalError::Failed(m.chars().take(256).collect())
            })?;
        let Val::Obj(map) = &first else {
            let t: String = first.to_string().chars().take(64).collect();
            return Err(EvalError::NotObject(t));
        };
        let mut out = BTreeMap::new();
        for (k, v) in map.iter() {
            let key = match k {
                Val::TStr(b) | Val::BStr(b) => String::from_utf8_lossy(b).into_owned(),
                other => other.to_string(),
            };
            if v == &Val::Null {
                // A missing field: the key is absent (partitioning fails if
                // the prefix uses it).
                continue;
            }
            let value = render(&key, v)?;
            out.insert(key, value);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(q: &str, r: &str) -> Result<BTreeMap<String, String>, EvalError> {
        compile(q).unwrap().eval(r.as_bytes())
    }

    #[test]
    fn awss_examples_evaluate() {
        let r = r#"{"type":{"device":"mobile","event":"click"},"customer_id":"1234567890","event_timestamp":1565382027,"region":"sample_region"}"#;
        let k = keys(
            r#"{customer_id: .customer_id, device: .type.device, year: .event_timestamp| strftime("%Y"), month: .event_timestamp| strftime("%m"), hour: .event_timestamp|strftime("%H")}"#,
            r,
        )
        .unwrap();
        assert_eq!(k["customer_id"], "1234567890");
        assert_eq!(k["device"], "mobile");
        assert_eq!(k["year"], "2019");
        assert_eq!(k["month"], "08");
        assert_eq!(k["hour"], "20");
        // Numbers and booleans are rendered; a missing field is no key.
        let k = keys("{n: .n, b: .b, m: .missing}", r#"{"n": 42, "b": true}"#).unwrap();
        assert_eq!(
            k.into_iter().collect::<Vec<_>>(),
            vec![("b".into(), "true".into()), ("n".into(), "42".into())]
        );
    }

    #[test]
    fn failures_are_typed() {
        assert!(matches!(
            keys("{a: .a}", "not json"),
            Err(EvalError::NotJson(_))
        ));
        assert!(matches!(
            keys(".a", r#"{"a": 1}"#),
            Err(EvalError::NotObject(_))
        ));
        assert!(matches!(
            keys("{a: .a}", r#"{"a": [1]}"#),
            Err(EvalError::BadValue(..))
        ));
        assert!(matches!(
            keys("{a: .a.b}", r#"{"a": 1}"#),
            Err(EvalError::Failed(_))
        ));
        assert!(matches!(keys("empty", "{}"), Err(EvalError::NoOutput)));
        let long = format!(r#"{{"a": "{}"}}"#, "x".repeat(MAX_VALUE_BYTES + 1));
        assert!(matches!(keys("{a: .a}", &long), Err(EvalError::TooLong(_))));
        assert!(matches!(
            keys("{a: .a}", r#"{"a": "x\ny"}"#),
            Err(EvalError::BadValue(..))
        ));
    }

    #[test]
    fn dangerous_and_invalid_queries_are_refused() {
        for q in [
            "..",
            "[recurse]",
            "{a: [range(1e9)]}",
            "{a: [repeat(1)]}",
            "def f: f; f",
            "{a: $__loc__}",
            "{a: $ENV.HOME}",
            "{a: env.HOME}",
            "{a: input}",
            "{a: (\"x\" * 1000000000)}",
            "reduce .[] as $x (0; . + $x)",
            "{a: [limit(3; .[])]}",
            "{a: (\"\\(..)\")}",
            "{a: .a | until(. > 3; . + 1)}",
            "{a: ([.[] as $a | .[] as $b | 1] | length)}",
            "{a: (.s | tojson | tojson)}",
            "{a: (now | tostring)}",
        ] {
            let e = compile(q).unwrap_err();
            assert!(e.contains("not allowed"), "{q}: {e}");
        }
        for q in ["{a: .a", "{a: nosuch}", "{a: .a | strftime}"] {
            let e = compile(q).unwrap_err();
            assert!(e.contains("MetadataExtractionQuery"), "{q}: {e}");
        }
        let doubling = format!("{{a: (.s{})}}", "|.+.".repeat(MAX_PLUS + 1));
        assert!(compile(&doubling).unwrap_err().contains("uses +"));
        let deep = format!(
            "{{a: {}{}}}",
            "[".repeat(MAX_NESTING),
            "]".repeat(MAX_NESTING)
        );
        assert!(compile(&deep).unwrap_err().contains("nests"));
        // A record too deep for the recursive reader fails as not JSON,
        // without reaching it (it would overflow the stack).
        let bomb = "[".repeat(100_000);
        assert!(matches!(keys("{a: .a}", &bomb), Err(EvalError::NotJson(_))));
        let quoted = format!(r#"{{"a": "{}"}}"#, "[".repeat(1000));
        assert_eq!(keys("{a: .a | length}", &quoted).unwrap()["a"], "1000");
        // A field named like a denied function is fine.
        assert!(compile("{r: .range}").is_ok());
        assert!(compile("{r: .range}").unwrap() == compile("{r: .range}").unwrap());
    }

    #[test]
    fn literal_keys_of_object_queries() {
        assert_eq!(
            literal_keys(r#"{a: .x, "b": .y, $c}"#),
            Some(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(literal_keys("{(.k): .v}"), None);
        assert_eq!(literal_keys(".a"), None);
    }
}

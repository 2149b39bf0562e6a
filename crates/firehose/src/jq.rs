//! MetadataExtraction's JQ-1.6 queries, evaluated with `jaq`: checked and
//! compiled once per query text (at CreateDeliveryStream / UpdateDestination,
//! where a query that is refused or does not compile is an
//! InvalidArgumentException), then run on every record of a dynamically
//! partitioned stream.
//!
//! A query is request input that the server runs on records of up to
//! 1,000 KiB, so it is bounded by construction rather than by a list of what
//! is dangerous: [`bound`] accepts a subset of jq (paths, literals, objects,
//! arrays, interpolation, `|`, `,`, arithmetic but `*`, comparisons, `and`,
//! `or`, `//`, `if`, `try`, `?` and a list of linear builtins) and a
//! structural rule (no generator paired with anything, no variables, bounded
//! copies and passes) under which an evaluation is linear in the record's size;
//! its documentation has the argument. Around it: the query's text is at most
//! [`MAX_NESTING`]/2 brackets deep and [`MAX_TOKENS`] tokens long (jaq parses,
//! compiles and runs recursively), and a record is read only if it nests at
//! most [`MAX_NESTING`] deep and has no integer of more than [`MAX_DIGITS`]
//! digits. Only the query's first output is read, each key's value is bounded
//! ([`MAX_VALUE_BYTES`]), and what is reported of a failure is cut short
//! without formatting the rest.

mod bound;

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::sync::{Arc, OnceLock};

use jaq_core::load::lex::{StrPart, Tok, Token};
use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, data, unwrap_valr};
use jaq_json::Val;
use parking_lot::Mutex;

/// The longest value a partition key may take (the whole S3 key is at most
/// 1,024 bytes).
pub const MAX_VALUE_BYTES: usize = 512;

/// The deepest nesting of brackets a query or a record may have: jaq reads
/// and parses recursively, and a stack overflow aborts the process (a
/// record that did so would do it again on every restart).
pub const MAX_NESTING: usize = 128;

/// The most tokens a query may have: jaq parses, compiles and runs a chain of
/// operators (`- - - 1`, `.a | .a | ...`) recursively.
pub const MAX_TOKENS: usize = 1000;

/// The most digits an integer in a record may have: jaq reads integers into
/// big integers, in time quadratic in their digits (a 900 KB integer takes
/// about a second).
pub const MAX_DIGITS: usize = 1000;

/// The most keys a query's output object may have. Beyond the static
/// bound, a run-time one: `.` or `.a` on a record yields an object with as
/// many keys as the record has, and no S3 prefix uses that many.
pub const MAX_KEYS: usize = 50;

/// How much of a value or an error a message shows.
const PREVIEW: usize = 64;

/// Definitions that replace jaq's own. jaq's `tonumber` parses any JSON
/// (`"[[[[..." | tonumber` recursed until the stack overflowed) and any
/// number of digits; this one reads a number and nothing else.
const OVERRIDES: &str = r#"
def tonumber:
  if isnumber then .
  elif isstring and utf8bytelength <= 1000
    and test("^\\s*-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][-+]?[0-9]+)?\\s*$")
  then fromjson
  else error("cannot parse as number") end;
"#;

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

/// Why a record is not given to jaq: it nests too deep, or holds too long
/// an integer (digits outside strings).
fn unreadable(record: &[u8]) -> Option<String> {
    if nests_deeper_than(record, MAX_NESTING, true) {
        return Some(format!("the record nests deeper than {MAX_NESTING} levels"));
    }
    let (mut in_string, mut escaped, mut digits) = (false, false, 0usize);
    for &b in record {
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
        if b.is_ascii_digit() {
            digits += 1;
            if digits > MAX_DIGITS {
                return Some(format!(
                    "the record holds a number of more than {MAX_DIGITS} digits"
                ));
            }
        } else {
            digits = 0;
            in_string = b == b'"';
        }
    }
    None
}

/// The tokens of a lexed query, counting those inside blocks and strings.
fn count_tokens(tokens: &[Token<&str>]) -> usize {
    tokens
        .iter()
        .map(|Token(_, tok)| {
            1 + match tok {
                Tok::Block(inner) => count_tokens(inner),
                Tok::Str(parts) => parts
                    .iter()
                    .map(|p| match p {
                        StrPart::Term(t) => count_tokens(std::slice::from_ref(t)),
                        _ => 0,
                    })
                    .sum(),
                _ => 0,
            }
        })
        .sum()
}

/// A `fmt::Write` that keeps the first `max` bytes and then stops the
/// formatting (an error's or a value's `Display` writes piece by piece, so
/// a large value is not formatted beyond what is shown).
struct Preview {
    out: String,
    max: usize,
}

impl fmt::Write for Preview {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.max - self.out.len();
        if s.len() <= room {
            self.out.push_str(s);
            return Ok(());
        }
        let mut cut = room;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        self.out.push_str(&s[..cut]);
        Err(fmt::Error)
    }
}

fn preview(v: &impl fmt::Display, max: usize) -> String {
    let mut p = Preview {
        out: String::new(),
        max,
    };
    // An error here is the preview being full.
    let _ = write!(p, "{v}");
    p.out
}

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
    #[error("The query's output has more than {MAX_KEYS} keys.")]
    TooManyKeys,
    #[error("The query's output has a key longer than {MAX_VALUE_BYTES} bytes: {0}")]
    KeyTooLong(String),
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
    let invalid = || format!("The MetadataExtractionQuery {text:?} is not a valid jq expression.");
    let tokens = jaq_core::load::lex::Lexer::new(text)
        .lex()
        .map_err(|_| invalid())?;
    if count_tokens(&tokens) > MAX_TOKENS {
        return Err(format!(
            "The MetadataExtractionQuery has more than {MAX_TOKENS} tokens."
        ));
    }
    // A module header (`import`, `include`) does not parse as a term, and is
    // refused with the rest.
    let term = jaq_core::load::parse(text, |p| p.term()).ok_or_else(invalid)?;
    bound::check(&term)?;
    let overrides = jaq_core::load::parse(OVERRIDES, |p| p.defs()).unwrap_or_default();
    let defs = jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs())
        .chain(overrides);
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
        .map_err(|_| invalid())?;
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
        Val::TStr(b) | Val::BStr(b) => {
            // Checked before the copy (a lossy copy only grows).
            if b.len() > MAX_VALUE_BYTES {
                return Err(EvalError::TooLong(key.to_string()));
            }
            String::from_utf8_lossy(b).into_owned()
        }
        Val::Num(_) | Val::Bool(_) => preview(v, MAX_VALUE_BYTES + 1),
        other => {
            return Err(EvalError::BadValue(
                key.to_string(),
                preview(other, PREVIEW),
            ));
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
        if let Some(why) = unreadable(record) {
            return Err(EvalError::NotJson(why));
        }
        let input = jaq_json::read::parse_single(record.trim_ascii())
            .map_err(|e| EvalError::NotJson(preview(&e, 256)))?;
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        let first = self
            .filter
            .id
            .run((ctx, input))
            .map(unwrap_valr)
            .next()
            .ok_or(EvalError::NoOutput)?
            .map_err(|e| EvalError::Failed(preview(&e, 256)))?;
        let Val::Obj(map) = &first else {
            return Err(EvalError::NotObject(preview(&first, PREVIEW)));
        };
        if map.len() > MAX_KEYS {
            return Err(EvalError::TooManyKeys);
        }
        let mut out = BTreeMap::new();
        for (k, v) in map.iter() {
            let key = match k {
                Val::TStr(b) | Val::BStr(b) if b.len() <= MAX_VALUE_BYTES => {
                    String::from_utf8_lossy(b).into_owned()
                }
                other => return Err(EvalError::KeyTooLong(preview(other, PREVIEW))),
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
        // As AWS's console writes them, without spaces.
        let k = keys(
            r#"{customer_id:.customer_id,device:.type.device,year:.event_timestamp|strftime("%Y")}"#,
            r,
        )
        .unwrap();
        assert_eq!(
            (
                k["customer_id"].as_str(),
                k["device"].as_str(),
                k["year"].as_str()
            ),
            ("1234567890", "mobile", "2019")
        );
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
        // Run-time bounds on the output: its keys, and their length.
        let wide: Vec<String> = (0..=MAX_KEYS).map(|i| format!(r#""k{i}": {i}"#)).collect();
        let wide = format!("{{{}}}", wide.join(","));
        assert!(matches!(keys(".", &wide), Err(EvalError::TooManyKeys)));
        let narrow: Vec<String> = (0..MAX_KEYS).map(|i| format!(r#""k{i}": {i}"#)).collect();
        let narrow = format!("{{{}}}", narrow.join(","));
        assert_eq!(keys(".", &narrow).unwrap().len(), MAX_KEYS);
        let long_key = format!(r#"{{"k": "{}"}}"#, "x".repeat(MAX_VALUE_BYTES + 1));
        assert!(matches!(
            keys("{(.k): 1}", &long_key),
            Err(EvalError::KeyTooLong(_))
        ));
    }

    /// Each query with (part of) the reason it is refused.
    const REFUSED: &[(&str, &str)] = &[
        // Generators paired with the record: quadratic.
        (
            "{a: ([.[] + .[]] | length)}",
            "more than one output as an operand of +",
        ),
        ("{a: ([.[] == .[]] | length)}", "operand of a comparison"),
        ("{a: ([.a[] + .s] | length)}", "operand of +"),
        ("{a: ([.[] and .x] | length)}", "operand of and"),
        ("{a: (.[] // .x)}", "operand of //"),
        ("{a: .[], b: .x}", "as an object value"),
        (
            "{k: (.items[] | select(.price > 20) | .name)}",
            "as an object value",
        ),
        ("{(.[]): 1}", "as an object key"),
        (r#"{a: "\(.[])\(.x)"}"#, "as an interpolated value"),
        ("{a: (if .[] then 1 else 2 end)}", "as an if condition"),
        ("{a: ([select(.[])] | length)}", "the condition of select"),
        (
            "{a: ([.a[] | select(.[] == 1)] | length)}",
            "operand of a comparison",
        ),
        ("{a: (.[] | -(.[]))}", "the operand of -"),
        ("{a: (.a | sort_by(.[]))}", "the argument of sort_by"),
        ("{a: any(.[]; .[])}", "the condition of any"),
        // Variables and bindings.
        ("{a: ([.[] as $x | .[] | $x] | length)}", "`as`"),
        ("{a: $__loc__}", "variable `$__loc__`"),
        ("{a: $ENV.HOME}", "variable `$ENV`"),
        ("{$__loc__}", "variable `$__loc__`"),
        ("reduce .[] as $x (0; . + $x)", "`reduce`"),
        ("{a: [foreach .[] as $x (0; . + 1)]}", "`foreach`"),
        ("def f: f; f", "`def`"),
        ("{a: (label $out | 1)}", "`label`"),
        // Recursion, unbounded generators, the outside world.
        ("..", "`..`"),
        (r#"{a: ("\(..)")}"#, "`..`"),
        ("{a: [recurse]}", "`recurse/0`"),
        ("{a: [range(1e9)]}", "`range/1`"),
        ("{a: [repeat(1)]}", "`repeat/1`"),
        ("{a: .a | until(. > 3; . + 1)}", "`until/2`"),
        ("{a: walk(.)}", "`walk/1`"),
        ("{a: [paths]}", "`paths/0`"),
        ("{a: (.a | flatten)}", "`flatten/0`"),
        ("{a: env.HOME}", "`env/0`"),
        ("{a: input}", "`input/0`"),
        ("{a: input_filename}", "`input_filename/0`"),
        ("{a: (now | tostring)}", "the clock"),
        ("{a: (.t | localtime | mktime)}", "the clock"),
        ("{a: (.s | fromjson)}", "`fromjson/0`"),
        ("{a: (.s | explode)}", "`explode/0`"),
        ("{a: foo::bar}", "modules"),
        // Quadratic or unbounded builtins and operators.
        (r#"{a: (.s | gsub(","; ""))}"#, "split("),
        (r#"{a: (.s | sub(","; ""; "g"))}"#, "with the g flag"),
        (r#"{a: ("x" * 1000000000)}"#, "`*`"),
        ("{a: (.s * 2)}", "`*`"),
        (r#"{a: (.s | @sh)}"#, "`@sh/0`"),
        (r#"{a: @sh "\(.s)"}"#, "`@sh`"),
        // Computed arguments and indices.
        ("{a: .[.k]}", "computed index"),
        ("{a: .s[.i:]}", "computed index"),
        (
            "{a: (.s | split(.sep) | length)}",
            "computed argument of `split`",
        ),
        (
            "{a: (.s | ltrimstr(.p))}",
            "computed argument of `ltrimstr`",
        ),
        ("{a: (.a | join(.sep))}", "computed argument of `join`"),
        ("{a: (.s | test(.re))}", "computed regular expression"),
        (r#"{a: (.s | test("a"; .f))}"#, "Computed flags"),
        ("{a: ([limit(.n; .[])] | length)}", "`limit/2`"),
        ("{a: ([limit(2; .[])] | length)}", "`limit/2`"),
        // Regexes: too large an automaton, bad flags, invalid.
        (r#"{a: (.s | test("[a-z]{1000}"))}"#, "automaton"),
        (r#"{a: (.s | test("a"; "q"))}"#, "not one of g, i"),
        (r#"{a: (.s | test("("))}"#, "is refused"),
        // Updates.
        ("{a: (.a = 1)}", "assignment"),
        ("{a: (.a |= 1)}", "assignment"),
        ("{a: (.a += 1)}", "assignment"),
    ];

    #[test]
    fn adversarial_queries_are_refused_with_their_reason() {
        for (q, why) in REFUSED {
            let e = compile(q).unwrap_err();
            assert!(e.contains(why), "{q}: {e}");
            assert!(e.contains("MetadataExtractionQuery"), "{q}: {e}");
        }
        // Doubling chains stop at the copies bound: 2^6 copies of the record.
        let q = format!("{{a: ([.{}] | tostring | length)}}", " | (., .)".repeat(6));
        assert!(compile(&q).unwrap_err().contains("copy the record"), "{q}");
        let q = format!("{{a: (.s{} | length)}}", " | tojson".repeat(6));
        assert!(compile(&q).unwrap_err().contains("copy the record"), "{q}");
        let q = format!("{{a: (.s{} | length)}}", " | . + .".repeat(6));
        assert!(compile(&q).unwrap_err().contains("copy the record"), "{q}");
        let q = format!(
            "{{a: (.{} | tostring | length)}}",
            " | {a: ., b: .}".repeat(6)
        );
        assert!(compile(&q).unwrap_err().contains("copy the record"), "{q}");
        // Passes add up even without copies.
        let q = format!(
            "{{a: (.s{} | length)}}",
            " | ascii_downcase".repeat(bound::MAX_PASSES as usize + 1)
        );
        assert!(compile(&q).unwrap_err().contains("read the record"), "{q}");
        let q = format!(
            "{{a: [{}]}}",
            vec![".a"; bound::MAX_COMMAS as usize + 2].join(", ")
        );
        assert!(compile(&q).unwrap_err().contains("uses , more than"), "{q}");
        let q = format!("{{a: (.a{})}}", " | .b".repeat(MAX_TOKENS / 2));
        assert!(compile(&q).unwrap_err().contains("tokens"), "{q}");
        let deep = format!(
            "{{a: {}{}}}",
            "[".repeat(MAX_NESTING),
            "]".repeat(MAX_NESTING)
        );
        assert!(compile(&deep).unwrap_err().contains("nests"));
        // Not jq, and not defined.
        for q in [
            "{a: .a",
            "{a: nosuch}",
            "{a: .a | strftime}",
            r#"include "x"; {a: .a}"#,
        ] {
            let e = compile(q).unwrap_err();
            assert!(e.contains("MetadataExtractionQuery"), "{q}: {e}");
        }
        // A field named like a refused function is fine, and a query is
        // compiled once.
        assert!(compile("{r: .range, e: .env, d: .def}").is_ok());
        assert!(compile("{r: .range}").unwrap() == compile("{r: .range}").unwrap());
    }

    #[test]
    fn records_that_jaq_cannot_read_safely_are_not_json() {
        // Too deep for the recursive reader: not reached (it would overflow
        // the stack).
        let bomb = "[".repeat(100_000);
        assert!(matches!(keys("{a: .a}", &bomb), Err(EvalError::NotJson(_))));
        let quoted = format!(r#"{{"a": "{}"}}"#, "[".repeat(1000));
        assert_eq!(keys("{a: .a | length}", &quoted).unwrap()["a"], "1000");
        // An integer whose reading is quadratic in its digits.
        let big = format!(r#"{{"a": 1, "n": {}}}"#, "7".repeat(MAX_DIGITS + 1));
        assert!(
            matches!(keys("{a: .a}", &big), Err(EvalError::NotJson(m)) if m.contains("digits"))
        );
        let digits = format!(
            r#"{{"a": "{}", "n": {}}}"#,
            "7".repeat(10_000),
            "7".repeat(MAX_DIGITS)
        );
        assert_eq!(keys("{a: .a | length}", &digits).unwrap()["a"], "10000");
        // tonumber reads numbers only: jaq's own parsed any JSON, and a
        // string of brackets overflowed the stack.
        let r = format!(
            r#"{{"s": "{}", "n": " 12.5 ", "i": "-3"}}"#,
            "[".repeat(100_000)
        );
        assert!(
            matches!(keys("{a: .s | tonumber}", &r), Err(EvalError::Failed(m)) if m.contains("cannot parse"))
        );
        let k = keys(
            "{n: .n | tonumber, i: .i | tonumber, x: (2 | tonumber)}",
            &r,
        )
        .unwrap();
        assert_eq!(
            (k["n"].as_str(), k["i"].as_str(), k["x"].as_str()),
            ("12.5", "-3", "2")
        );
        let long = format!(r#"{{"s": "{}"}}"#, "7".repeat(1001));
        assert!(matches!(
            keys("{a: .s | tonumber}", &long),
            Err(EvalError::Failed(_))
        ));
        // What a failure reports of a large value is cut short.
        let r = format!(r#"{{"a": [{}]}}"#, vec!["\"xxxxxxxx\""; 10_000].join(","));
        let Err(EvalError::BadValue(_, shown)) = keys("{a: .a}", &r) else {
            panic!("an array value")
        };
        assert!(shown.len() <= PREVIEW, "{shown}");
        let Err(EvalError::NotObject(shown)) = keys(".a", &r) else {
            panic!("not an object")
        };
        assert!(shown.len() <= PREVIEW, "{shown}");
        let Err(EvalError::Failed(shown)) = keys("{a: (.a | error)}", &r) else {
            panic!("an error")
        };
        assert!(shown.len() <= 256, "{shown}");
    }

    /// A record such as a caller would send, and queries that a Firehose
    /// user writes, each with the keys it yields.
    #[test]
    fn allowed_queries_evaluate_on_realistic_records() {
        let r = r#"{"type": {"device": "mobile", "event": "click"}, "customer_id": "1234567890",
            "event_timestamp": 1565382027, "ts_ms": 1565382027123, "time": "2019-08-09T20:20:27Z",
            "region": "Sample_Region", "path": "/shop/cart/add", "metric": {"cpu": 3},
            "tags": ["team:web", "env:prod", "tier:gold", "env:prod"], "amount": "12",
            "items": [{"name": "a", "kind": "x", "price": 12.5}, {"name": "b", "kind": "y", "price": 3},
                      {"name": "c", "kind": "x", "price": 40}],
            "msg": "WARN disk 91% full", "attrs": {"a": 1, "b": 2, "c": 1}}"#;
        let cases: &[(&str, &[(&str, &str)])] = &[
            (
                r#"{device: .type.device, year: .event_timestamp | strftime("%Y")}"#,
                &[("device", "mobile"), ("year", "2019")],
            ),
            (
                r#"{day: (.ts_ms / 1000 | floor | strftime("%Y-%m-%d"))}"#,
                &[("day", "2019-08-09")],
            ),
            (
                r#"{h: (.time | strptime("%Y-%m-%dT%H:%M:%SZ") | mktime | strftime("%H"))}"#,
                &[("h", "20")],
            ),
            (
                r#"{d: (.time | fromdate | todate)}"#,
                &[("d", "2019-08-09T20:20:27Z")],
            ),
            (
                r#"{data_type: (if has("metric") then "metric" else "report" end)}"#,
                &[("data_type", "metric")],
            ),
            (
                r#"{data_type: (.metric // .report | keys | first)}"#,
                &[("data_type", "cpu")],
            ),
            (
                r#"{env: (first(.tags[] | select(startswith("env:"))) | ltrimstr("env:"))}"#,
                &[("env", "prod")],
            ),
            (
                r#"{env: ([.tags[] | select(test("^env:"))] | unique | length)}"#,
                &[("env", "1")],
            ),
            (
                r#"{total: (.items | map(.price) | add)}"#,
                &[("total", "55.5")],
            ),
            (r#"{total: add(.items[].price)}"#, &[("total", "55.5")]),
            (
                r#"{k: ([.region, .type.device] | join("-") | ascii_downcase)}"#,
                &[("k", "sample_region-mobile")],
            ),
            (
                r#"{k: "\(.region)/\(.type.event)"}"#,
                &[("k", "Sample_Region/click")],
            ),
            (r#"{k: (.path | split("/") | .[1])}"#, &[("k", "shop")]),
            (
                r#"{k: (.path | ltrimstr("/") | split("/") | join("_"))}"#,
                &[("k", "shop_cart_add")],
            ),
            (
                r#"{k: (.path | sub("^/shop"; "") | .[1:])}"#,
                &[("k", "cart/add")],
            ),
            (
                r#"{k: (.msg | capture("(?<level>[A-Z]+) (?<what>\\w+)") | "\(.level)-\(.what)")}"#,
                &[("k", "WARN-disk")],
            ),
            (r#"{k: (.msg | test("warn"; "i"))}"#, &[("k", "true")]),
            (
                r#"{k: ([.msg | scan("[0-9]+")] | join(""))}"#,
                &[("k", "91")],
            ),
            (r#"{k: ([.msg | splits(" +")] | length)}"#, &[("k", "4")]),
            (
                r#"{k: (.msg | split(" +"; null) | last)}"#,
                &[("k", "full")],
            ),
            (r#"{k: (.msg | match("[0-9]+").offset)}"#, &[("k", "10")]),
            (r#"{k: (.amount | tonumber + 1)}"#, &[("k", "13")]),
            (r#"{k: (.customer_id | .[0:4])}"#, &[("k", "1234")]),
            (r#"{k: (.customer_id | tonumber % 10)}"#, &[("k", "0")]),
            (
                r#"{k: (.items | length), t: (.tags | type), n: (.nothing | not)}"#,
                &[("k", "3"), ("n", "true"), ("t", "array")],
            ),
            (
                r#"{k: (.items | sort_by(.price) | last | .name)}"#,
                &[("k", "c")],
            ),
            (
                r#"{k: (.items | min_by(.price) | .name), m: (.items | max_by(.price).name)}"#,
                &[("k", "b"), ("m", "c")],
            ),
            (r#"{k: (.items | group_by(.kind) | length)}"#, &[("k", "2")]),
            (
                r#"{k: (.items | unique_by(.kind) | map(.name) | join(","))}"#,
                &[("k", "a,b")],
            ),
            (
                r#"{k: any(.items[]; .price > 30), a: (.items | all(.price > 1))}"#,
                &[("a", "true"), ("k", "true")],
            ),
            (
                r#"{k: ([.items[].price] | max), m: ([.items[].price] | min)}"#,
                &[("k", "40"), ("m", "3")],
            ),
            (
                r#"{k: (.attrs | to_entries | map(select(.value == 1)) | from_entries | keys | join("+"))}"#,
                &[("k", "a+c")],
            ),
            (
                r#"{k: (.attrs | with_entries(select(.value > 1)) | keys_unsorted[0])}"#,
                &[("k", "b")],
            ),
            (r#"{k: (.attrs | map_values(. + 1) | .a)}"#, &[("k", "2")]),
            (r#"{k: (.region | .a)}"#, &[]),
            (
                r#"{k: (.tags | index("env:prod")), r: (.tags | rindex("env:prod"))}"#,
                &[("k", "1"), ("r", "3")],
            ),
            (
                r#"{k: (.tags | contains(["tier:gold"])), i: (.tags | indices("env:prod") | length)}"#,
                &[("i", "2"), ("k", "true")],
            ),
            (
                r#"{k: (.tags[:2] | reverse | join(" "))}"#,
                &[("k", "env:prod team:web")],
            ),
            (
                r#"{k: (.tags | isempty(.[])), e: ((.tags | endswith("x"))? // "none")}"#,
                &[("e", "none"), ("k", "false")],
            ),
            (
                r#"{k: (.customer_id | @base64), u: (.path | @uri), h: ("<\(.region)>" | @html)}"#,
                &[
                    ("h", "&lt;Sample_Region&gt;"),
                    ("k", "MTIzNDU2Nzg5MA=="),
                    ("u", "%2Fshop%2Fcart%2Fadd"),
                ],
            ),
            (
                r#"{k: (.customer_id | @base64 | @base64d)}"#,
                &[("k", "1234567890")],
            ),
            (
                r#"{k: @base64 "id=\(.customer_id)"}"#,
                &[("k", "id=MTIzNDU2Nzg5MA==")],
            ),
            (
                r#"{k: (.metric | tojson), s: (.event_timestamp | tostring | length)}"#,
                &[("k", r#"{"cpu":3}"#), ("s", "10")],
            ),
            (
                r#"{k: (try (.region | error) catch "caught"), v: ((.type.device.x)? // null)}"#,
                &[("k", "caught")],
            ),
            (
                r#"{k: (.missing // "none"), n: (.event_timestamp - 1565382000)}"#,
                &[("k", "none"), ("n", "27")],
            ),
            (
                r#"{k: (.tags | .[-1] | ascii_upcase | trim)}"#,
                &[("k", "ENV:PROD")],
            ),
            (
                r#"{k: (.items | getpath([0, "name"])), n: (.tags | nth(2))}"#,
                &[("k", "a"), ("n", "tier:gold")],
            ),
            (
                r#"{k: ([.items[] | .name, .kind] | join(""))}"#,
                &[("k", "axbycx")],
            ),
            (
                r#"{k: first(.items[] | select(.price > 20) | .name)}"#,
                &[("k", "c")],
            ),
            (
                r#"{k: ([.[] | strings] | length), n: ([.[] | numbers] | length)}"#,
                &[("k", "6"), ("n", "2")],
            ),
            (
                r#"{(.type.event): .customer_id}"#,
                &[("click", "1234567890")],
            ),
            (
                r#"{k: (.items | first.name), l: (.items | last.name)}"#,
                &[("k", "a"), ("l", "c")],
            ),
            (
                r#"{k: ([.tags[] | ltrimstr("env:")] | sort | first)}"#,
                &[("k", "prod")],
            ),
            (
                r#"{k: (-(.event_timestamp) | abs | tostring | length)}"#,
                &[("k", "10")],
            ),
        ];
        for (q, want) in cases {
            let compiled = compile(q).unwrap_or_else(|e| panic!("{q}: {e}"));
            let got = match compiled.eval(r.as_bytes()) {
                Ok(k) => k,
                Err(e) if want.is_empty() => {
                    // Compiles; failing on the record is expected.
                    assert!(matches!(e, EvalError::Failed(_)), "{q}: {e}");
                    continue;
                }
                Err(e) => panic!("{q}: {e}"),
            };
            let got: Vec<(&str, &str)> =
                got.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            assert_eq!(&got[..], *want, "{q}");
        }
    }

    /// A record of about 900 KiB (50,000 elements) through each builtin on
    /// the list: every one terminates (how fast is for the benchmarks).
    #[test]
    fn every_allowed_builtin_terminates_on_a_large_record() {
        let n = 50_000;
        let strs: Vec<String> = (0..n).map(|i| format!("\"v{:04}\"", i % 5000)).collect();
        let nums: Vec<String> = (0..n).map(|i| (i % 977).to_string()).collect();
        let objs: Vec<String> = (0..n / 10)
            .map(|i| format!(r#"{{"k":"k{}","v":{}}}"#, i % 100, i))
            .collect();
        let entries: Vec<String> = (0..n / 10).map(|i| format!(r#""key{i}":{i}"#)).collect();
        let text = "Ab, ".repeat(n / 2);
        let r = format!(
            r#"{{"s": [{}], "n": [{}], "o": [{}], "m": {{{}}}, "t": "{text}", "ts": 1565382027, "d": "2019-08-09T20:20:27Z"}}"#,
            strs.join(","),
            nums.join(","),
            objs.join(","),
            entries.join(",")
        );
        assert!(r.len() > 800 * 1024 && r.len() < 1000 * 1024, "{}", r.len());
        let queries = [
            "length",
            "utf8bytelength",
            "not",
            "type",
            "tostring",
            "tojson",
            "tonumber",
            "ascii_downcase",
            "ascii_upcase",
            "trim",
            "ltrim",
            "rtrim",
            "keys",
            "keys_unsorted",
            "to_entries",
            "from_entries",
            "add",
            "any",
            "all",
            "min",
            "max",
            "sort",
            "unique",
            "reverse",
            "first",
            "last",
            "values",
            "strings",
            "numbers",
            "objects",
            "arrays",
            "scalars",
            "iterables",
            "nulls",
            "booleans",
            "floor",
            "ceil",
            "round",
            "fabs",
            "sqrt",
            "abs",
            "todate",
            "fromdate",
            "todateiso8601",
            "fromdateiso8601",
            "gmtime",
            "mktime",
            "@text",
            "@json",
            "@base64",
            "@base64d",
            "@uri",
            "@html",
            "empty",
            "error",
            r#"has("k")"#,
            r#"contains("v1")"#,
            r#"startswith("v")"#,
            r#"endswith(", ")"#,
            r#"ltrimstr("Ab")"#,
            r#"rtrimstr(" ")"#,
            r#"split(", ")"#,
            r#"join("-")"#,
            r#"index(", ")"#,
            r#"rindex(", ")"#,
            r#"indices(", ")"#,
            r#"strftime("%Y")"#,
            r#"strptime("%Y-%m-%dT%H:%M:%SZ")"#,
            r#"getpath(["k"])"#,
            "nth(5)",
            r#"test("b, A"; "g")"#,
            r#"[match("b"; "g")] | length"#,
            r#"capture("(?<x>b)")"#,
            r#"[scan("[a-z]")] | length"#,
            r#"[splits(", ")] | length"#,
            r#"split(",\\s*"; null)"#,
            r#"sub(", "; "-")"#,
            r#"sub("(?<a>A)"; "\(.a)\(.a)")"#,
            "map(tostring)",
            "select(. != null)",
            "sort_by(.)",
            "group_by(.)",
            "unique_by(.)",
            "min_by(.)",
            "max_by(.)",
            "any(. == 1)",
            "all(. != 1)",
            "with_entries(.)",
            "map_values(.)",
            "first(.[])",
            "last(.[])",
            "isempty(.[])",
            "add(.[])",
            "any(.[]; . == 1)",
            "all(.[]; . != 1)",
            ".[:50000]",
            "error(.)",
        ];
        for q in queries {
            for part in ["s", "n", "o", "m", "t", "ts", "d"] {
                let query = format!("{{k: (.{part} | {q} | length?)}}");
                let compiled = compile(&query).unwrap_or_else(|e| panic!("{query}: {e}"));
                // A builtin given the wrong type fails; either way it ends.
                let _ = compiled.eval(r.as_bytes());
            }
        }
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

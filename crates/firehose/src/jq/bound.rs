//! The subset of jq a MetadataExtractionQuery may use, checked on jaq's parse
//! tree ([`Term`]) before the query is compiled: an allow-list of constructs
//! and builtins, and a structural rule, so that one evaluation costs time
//! linear in the record's size whatever the query.
//!
//! # Why what is accepted is linear
//!
//! Sizes are counted in units, a value or a byte of a string; `n` is the
//! record's (at most 1,000 KiB). Overheads per value (a literal, an entry
//! object's `"key"`) are at most a constant bounded by the query's length.
//!
//! 1. Each allowed builtin costs at most `c·s·log s` on an input of size `s`
//!    (its other arguments are literals, at most the query's length). Each was
//!    read in jaq-std 3 / jaq-json 2; those jaq defines with `reduce` (`add`,
//!    `join`, `from_entries`, `sub` without `g`) were also measured linear:
//!    jaq appends to an accumulator nothing else holds. `gsub` (`sub` with
//!    `g`) is not: it holds the accumulator while it appends, so each match
//!    copies the string so far, quadratic; it is refused.
//! 2. A generator's outputs are never paired with anything else: the operands
//!    of arithmetic, comparison, `and`/`or` and `//`, object keys and values,
//!    interpolated strings, `if` conditions and builtin arguments must each
//!    yield at most one output ([`Shape::many`]). A generator (`.[]`, `,`,
//!    `scan`...) can only be piped (`|`), collected (`[...]`), concatenated
//!    (`,`) or handed to a builtin that reads it once (`first`, `add`, `any`).
//!    There are no variables (`as`, `reduce`, `foreach`, `def`, `$ENV` and
//!    `$__loc__` are refused) and builtins' value arguments are literals, so
//!    inside an iteration nothing but the element can be reached: neither
//!    `[.[] + .x]` nor `[.[] == .[]]` nor `.[] as $a | .[] | ...` is accepted.
//! 3. Under (2) the outputs of an expression over one run add up to at most
//!    [`Shape::copies`] times its inputs: 1 for `.`, paths, literals and
//!    `.[]` (an iteration's outputs are disjoint parts of its input); the sum
//!    for `,`, `+`, objects and interpolation; the product for `|`; a constant
//!    factor for the builtins that can grow a value (`tostring` 2, `@uri` 3,
//!    `@html` 6). The checker carries for every subexpression `ctx`, a bound
//!    on the total size of what it is given during one run, in records, and
//!    refuses a query where any exceeds [`MAX_COPIES`]: that is what stops
//!    doubling chains (`(.,.) | (.,.) | ...`, `{a: ., b: .} | {a: ., b: .} |
//!    ... | tostring`, `tojson | tojson | ...`).
//! 4. Every subexpression that reads its whole input (an iteration, a
//!    comparison, `+`, a builtin) is charged its `ctx`; the charges add up to
//!    at most [`MAX_PASSES`]. So one evaluation costs at most
//!    `c·MAX_PASSES·n·log n`, plus, for each evaluation of a subexpression
//!    (at most `MAX_COPIES·n`: each input has a size of at least 1), a
//!    constant bounded by the query's length (building a k-key object,
//!    building a regex).
//! 5. There is no recursion (`..`, `recurse`, `walk`, `paths`, `range`,
//!    `repeat`, `while`, `until` are not on the list, nor `limit`, which
//!    only exists to cut such generators short); regexes are built here
//!    within [`REGEX_NFA_BYTES`] (regex-bites matches in time proportional to
//!    automaton × haystack); and the caller bounds nesting (of the query's
//!    text and of records) and the query's tokens.

use jaq_core::load::lex::StrPart;
use jaq_core::load::parse::{BinaryOp, Term};
use jaq_core::ops::Math;
use jaq_core::path::Part;

/// The most records' worth of input any one subexpression may receive over
/// an evaluation (see the module documentation, 3).
pub const MAX_COPIES: u32 = 32;

/// The most passes over a record an evaluation may make (see 4).
pub const MAX_PASSES: u32 = 128;

/// The most `,` a query may hold (each adds an output).
pub const MAX_COMMAS: u32 = 32;

/// The largest automaton a regex may build, in regex-bites' measure: enough
/// for `^arn:aws:[a-z0-9-]+:[a-z0-9-]*:[0-9]{12}:.*$` or `(?i)\w{50}`, not
/// for `[a-z]{1000}`, whose matching costs a thousand steps per byte.
pub const REGEX_NFA_BYTES: usize = 4096;

/// A step of a path: an object key, or an array index (negative indices
/// alias positive ones, so two indices are never known apart).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Key {
    Name(String),
    Index(String),
}

/// Whether the subtrees at two paths of one value are disjoint.
fn disjoint(a: &[Key], b: &[Key]) -> bool {
    a.iter().zip(b).any(|(x, y)| match (x, y) {
        (Key::Name(x), Key::Name(y)) => x != y,
        _ => false,
    })
}

/// What the checker knows of an expression.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Shape {
    /// Whether it may yield more than one output for one input.
    many: bool,
    /// A bound on its outputs' total size relative to its inputs' (at least
    /// 1: it also bounds how many outputs there are).
    copies: u32,
    /// Where in its input its outputs come from: a path with literal keys
    /// (`.a.b` comes from under `.a.b`; everything comes from under `[]`), or
    /// `None` for what comes from no input (a literal, a boolean). Parts of
    /// one output that come from disjoint subtrees add up to one copy:
    /// `{a: .x, b: .y}` is one copy of its input, `{a: ., b: .}` two.
    source: Option<Vec<Key>>,
}

impl Shape {
    /// One output made from its input.
    const WHOLE: Shape = Shape {
        many: false,
        copies: 1,
        source: Some(Vec::new()),
    };
    /// One output of a size bounded by the query's.
    const LITERAL: Shape = Shape {
        many: false,
        copies: 1,
        source: None,
    };
    fn single(copies: u32) -> Shape {
        Shape {
            copies: copies.max(1),
            ..Shape::WHOLE
        }
    }
    /// One output or the other's (`//`, `if`, `try`).
    fn either(self, o: Shape) -> Shape {
        Shape {
            many: self.many || o.many,
            copies: self.copies.max(o.copies),
            source: common(self.source, o.source),
        }
    }
}

/// The subtree two sources share.
fn common(a: Option<Vec<Key>>, b: Option<Vec<Key>>) -> Option<Vec<Key>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(
            a.into_iter()
                .zip(b)
                .take_while(|(x, y)| x == y)
                .map(|(x, _)| x)
                .collect(),
        ),
        (a, None) => a,
        (None, b) => b,
    }
}

/// The copies of parts that make up one output (or follow one another, for
/// `,`): parts from pairwise disjoint subtrees count as their largest.
fn total(mut parts: Vec<(u32, Option<Vec<Key>>)>) -> u32 {
    parts.sort_by_key(|p| std::cmp::Reverse(p.0));
    let mut classes: Vec<(u32, Vec<Vec<Key>>)> = Vec::new();
    let mut sum = 0u32;
    for (copies, source) in parts {
        let Some(source) = source else {
            sum = sum.saturating_add(copies);
            continue;
        };
        match classes
            .iter_mut()
            .find(|(_, members)| members.iter().all(|m| disjoint(m, &source)))
        {
            Some((_, members)) => members.push(source),
            None => classes.push((copies, vec![source])),
        }
    }
    classes
        .iter()
        .fold(sum, |acc, (copies, _)| acc.saturating_add(*copies))
}

/// The source of several parts taken together.
fn sources(parts: &[(u32, Option<Vec<Key>>)]) -> Option<Vec<Key>> {
    parts.iter().fold(None, |acc, (_, s)| match acc {
        None => s.clone(),
        acc => common(acc, s.clone()),
    })
}

/// Checks a parsed query; the error is the InvalidArgumentException's
/// message.
pub fn check(t: &Term<&str>) -> Result<(), String> {
    Checker::default().term(t, 1).map(|_| ())
}

fn refused(what: &str, why: &str) -> String {
    format!(
        "{what} is not allowed in a MetadataExtractionQuery on this server ({why}; see the README's Dynamic partitioning section for the jq accepted)."
    )
}

fn one_output(what: &str) -> String {
    refused(
        &format!("An expression that can yield more than one output as {what}"),
        "it would pair each output with the rest of the record: collect it with [...] or first(...)",
    )
}

#[derive(Default)]
struct Checker {
    passes: u32,
    commas: u32,
}

/// A literal: a number, a string without interpolation, `null`, `true`,
/// `false`, or an array or object of literals.
fn is_literal(t: &Term<&str>) -> bool {
    match t {
        Term::Num(_) => true,
        Term::Neg(t) => matches!(**t, Term::Num(_)),
        Term::Str(None, _) => literal_str(t).is_some(),
        Term::Call(name, args) => args.is_empty() && matches!(*name, "null" | "true" | "false"),
        Term::Arr(None) => true,
        Term::Arr(Some(t)) => literal_items(t),
        Term::Obj(entries) => entries
            .iter()
            .all(|(k, v)| literal_str(k).is_some() && v.as_ref().is_some_and(is_literal)),
        _ => false,
    }
}

fn literal_items(t: &Term<&str>) -> bool {
    match t {
        Term::BinOp(l, BinaryOp::Comma, r) => literal_items(l) && literal_items(r),
        t => is_literal(t),
    }
}

/// The value of a string literal without interpolation (escapes resolved).
fn literal_str(t: &Term<&str>) -> Option<String> {
    let Term::Str(None, parts) = t else {
        return None;
    };
    let mut out = String::new();
    for p in parts {
        match p {
            StrPart::Str(s) => out.push_str(s),
            StrPart::Char(c) => out.push(*c),
            StrPart::Term(_) => return None,
        }
    }
    Some(out)
}

/// What a part adds to a single output built from it: a literal adds no
/// part of the record (only its own size, bounded by the query's).
fn part(s: &Shape, t: &Term<&str>) -> Option<(u32, Option<Vec<Key>>)> {
    (!is_literal(t)).then(|| (s.copies, s.source.clone()))
}

fn is_number(t: &Term<&str>) -> bool {
    match t {
        Term::Num(_) => true,
        Term::Neg(t) => matches!(**t, Term::Num(_)),
        _ => false,
    }
}

/// How much a format (`@base64`...) can grow what it formats; `None` for
/// the formats that are not allowed.
fn format_factor(fmt: &str) -> Option<u32> {
    Some(match fmt {
        // Quotes and backslashes are escaped.
        "@text" | "@json" => 2,
        "@base64" => 2,
        "@base64d" => 1,
        // A byte becomes %XX.
        "@uri" => 3,
        // `'` becomes `&apos;`.
        "@html" => 6,
        _ => return None,
    })
}

/// The builtins' names, for refusals that say why.
fn why_not(name: &str) -> &'static str {
    match name {
        "recurse" | "walk" | "paths" | "leaf_paths" | "flatten" | "range" | "repeat" | "while"
        | "until" | "combinations" => "recursion and unbounded generators are refused",
        "input" | "inputs" | "env" | "debug" | "stderr" | "input_filename" | "halt"
        | "halt_error" | "input_line_number" | "get_search_list" => {
            "a query reads its record and nothing else"
        }
        "now" | "localtime" | "strflocaltime" => {
            "the clock and the host's time zone would make a retried flush split its records differently"
        }
        "limit" => {
            "generator combinators are refused with the generators they would bound; a slice with literal bounds (.[:n]) and first(...) cover its uses"
        }
        "gsub" => {
            "jaq's gsub copies the string once per match, quadratic in the record; for a literal pattern, split(\"x\") | join(\"y\") is linear"
        }
        "fromjson" => {
            "parsing a string from the record is unbounded in nesting; tonumber is allowed"
        }
        _ => "it is not one of the builtins allowed",
    }
}

impl Checker {
    fn pass(&mut self, ctx: u32) -> Result<(), String> {
        self.passes = self.passes.saturating_add(ctx);
        if self.passes > MAX_PASSES {
            return Err(format!(
                "The MetadataExtractionQuery may read the record more than {MAX_PASSES} times over (each iteration, comparison, + and builtin reads its input once; tostring, +, objects and , multiply it)."
            ));
        }
        Ok(())
    }

    /// A subexpression that must yield at most one output.
    fn single(&mut self, t: &Term<&str>, ctx: u32, what: &str) -> Result<Shape, String> {
        let s = self.term(t, ctx)?;
        if s.many {
            return Err(one_output(what));
        }
        Ok(s)
    }

    fn term(&mut self, t: &Term<&str>, ctx: u32) -> Result<Shape, String> {
        let s = self.shape(t, ctx)?;
        // What it is given, and what it makes.
        if ctx.max(ctx.saturating_mul(s.copies)) > MAX_COPIES {
            return Err(format!(
                "The MetadataExtractionQuery may copy the record more than {MAX_COPIES} times over (`,`, `+`, objects and string interpolation of the same data, and tostring, each multiply what a later step reads)."
            ));
        }
        Ok(s)
    }

    fn shape(&mut self, t: &Term<&str>, ctx: u32) -> Result<Shape, String> {
        Ok(match t {
            Term::Id => Shape::WHOLE,
            Term::Num(_) | Term::Arr(None) => Shape::LITERAL,
            Term::Recurse => return Err(refused("`..`", "recursion is refused")),
            Term::Str(fmt, parts) => {
                let factor = match fmt {
                    // Interpolated values are turned into strings.
                    None => 2,
                    Some(f) => {
                        format_factor(f).ok_or_else(|| refused(&format!("`{f}`"), why_not(f)))?
                    }
                };
                let mut made = Vec::new();
                for p in parts {
                    if let StrPart::Term(t) = p {
                        let s = self.single(t, ctx, "an interpolated value")?;
                        self.pass(ctx.saturating_mul(s.copies))?;
                        made.extend(part(&s, t).map(|(c, src)| (c.saturating_mul(factor), src)));
                    }
                }
                if made.is_empty() {
                    Shape::LITERAL
                } else {
                    Shape {
                        many: false,
                        copies: total(made.clone()).max(1),
                        source: sources(&made),
                    }
                }
            }
            Term::Arr(Some(t)) => Shape {
                many: false,
                ..self.term(t, ctx)?
            },
            Term::Obj(entries) => {
                let mut made = Vec::new();
                for (key, v) in entries {
                    if let Term::Var(x) = key {
                        return Err(self.var(x));
                    }
                    let k = self.single(key, ctx, "an object key")?;
                    made.extend(part(&k, key));
                    match v {
                        Some(v) => {
                            let s = self.single(v, ctx, "an object value")?;
                            made.extend(part(&s, v));
                        }
                        // `{a}` is `{a: .a}`.
                        None => made.push((1, literal_str(key).map(|k| vec![Key::Name(k)]))),
                    }
                }
                if made.is_empty() {
                    Shape::LITERAL
                } else {
                    Shape {
                        many: false,
                        copies: total(made.clone()).max(1),
                        source: sources(&made),
                    }
                }
            }
            Term::Neg(t) => {
                self.single(t, ctx, "the operand of -")?;
                Shape::LITERAL
            }
            Term::BinOp(l, op, r) => self.binop(l, op, r, ctx)?,
            Term::Label(..) | Term::Break(_) => {
                return Err(refused("`label`/`break`", "control flow is refused"));
            }
            Term::Fold(name, ..) => {
                return Err(refused(
                    &format!("`{name}`"),
                    "folds are refused: add, join, map, any and all cover their linear uses",
                ));
            }
            Term::Def(..) => {
                return Err(refused("`def`", "definitions are refused"));
            }
            Term::Var(x) => return Err(self.var(x)),
            Term::TryCatch(t, catch) => {
                let s = self.term(t, ctx)?;
                // A caught error is formatted into a string (once per run of
                // the `try`: it stops at the first).
                self.pass(ctx)?;
                match catch {
                    Some(c) => {
                        let c = self.term(c, ctx.saturating_mul(2))?;
                        // The handler reads the error, not a part of the input.
                        s.either(Shape {
                            source: Some(Vec::new()),
                            ..c
                        })
                    }
                    None => s,
                }
            }
            Term::IfThenElse(branches, otherwise) => {
                let mut s = match otherwise {
                    Some(e) => self.term(e, ctx)?,
                    None => Shape::WHOLE,
                };
                for (cond, then) in branches {
                    self.single(cond, ctx, "an if condition")?;
                    s = s.either(self.term(then, ctx)?);
                }
                s
            }
            Term::Call(name, args) => self.call(name, args, ctx)?,
            Term::Path(head, path) => {
                let h = self.term(head, ctx)?;
                let (mut many, mut source, mut exact) = (h.many, h.source, true);
                for (p, _) in &path.0 {
                    match p {
                        Part::Index(i) if literal_str(i).is_some() || is_number(i) => {
                            let key = match literal_str(i) {
                                Some(k) => Key::Name(k),
                                None => Key::Index(format!("{i:?}")),
                            };
                            if let (Some(src), true) = (source.as_mut(), exact) {
                                src.push(key);
                            }
                        }
                        Part::Range(None, None) => {
                            // Iterating a shared array or object clones it.
                            self.pass(ctx.saturating_mul(h.copies))?;
                            many = true;
                            exact = false;
                        }
                        Part::Range(from, upto)
                            if from.iter().chain(upto.iter()).all(|b| is_number(b)) =>
                        {
                            // Slicing a string counts its characters.
                            self.pass(ctx.saturating_mul(h.copies))?;
                            exact = false;
                        }
                        _ => {
                            return Err(refused(
                                "A computed index or slice bound (.[f])",
                                "only literal keys, indices and slice bounds are",
                            ));
                        }
                    }
                }
                Shape {
                    many,
                    copies: h.copies,
                    source,
                }
            }
        })
    }

    fn var(&self, x: &str) -> String {
        refused(
            &format!("The variable `{x}`"),
            "there are no variables: bindings, $ENV and $__loc__ are refused",
        )
    }

    fn binop(
        &mut self,
        l: &Term<&str>,
        op: &BinaryOp<&str>,
        r: &Term<&str>,
        ctx: u32,
    ) -> Result<Shape, String> {
        let name = match op {
            BinaryOp::Pipe(Some(_)) => {
                return Err(refused(
                    "`as` (a binding)",
                    "a binding pairs every output of one expression with every output of another",
                ));
            }
            BinaryOp::Pipe(None) => {
                let l = self.term(l, ctx)?;
                let r = self.term(r, ctx.saturating_mul(l.copies))?;
                return Ok(Shape {
                    many: l.many || r.many,
                    copies: l.copies.saturating_mul(r.copies),
                    source: match (l.source, r.source) {
                        (Some(mut l), Some(r)) => {
                            l.extend(r);
                            Some(l)
                        }
                        _ => None,
                    },
                });
            }
            BinaryOp::Comma => {
                self.commas += 1;
                if self.commas > MAX_COMMAS {
                    return Err(format!(
                        "The MetadataExtractionQuery uses , more than {MAX_COMMAS} times."
                    ));
                }
                let l = self.term(l, ctx)?;
                let r = self.term(r, ctx)?;
                // Every output counts, literals too: they are outputs.
                let made = vec![(l.copies, l.source), (r.copies, r.source)];
                return Ok(Shape {
                    many: true,
                    copies: total(made.clone()),
                    source: sources(&made),
                });
            }
            BinaryOp::Assign | BinaryOp::Update | BinaryOp::UpdateMath(_) | BinaryOp::UpdateAlt => {
                return Err(refused(
                    "An assignment (=, |=, +=, //= ...)",
                    "updates are refused",
                ));
            }
            BinaryOp::Math(Math::Mul) => {
                return Err(refused(
                    "`*`",
                    "a string times a number repeats it without bound",
                ));
            }
            BinaryOp::Alt => "//",
            BinaryOp::Or => "or",
            BinaryOp::And => "and",
            BinaryOp::Math(Math::Add) => "+",
            BinaryOp::Math(Math::Sub) => "-",
            BinaryOp::Math(Math::Div) => "/",
            BinaryOp::Math(Math::Rem) => "%",
            BinaryOp::Cmp(_) => "a comparison",
        };
        let what = format!("an operand of {name}");
        let ls = self.single(l, ctx, &what)?;
        let rs = self.single(r, ctx, &what)?;
        let made: Vec<_> = [part(&ls, l), part(&rs, r)].into_iter().flatten().collect();
        let both = total(made.clone()).max(1);
        Ok(match op {
            // One side or the other.
            BinaryOp::Alt => ls.either(rs),
            BinaryOp::Or | BinaryOp::And | BinaryOp::Cmp(_) => {
                if matches!(op, BinaryOp::Cmp(_)) {
                    self.pass(ctx.saturating_mul(both))?;
                }
                Shape::LITERAL
            }
            // Concatenation.
            BinaryOp::Math(Math::Add) => {
                self.pass(ctx.saturating_mul(both))?;
                Shape {
                    many: false,
                    copies: both,
                    source: sources(&made),
                }
            }
            // Array difference (part of the left side), string split (the
            // left side's pieces), numbers.
            _ => {
                self.pass(ctx.saturating_mul(both))?;
                Shape { many: false, ..ls }
            }
        })
    }

    /// A builtin's argument that must be a literal.
    fn literal(&self, name: &str, t: &Term<&str>) -> Result<(), String> {
        if is_literal(t) {
            Ok(())
        } else {
            Err(refused(
                &format!("A computed argument of `{name}`"),
                "the arguments of builtins that take values must be literals",
            ))
        }
    }

    /// A regex argument (and its flags): built here, within the automaton
    /// budget; its capture groups count as copies of its haystack.
    fn regex(
        &self,
        name: &str,
        re: &Term<&str>,
        flags: Option<&Term<&str>>,
    ) -> Result<(u32, bool), String> {
        let Some(re) = literal_str(re) else {
            return Err(refused(
                &format!("A computed regular expression in `{name}`"),
                "regular expressions must be string literals",
            ));
        };
        let flags = match flags {
            None => String::new(),
            // `split(re; null)` is jq's spelling of no flags.
            Some(Term::Call("null", args)) if args.is_empty() => String::new(),
            Some(f) => literal_str(f).ok_or_else(|| {
                refused(
                    &format!("Computed flags in `{name}`"),
                    "regex flags must be string literals",
                )
            })?,
        };
        let mut b = regex_bites::bytes::RegexBuilder::new(&re);
        for f in flags.chars() {
            match f {
                'g' | 'n' => {}
                'i' => _ = b.case_insensitive(true),
                'm' => _ = b.multi_line(true),
                's' => _ = b.dot_matches_new_line(true),
                'l' => _ = b.swap_greed(true),
                'x' => _ = b.ignore_whitespace(true),
                'p' => _ = b.multi_line(true).dot_matches_new_line(true),
                other => {
                    return Err(format!(
                        "The MetadataExtractionQuery's regex flags {flags:?} in `{name}` hold {other:?}, which is not one of g, i, l, m, n, p, s, x."
                    ));
                }
            }
        }
        let built = b.size_limit(REGEX_NFA_BYTES).build().map_err(|e| {
            format!(
                "The MetadataExtractionQuery's regular expression {re:?} in `{name}` is refused: {e} (this server builds regexes within {REGEX_NFA_BYTES} bytes of automaton, as matching costs its size per byte of the record)."
            )
        })?;
        let groups = u32::try_from(built.captures_len()).unwrap_or(u32::MAX);
        Ok((groups, flags.contains('g')))
    }

    fn call(&mut self, name: &str, args: &[Term<&str>], ctx: u32) -> Result<Shape, String> {
        let arity = args.len();
        let not_allowed = || refused(&format!("`{name}/{arity}`"), why_not(name));
        if name.contains("::") {
            return Err(refused(&format!("`{name}`"), "modules are refused"));
        }
        // Builtins of no argument: (the growth of their output, whether they
        // read their whole input).
        if args.is_empty() {
            let (copies, reads) = match name {
                "empty" | "null" | "true" | "false" | "not" | "type" | "error" => (1, false),
                "first" | "last" | "values" | "nulls" | "booleans" | "numbers" | "strings"
                | "arrays" | "objects" | "iterables" | "scalars" => (1, false),
                "floor" | "ceil" | "round" | "fabs" | "sqrt" | "abs" => (1, false),
                "length" | "utf8bytelength" | "tonumber" | "ascii_downcase" | "ascii_upcase"
                | "trim" | "ltrim" | "rtrim" | "keys" | "keys_unsorted" | "to_entries"
                | "from_entries" | "add" | "any" | "all" | "min" | "max" | "sort" | "unique"
                | "reverse" | "todate" | "todateiso8601" | "fromdate" | "fromdateiso8601"
                | "gmtime" | "mktime" => (1, true),
                "tostring" | "tojson" => (2, true),
                f if format_factor(f).is_some() => (format_factor(f).unwrap_or(1), true),
                _ => return Err(not_allowed()),
            };
            if reads {
                self.pass(ctx)?;
            }
            return Ok(Shape::single(copies));
        }
        match (name, args) {
            // Value arguments, literals.
            (
                "has" | "contains" | "startswith" | "endswith" | "ltrimstr" | "rtrimstr" | "split"
                | "join" | "index" | "rindex" | "indices" | "strftime" | "strptime",
                [a],
            ) => {
                self.literal(name, a)?;
                self.pass(ctx)?;
                // `join` turns numbers into strings and adds its separator.
                Ok(Shape::single(if name == "join" { 2 } else { 1 }))
            }
            ("getpath" | "nth", [a]) => {
                self.literal(name, a)?;
                Ok(Shape::WHOLE)
            }
            // Regexes.
            ("test" | "match" | "capture" | "scan" | "splits" | "split", [re, rest @ ..])
                if rest.len() <= 1 && (name != "split" || rest.len() == 1) =>
            {
                let (groups, global) = self.regex(name, re, rest.first())?;
                self.pass(ctx)?;
                let many = match name {
                    "scan" | "splits" => true,
                    "match" | "capture" => global,
                    _ => false,
                };
                let copies = match name {
                    "test" => 1,
                    "split" | "splits" => 1,
                    _ => groups.saturating_add(1),
                };
                Ok(Shape {
                    many,
                    copies,
                    ..Shape::WHOLE
                })
            }
            ("sub", [re, f, rest @ ..]) if rest.len() <= 1 => {
                let (groups, global) = self.regex(name, re, rest.first())?;
                if global {
                    return Err(refused("`sub` with the g flag", why_not("gsub")));
                }
                self.pass(ctx)?;
                // The replacement reads a capture object: the match and its
                // groups.
                let f = self.single(
                    f,
                    ctx.saturating_mul(groups.saturating_add(1)),
                    "the replacement of sub",
                )?;
                Ok(Shape::single(f.copies.saturating_add(1)))
            }
            // Filter arguments, run on each element (or on the input).
            ("map", [f]) => {
                self.pass(ctx)?;
                Ok(Shape::single(self.term(f, ctx)?.copies))
            }
            ("select", [f]) => {
                self.single(f, ctx, "the condition of select")?;
                Ok(Shape::WHOLE)
            }
            ("sort_by" | "group_by" | "unique_by" | "min_by" | "max_by" | "any" | "all", [f]) => {
                self.pass(ctx)?;
                self.single(f, ctx, &format!("the argument of {name}"))?;
                Ok(Shape::WHOLE)
            }
            ("with_entries" | "map_values", [f]) => {
                self.pass(ctx)?;
                let f = self.single(f, ctx, &format!("the argument of {name}"))?;
                Ok(Shape::single(f.copies))
            }
            ("error", [f]) => Ok(Shape::single(
                self.single(f, ctx, "the argument of error")?.copies,
            )),
            // Generators read once.
            ("first" | "last" | "isempty", [g]) => {
                let g = self.term(g, ctx)?;
                Ok(Shape::single(if name == "isempty" { 1 } else { g.copies }))
            }
            ("add", [g]) => {
                let g = self.term(g, ctx)?;
                self.pass(ctx.saturating_mul(g.copies))?;
                Ok(Shape::single(g.copies))
            }
            ("any" | "all", [g, cond]) => {
                let g = self.term(g, ctx)?;
                self.single(
                    cond,
                    ctx.saturating_mul(g.copies),
                    &format!("the condition of {name}"),
                )?;
                Ok(Shape::WHOLE)
            }
            _ => Err(not_allowed()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(q: &str) -> Result<(), String> {
        let t = jaq_core::load::parse(q, |p| p.term()).expect("parses");
        check(&t)
    }

    #[test]
    fn literal_strings_resolve_escapes() {
        let t = jaq_core::load::parse(r#""a\nb\u0041""#, |p| p.term()).unwrap();
        assert_eq!(literal_str(&t).as_deref(), Some("a\nbA"));
        let t = jaq_core::load::parse(r#""a\(.b)""#, |p| p.term()).unwrap();
        assert_eq!(literal_str(&t), None);
    }

    #[test]
    fn shapes_of_generators_and_copies() {
        let shape = |q: &str| {
            let t = jaq_core::load::parse(q, |p| p.term()).unwrap();
            Checker::default().term(&t, 1)
        };
        let name = |k: &str| Key::Name(k.into());
        let s = shape(".a.b").unwrap();
        assert_eq!((s.many, s.copies), (false, 1));
        assert_eq!(s.source, Some(vec![name("a"), name("b")]));
        assert_eq!(shape(".a[].b").unwrap().source, Some(vec![name("a")]));
        assert_eq!(
            shape(".a | .b").unwrap().source,
            Some(vec![name("a"), name("b")])
        );
        assert_eq!(shape("1").unwrap().source, None);
        assert!(shape(".[]").unwrap().many);
        assert!(shape(".a, .b").unwrap().many);
        assert!(!shape("[.[] | .a]").unwrap().many);
        assert!(!shape("first(.[])").unwrap().many);
        assert!(!shape(r#"capture("(?<y>[0-9]+)")"#).unwrap().many);
        assert!(shape(r#"capture("(?<y>[0-9]+)"; "g")"#).unwrap().many);
        let copies = |q: &str| shape(q).unwrap().copies;
        // Disjoint parts of the input make one copy of it; the same part
        // twice, two.
        assert_eq!(copies("{a: .x, b: .y.z, c: .w | tostring}"), 2);
        assert_eq!(copies("{a: .x, b: .x}"), 2);
        assert_eq!(copies("{a: ., b: .x}"), 2);
        assert_eq!(copies("{a: .[0], b: .[1]}"), 2);
        assert_eq!(copies("{a: ., b: .}"), 2);
        assert_eq!(copies(r#"{a: "x", b: 1, c: .x}"#), 1);
        assert_eq!(copies("(., .) | (., .)"), 4);
        assert_eq!(copies("(1, 2, 3)"), 3);
        assert_eq!(copies(r#""\(.a)-\(.b)""#), 2);
        assert_eq!(copies(r#""\(.)-\(.)""#), 4);
        assert_eq!(copies(".a + .a"), 2);
        assert_eq!(copies(".a + .b"), 1);
        assert_eq!(copies(".a | tostring"), 2);
    }

    #[test]
    fn doubling_chains_stop_at_the_copies_bound() {
        let q = ["{a: ., b: .}"; 6].join(" | ");
        assert!(checked(&q).unwrap_err().contains("copy the record"), "{q}");
        assert!(checked(&["{a: ., b: .}"; 5].join(" | ")).is_ok());
        let q = format!(".s{}", " | tojson".repeat(6));
        assert!(checked(&q).unwrap_err().contains("copy the record"), "{q}");
        assert!(checked(".s | tojson | tojson").is_ok());
        let q = format!(".s{}", " | (. + .)".repeat(6));
        assert!(checked(&q).unwrap_err().contains("copy the record"), "{q}");
        let q = ["(., .)"; 6].join(" | ");
        assert!(checked(&q).unwrap_err().contains("copy the record"), "{q}");
    }
}

//! DynamoDB expressions: condition, key condition, filter, update and
//! projection expressions, with `#name` and `:value` placeholders.
//!
//! Parsing resolves placeholders against the request's
//! `ExpressionAttributeNames` / `ExpressionAttributeValues` and records which
//! were used, because DynamoDB refuses a request that defines one it never uses.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::DynamoError;
use crate::number::Number;
use crate::value::{AttributeValue, Item};

/// One step of a document path.
#[derive(Debug, Clone, PartialEq)]
pub enum PathElem {
    Name(String),
    Index(usize),
}

/// A document path such as `a.b[2].c`.
#[derive(Debug, Clone, PartialEq)]
pub struct Path(pub Vec<PathElem>);

impl Path {
    pub fn attribute(name: &str) -> Path {
        Path(vec![PathElem::Name(name.to_string())])
    }

    /// The top-level attribute the path starts at.
    pub fn top(&self) -> &str {
        match self.0.first() {
            Some(PathElem::Name(n)) => n,
            _ => "",
        }
    }

    pub fn resolve<'a>(&self, item: &'a Item) -> Option<&'a AttributeValue> {
        let mut elems = self.0.iter();
        let mut cur = match elems.next()? {
            PathElem::Name(n) => item.get(n)?,
            PathElem::Index(_) => return None,
        };
        for e in elems {
            cur = match (e, cur) {
                (PathElem::Name(n), AttributeValue::M(m)) => m.get(n)?,
                (PathElem::Index(i), AttributeValue::L(l)) => l.get(*i)?,
                _ => return None,
            };
        }
        Some(cur)
    }

    fn show(&self) -> String {
        let mut s = String::new();
        for (i, e) in self.0.iter().enumerate() {
            match e {
                PathElem::Name(n) if i == 0 => s.push_str(n),
                PathElem::Name(n) => {
                    s.push_str(", ");
                    s.push_str(n);
                }
                PathElem::Index(ix) => s.push_str(&format!(", [{ix}]")),
            }
        }
        format!("[{s}]")
    }

    /// Whether one path is a prefix of the other.
    fn overlaps(&self, other: &Path) -> bool {
        self.0.iter().zip(&other.0).all(|(a, b)| a == b)
    }
}

/// A value inside a condition. A placeholder's value is shared by all its
/// uses (`a IN (:v, :v, ...)` must not copy a large `:v` per use).
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Path(Path),
    Value(Arc<AttributeValue>),
    Size(Path),
}

impl Operand {
    /// An operand of a literal value.
    pub fn value(v: AttributeValue) -> Operand {
        Operand::Value(Arc::new(v))
    }

    /// The operand's value for `item`, borrowed unless it is computed.
    fn eval<'a>(&'a self, item: &'a Item) -> Option<Cow<'a, AttributeValue>> {
        match self {
            Operand::Path(p) => p.resolve(item).map(Cow::Borrowed),
            Operand::Value(v) => Some(Cow::Borrowed(v.as_ref())),
            Operand::Size(p) => p
                .resolve(item)
                .and_then(AttributeValue::size)
                .map(|n| Cow::Owned(AttributeValue::N(Number::from_i64(n as i64)))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparator {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A boolean condition over an item.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Compare(Operand, Comparator, Operand),
    Between(Operand, Operand, Operand),
    In(Operand, Vec<Operand>),
    Exists(Path),
    NotExists(Path),
    AttributeType(Path, Operand),
    BeginsWith(Operand, Operand),
    Contains(Operand, Operand),
    And(Box<Condition>, Box<Condition>),
    Or(Box<Condition>, Box<Condition>),
    Not(Box<Condition>),
}

impl Condition {
    /// Evaluates the condition; an absent item has no attributes.
    pub fn eval(&self, item: &Item) -> bool {
        match self {
            Condition::Compare(a, op, b) => {
                let (Some(a), Some(b)) = (a.eval(item), b.eval(item)) else {
                    return *op == Comparator::Ne;
                };
                match op {
                    Comparator::Eq => a.same(&b),
                    Comparator::Ne => !a.same(&b),
                    _ => match a.compare(&b) {
                        Some(o) => match op {
                            Comparator::Lt => o == Ordering::Less,
                            Comparator::Le => o != Ordering::Greater,
                            Comparator::Gt => o == Ordering::Greater,
                            _ => o != Ordering::Less,
                        },
                        None => false,
                    },
                }
            }
            Condition::Between(v, lo, hi) => {
                let (Some(v), Some(lo), Some(hi)) = (v.eval(item), lo.eval(item), hi.eval(item))
                else {
                    return false;
                };
                matches!(v.compare(&lo), Some(Ordering::Greater | Ordering::Equal))
                    && matches!(v.compare(&hi), Some(Ordering::Less | Ordering::Equal))
            }
            Condition::In(v, list) => {
                let Some(v) = v.eval(item) else {
                    return false;
                };
                list.iter()
                    .any(|o| o.eval(item).is_some_and(|x| x.same(&v)))
            }
            Condition::Exists(p) => p.resolve(item).is_some(),
            Condition::NotExists(p) => p.resolve(item).is_none(),
            Condition::AttributeType(p, t) => match (p.resolve(item), t.eval(item).as_deref()) {
                (Some(v), Some(AttributeValue::S(t))) => v.type_name() == t,
                _ => false,
            },
            Condition::BeginsWith(a, b) => {
                match (a.eval(item).as_deref(), b.eval(item).as_deref()) {
                    (Some(AttributeValue::S(a)), Some(AttributeValue::S(b))) => {
                        a.starts_with(b.as_str())
                    }
                    (Some(AttributeValue::B(a)), Some(AttributeValue::B(b))) => a.starts_with(b),
                    _ => false,
                }
            }
            Condition::Contains(a, b) => match (a.eval(item).as_deref(), b.eval(item).as_deref()) {
                (Some(AttributeValue::S(a)), Some(AttributeValue::S(b))) => a.contains(b.as_str()),
                (Some(AttributeValue::B(a)), Some(AttributeValue::B(b))) => {
                    b.is_empty() || a.windows(b.len()).any(|w| w == b.as_slice())
                }
                (Some(AttributeValue::Ss(a)), Some(AttributeValue::S(b))) => a.contains(b),
                (Some(AttributeValue::Ns(a)), Some(AttributeValue::N(b))) => a.contains(b),
                (Some(AttributeValue::Bs(a)), Some(AttributeValue::B(b))) => a.contains(b),
                (Some(AttributeValue::L(a)), Some(b)) => a.iter().any(|x| x.same(b)),
                _ => false,
            },
            Condition::And(a, b) => a.eval(item) && b.eval(item),
            Condition::Or(a, b) => a.eval(item) || b.eval(item),
            Condition::Not(a) => !a.eval(item),
        }
    }
}

/// The right-hand side of a `SET` action.
#[derive(Debug, Clone, PartialEq)]
pub enum SetValue {
    Operand(Operand),
    IfNotExists(Path, Box<SetValue>),
    ListAppend(Box<SetValue>, Box<SetValue>),
    Plus(Box<SetValue>, Box<SetValue>),
    Minus(Box<SetValue>, Box<SetValue>),
}

/// One action of an update.
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateAction {
    Set(Path, SetValue),
    Remove(Path),
    Add(Path, Arc<AttributeValue>),
    Delete(Path, Arc<AttributeValue>),
}

fn type_error() -> DynamoError {
    DynamoError::Validation("An operand in the update expression has an incorrect data type".into())
}

fn missing_attribute() -> DynamoError {
    DynamoError::Validation(
        "The provided expression refers to an attribute that does not exist in the item".into(),
    )
}

fn invalid_path() -> DynamoError {
    DynamoError::Validation(
        "The document path provided in the update expression is invalid for update".into(),
    )
}

impl SetValue {
    fn eval(&self, item: &Item) -> Result<AttributeValue, DynamoError> {
        match self {
            SetValue::Operand(o) => o
                .eval(item)
                .map(Cow::into_owned)
                .ok_or_else(missing_attribute),
            SetValue::IfNotExists(p, v) => match p.resolve(item) {
                Some(x) => Ok(x.clone()),
                None => v.eval(item),
            },
            SetValue::ListAppend(a, b) => match (a.eval(item)?, b.eval(item)?) {
                (AttributeValue::L(mut a), AttributeValue::L(b)) => {
                    a.extend(b);
                    Ok(AttributeValue::L(a))
                }
                _ => Err(type_error()),
            },
            SetValue::Plus(a, b) | SetValue::Minus(a, b) => match (a.eval(item)?, b.eval(item)?) {
                (AttributeValue::N(a), AttributeValue::N(b)) => {
                    let b = if matches!(self, SetValue::Minus(..)) {
                        b.negate()
                    } else {
                        b
                    };
                    Ok(AttributeValue::N(a.add(&b)?))
                }
                _ => Err(type_error()),
            },
        }
    }
}

/// Applies update actions to an item. Every right-hand side is evaluated
/// against the item as it was before the update, as DynamoDB does.
pub fn apply_update(item: &mut Item, actions: &[UpdateAction]) -> Result<(), DynamoError> {
    let before = item.clone();
    let mut planned = Vec::with_capacity(actions.len());
    // Values set are all part of the new item, so once they alone exceed the
    // item size limit the update fails; checked as they are computed, so
    // `SET a = :v, b = :v, ...` with a large `:v` stops at the first copies.
    let mut planned_bytes = 0usize;
    for a in actions {
        planned.push(match a {
            UpdateAction::Set(p, v) => {
                let value = v.eval(&before)?;
                planned_bytes = planned_bytes.saturating_add(value.stored_size());
                if planned_bytes > crate::table::MAX_ITEM_BYTES {
                    return Err(DynamoError::Validation(
                        "Item size to update has exceeded the maximum allowed size".into(),
                    ));
                }
                (p, Some(value), a)
            }
            UpdateAction::Add(p, v) => {
                let next = match (p.resolve(&before), v.as_ref()) {
                    (None, v) => v.clone(),
                    (Some(AttributeValue::N(cur)), AttributeValue::N(n)) => {
                        AttributeValue::N(cur.add(n)?)
                    }
                    (Some(AttributeValue::Ss(cur)), AttributeValue::Ss(add)) => {
                        AttributeValue::Ss(union(cur, add))
                    }
                    (Some(AttributeValue::Ns(cur)), AttributeValue::Ns(add)) => {
                        AttributeValue::Ns(union(cur, add))
                    }
                    (Some(AttributeValue::Bs(cur)), AttributeValue::Bs(add)) => {
                        AttributeValue::Bs(union(cur, add))
                    }
                    _ => return Err(type_error()),
                };
                planned_bytes = planned_bytes.saturating_add(next.stored_size());
                if planned_bytes > crate::table::MAX_ITEM_BYTES {
                    return Err(DynamoError::Validation(
                        "Item size to update has exceeded the maximum allowed size".into(),
                    ));
                }
                (p, Some(next), a)
            }
            UpdateAction::Delete(p, v) => {
                let next = match (p.resolve(&before), v.as_ref()) {
                    (None, _) => None,
                    (Some(AttributeValue::Ss(cur)), AttributeValue::Ss(del)) => {
                        difference(cur, del).map(AttributeValue::Ss)
                    }
                    (Some(AttributeValue::Ns(cur)), AttributeValue::Ns(del)) => {
                        difference(cur, del).map(AttributeValue::Ns)
                    }
                    (Some(AttributeValue::Bs(cur)), AttributeValue::Bs(del)) => {
                        difference(cur, del).map(AttributeValue::Bs)
                    }
                    _ => return Err(type_error()),
                };
                (p, next, a)
            }
            UpdateAction::Remove(p) => (p, None, a),
        });
    }
    // Paths name places in the item as it was: everything but removals is
    // applied first, then removals from the last place to the first, so that
    // removing a list element never shifts one still to be removed.
    let (mut removals, changes): (Vec<_>, Vec<_>) =
        planned.into_iter().partition(|(_, value, action)| {
            value.is_none() && matches!(action, UpdateAction::Remove(_))
        });
    removals.sort_by(|a, b| path_order(b.0, a.0));
    let planned: Vec<_> = changes.into_iter().chain(removals).collect();
    for (path, value, action) in planned {
        match value {
            Some(v) => set_path(item, path, v)?,
            None => {
                let is_delete = matches!(action, UpdateAction::Delete(..));
                if !is_delete || path.resolve(&before).is_some() {
                    remove_path(item, path);
                }
            }
        }
    }
    Ok(())
}

/// A total order of paths: element by element, names by text, indexes by
/// number, a name before an index, a prefix before its extensions.
fn path_order(a: &Path, b: &Path) -> Ordering {
    for (x, y) in a.0.iter().zip(&b.0) {
        let o = match (x, y) {
            (PathElem::Name(p), PathElem::Name(q)) => p.cmp(q),
            (PathElem::Index(i), PathElem::Index(j)) => i.cmp(j),
            (PathElem::Name(_), PathElem::Index(_)) => Ordering::Less,
            (PathElem::Index(_), PathElem::Name(_)) => Ordering::Greater,
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    a.0.len().cmp(&b.0.len())
}

fn union<T: Clone + PartialEq>(a: &[T], b: &[T]) -> Vec<T> {
    let mut out = a.to_vec();
    for x in b {
        if !out.contains(x) {
            out.push(x.clone());
        }
    }
    out
}

fn difference<T: Clone + PartialEq>(a: &[T], b: &[T]) -> Option<Vec<T>> {
    let out: Vec<T> = a.iter().filter(|x| !b.contains(x)).cloned().collect();
    (!out.is_empty()).then_some(out)
}

fn set_path(item: &mut Item, path: &Path, value: AttributeValue) -> Result<(), DynamoError> {
    let (last, parents) = match path.0.split_last() {
        Some(x) => x,
        None => return Err(invalid_path()),
    };
    if parents.is_empty() {
        return match last {
            PathElem::Name(n) => {
                item.insert(n.clone(), value);
                Ok(())
            }
            PathElem::Index(_) => Err(invalid_path()),
        };
    }
    let parent_path = Path(parents.to_vec());
    let parent = resolve_mut(item, &parent_path).ok_or_else(invalid_path)?;
    match (parent, last) {
        (AttributeValue::M(m), PathElem::Name(n)) => {
            m.insert(n.clone(), value);
        }
        (AttributeValue::L(l), PathElem::Index(i)) => {
            if *i < l.len() {
                l[*i] = value;
            } else {
                l.push(value);
            }
        }
        _ => return Err(invalid_path()),
    }
    Ok(())
}

fn remove_path(item: &mut Item, path: &Path) {
    let Some((last, parents)) = path.0.split_last() else {
        return;
    };
    if parents.is_empty() {
        if let PathElem::Name(n) = last {
            item.remove(n);
        }
        return;
    }
    match (resolve_mut(item, &Path(parents.to_vec())), last) {
        (Some(AttributeValue::M(m)), PathElem::Name(n)) => {
            m.remove(n);
        }
        (Some(AttributeValue::L(l)), PathElem::Index(i)) if *i < l.len() => {
            l.remove(*i);
        }
        _ => {}
    }
}

fn resolve_mut<'a>(item: &'a mut Item, path: &Path) -> Option<&'a mut AttributeValue> {
    let mut elems = path.0.iter();
    let mut cur = match elems.next()? {
        PathElem::Name(n) => item.get_mut(n)?,
        PathElem::Index(_) => return None,
    };
    for e in elems {
        cur = match (e, cur) {
            (PathElem::Name(n), AttributeValue::M(m)) => m.get_mut(n)?,
            (PathElem::Index(i), AttributeValue::L(l)) => l.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Copies only the projected paths of an item.
pub fn project(item: &Item, paths: &[Path]) -> Item {
    let mut out = Item::new();
    for p in paths {
        let Some(v) = p.resolve(item) else {
            continue;
        };
        // Rebuild the containers along the path; list elements keep their
        // relative order but are renumbered, as DynamoDB does.
        let mut value = v.clone();
        for (i, e) in p.0.iter().enumerate().skip(1).rev() {
            value = match e {
                PathElem::Name(n) => {
                    let mut m = Item::new();
                    m.insert(n.clone(), value);
                    AttributeValue::M(m)
                }
                PathElem::Index(_) => AttributeValue::L(vec![value]),
            };
            let _ = i;
        }
        merge_into(&mut out, p.top(), value);
    }
    out
}

fn merge_into(out: &mut Item, name: &str, value: AttributeValue) {
    match (out.get_mut(name), value) {
        (Some(AttributeValue::M(a)), AttributeValue::M(b)) => {
            for (k, v) in b {
                merge_into(a, &k, v);
            }
        }
        (Some(AttributeValue::L(a)), AttributeValue::L(b)) => a.extend(b),
        (_, v) => {
            out.insert(name.to_string(), v);
        }
    }
}

// ---------------------------------------------------------------- parsing

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Name(String),
    Value(String),
    Int(usize),
    Punct(&'static str),
}

fn tokenize(src: &str) -> Result<Vec<(Tok, usize)>, String> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let ident = |i: &mut usize| {
            let s = *i;
            while *i < b.len() && (b[*i].is_ascii_alphanumeric() || b[*i] == b'_') {
                *i += 1;
            }
            src[s..*i].to_string()
        };
        let tok = match c {
            b'#' => {
                i += 1;
                Tok::Name(format!("#{}", ident(&mut i)))
            }
            b':' => {
                i += 1;
                Tok::Value(format!(":{}", ident(&mut i)))
            }
            b'0'..=b'9' => {
                let s = ident(&mut i);
                Tok::Int(s.parse().map_err(|_| s.clone())?)
            }
            c if c.is_ascii_alphabetic() || c == b'_' => Tok::Ident(ident(&mut i)),
            _ => {
                let two = src.get(i..i + 2).unwrap_or("");
                let p: &'static str = match two {
                    "<>" => "<>",
                    "<=" => "<=",
                    ">=" => ">=",
                    _ => match c {
                        b'(' => "(",
                        b')' => ")",
                        b'[' => "[",
                        b']' => "]",
                        b',' => ",",
                        b'.' => ".",
                        b'=' => "=",
                        b'<' => "<",
                        b'>' => ">",
                        b'+' => "+",
                        b'-' => "-",
                        _ => {
                            let ch = src[i..].chars().next().unwrap_or('?');
                            return Err(ch.to_string());
                        }
                    },
                };
                i += p.len();
                Tok::Punct(p)
            }
        };
        if matches!(&tok, Tok::Name(n) | Tok::Value(n) if n.len() == 1) {
            return Err(src[start..i].to_string());
        }
        out.push((tok, start));
    }
    Ok(out)
}

/// The placeholders of one request and which of them its expressions used.
pub struct Placeholders<'a> {
    names: Option<&'a Map<String, Value>>,
    values: Option<&'a Map<String, Value>>,
    used_names: BTreeSet<String>,
    used_values: BTreeSet<String>,
    /// Each value placeholder parsed once, shared by all its uses.
    parsed: HashMap<String, Arc<AttributeValue>>,
}

impl<'a> Placeholders<'a> {
    pub fn new(
        names: Option<&'a Map<String, Value>>,
        values: Option<&'a Map<String, Value>>,
    ) -> Placeholders<'a> {
        Placeholders {
            names,
            values,
            used_names: BTreeSet::new(),
            used_values: BTreeSet::new(),
            parsed: HashMap::new(),
        }
    }

    /// Refuses placeholders that no expression used, as DynamoDB does.
    pub fn check_all_used(&self) -> Result<(), DynamoError> {
        let unused = |defined: Option<&Map<String, Value>>, used: &BTreeSet<String>| {
            defined
                .map(|m| {
                    m.keys()
                        .filter(|k| !used.contains(*k))
                        .cloned()
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        };
        let values = unused(self.values, &self.used_values);
        if !values.is_empty() {
            return Err(DynamoError::Validation(format!(
                "Value provided in ExpressionAttributeValues unused in expressions: keys: {{{}}}",
                values.join(", ")
            )));
        }
        let names = unused(self.names, &self.used_names);
        if !names.is_empty() {
            return Err(DynamoError::Validation(format!(
                "Value provided in ExpressionAttributeNames unused in expressions: keys: {{{}}}",
                names.join(", ")
            )));
        }
        Ok(())
    }
}

/// DynamoDB's limit on the length of one expression.
const MAX_EXPRESSION_BYTES: usize = 4096;
/// Deepest nesting of parentheses, NOT and functions accepted; it bounds
/// the recursion of parsing and evaluating.
const MAX_DEPTH: usize = 100;

struct Parser<'p, 'a> {
    kind: &'static str,
    src: &'p str,
    toks: Vec<(Tok, usize)>,
    pos: usize,
    ph: &'p mut Placeholders<'a>,
    depth: usize,
}

fn is_kw(t: Option<&Tok>, kw: &str) -> bool {
    matches!(t, Some(Tok::Ident(s)) if s.eq_ignore_ascii_case(kw))
}

impl<'p, 'a> Parser<'p, 'a> {
    fn new(
        kind: &'static str,
        src: &'p str,
        ph: &'p mut Placeholders<'a>,
    ) -> Result<Parser<'p, 'a>, DynamoError> {
        if src.trim().is_empty() {
            return Err(DynamoError::Validation(format!(
                "Invalid {kind}: The expression can not be empty;"
            )));
        }
        if src.len() > MAX_EXPRESSION_BYTES {
            return Err(DynamoError::Validation(format!(
                "Invalid {kind}: Expression size has exceeded the maximum allowed size; expression size: {}",
                src.len()
            )));
        }
        let toks = tokenize(src).map_err(|t| {
            DynamoError::Validation(format!(
                "Invalid {kind}: Syntax error; token: \"{t}\", near: \"{t}\""
            ))
        })?;
        Ok(Parser {
            kind,
            src,
            toks,
            pos: 0,
            ph,
            depth: 0,
        })
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.0)
    }

    fn syntax(&self) -> DynamoError {
        let (token, near) = match self.toks.get(self.pos) {
            Some((_, at)) => {
                let rest = &self.src[*at..];
                let tok_len = tokenize(rest)
                    .ok()
                    .and_then(|t| t.get(1).map(|x| x.1))
                    .unwrap_or(rest.len());
                let token = rest[..tok_len].trim().to_string();
                let start = self.toks[..self.pos].last().map(|t| t.1).unwrap_or(*at);
                let end = self
                    .toks
                    .get(self.pos + 1)
                    .map(|t| t.1 + 1)
                    .unwrap_or(self.src.len())
                    .min(self.src.len());
                let near = self.src.get(start..end).unwrap_or(rest).trim().to_string();
                (token, near)
            }
            None => (
                "<EOF>".to_string(),
                self.src.split_whitespace().last().unwrap_or("").to_string(),
            ),
        };
        DynamoError::Validation(format!(
            "Invalid {}: Syntax error; token: \"{token}\", near: \"{near}\"",
            self.kind
        ))
    }

    fn eat_punct(&mut self, p: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Punct(x)) if *x == p) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_punct(&mut self, p: &str) -> Result<(), DynamoError> {
        if self.eat_punct(p) {
            Ok(())
        } else {
            Err(self.syntax())
        }
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        if is_kw(self.peek(), kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn done(&self) -> Result<(), DynamoError> {
        if self.pos < self.toks.len() {
            Err(self.syntax())
        } else {
            Ok(())
        }
    }

    fn name(&mut self, placeholder: &str) -> Result<String, DynamoError> {
        let v = self
            .ph
            .names
            .and_then(|m| m.get(placeholder))
            .and_then(Value::as_str);
        match v {
            Some(v) => {
                self.ph.used_names.insert(placeholder.to_string());
                Ok(v.to_string())
            }
            None => Err(DynamoError::Validation(format!(
                "Invalid {}: An expression attribute name used in the document path is not defined; attribute name: {placeholder}",
                self.kind
            ))),
        }
    }

    fn value(&mut self, placeholder: &str) -> Result<Arc<AttributeValue>, DynamoError> {
        if let Some(v) = self.ph.parsed.get(placeholder) {
            return Ok(v.clone());
        }
        match self.ph.values.and_then(|m| m.get(placeholder)) {
            Some(v) => {
                self.ph.used_values.insert(placeholder.to_string());
                let v = Arc::new(AttributeValue::from_json(v)?);
                self.ph.parsed.insert(placeholder.to_string(), v.clone());
                Ok(v)
            }
            None => Err(DynamoError::Validation(format!(
                "Invalid {}: An expression attribute value used in expression is not defined; attribute value: {placeholder}",
                self.kind
            ))),
        }
    }

    fn path(&mut self) -> Result<Path, DynamoError> {
        let first = match self.peek().cloned() {
            Some(Tok::Ident(s)) => s,
            Some(Tok::Name(n)) => self.name(&n)?,
            _ => return Err(self.syntax()),
        };
        self.pos += 1;
        let mut elems = vec![PathElem::Name(first)];
        loop {
            if self.eat_punct(".") {
                match self.peek().cloned() {
                    Some(Tok::Ident(s)) => elems.push(PathElem::Name(s)),
                    Some(Tok::Name(n)) => {
                        let v = self.name(&n)?;
                        elems.push(PathElem::Name(v));
                    }
                    _ => return Err(self.syntax()),
                }
                self.pos += 1;
            } else if self.eat_punct("[") {
                match self.peek().cloned() {
                    Some(Tok::Int(i)) => elems.push(PathElem::Index(i)),
                    _ => return Err(self.syntax()),
                }
                self.pos += 1;
                self.expect_punct("]")?;
            } else {
                return Ok(Path(elems));
            }
        }
    }

    fn is_function_call(&self) -> bool {
        matches!(self.peek(), Some(Tok::Ident(_)))
            && matches!(self.toks.get(self.pos + 1), Some((Tok::Punct("("), _)))
    }

    fn operand(&mut self) -> Result<Operand, DynamoError> {
        match self.peek().cloned() {
            Some(Tok::Value(v)) => {
                self.pos += 1;
                Ok(Operand::Value(self.value(&v)?))
            }
            Some(Tok::Ident(f)) if self.is_function_call() => {
                if f != "size" {
                    return Err(DynamoError::Validation(format!(
                        "Invalid {}: The function is not allowed to be used this way in an expression; function: {f}",
                        self.kind
                    )));
                }
                self.pos += 2;
                let p = self.path()?;
                self.expect_punct(")")?;
                Ok(Operand::Size(p))
            }
            Some(Tok::Ident(_) | Tok::Name(_)) => Ok(Operand::Path(self.path()?)),
            _ => Err(self.syntax()),
        }
    }

    fn condition(&mut self) -> Result<Condition, DynamoError> {
        let mut left = self.and()?;
        while self.eat_kw("OR") {
            let right = self.and()?;
            left = Condition::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Condition, DynamoError> {
        let mut left = self.not()?;
        while self.eat_kw("AND") {
            let right = self.not()?;
            left = Condition::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    /// Goes one level deeper, refusing absurd nesting.
    fn descend(&mut self) -> Result<(), DynamoError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(DynamoError::Validation(format!(
                "Invalid {}: The expression is nested too deeply",
                self.kind
            )));
        }
        Ok(())
    }

    fn not(&mut self) -> Result<Condition, DynamoError> {
        self.descend()?;
        let c = if self.eat_kw("NOT") {
            Condition::Not(Box::new(self.not()?))
        } else {
            self.primary()?
        };
        self.depth -= 1;
        Ok(c)
    }

    fn primary(&mut self) -> Result<Condition, DynamoError> {
        if self.eat_punct("(") {
            let c = self.condition()?;
            self.expect_punct(")")?;
            return Ok(c);
        }
        if let Some(Tok::Ident(f)) = self.peek().cloned()
            && self.is_function_call()
            && f != "size"
        {
            self.pos += 2;
            let c = match f.as_str() {
                "attribute_exists" => Condition::Exists(self.path()?),
                "attribute_not_exists" => Condition::NotExists(self.path()?),
                "attribute_type" => {
                    let p = self.path()?;
                    self.expect_punct(",")?;
                    Condition::AttributeType(p, self.operand()?)
                }
                "begins_with" => {
                    let a = self.operand()?;
                    self.expect_punct(",")?;
                    Condition::BeginsWith(a, self.operand()?)
                }
                "contains" => {
                    let a = self.operand()?;
                    self.expect_punct(",")?;
                    Condition::Contains(a, self.operand()?)
                }
                _ => {
                    return Err(DynamoError::Validation(format!(
                        "Invalid {}: Invalid function name; function: {f}",
                        self.kind
                    )));
                }
            };
            self.expect_punct(")")?;
            return Ok(c);
        }
        let left = self.operand()?;
        if self.eat_kw("BETWEEN") {
            let lo = self.operand()?;
            if !self.eat_kw("AND") {
                return Err(self.syntax());
            }
            let hi = self.operand()?;
            return Ok(Condition::Between(left, lo, hi));
        }
        if self.eat_kw("IN") {
            self.expect_punct("(")?;
            let mut list = vec![self.operand()?];
            while self.eat_punct(",") {
                list.push(self.operand()?);
            }
            self.expect_punct(")")?;
            return Ok(Condition::In(left, list));
        }
        let op = match self.peek() {
            Some(Tok::Punct("=")) => Comparator::Eq,
            Some(Tok::Punct("<>")) => Comparator::Ne,
            Some(Tok::Punct("<")) => Comparator::Lt,
            Some(Tok::Punct("<=")) => Comparator::Le,
            Some(Tok::Punct(">")) => Comparator::Gt,
            Some(Tok::Punct(">=")) => Comparator::Ge,
            _ => return Err(self.syntax()),
        };
        self.pos += 1;
        let right = self.operand()?;
        Ok(Condition::Compare(left, op, right))
    }

    fn set_value(&mut self) -> Result<SetValue, DynamoError> {
        let left = self.set_operand()?;
        if self.eat_punct("+") {
            return Ok(SetValue::Plus(
                Box::new(left),
                Box::new(self.set_operand()?),
            ));
        }
        if self.eat_punct("-") {
            return Ok(SetValue::Minus(
                Box::new(left),
                Box::new(self.set_operand()?),
            ));
        }
        Ok(left)
    }

    fn set_operand(&mut self) -> Result<SetValue, DynamoError> {
        self.descend()?;
        let v = self.set_operand_inner();
        self.depth -= 1;
        v
    }

    fn set_operand_inner(&mut self) -> Result<SetValue, DynamoError> {
        if let Some(Tok::Ident(f)) = self.peek().cloned()
            && self.is_function_call()
        {
            self.pos += 2;
            let v = match f.as_str() {
                "if_not_exists" => {
                    let p = self.path()?;
                    self.expect_punct(",")?;
                    SetValue::IfNotExists(p, Box::new(self.set_operand()?))
                }
                "list_append" => {
                    let a = self.set_operand()?;
                    self.expect_punct(",")?;
                    SetValue::ListAppend(Box::new(a), Box::new(self.set_operand()?))
                }
                _ => {
                    return Err(DynamoError::Validation(format!(
                        "Invalid {}: Invalid function name; function: {f}",
                        self.kind
                    )));
                }
            };
            self.expect_punct(")")?;
            return Ok(v);
        }
        match self.peek().cloned() {
            Some(Tok::Value(v)) => {
                self.pos += 1;
                Ok(SetValue::Operand(Operand::Value(self.value(&v)?)))
            }
            Some(Tok::Ident(_) | Tok::Name(_)) => {
                Ok(SetValue::Operand(Operand::Path(self.path()?)))
            }
            _ => Err(self.syntax()),
        }
    }

    fn update(&mut self) -> Result<Vec<UpdateAction>, DynamoError> {
        let mut actions = Vec::new();
        let mut seen = BTreeSet::new();
        while self.pos < self.toks.len() {
            let clause = match self.peek() {
                Some(Tok::Ident(s)) => s.to_ascii_uppercase(),
                _ => return Err(self.syntax()),
            };
            if !matches!(clause.as_str(), "SET" | "REMOVE" | "ADD" | "DELETE") {
                return Err(self.syntax());
            }
            if !seen.insert(clause.clone()) {
                return Err(DynamoError::Validation(format!(
                    "Invalid UpdateExpression: The \"{clause}\" section can only be used once in an update expression;"
                )));
            }
            self.pos += 1;
            loop {
                let path = self.path()?;
                let action = match clause.as_str() {
                    "SET" => {
                        self.expect_punct("=")?;
                        UpdateAction::Set(path, self.set_value()?)
                    }
                    "REMOVE" => UpdateAction::Remove(path),
                    _ => {
                        let v = match self.peek().cloned() {
                            Some(Tok::Value(v)) => {
                                self.pos += 1;
                                self.value(&v)?
                            }
                            _ => return Err(self.syntax()),
                        };
                        let ok = if clause == "ADD" {
                            matches!(
                                *v,
                                AttributeValue::N(_)
                                    | AttributeValue::Ss(_)
                                    | AttributeValue::Ns(_)
                                    | AttributeValue::Bs(_)
                            )
                        } else {
                            matches!(
                                *v,
                                AttributeValue::Ss(_)
                                    | AttributeValue::Ns(_)
                                    | AttributeValue::Bs(_)
                            )
                        };
                        if !ok {
                            return Err(DynamoError::Validation(format!(
                                "Invalid UpdateExpression: Incorrect operand type for operator or function; operator: {clause}, operand type: {}",
                                v.type_name()
                            )));
                        }
                        if clause == "ADD" {
                            UpdateAction::Add(path, v)
                        } else {
                            UpdateAction::Delete(path, v)
                        }
                    }
                };
                actions.push(action);
                if !self.eat_punct(",") {
                    break;
                }
            }
        }
        let paths: Vec<&Path> = actions
            .iter()
            .map(|a| match a {
                UpdateAction::Set(p, _)
                | UpdateAction::Remove(p)
                | UpdateAction::Add(p, _)
                | UpdateAction::Delete(p, _) => p,
            })
            .collect();
        for (i, a) in paths.iter().enumerate() {
            for b in &paths[..i] {
                if a.overlaps(b) {
                    return Err(DynamoError::Validation(format!(
                        "Invalid UpdateExpression: Two document paths overlap with each other; must remove or rewrite one of these paths; path one: {}, path two: {}",
                        b.show(),
                        a.show()
                    )));
                }
            }
        }
        Ok(actions)
    }
}

/// Parses a condition (ConditionExpression, FilterExpression, KeyConditionExpression).
pub fn parse_condition(
    kind: &'static str,
    src: &str,
    ph: &mut Placeholders<'_>,
) -> Result<Condition, DynamoError> {
    let mut p = Parser::new(kind, src, ph)?;
    let c = p.condition()?;
    p.done()?;
    Ok(c)
}

/// Parses an UpdateExpression.
pub fn parse_update(
    src: &str,
    ph: &mut Placeholders<'_>,
) -> Result<Vec<UpdateAction>, DynamoError> {
    let mut p = Parser::new("UpdateExpression", src, ph)?;
    p.update()
}

/// Parses a ProjectionExpression.
pub fn parse_projection(src: &str, ph: &mut Placeholders<'_>) -> Result<Vec<Path>, DynamoError> {
    let mut p = Parser::new("ProjectionExpression", src, ph)?;
    let mut paths = vec![p.path()?];
    while p.eat_punct(",") {
        paths.push(p.path()?);
    }
    p.done()?;
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(v: Value) -> Item {
        crate::value::item_from_json(v.as_object().unwrap()).unwrap()
    }

    fn cond(src: &str, names: Value, values: Value) -> Result<Condition, DynamoError> {
        let (n, v) = (names.as_object().cloned(), values.as_object().cloned());
        let mut ph = Placeholders::new(n.as_ref(), v.as_ref());
        let c = parse_condition("ConditionExpression", src, &mut ph)?;
        ph.check_all_used()?;
        Ok(c)
    }

    #[test]
    fn conditions_evaluate() {
        let it = item(
            json!({"leaseKey": {"S": "shard-1"}, "leaseCounter": {"N": "5"},
            "leaseOwner": {"S": "w1"}, "parents": {"SS": ["a", "b"]}, "m": {"M": {"x": {"L": [{"N": "1"}, {"N": "2"}]}}}}),
        );
        let vals = json!({":c": {"N": "5"}, ":o": {"S": "w1"}, ":p": {"S": "sh"}, ":two": {"N": "2"}, ":b": {"S": "b"}});
        for (src, want) in [
            ("attribute_exists(leaseKey)", true),
            ("attribute_not_exists(leaseKey)", false),
            ("leaseCounter = :c AND leaseOwner = :o", true),
            ("leaseCounter <> :c OR NOT leaseOwner = :o", false),
            ("begins_with(leaseKey, :p) and leaseCounter > :two", true),
            ("contains(parents, :b) AND m.x[1] = :two", true),
            (
                "size(parents) = :two AND leaseCounter BETWEEN :two AND :c",
                true,
            ),
            ("leaseOwner IN (:p, :o)", true),
            (
                "(leaseCounter < :two OR leaseCounter >= :c) AND attribute_type(leaseCounter, :c)",
                false,
            ),
            ("attribute_not_exists(nope) AND nope <> :c", true),
        ] {
            let mut used = vals.as_object().unwrap().clone();
            let c = {
                let mut ph = Placeholders::new(None, Some(&used));
                parse_condition("ConditionExpression", src, &mut ph).unwrap()
            };
            assert_eq!(c.eval(&it), want, "{src}");
            used.clear();
        }
    }

    #[test]
    fn refuses_bad_expressions_as_dynamodb_does() {
        let e = cond(
            "a = :v",
            json!({}),
            json!({":v": {"S": "x"}, ":w": {"S": "y"}}),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Value provided in ExpressionAttributeValues unused in expressions: keys: {:w}"
        );
        let e = cond("#a = :v", json!({}), json!({":v": {"S": "x"}})).unwrap_err();
        assert!(e.to_string().contains("attribute name: #a"), "{e}");
        let e = cond("a = :nope", json!({}), json!({})).unwrap_err();
        assert!(e.to_string().contains("attribute value: :nope"), "{e}");
        let e = cond("a = ", json!({}), json!({})).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("Invalid ConditionExpression: Syntax error; token: \"<EOF>\""),
            "{e}"
        );
        let e = cond("", json!({}), json!({})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Invalid ConditionExpression: The expression can not be empty;"
        );
        assert!(cond("a = :v AND", json!({}), json!({":v": {"S": "x"}})).is_err());
        assert!(cond("nofn(a)", json!({}), json!({})).is_err());
        // Deep nesting and huge expressions are refused, not recursed into.
        let deep = format!("{}a = :v{}", "(".repeat(200), ")".repeat(200));
        let e = cond(&deep, json!({}), json!({":v": {"S": "x"}})).unwrap_err();
        assert!(e.to_string().contains("nested too deeply"), "{e}");
        let huge = format!("{}a = :v{}", "(".repeat(5000), ")".repeat(5000));
        let e = cond(&huge, json!({}), json!({":v": {"S": "x"}})).unwrap_err();
        assert!(e.to_string().contains("maximum allowed size"), "{e}");
        let nots = format!("{}a = :v", "NOT ".repeat(1000));
        assert!(cond(&nots, json!({}), json!({":v": {"S": "x"}})).is_err());
        let ok = format!("{}a = :v{}", "(".repeat(50), ")".repeat(50));
        assert!(cond(&ok, json!({}), json!({":v": {"S": "x"}})).is_ok());
    }

    #[test]
    fn updates_apply() {
        let mut it = item(
            json!({"k": {"S": "a"}, "n": {"N": "1"}, "s": {"SS": ["x"]}, "l": {"L": [{"N": "1"}, {"N": "2"}, {"N": "3"}]},
            "m": {"M": {"inner": {"S": "v"}}}}),
        );
        let vals = json!({":one": {"N": "1"}, ":ys": {"SS": ["y", "x"]}, ":new": {"S": "n"}, ":l": {"L": [{"N": "4"}]}});
        let names = json!({"#c": "counter"});
        let mut ph = Placeholders::new(names.as_object(), vals.as_object());
        let actions = parse_update(
            "SET n = n + :one, #c = if_not_exists(#c, :one), m.inner = :new, l = list_append(l, :l) REMOVE s ADD added :ys",
            &mut ph,
        )
        .unwrap();
        ph.check_all_used().unwrap();
        apply_update(&mut it, &actions).unwrap();
        let out = Value::Object(crate::value::item_to_json(&it));
        assert_eq!(out["n"], json!({"N": "2"}));
        assert_eq!(out["counter"], json!({"N": "1"}));
        assert_eq!(out["m"]["M"]["inner"], json!({"S": "n"}));
        assert_eq!(out["l"]["L"].as_array().unwrap().len(), 4);
        assert!(out.get("s").is_none());
        assert_eq!(out["added"], json!({"SS": ["y", "x"]}));

        let mut ph = Placeholders::new(None, vals.as_object());
        let e = parse_update("SET a = :one, a = :one", &mut ph).unwrap_err();
        assert!(e.to_string().contains("Two document paths overlap"), "{e}");
        let mut ph = Placeholders::new(None, vals.as_object());
        let actions = parse_update("SET z = nope + :one", &mut ph).unwrap();
        assert!(apply_update(&mut it, &actions).is_err());
        let mut ph = Placeholders::new(None, vals.as_object());
        let actions = parse_update("REMOVE l[0], l[2] DELETE added :ys", &mut ph).unwrap();
        apply_update(&mut it, &actions).unwrap();
        let out = Value::Object(crate::value::item_to_json(&it));
        assert_eq!(out["l"], json!({"L": [{"N": "2"}, {"N": "4"}]}));
        assert!(out.get("added").is_none());
    }

    #[test]
    fn removals_use_the_old_positions() {
        let mut it = item(
            json!({"l": {"L": [{"S": "a"}, {"S": "b"}, {"S": "c"}]}, "m": {"M": {"x": {"S": "1"}, "y": {"S": "2"}}}}),
        );
        let mut ph = Placeholders::new(None, None);
        let actions = parse_update("REMOVE l[0], m.x, l[1]", &mut ph).unwrap();
        apply_update(&mut it, &actions).unwrap();
        let out = Value::Object(crate::value::item_to_json(&it));
        assert_eq!(out["l"], json!({"L": [{"S": "c"}]}));
        assert_eq!(out["m"], json!({"M": {"y": {"S": "2"}}}));
    }

    #[test]
    fn projections_select_paths() {
        let it = item(
            json!({"a": {"S": "1"}, "b": {"M": {"c": {"S": "2"}, "d": {"S": "3"}}}, "e": {"S": "4"}}),
        );
        let mut ph = Placeholders::new(None, None);
        let p = parse_projection("a, b.c", &mut ph).unwrap();
        let out = Value::Object(crate::value::item_to_json(&project(&it, &p)));
        assert_eq!(out, json!({"a": {"S": "1"}, "b": {"M": {"c": {"S": "2"}}}}));
    }

    #[test]
    fn placeholder_values_are_shared_by_their_uses() {
        let big = "x".repeat(1 << 20);
        let c = cond("a IN (:v, :v, :v)", json!({}), json!({":v": {"S": big}})).unwrap();
        let Condition::In(_, list) = &c else {
            panic!("{c:?}")
        };
        let Operand::Value(first) = &list[0] else {
            panic!()
        };
        assert!(
            list.iter()
                .all(|o| matches!(o, Operand::Value(v) if Arc::ptr_eq(v, first)))
        );
        assert_eq!(Arc::strong_count(first), 3, "one value for three uses");
        // SET copies of a large value stop at the item size limit.
        let vals = json!({":v": {"S": "y".repeat(300 * 1024)}});
        let mut ph = Placeholders::new(None, vals.as_object());
        let actions = parse_update("SET a = :v, b = :v, c = :v", &mut ph).unwrap();
        let e = apply_update(&mut Item::new(), &actions).unwrap_err();
        assert!(e.to_string().contains("maximum allowed size"), "{e}");
    }
}

//! The legacy (pre-expression) parameters: `Expected`, `AttributeUpdates`,
//! `KeyConditions`, `ScanFilter`/`QueryFilter` and `AttributesToGet`, turned
//! into the same conditions and actions expressions produce. The KCL 1.x and
//! 2.x lease managers use these.

use serde_json::{Map, Value};

use crate::error::DynamoError;
use crate::expr::{Comparator, Condition, Operand, Path, SetValue, UpdateAction};
use crate::value::AttributeValue;

fn invalid(msg: impl std::fmt::Display) -> DynamoError {
    DynamoError::Validation(format!("One or more parameter values were invalid: {msg}"))
}

fn values_of(v: Option<&Value>) -> Result<Vec<AttributeValue>, DynamoError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a.iter().map(AttributeValue::from_json).collect(),
        Some(_) => Err(DynamoError::Serialization(
            "Unexpected value type in payload".into(),
        )),
    }
}

/// One attribute's comparison, shared by Expected, KeyConditions and filters.
fn comparison(name: &str, op: &str, args: Vec<AttributeValue>) -> Result<Condition, DynamoError> {
    let path = || Operand::Path(Path::attribute(name));
    let arity = |n: usize| -> Result<(), DynamoError> {
        if args.len() == n {
            Ok(())
        } else {
            Err(invalid(format!(
                "Invalid number of argument(s) for the {op} ComparisonOperator"
            )))
        }
    };
    let cmp = |c: Comparator, args: &[AttributeValue]| {
        Condition::Compare(path(), c, Operand::value(args[0].clone()))
    };
    Ok(match op {
        "EQ" | "NE" | "LE" | "LT" | "GE" | "GT" => {
            arity(1)?;
            let c = match op {
                "EQ" => Comparator::Eq,
                "NE" => Comparator::Ne,
                "LE" => Comparator::Le,
                "LT" => Comparator::Lt,
                "GE" => Comparator::Ge,
                _ => Comparator::Gt,
            };
            if c != Comparator::Eq
                && c != Comparator::Ne
                && !matches!(
                    args[0],
                    AttributeValue::S(_) | AttributeValue::N(_) | AttributeValue::B(_)
                )
            {
                return Err(invalid(format!(
                    "ComparisonOperator {op} is not valid for {} AttributeValue type",
                    args[0].type_name()
                )));
            }
            cmp(c, &args)
        }
        "NULL" => {
            arity(0)?;
            Condition::NotExists(Path::attribute(name))
        }
        "NOT_NULL" => {
            arity(0)?;
            Condition::Exists(Path::attribute(name))
        }
        "CONTAINS" | "NOT_CONTAINS" => {
            arity(1)?;
            let c = Condition::Contains(path(), Operand::value(args[0].clone()));
            if op == "CONTAINS" {
                c
            } else {
                Condition::Not(Box::new(c))
            }
        }
        "BEGINS_WITH" => {
            arity(1)?;
            Condition::BeginsWith(path(), Operand::value(args[0].clone()))
        }
        "IN" => {
            if args.is_empty() {
                return Err(invalid(format!(
                    "Invalid number of argument(s) for the {op} ComparisonOperator"
                )));
            }
            Condition::In(path(), args.into_iter().map(Operand::value).collect())
        }
        "BETWEEN" => {
            arity(2)?;
            if args[0].compare(&args[1]) == Some(std::cmp::Ordering::Greater) {
                return Err(invalid(
                    "The BETWEEN condition was provided a range where the lower bound is greater than the upper bound",
                ));
            }
            Condition::Between(
                path(),
                Operand::value(args[0].clone()),
                Operand::value(args[1].clone()),
            )
        }
        _ => {
            return Err(DynamoError::Validation(format!(
                "1 validation error detected: Value '{op}' at 'comparisonOperator' failed to satisfy constraint: Member must satisfy enum value set: [IN, NULL, BETWEEN, LT, NOT_CONTAINS, EQ, GT, NOT_NULL, NE, LE, BEGINS_WITH, GE, CONTAINS]"
            )));
        }
    })
}

/// Joins conditions with AND (or OR) as a balanced tree, so that a map of
/// many thousands of entries nests only logarithmically deep.
fn combine(mut conds: Vec<Condition>, operator: Option<&str>) -> Option<Condition> {
    let or = operator == Some("OR");
    if conds.len() <= 1 {
        return conds.pop();
    }
    let right = conds.split_off(conds.len() / 2);
    let (a, b) = (combine(conds, operator)?, combine(right, operator)?);
    Some(if or {
        Condition::Or(Box::new(a), Box::new(b))
    } else {
        Condition::And(Box::new(a), Box::new(b))
    })
}

/// `Expected` with `ConditionalOperator`.
pub fn expected(
    expected: &Map<String, Value>,
    operator: Option<&str>,
) -> Result<Option<Condition>, DynamoError> {
    let mut conds = Vec::new();
    for (name, spec) in expected {
        let value = match spec.get("Value") {
            None | Some(Value::Null) => None,
            Some(v) => Some(AttributeValue::from_json(v)?),
        };
        let exists = spec.get("Exists").and_then(Value::as_bool);
        let op = spec.get("ComparisonOperator").and_then(Value::as_str);
        let list = values_of(spec.get("AttributeValueList"))?;
        let cond = if let Some(op) = op {
            if exists.is_some() {
                return Err(invalid(format!(
                    "Exists and ComparisonOperator cannot be used together for Attribute: {name}"
                )));
            }
            let args = match (value, list.is_empty()) {
                (Some(_), false) => {
                    return Err(invalid(format!(
                        "Value and AttributeValueList cannot be used together for Attribute: {name}"
                    )));
                }
                (Some(v), true) => vec![v],
                (None, _) => list,
            };
            comparison(name, op, args)?
        } else if exists == Some(false) {
            if value.is_some() {
                return Err(invalid(format!(
                    "Value cannot be used when Exists is false for Attribute: {name}"
                )));
            }
            Condition::NotExists(Path::attribute(name))
        } else {
            let Some(v) = value else {
                let state = if exists.is_some() { "true" } else { "null" };
                return Err(invalid(format!(
                    "Value must be provided when Exists is {state} for Attribute: {name}"
                )));
            };
            Condition::Compare(
                Operand::Path(Path::attribute(name)),
                Comparator::Eq,
                Operand::value(v),
            )
        };
        conds.push(cond);
    }
    Ok(combine(conds, operator))
}

/// `KeyConditions`, `ScanFilter` and `QueryFilter`: attribute to
/// `{ComparisonOperator, AttributeValueList}`.
pub fn filter(
    conditions: &Map<String, Value>,
    operator: Option<&str>,
) -> Result<Option<Condition>, DynamoError> {
    let mut conds = Vec::new();
    for (name, spec) in conditions {
        let op = spec
            .get("ComparisonOperator")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                DynamoError::Validation(
                    "1 validation error detected: Value null at 'comparisonOperator' failed to satisfy constraint: Member must not be null".into(),
                )
            })?;
        conds.push(comparison(
            name,
            op,
            values_of(spec.get("AttributeValueList"))?,
        )?);
    }
    Ok(combine(conds, operator))
}

/// `AttributeUpdates` of UpdateItem.
pub fn attribute_updates(updates: &Map<String, Value>) -> Result<Vec<UpdateAction>, DynamoError> {
    let mut actions = Vec::new();
    for (name, spec) in updates {
        let value = match spec.get("Value") {
            None | Some(Value::Null) => None,
            Some(v) => Some(AttributeValue::from_json(v)?),
        };
        let path = Path::attribute(name);
        let action = spec.get("Action").and_then(Value::as_str).unwrap_or("PUT");
        actions.push(match (action, value) {
            ("PUT", Some(v)) => UpdateAction::Set(path, SetValue::Operand(Operand::value(v))),
            ("PUT", None) => {
                return Err(invalid(format!(
                    "Only DELETE action is allowed when no attribute value is specified: {name}"
                )));
            }
            ("DELETE", None) => UpdateAction::Remove(path),
            ("DELETE", Some(v)) => match v {
                AttributeValue::Ss(_) | AttributeValue::Ns(_) | AttributeValue::Bs(_) => {
                    UpdateAction::Delete(path, v.into())
                }
                other => {
                    return Err(invalid(format!(
                        "DELETE action with value is not supported for the type {}",
                        other.type_name()
                    )));
                }
            },
            ("ADD", Some(v)) => match v {
                AttributeValue::N(_)
                | AttributeValue::Ss(_)
                | AttributeValue::Ns(_)
                | AttributeValue::Bs(_) => UpdateAction::Add(path, v.into()),
                AttributeValue::L(l) => UpdateAction::Set(
                    path.clone(),
                    SetValue::ListAppend(
                        Box::new(SetValue::IfNotExists(
                            path,
                            Box::new(SetValue::Operand(Operand::value(AttributeValue::L(Vec::new())))),
                        )),
                        Box::new(SetValue::Operand(Operand::value(AttributeValue::L(l)))),
                    ),
                ),
                other => {
                    return Err(invalid(format!(
                        "ADD action is not supported for the type {}",
                        other.type_name()
                    )));
                }
            },
            ("ADD", None) => {
                return Err(invalid(format!(
                    "Only DELETE action is allowed when no attribute value is specified: {name}"
                )));
            }
            (other, _) => {
                return Err(DynamoError::Validation(format!(
                    "1 validation error detected: Value '{other}' at 'attributeUpdates.{name}.member.action' failed to satisfy constraint: Member must satisfy enum value set: [ADD, PUT, DELETE]"
                )));
            }
        });
    }
    Ok(actions)
}

/// `AttributesToGet` as projection paths.
pub fn attributes_to_get(v: &[Value]) -> Vec<Path> {
    v.iter()
        .filter_map(Value::as_str)
        .map(Path::attribute)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::item_from_json;
    use serde_json::json;

    #[test]
    fn expected_matches_the_kcl_forms() {
        let item = item_from_json(
            json!({"leaseKey": {"S": "s-1"}, "leaseCounter": {"N": "3"}, "leaseOwner": {"S": "w"}})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        let ok = json!({"leaseCounter": {"Value": {"N": "3"}}, "leaseOwner": {"Value": {"S": "w"}, "Exists": true}});
        assert!(
            expected(ok.as_object().unwrap(), None)
                .unwrap()
                .unwrap()
                .eval(&item)
        );
        let absent = json!({"leaseKey": {"Exists": false}});
        let c = expected(absent.as_object().unwrap(), None)
            .unwrap()
            .unwrap();
        assert!(!c.eval(&item));
        assert!(c.eval(&Default::default()));
        let or = json!({"leaseCounter": {"ComparisonOperator": "GT", "AttributeValueList": [{"N": "5"}]},
                        "leaseOwner": {"ComparisonOperator": "NOT_NULL"}});
        assert!(
            expected(or.as_object().unwrap(), Some("OR"))
                .unwrap()
                .unwrap()
                .eval(&item)
        );
        assert!(
            !expected(or.as_object().unwrap(), Some("AND"))
                .unwrap()
                .unwrap()
                .eval(&item)
        );
        for bad in [
            json!({"a": {"Exists": true}}),
            json!({"a": {"Exists": false, "Value": {"S": "x"}}}),
            json!({"a": {"ComparisonOperator": "EQ"}}),
            json!({"a": {"ComparisonOperator": "BETWEEN", "AttributeValueList": [{"N": "2"}, {"N": "1"}]}}),
        ] {
            assert!(expected(bad.as_object().unwrap(), None).is_err(), "{bad}");
        }
    }

    #[test]
    fn attribute_updates_become_actions() {
        let mut item = item_from_json(
            json!({"leaseKey": {"S": "s-1"}, "leaseCounter": {"N": "3"}, "old": {"S": "x"}})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        let u = json!({"leaseCounter": {"Action": "ADD", "Value": {"N": "1"}},
                       "leaseOwner": {"Value": {"S": "w2"}},
                       "old": {"Action": "DELETE"}});
        let actions = attribute_updates(u.as_object().unwrap()).unwrap();
        crate::expr::apply_update(&mut item, &actions).unwrap();
        let out = Value::Object(crate::value::item_to_json(&item));
        assert_eq!(
            out,
            json!({"leaseKey": {"S": "s-1"}, "leaseCounter": {"N": "4"}, "leaseOwner": {"S": "w2"}})
        );
    }
}

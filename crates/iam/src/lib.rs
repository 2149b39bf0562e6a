//! IAM-style policies: identity policies of principals and resource policies
//! of resources (streams, consumers, and whatever later services own),
//! evaluated the AWS way: an explicit Deny wins, otherwise an Allow is needed.
//!
//! This crate knows policy documents and nothing of any service: the
//! services say which action and resource a request is, the front door says
//! who the principal is, and [`decide`] combines the two policies.
//!
//! ```
//! use ripstream_iam::{Policy, Verdict, decide};
//! let identity = Policy::parse(r#"{"Statement": {"Effect": "Allow", "Action": "kinesis:Get*", "Resource": "*"}}"#).unwrap();
//! let me = "arn:aws:iam::000000000000:user/reader";
//! let arn = "arn:aws:kinesis:us-east-1:000000000000:stream/orders";
//! assert_eq!(decide(Some(&identity), None, "kinesis:GetRecords", arn, me, "000000000000"), Verdict::Allowed);
//! assert_eq!(decide(Some(&identity), None, "kinesis:PutRecord", arn, me, "000000000000"), Verdict::NoAllow);
//! ```

use serde_json::Value;

/// What a policy says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
    /// No statement applies.
    NotApplicable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Allow,
    Deny,
}

/// A list of patterns, or the complement of one (`NotAction`, `NotResource`).
#[derive(Debug, Clone)]
struct Patterns {
    negated: bool,
    patterns: Vec<String>,
}

#[derive(Debug, Clone)]
struct Statement {
    effect: Effect,
    actions: Patterns,
    resources: Patterns,
    /// Resource policies name who they apply to.
    principals: Option<Patterns>,
}

/// A parsed policy document.
#[derive(Debug, Clone)]
pub struct Policy {
    statements: Vec<Statement>,
}

/// The AWS partition of a region, as ARNs name it.
pub fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else if region.starts_with("us-isob-") {
        "aws-iso-b"
    } else if region.starts_with("us-iso-") {
        "aws-iso"
    } else {
        "aws"
    }
}

/// The outcome of evaluating a request against both policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// An explicit Deny in the principal's identity policy.
    DeniedByIdentity,
    /// An explicit Deny in the resource's policy.
    DeniedByResource,
    /// Nothing allows it.
    NoAllow,
}

/// Same-account evaluation: an explicit Deny in either policy wins;
/// otherwise an Allow in either is needed. A principal without an identity
/// policy (`None`) is allowed everything its resource policies do not deny.
pub fn decide(
    identity: Option<&Policy>,
    resource_policy: Option<&Policy>,
    action: &str,
    resource: &str,
    principal: &str,
    account: &str,
) -> Verdict {
    let by_identity = identity.map_or(Decision::Allow, |p| {
        p.evaluate(action, resource, principal, account)
    });
    let by_resource = resource_policy.map_or(Decision::NotApplicable, |p| {
        p.evaluate(action, resource, principal, account)
    });
    match (by_identity, by_resource) {
        (Decision::Deny, _) => Verdict::DeniedByIdentity,
        (_, Decision::Deny) => Verdict::DeniedByResource,
        (Decision::Allow, _) | (_, Decision::Allow) => Verdict::Allowed,
        _ => Verdict::NoAllow,
    }
}

/// `*` matches any run of characters, `?` any one character.
pub fn wildcard_match(pattern: &str, text: &str, case_insensitive: bool) -> bool {
    let norm = |s: &str| {
        if case_insensitive {
            s.to_ascii_lowercase()
        } else {
            s.to_string()
        }
    };
    let (p, t) = (norm(pattern), norm(text));
    let (p, t) = (p.as_bytes(), t.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

fn strings(v: &Value, what: &str) -> Result<Vec<String>, String> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(String::from)
                    .ok_or_else(|| format!("{what} must be strings"))
            })
            .collect(),
        _ => Err(format!("{what} must be a string or a list of strings")),
    }
}

fn patterns(
    stmt: &serde_json::Map<String, Value>,
    key: &str,
    not_key: &str,
) -> Result<Patterns, String> {
    match (stmt.get(key), stmt.get(not_key)) {
        (Some(v), None) => Ok(Patterns {
            negated: false,
            patterns: strings(v, key)?,
        }),
        (None, Some(v)) => Ok(Patterns {
            negated: true,
            patterns: strings(v, not_key)?,
        }),
        (Some(_), Some(_)) => Err(format!("a statement cannot have both {key} and {not_key}")),
        (None, None) => Err(format!("a statement needs {key} or {not_key}")),
    }
}

/// The partition of an ARN (`aws` when it has none).
fn arn_partition(arn: &str) -> &str {
    arn.split(':')
        .nth(1)
        .filter(|p| !p.is_empty())
        .unwrap_or("aws")
}

fn principal_patterns(v: &Value) -> Result<Vec<String>, String> {
    match v {
        Value::String(s) if s == "*" => Ok(vec!["*".into()]),
        Value::Object(o) => {
            let mut out = Vec::new();
            for (k, v) in o {
                if k != "AWS" {
                    return Err(format!("principal type {k} is not supported; use AWS"));
                }
                out.extend(strings(v, "Principal.AWS")?);
            }
            Ok(out)
        }
        _ => Err("Principal must be \"*\" or {\"AWS\": ...}".into()),
    }
}

impl Policy {
    /// Parses a policy document.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let doc: Value =
            serde_json::from_str(text).map_err(|e| format!("the policy is not valid JSON: {e}"))?;
        let stmts = match doc.get("Statement") {
            Some(Value::Array(a)) => a.clone(),
            Some(o @ Value::Object(_)) => vec![o.clone()],
            _ => return Err("the policy needs a Statement".into()),
        };
        let mut statements = Vec::new();
        for s in stmts {
            let o = s.as_object().ok_or("each statement must be an object")?;
            let effect = match o.get("Effect").and_then(Value::as_str) {
                Some("Allow") => Effect::Allow,
                Some("Deny") => Effect::Deny,
                _ => return Err("Effect must be Allow or Deny".into()),
            };
            if o.contains_key("Condition") {
                return Err("Condition is not supported".into());
            }
            let principals = match (o.get("Principal"), o.get("NotPrincipal")) {
                (Some(p), None) => Some(Patterns {
                    negated: false,
                    patterns: principal_patterns(p)?,
                }),
                // IAM refuses "allow everyone except": it would grant the world.
                (None, Some(_)) if effect == Effect::Allow => {
                    return Err("NotPrincipal cannot be used with \"Effect\": \"Allow\"".into());
                }
                (None, Some(p)) => Some(Patterns {
                    negated: true,
                    patterns: principal_patterns(p)?,
                }),
                (None, None) => None,
                _ => return Err("a statement cannot have both Principal and NotPrincipal".into()),
            };
            statements.push(Statement {
                effect,
                actions: patterns(o, "Action", "NotAction")?,
                resources: patterns(o, "Resource", "NotResource").or_else(|e| {
                    if principals.is_some() {
                        Ok(Patterns {
                            negated: false,
                            patterns: vec!["*".into()],
                        })
                    } else {
                        Err(e)
                    }
                })?,
                principals,
            });
        }
        Ok(Policy { statements })
    }

    /// What a stored document that no longer parses stands for: everything
    /// is denied to everyone except managing the resource policy itself, so
    /// a Deny it held can never turn into access, and an owner can still
    /// replace or delete it.
    pub fn deny_all_but_policy_management() -> Policy {
        Policy {
            statements: vec![Statement {
                effect: Effect::Deny,
                actions: Patterns {
                    negated: true,
                    patterns: vec![
                        "*:PutResourcePolicy".into(),
                        "*:GetResourcePolicy".into(),
                        "*:DeleteResourcePolicy".into(),
                    ],
                },
                resources: Patterns {
                    negated: false,
                    patterns: vec!["*".into()],
                },
                principals: Some(Patterns {
                    negated: false,
                    patterns: vec!["*".into()],
                }),
            }],
        }
    }

    /// Whether the document names principals (a resource policy) in every statement.
    pub fn is_resource_policy(&self) -> bool {
        !self.statements.is_empty() && self.statements.iter().all(|s| s.principals.is_some())
    }

    /// Evaluates `action` on `resource` by `principal` (an IAM ARN, with its account id).
    pub fn evaluate(
        &self,
        action: &str,
        resource: &str,
        principal: &str,
        account: &str,
    ) -> Decision {
        let mut allowed = false;
        for s in &self.statements {
            let matches = |p: &Patterns, text: &str, ci: bool| {
                p.negated != p.patterns.iter().any(|pat| wildcard_match(pat, text, ci))
            };
            if !matches(&s.actions, action, true) || !matches(&s.resources, resource, false) {
                continue;
            }
            // Only a statement that names this principal itself (or everyone)
            // grants on its own; one that names the account delegates to the
            // account's identity policies (IAM's same-account evaluation), and
            // so allows nothing here. Either kind of match denies.
            let mut grants = true;
            if let Some(pr) = &s.principals {
                let exact = pr.patterns.iter().any(|p| p == "*" || p == principal);
                let via_account = pr.patterns.iter().any(|p| {
                    p == account
                        || *p == format!("arn:{}:iam::{account}:root", arn_partition(principal))
                });
                // NotPrincipal exempts only the principals it lists exactly:
                // listing the account does not exempt every user in it.
                let hit = if pr.negated {
                    exact
                } else {
                    exact || via_account
                };
                if hit == pr.negated {
                    continue;
                }
                grants = exact || pr.negated;
            }
            match s.effect {
                Effect::Deny => return Decision::Deny,
                Effect::Allow if grants => allowed = true,
                Effect::Allow => {}
            }
        }
        if allowed {
            Decision::Allow
        } else {
            Decision::NotApplicable
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "arn:aws:iam::000000000000:user/ingest";

    #[test]
    fn wildcards() {
        assert!(wildcard_match("kinesis:Get*", "kinesis:GetRecords", true));
        assert!(wildcard_match("KINESIS:get*", "kinesis:GetRecords", true));
        assert!(!wildcard_match("kinesis:Get*", "kinesis:PutRecord", true));
        assert!(wildcard_match(
            "arn:aws:kinesis:*:*:stream/orders*",
            "arn:aws:kinesis:us-east-1:000000000000:stream/orders-eu",
            false
        ));
        assert!(!wildcard_match(
            "arn:aws:kinesis:*:*:stream/Orders*",
            "arn:aws:kinesis:us-east-1:000000000000:stream/orders",
            false
        ));
        assert!(wildcard_match("a?c", "abc", false));
        assert!(wildcard_match("*", "", false));
    }

    #[test]
    fn explicit_deny_wins_and_no_allow_means_no() {
        let p = Policy::parse(
            r#"{"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": ["kinesis:*"], "Resource": "*"},
                {"Effect": "Deny", "Action": "kinesis:DeleteStream", "Resource": "arn:aws:kinesis:*:*:stream/prod-*"}
            ]}"#,
        )
        .unwrap();
        let prod = "arn:aws:kinesis:us-east-1:000000000000:stream/prod-orders";
        assert_eq!(
            p.evaluate("kinesis:DeleteStream", prod, ME, "000000000000"),
            Decision::Deny
        );
        assert_eq!(
            p.evaluate("kinesis:PutRecord", prod, ME, "000000000000"),
            Decision::Allow
        );
        let narrow = Policy::parse(
            r#"{"Statement": {"Effect": "Allow", "Action": "kinesis:Describe*", "Resource": "*"}}"#,
        )
        .unwrap();
        assert_eq!(
            narrow.evaluate("kinesis:PutRecord", prod, ME, "000000000000"),
            Decision::NotApplicable
        );
        let not_action = Policy::parse(r#"{"Statement": {"Effect": "Allow", "NotAction": "kinesis:Delete*", "Resource": "*"}}"#).unwrap();
        assert_eq!(
            not_action.evaluate("kinesis:DeleteStream", prod, ME, "000000000000"),
            Decision::NotApplicable
        );
        assert_eq!(
            not_action.evaluate("kinesis:ListShards", prod, ME, "000000000000"),
            Decision::Allow
        );
    }

    #[test]
    fn resource_policies_name_principals() {
        let p = Policy::parse(&format!(
            r#"{{"Statement": [{{"Effect": "Allow", "Principal": {{"AWS": "{ME}"}}, "Action": "kinesis:GetRecords", "Resource": "*"}}]}}"#
        ))
        .unwrap();
        assert!(p.is_resource_policy());
        assert_eq!(
            p.evaluate("kinesis:GetRecords", "x", ME, "000000000000"),
            Decision::Allow
        );
        assert_eq!(
            p.evaluate(
                "kinesis:GetRecords",
                "x",
                "arn:aws:iam::000000000000:user/other",
                "000000000000"
            ),
            Decision::NotApplicable
        );
        // Naming the account delegates to its identity policies: no grant by itself.
        for who in ["arn:aws:iam::000000000000:root", "000000000000"] {
            let account = Policy::parse(&format!(r#"{{"Statement": [{{"Effect": "Allow", "Principal": {{"AWS": "{who}"}}, "Action": "kinesis:*"}}]}}"#)).unwrap();
            assert_eq!(
                account.evaluate("kinesis:GetRecords", "x", ME, "000000000000"),
                Decision::NotApplicable,
                "{who}"
            );
            let deny = Policy::parse(&format!(r#"{{"Statement": [{{"Effect": "Deny", "Principal": {{"AWS": "{who}"}}, "Action": "kinesis:*"}}]}}"#)).unwrap();
            assert_eq!(
                deny.evaluate("kinesis:GetRecords", "x", ME, "000000000000"),
                Decision::Deny,
                "{who}"
            );
        }
        let everyone = Policy::parse(r#"{"Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kinesis:*"}]}"#).unwrap();
        assert_eq!(
            everyone.evaluate("kinesis:GetRecords", "x", ME, "000000000000"),
            Decision::Allow
        );
    }

    #[test]
    fn partial_principal_wildcards_match_nobody() {
        for pattern in [
            "arn:aws:iam::000000000000:user/*",
            "arn:aws:iam::000000000000:user/ing*",
            "arn:aws:iam::*:user/ingest",
            "arn:aws:iam::000000000000:user/inges?",
        ] {
            let p = Policy::parse(&format!(
                r#"{{"Statement": [{{"Effect": "Allow", "Principal": {{"AWS": "{pattern}"}}, "Action": "kinesis:*"}}]}}"#
            ))
            .unwrap();
            assert_eq!(
                p.evaluate("kinesis:GetRecords", "x", ME, "000000000000"),
                Decision::NotApplicable,
                "{pattern}"
            );
        }
    }

    #[test]
    fn not_principal_only_denies() {
        assert!(Policy::parse(r#"{"Statement": [{"Effect": "Allow", "NotPrincipal": {"AWS": "arn:aws:iam::000000000000:user/x"}, "Action": "kinesis:*"}]}"#).is_err());
        let p = Policy::parse(r#"{"Statement": [{"Effect": "Deny", "NotPrincipal": {"AWS": "arn:aws:iam::000000000000:user/admin"}, "Action": "kinesis:DeleteStream"}]}"#).unwrap();
        assert_eq!(
            p.evaluate("kinesis:DeleteStream", "x", ME, "000000000000"),
            Decision::Deny
        );
        assert_eq!(
            p.evaluate(
                "kinesis:DeleteStream",
                "x",
                "arn:aws:iam::000000000000:user/admin",
                "000000000000"
            ),
            Decision::NotApplicable
        );
    }

    #[test]
    fn not_principal_naming_the_account_exempts_no_user() {
        let p = Policy::parse(r#"{"Statement": [{"Effect": "Deny", "NotPrincipal": {"AWS": "arn:aws:iam::000000000000:root"}, "Action": "kinesis:*"}]}"#).unwrap();
        assert_eq!(
            p.evaluate("kinesis:GetRecords", "x", ME, "000000000000"),
            Decision::Deny
        );
    }

    #[test]
    fn an_unreadable_stored_policy_fails_closed() {
        let p = Policy::deny_all_but_policy_management();
        assert_eq!(
            p.evaluate("kinesis:GetRecords", "x", ME, "000000000000"),
            Decision::Deny
        );
        assert_eq!(
            p.evaluate("kinesis:DeleteResourcePolicy", "x", ME, "000000000000"),
            Decision::NotApplicable
        );
    }

    #[test]
    fn partitions() {
        assert_eq!(partition("us-east-1"), "aws");
        assert_eq!(partition("cn-north-1"), "aws-cn");
        assert_eq!(partition("us-gov-west-1"), "aws-us-gov");
        assert_eq!(partition("us-isob-east-1"), "aws-iso-b");
        assert_eq!(partition("us-iso-east-1"), "aws-iso");
    }

    #[test]
    fn bad_documents_are_refused() {
        for bad in [
            "not json",
            "{}",
            r#"{"Statement": [{"Effect": "Maybe", "Action": "*", "Resource": "*"}]}"#,
            r#"{"Statement": [{"Effect": "Allow", "Resource": "*"}]}"#,
            r#"{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {}}]}"#,
        ] {
            assert!(Policy::parse(bad).is_err(), "{bad}");
        }
    }
}

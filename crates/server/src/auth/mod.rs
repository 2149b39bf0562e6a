//! Who is calling (SigV4 against the configured principals) and whether they
//! may (their identity policy and the resource's policy).

pub mod chunked;
pub mod sigv4;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use http::StatusCode;
use ripstream_iam::{Policy, Verdict};
use serde::Deserialize;

use crate::wire::WireError;

/// A caller with credentials, as configured in the credentials file.
pub struct Principal {
    pub name: String,
    pub access_key_id: String,
    secret_access_key: String,
    /// `None`: allowed everything.
    pub policy: Option<Policy>,
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret never reaches logs.
        f.debug_struct("Principal")
            .field("name", &self.name)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("policy", &self.policy.is_some())
            .finish()
    }
}

impl Principal {
    /// The principal's IAM ARN, in the partition of the server's region.
    pub fn arn(&self, region: &str, account: &str) -> String {
        format!(
            "arn:{}:iam::{account}:user/{}",
            ripstream_iam::partition(region),
            self.name
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalEntry {
    name: String,
    access_key_id: String,
    secret_access_key: String,
    #[serde(default)]
    policy: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    #[serde(default)]
    principal: Vec<PrincipalEntry>,
}

/// The principals of a credentials file, by access key id.
#[derive(Debug, Default)]
pub struct Principals {
    by_key: HashMap<String, Principal>,
}

impl Principals {
    /// Parses a credentials file (TOML, one `[[principal]]` table each).
    pub fn parse(text: &str) -> Result<Principals, String> {
        let file: CredentialsFile = toml_parse(text)?;
        let mut by_key = HashMap::new();
        for p in file.principal {
            if p.access_key_id.is_empty() || p.secret_access_key.is_empty() {
                return Err(format!(
                    "principal {}: access_key_id and secret_access_key must not be empty",
                    p.name
                ));
            }
            let policy = match &p.policy {
                Some(doc) => {
                    Some(Policy::parse(doc).map_err(|e| format!("principal {}: {e}", p.name))?)
                }
                None => None,
            };
            if by_key.contains_key(&p.access_key_id) {
                return Err(format!(
                    "access key {} is given to two principals",
                    p.access_key_id
                ));
            }
            by_key.insert(
                p.access_key_id.clone(),
                Principal {
                    name: p.name,
                    access_key_id: p.access_key_id,
                    secret_access_key: p.secret_access_key,
                    policy,
                },
            );
        }
        if by_key.is_empty() {
            return Err("the credentials file defines no [[principal]]".into());
        }
        Ok(Principals { by_key })
    }

    pub fn load(path: &Path) -> Result<Principals, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Principals::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    pub fn get(&self, access_key_id: &str) -> Option<&Principal> {
        self.by_key.get(access_key_id)
    }
}

fn toml_parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

impl sigv4::SecretLookup for Principals {
    fn secret(&self, access_key_id: &str) -> Option<&str> {
        self.by_key
            .get(access_key_id)
            .map(|p| p.secret_access_key.as_str())
    }
}

/// The answer when a request needs a signature and has none.
pub fn missing_token() -> WireError {
    WireError::new(
        StatusCode::BAD_REQUEST,
        "MissingAuthenticationTokenException",
        "Missing Authentication Token",
    )
}

/// Decides whether `principal` may perform `action` on `resource`.
pub fn authorize(
    principal: &Principal,
    region: &str,
    account: &str,
    action: &str,
    resource: &str,
    resource_policy: Option<&Policy>,
) -> Result<(), WireError> {
    let who = principal.arn(region, account);
    let denied = |why: &str| {
        Err(WireError::new(
            StatusCode::BAD_REQUEST,
            "AccessDeniedException",
            format!(
                "User: {who} is not authorized to perform: {action} on resource: {resource} {why}"
            ),
        ))
    };
    match ripstream_iam::decide(
        principal.policy.as_ref(),
        resource_policy,
        action,
        resource,
        &who,
        account,
    ) {
        Verdict::Allowed => Ok(()),
        Verdict::DeniedByIdentity => denied("with an explicit deny in an identity-based policy"),
        Verdict::DeniedByResource => denied("with an explicit deny in a resource-based policy"),
        Verdict::NoAllow => denied(&format!(
            "because no identity-based policy allows the {action} action"
        )),
    }
}

//! Encryption at rest: a local keyring standing in for KMS, and the batch
//! cipher the shard log uses. Every service that stores records encrypted
//! (Data Streams, later Firehose) names its master keys here.
//!
//! Envelope encryption as KMS does it: every batch gets a fresh 256-bit data
//! key; the records are sealed with AES-256-GCM under it, and the data key is
//! itself sealed under the master key the stream names. The stored batch is
//!
//! ```text
//! 1 | key id length u8 | key id | wrapped data key (nonce 12, ciphertext 32, tag 16) | nonce 12 | ciphertext | tag 16
//! ```
//!
//! so a batch names its master key and opens only with it: a missing,
//! disabled or different key gives a KMS error, never garbage.
//!
//! Objects (S3's SSE-KMS and SSE-S3) are sealed the same way but in
//! chunks, so a range opens only what it needs: see [`ObjectSealer`] and
//! the format in the `object` module. The shard log's `BatchCipher` is the
//! `log` feature's (on by default), so the object store links no log.

use std::collections::HashMap;
use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
#[cfg(feature = "log")]
use ripstream_log::{BatchCipher, CipherError};
use serde::{Deserialize, Serialize};

/// Why a key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// No key has that id, ARN or alias (KMS's NotFoundException).
    #[error("{0}")]
    NotFound(String),
    /// The key exists but is disabled (KMS's DisabledException).
    #[error("{0}")]
    Disabled(String),
    /// The keyring file could not be read, written or parsed; the I/O or
    /// TOML error, where there is one, is kept as the source.
    #[error("{message}")]
    File {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

type Result<T> = std::result::Result<T, KeyringError>;

#[cfg(feature = "log")]
const VERSION: u8 = 1;
const TAG_LEN: usize = 16;
const WRAPPED_LEN: usize = NONCE_LEN + 32 + TAG_LEN;
/// The alias AWS gives the Kinesis-managed key.
pub const MANAGED_ALIAS: &str = "alias/aws/kinesis";
/// The alias AWS gives the S3-managed KMS key: SSE-KMS without a key id.
pub const S3_MANAGED_ALIAS: &str = "alias/aws/s3";
/// The server's own key for SSE-S3 (`AES256`), which AWS keeps outside
/// KMS: a keyring key here, so it is kept and rotated like the others.
pub const SSE_S3_ALIAS: &str = "alias/ripstream/sse-s3";

mod object;
pub use object::{
    CHUNK, MAX_HEADER_LEN, ObjectOpener, ObjectSealer, SealError, header_len, plain_len, sealed_len,
};

/// A keyring parse error by line and column, without the source snippet
/// toml's own message quotes: that line may hold key material.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
            format!("line {line}, column {column}: {}", e.message())
        }
        None => e.message().to_string(),
    }
}

/// One master key of the keyring file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// The key id, as in `arn:aws:kms:<region>:<account>:key/<id>`.
    pub id: String,
    /// Alias names, each starting with `alias/`.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The 256-bit key, base64.
    pub material: String,
    #[serde(default = "enabled")]
    pub enabled: bool,
}

fn enabled() -> bool {
    true
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile {
    #[serde(default)]
    key: Vec<KeyEntry>,
}

struct MasterKey {
    entry: KeyEntry,
    key: LessSafeKey,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.entry.id)
            .field("enabled", &self.entry.enabled)
            .finish()
    }
}

/// The master keys, by id and alias.
#[derive(Debug)]
pub struct Keyring {
    keys: HashMap<String, MasterKey>,
    aliases: HashMap<String, String>,
    region: String,
    account: String,
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::fill(&mut b[..]);
    b
}

fn aead_key(material: &[u8]) -> Option<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, material)
        .ok()
        .map(LessSafeKey::new)
}

fn seal(key: &LessSafeKey, aad: &[u8], plaintext: &[u8]) -> Option<Vec<u8>> {
    let nonce = random::<NONCE_LEN>();
    let mut buf = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut buf,
    )
    .ok()?;
    let mut out = Vec::with_capacity(NONCE_LEN + buf.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&buf);
    Some(out)
}

fn open(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return None;
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut buf = rest.to_vec();
    let plain = key.open_in_place(nonce, Aad::from(aad), &mut buf).ok()?;
    Some(plain.to_vec())
}

impl Keyring {
    /// Loads the keyring file, creating it with a generated key for
    /// `alias/aws/kinesis` if it does not exist.
    pub fn open(path: &Path, region: &str, account: &str) -> Result<Keyring> {
        let file_error = |e: &dyn std::fmt::Display| format!("keyring {}: {e}", path.display());
        let fail = |e: String| KeyringError::File {
            message: file_error(&e),
            source: None,
        };
        let failed = |e: Box<dyn std::error::Error + Send + Sync>| KeyringError::File {
            message: file_error(&e),
            source: Some(e),
        };
        if !path.exists() {
            let file = KeyringFile {
                key: vec![KeyEntry {
                    id: uuid_like(),
                    aliases: vec![MANAGED_ALIAS.to_string()],
                    material: STANDARD.encode(random::<32>()),
                    enabled: true,
                }],
            };
            let text = toml::to_string(&file).map_err(|e| failed(e.into()))?;
            write_private(path, &text).map_err(|e| failed(e.into()))?;
        }
        let text = std::fs::read_to_string(path).map_err(|e| failed(e.into()))?;
        Keyring::parse(&text, region, account).map_err(fail)
    }

    /// Adds a generated key for each alias the keyring file (created if
    /// missing) lacks, as AWS creates a managed key on its first use. The
    /// key is appended as text, so the operator's comments stay.
    pub fn ensure_aliases(path: &Path, aliases: &[&str]) -> Result<()> {
        use std::io::Write;
        let failed = |e: Box<dyn std::error::Error + Send + Sync>| KeyringError::File {
            message: format!("keyring {}: {e}", path.display()),
            source: Some(e),
        };
        // An existing but empty file (an operator emptied it) is appended
        // to, not recreated: only a missing file is created private.
        let (text, exists) = match std::fs::read_to_string(path) {
            Ok(t) => (t, true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), false),
            Err(e) => return Err(failed(e.into())),
        };
        let file: KeyringFile =
            toml::from_str(&text).map_err(|e| failed(toml_error(&text, &e).into()))?;
        let missing: Vec<&str> = aliases
            .iter()
            .copied()
            .filter(|a| !file.key.iter().any(|k| k.aliases.iter().any(|x| x == a)))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let added = KeyringFile {
            key: missing
                .iter()
                .map(|a| KeyEntry {
                    id: uuid_like(),
                    aliases: vec![a.to_string()],
                    material: STANDARD.encode(random::<32>()),
                    enabled: true,
                })
                .collect(),
        };
        let mut block = toml::to_string(&added).map_err(|e| failed(e.into()))?;
        if !text.is_empty() && !text.ends_with('\n') {
            block.insert(0, '\n');
        }
        if !exists {
            return write_private(path, &block).map_err(|e| failed(e.into()));
        }
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| failed(e.into()))?;
        f.write_all(block.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| failed(e.into()))
    }

    /// Parses keyring TOML.
    pub fn parse(text: &str, region: &str, account: &str) -> std::result::Result<Keyring, String> {
        let file: KeyringFile = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        let mut keys = HashMap::new();
        let mut aliases = HashMap::new();
        for entry in file.key {
            let material = STANDARD
                .decode(&entry.material)
                .map_err(|_| format!("key {}: material is not base64", entry.id))?;
            let key = aead_key(&material)
                .filter(|_| material.len() == 32)
                .ok_or_else(|| format!("key {}: material must be 32 bytes", entry.id))?;
            for a in &entry.aliases {
                if !a.starts_with("alias/") {
                    return Err(format!(
                        "key {}: alias {a} must start with alias/",
                        entry.id
                    ));
                }
                aliases.insert(a.clone(), entry.id.clone());
            }
            keys.insert(entry.id.clone(), MasterKey { entry, key });
        }
        Ok(Keyring {
            keys,
            aliases,
            region: region.to_string(),
            account: account.to_string(),
        })
    }

    /// The key id a KeyId names: a key id, a key ARN, an alias name or an alias ARN.
    pub fn resolve(&self, key_id: &str) -> Result<String> {
        let not_found = || KeyringError::NotFound(format!("Key '{key_id}' does not exist"));
        let arn_prefix = format!("arn:aws:kms:{}:{}:", self.region, self.account);
        let local = key_id.strip_prefix(&arn_prefix).unwrap_or(key_id);
        let id = if let Some(id) = local.strip_prefix("key/") {
            id.to_string()
        } else if local.starts_with("alias/") {
            self.aliases.get(local).cloned().ok_or_else(not_found)?
        } else {
            local.to_string()
        };
        let key = self.keys.get(&id).ok_or_else(not_found)?;
        if !key.entry.enabled {
            return Err(KeyringError::Disabled(format!(
                "{} is disabled.",
                self.key_arn(&id)
            )));
        }
        Ok(id)
    }

    /// The ARN of a key id.
    pub fn key_arn(&self, id: &str) -> String {
        format!("arn:aws:kms:{}:{}:key/{id}", self.region, self.account)
    }
}

#[cfg(feature = "log")]
impl BatchCipher for Keyring {
    fn seal(&self, key_id: &str, plaintext: &[u8]) -> std::result::Result<Vec<u8>, CipherError> {
        let master = self
            .keys
            .get(key_id)
            .ok_or_else(|| CipherError::KeyNotFound(key_id.to_string()))?;
        if !master.entry.enabled {
            return Err(CipherError::KeyDisabled(key_id.to_string()));
        }
        let data_key = random::<32>();
        let bad = || CipherError::Malformed("encryption failed".into());
        let wrapped = seal(&master.key, key_id.as_bytes(), &data_key).ok_or_else(bad)?;
        let body = seal(
            &aead_key(&data_key).ok_or_else(bad)?,
            b"ripstream-batch-v1",
            plaintext,
        )
        .ok_or_else(bad)?;
        let id = key_id.as_bytes();
        let mut out = Vec::with_capacity(2 + id.len() + wrapped.len() + body.len());
        out.push(VERSION);
        out.push(id.len().min(255) as u8);
        out.extend_from_slice(&id[..id.len().min(255)]);
        out.extend_from_slice(&wrapped);
        out.extend_from_slice(&body);
        Ok(out)
    }

    fn open(&self, ciphertext: &[u8]) -> std::result::Result<Vec<u8>, CipherError> {
        let malformed = || CipherError::Malformed("truncated encrypted batch".into());
        if ciphertext.len() < 2 || ciphertext[0] != VERSION {
            return Err(CipherError::Malformed("unknown encryption format".into()));
        }
        let id_len = ciphertext[1] as usize;
        let id = std::str::from_utf8(ciphertext.get(2..2 + id_len).ok_or_else(malformed)?)
            .map_err(|_| malformed())?;
        let wrapped = ciphertext
            .get(2 + id_len..2 + id_len + WRAPPED_LEN)
            .ok_or_else(malformed)?;
        let body = ciphertext
            .get(2 + id_len + WRAPPED_LEN..)
            .ok_or_else(malformed)?;
        let master = self
            .keys
            .get(id)
            .ok_or_else(|| CipherError::KeyNotFound(id.to_string()))?;
        if !master.entry.enabled {
            return Err(CipherError::KeyDisabled(id.to_string()));
        }
        let data_key = open(&master.key, id.as_bytes(), wrapped)
            .ok_or_else(|| CipherError::Undecryptable(id.to_string()))?;
        let key = aead_key(&data_key).ok_or_else(|| CipherError::Undecryptable(id.to_string()))?;
        open(&key, b"ripstream-batch-v1", body)
            .ok_or_else(|| CipherError::Undecryptable(id.to_string()))
    }
}

fn uuid_like() -> String {
    let b = random::<16>();
    let h = b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "log")]
    fn ring(material: &str, enabled: bool) -> Keyring {
        Keyring::parse(
            &format!("[[key]]\nid = \"k1\"\naliases = [\"alias/aws/kinesis\", \"alias/app\"]\nmaterial = \"{material}\"\nenabled = {enabled}\n"),
            "us-east-1",
            "000000000000",
        )
        .unwrap()
    }

    #[cfg(feature = "log")]
    #[test]
    fn seals_opens_and_refuses_the_wrong_key() {
        let m1 = STANDARD.encode([1u8; 32]);
        let m2 = STANDARD.encode([2u8; 32]);
        let r = ring(&m1, true);
        for id in [
            "k1",
            "alias/app",
            "alias/aws/kinesis",
            "arn:aws:kms:us-east-1:000000000000:key/k1",
            "arn:aws:kms:us-east-1:000000000000:alias/app",
        ] {
            assert_eq!(r.resolve(id).unwrap(), "k1", "{id}");
        }
        assert!(matches!(
            r.resolve("alias/none"),
            Err(KeyringError::NotFound(_))
        ));
        let sealed = r.seal("k1", b"attack at dawn").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"attack"));
        assert_eq!(r.open(&sealed).unwrap(), b"attack at dawn");
        assert_eq!(
            ring(&m2, true).open(&sealed),
            Err(CipherError::Undecryptable("k1".into()))
        );
        assert_eq!(
            ring(&m1, false).open(&sealed),
            Err(CipherError::KeyDisabled("k1".into()))
        );
        let mut flipped = sealed.clone();
        let n = flipped.len();
        flipped[n - 1] ^= 1;
        assert!(r.open(&flipped).is_err());
        assert!(matches!(
            ring(&m1, false).resolve("k1"),
            Err(KeyringError::Disabled(_))
        ));
    }

    #[test]
    fn a_missing_keyring_is_created_with_the_managed_alias() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.toml");
        let r = Keyring::open(&path, "us-east-1", "000000000000").unwrap();
        assert!(r.resolve(MANAGED_ALIAS).is_ok());
        let again = Keyring::open(&path, "us-east-1", "000000000000").unwrap();
        assert_eq!(
            r.resolve(MANAGED_ALIAS).unwrap(),
            again.resolve(MANAGED_ALIAS).unwrap()
        );
    }

    #[test]
    fn missing_managed_aliases_are_appended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.toml");
        Keyring::open(&path, "us-east-1", "000000000000").unwrap();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.insert_str(0, "# operator's note\n");
        std::fs::write(&path, &text).unwrap();
        Keyring::ensure_aliases(&path, &[S3_MANAGED_ALIAS, SSE_S3_ALIAS]).unwrap();
        let after = std::fs::read_to_string(&path).unwrap();
        assert!(after.starts_with(&text), "{after}");
        let r = Keyring::open(&path, "us-east-1", "000000000000").unwrap();
        let ids: Vec<String> = [MANAGED_ALIAS, S3_MANAGED_ALIAS, SSE_S3_ALIAS]
            .iter()
            .map(|a| r.resolve(a).unwrap())
            .collect();
        assert!(ids[0] != ids[1] && ids[1] != ids[2]);
        // Idempotent.
        Keyring::ensure_aliases(&path, &[S3_MANAGED_ALIAS]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), after);
    }

    #[test]
    fn an_emptied_keyring_gets_the_managed_aliases_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.toml");
        std::fs::write(&path, "").unwrap();
        Keyring::ensure_aliases(&path, &[S3_MANAGED_ALIAS]).unwrap();
        let r = Keyring::open(&path, "us-east-1", "000000000000").unwrap();
        assert!(r.resolve(S3_MANAGED_ALIAS).is_ok());
    }

    #[test]
    fn parse_errors_do_not_quote_the_keyring() {
        let text = "[[key]]\nid = \"k\"\nmaterial = \"c2VjcmV0LW1hdGVyaWFs\nenabled = true\n";
        let e = Keyring::parse(text, "us-east-1", "000000000000").unwrap_err();
        assert!(!e.contains("c2VjcmV0"), "{e}");
        assert!(e.starts_with("line "), "{e}");
    }
}

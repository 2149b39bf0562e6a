//! AWS Signature Version 4 verification, in the Authorization header or in
//! presigned query parameters.
//!
//! Written here rather than taken from a crate: the maintained signing crate
//! (`aws-sigv4`) only signs, and the one verifying crate pulls in chrono, a
//! full regex engine and tower for what is a few hashes; the checks below
//! follow the published algorithm and are tested against requests signed by
//! the official SDKs (Rust, boto3, the AWS CLI).

use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::wire::WireError;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// Longest validity of a presigned request, as AWS allows (7 days).
pub const MAX_EXPIRES_SECS: i64 = 604_800;
/// The services whose clients may leave the payload unsigned; the JSON
/// services (Kinesis, DynamoDB) always sign the body.
const UNSIGNED_PAYLOAD_SERVICES: &[&str] = &["s3"];
/// The services that take `aws-chunked` bodies (`STREAMING-*` payload
/// hashes): S3 uploads and Kinesis Video PutMedia. Never the JSON services,
/// whose handlers read a whole body that nothing would then verify.
const STREAMING_PAYLOAD_SERVICES: &[&str] = &["s3", "kinesisvideo"];
/// Largest difference between the signing time and the server's clock.
pub const MAX_SKEW_SECS: i64 = 15 * 60;

/// The parts of a request that SigV4 covers.
#[derive(Debug)]
pub struct RequestParts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: &'a str,
    /// Host, or the HTTP/2 `:authority`.
    pub host: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// A verified signature's claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub access_key_id: String,
    pub region: String,
    pub service: String,
    /// What the chunk signatures of a streaming body chain from.
    pub signing: SigningContext,
    /// `Some` when `x-amz-content-sha256` announced an `aws-chunked` body:
    /// the header signature then covers no byte of the body, and the body
    /// must go through [`super::chunked`] before anything trusts it.
    pub streaming: Option<super::chunked::StreamingMode>,
}

/// The signing key, time and scope of a verified request, and its signature:
/// the seed of the chain of chunk signatures of an `aws-chunked` body.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningContext {
    key: Vec<u8>,
    /// The request's signing time, `20130524T000000Z`.
    pub amz_date: String,
    /// `20130524/us-east-1/s3/aws4_request`.
    pub scope: String,
    /// The verified header (or query) signature, lowercase hex.
    pub seed_signature: String,
}

impl SigningContext {
    /// For a signer of its own (tests, clients): derives the key from the secret.
    pub fn new(
        secret: &str,
        amz_date: &str,
        region: &str,
        service: &str,
        seed_signature: &str,
    ) -> SigningContext {
        let date = amz_date.get(..8).unwrap_or(amz_date);
        SigningContext {
            key: signing_key(secret, date, region, service),
            amz_date: amz_date.to_string(),
            scope: format!("{date}/{region}/{service}/aws4_request"),
            seed_signature: seed_signature.to_ascii_lowercase(),
        }
    }

    /// HMAC-SHA256 of `data` with the signing key.
    pub fn sign(&self, data: &[u8]) -> [u8; 32] {
        let mut m =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length");
        m.update(data);
        m.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for SigningContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key signs for the caller for the rest of the day: never logged.
        f.debug_struct("SigningContext")
            .field("key", &"<redacted>")
            .field("amz_date", &self.amz_date)
            .field("scope", &self.scope)
            .field("seed_signature", &self.seed_signature)
            .finish()
    }
}

/// What the verifier needs to know: the secret of an access key.
pub trait SecretLookup {
    fn secret(&self, access_key_id: &str) -> Option<&str>;
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The SigV4 signing key.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

/// RFC 3986 percent-encoding of everything but the unreserved characters.
fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let unreserved = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/');
        if unreserved {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-decoding as SigV4 and the REST bindings read URIs (invalid escapes
/// are kept as they are; bytes that are not UTF-8 become U+FFFD).
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(v) = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query parameters, decoded.
pub fn query_params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

fn canonical_query(params: &[(String, String)], skip_signature: bool) -> String {
    let mut pairs: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| !(skip_signature && k == "X-Amz-Signature"))
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn canonical_header_value(values: Vec<&str>) -> String {
    values
        .iter()
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(",")
}

fn canonical_headers(parts: &RequestParts, signed: &[String]) -> Option<String> {
    let mut out = String::new();
    for name in signed {
        // The AWS SDK for JavaScript v3 over HTTP/2 drops `host` and signs the
        // `:authority` pseudo-header under that name, which AWS accepts; a
        // pseudo-header is never in the HeaderMap, so it comes from the URI.
        let values: Vec<&str> =
            if name == ":authority" || (name == "host" && parts.headers.get("host").is_none()) {
                vec![parts.host?]
            } else {
                parts
                    .headers
                    .get_all(name.as_str())
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect()
            };
        if values.is_empty() {
            return None;
        }
        out.push_str(name);
        out.push(':');
        out.push_str(&canonical_header_value(values));
        out.push('\n');
    }
    Some(out)
}

/// The services whose canonical path is the path as sent (encoded once);
/// every other service signs it URI-encoded once more, as AWS documents.
const SINGLE_ENCODED_PATH_SERVICES: &[&str] = &["s3"];

/// The one canonical path of a request to `service`. One form only: with
/// both, one signature would cover two paths that decode differently
/// (`/b/100%2525` signed double-encoded is `/b/100%25` signed as sent).
fn canonical_path(path: &str, service: &str) -> String {
    let path = if path.is_empty() { "/" } else { path };
    if SINGLE_ENCODED_PATH_SERVICES.contains(&service) {
        path.to_string()
    } else {
        uri_encode(path, true)
    }
}

fn incomplete(message: String) -> WireError {
    WireError::new(
        http::StatusCode::BAD_REQUEST,
        "IncompleteSignatureException",
        message,
    )
}

fn invalid_signature(message: impl Into<String>) -> WireError {
    WireError::new(
        http::StatusCode::BAD_REQUEST,
        "InvalidSignatureException",
        message,
    )
}

const MISMATCH: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";

/// Seconds since the epoch of an ISO 8601 basic timestamp (`20261122T010203Z`).
pub fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, se) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    // A leap second (60) counts as the next second's start, as AWS takes it.
    let date = chrono::NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, mo as u32, d as u32)?;
    let time = date.and_hms_opt(h as u32, mi as u32, se.min(59) as u32)?;
    Some(time.and_utc().timestamp() + i64::from(se == 60))
}

/// Formats epoch seconds as `20261122T010203Z`.
pub fn format_amz_date(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.format("%Y%m%dT%H%M%SZ").to_string())
        .unwrap_or_default()
}

/// The signature parameters, from the Authorization header or the query.
struct Presented {
    /// The header's first token, or `X-Amz-Algorithm`: checked only once
    /// the form is complete, as AWS does.
    algorithm: String,
    credential: String,
    signed_headers: Vec<String>,
    signature: String,
    amz_date: String,
    presigned: bool,
    expires: Option<String>,
    /// The header the signing time came from (`x-amz-date` or `date`); it
    /// must be signed. `None` for presigned requests (it is in the query).
    date_header: Option<&'static str>,
}

/// A header's value when it is there and not empty (an empty one counts as absent).
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

/// The parameters of an `Authorization` header, as verification reads
/// them; routing reads the credential with the same parser
/// ([`header_credential`]), so both see one scope.
struct HeaderFields {
    algorithm: String,
    credential: Option<String>,
    signed: Option<String>,
    signature: Option<String>,
    /// A parameter given more than once: refused, for which one counts
    /// would otherwise depend on who reads it.
    repeated: Option<&'static str>,
}

fn header_fields(auth: &str) -> HeaderFields {
    let mut tokens = auth.split([',', ' ']);
    // AWS reads the parameters after the first token whatever that token
    // is; an unknown algorithm is only refused once the form is complete.
    let algorithm = tokens.next().unwrap_or("").to_string();
    let mut fields = HeaderFields {
        algorithm,
        credential: None,
        signed: None,
        signature: None,
        repeated: None,
    };
    let mut seen = [false; 3];
    for part in tokens.filter(|p| !p.is_empty()) {
        let mut kv = part.split('=');
        let key = kv.next().unwrap_or("");
        // An empty value is no value (and `Signature==x` has none).
        let value = kv.next().filter(|v| !v.is_empty()).map(str::to_string);
        let (slot, index, name) = match key {
            "Credential" => (&mut fields.credential, 0, "Credential"),
            "SignedHeaders" => (&mut fields.signed, 1, "SignedHeaders"),
            "Signature" => (&mut fields.signature, 2, "Signature"),
            _ => continue,
        };
        if seen[index] {
            fields.repeated.get_or_insert(name);
        }
        seen[index] = true;
        *slot = value;
    }
    fields
}

/// The `Credential` of an `Authorization` header, read as verification
/// reads it; `None` when it is missing or given more than once.
pub fn header_credential(auth: &str) -> Option<String> {
    let fields = header_fields(auth);
    match fields.repeated {
        Some(_) => None,
        None => fields.credential,
    }
}

fn from_header(auth: &str, headers: &HeaderMap) -> Result<Presented, WireError> {
    let HeaderFields {
        algorithm,
        credential,
        signed,
        signature,
        repeated,
    } = header_fields(auth);
    if let Some(name) = repeated {
        return Err(incomplete(format!(
            "Authorization header has more than one '{name}' parameter. Authorization={auth}"
        )));
    }
    // Only presence counts here; a date that does not parse is refused later.
    let (amz_date, date_header) = match header(headers, "x-amz-date") {
        Some(d) => (Some(d.to_string()), Some("x-amz-date")),
        None => (
            header(headers, "date").map(|d| http_date_to_amz(d).unwrap_or_else(|| d.to_string())),
            Some("date"),
        ),
    };
    let mut missing = String::new();
    if credential.is_none() {
        missing.push_str("Authorization header requires 'Credential' parameter. ");
    }
    if signature.is_none() {
        missing.push_str("Authorization header requires 'Signature' parameter. ");
    }
    if signed.is_none() {
        missing.push_str("Authorization header requires 'SignedHeaders' parameter. ");
    }
    if amz_date.is_none() {
        missing.push_str(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. ",
        );
    }
    if !missing.is_empty() {
        return Err(incomplete(format!("{missing}Authorization={auth}")));
    }
    Ok(Presented {
        algorithm,
        credential: credential.unwrap_or_default(),
        signed_headers: signed
            .unwrap_or_default()
            .split(';')
            .map(str::to_ascii_lowercase)
            .collect(),
        signature: signature.unwrap_or_default(),
        amz_date: amz_date.unwrap_or_default(),
        presigned: false,
        expires: None,
        date_header,
    })
}

/// `Date: Sun, 22 Nov 2026 01:02:03 GMT` as `20261122T010203Z`.
fn http_date_to_amz(s: &str) -> Option<String> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let parts: Vec<&str> = s.split_whitespace().collect();
    if parts.len() < 5 {
        return None;
    }
    let day: u32 = parts[1].parse().ok()?;
    let month = MONTHS.iter().position(|m| *m == parts[2])? + 1;
    let year: u32 = parts[3].parse().ok()?;
    let time = parts[4].replace(':', "");
    Some(format!("{year:04}{month:02}{day:02}T{time}Z"))
}

fn from_query(params: &[(String, String)]) -> Result<Presented, WireError> {
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let mut missing = String::new();
    for p in [
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Signature",
        "X-Amz-SignedHeaders",
        "X-Amz-Date",
    ] {
        if get(p).is_none_or(|v| v.is_empty()) {
            missing.push_str(&format!("AWS query-string parameters must include '{p}'. "));
        }
    }
    if !missing.is_empty() {
        return Err(incomplete(format!(
            "{missing}Re-examine the query-string parameters."
        )));
    }
    Ok(Presented {
        algorithm: get("X-Amz-Algorithm").unwrap_or_default(),
        credential: get("X-Amz-Credential").unwrap_or_default(),
        signed_headers: get("X-Amz-SignedHeaders")
            .unwrap_or_default()
            .split(';')
            .map(str::to_ascii_lowercase)
            .collect(),
        signature: get("X-Amz-Signature").unwrap_or_default(),
        amz_date: get("X-Amz-Date").unwrap_or_default(),
        presigned: true,
        expires: get("X-Amz-Expires"),
        date_header: None,
    })
}

/// `X-Amz-Expires`: whole seconds, at most [`MAX_EXPIRES_SECS`].
fn parse_expires(raw: &str) -> Result<i64, WireError> {
    if raw.starts_with('-') && raw[1..].bytes().all(|b| b.is_ascii_digit()) && raw.len() > 1 {
        return Err(incomplete("X-Amz-Expires must be non-negative".into()));
    }
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(incomplete("X-Amz-Expires should be a number".into()));
    }
    // Digits only, so the only failure left is overflow: certainly too long.
    match raw.parse::<i64>() {
        Ok(secs) if secs <= MAX_EXPIRES_SECS => Ok(secs),
        _ => Err(incomplete(format!(
            "X-Amz-Expires must be less than a week (in seconds) that is {MAX_EXPIRES_SECS}"
        ))),
    }
}

/// The headers a signature must cover, as AWS requires them: the host, the
/// signing time (when it travels in a header) and the operation.
fn check_signed_headers(presented: &Presented, headers: &HeaderMap) -> Result<(), WireError> {
    let signed = |h: &str| presented.signed_headers.iter().any(|s| s == h);
    if !signed("host") && !signed(":authority") {
        return Err(incomplete(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.".into(),
        ));
    }
    if let Some(date) = presented.date_header
        && !signed(date)
    {
        let shown = if date == "date" { "Date" } else { "X-Amz-Date" };
        return Err(incomplete(format!(
            "'{shown}' must be a 'SignedHeader' in the AWS Authorization."
        )));
    }
    if headers.contains_key("x-amz-target") && !signed("x-amz-target") {
        return Err(incomplete(
            "'X-Amz-Target' must be a 'SignedHeader' in the AWS Authorization.".into(),
        ));
    }
    Ok(())
}

/// Headers of AWS's namespaces that clients send without signing them: the
/// payload hash is the canonical request's last line, and every SDK leaves
/// the X-Ray trace header out of the signature (it may be added on the way).
const UNSIGNED_AMZ_HEADERS: &[&str] = &["x-amz-content-sha256", "x-amzn-trace-id"];

/// The `x-amz-*` and `x-amzn-*` headers a signed request carries outside its
/// signature (sorted), which S3 refuses: they may bind an operation's input
/// (`x-amz-meta-*`, `x-amz-acl`), so whoever relays a signed request could
/// add them. Empty for an unsigned request; a malformed signature is `Err`.
pub fn headers_not_signed(headers: &HeaderMap, query: &str) -> Result<Vec<String>, WireError> {
    let Some(presented) = presented(headers, &query_params(query))? else {
        return Ok(Vec::new());
    };
    let mut out: Vec<String> = headers
        .keys()
        .map(|k| k.as_str())
        .filter(|k| k.starts_with("x-amz-") || k.starts_with("x-amzn-"))
        .filter(|k| !UNSIGNED_AMZ_HEADERS.contains(k))
        .filter(|k| {
            !presented
                .signed_headers
                .iter()
                .any(|s| s.eq_ignore_ascii_case(k))
        })
        .map(str::to_string)
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// An unsigned-trailer body's data is covered by nothing but its checksum
/// trailer, so one must be declared, in a signed `x-amz-trailer` (else a
/// relay could drop it and the data would be taken unchecked).
fn check_unsigned_trailer(presented: &Presented, headers: &HeaderMap) -> Result<(), WireError> {
    if !super::chunked::declares_checksum(headers) {
        return Err(invalid_signature(
            "STREAMING-UNSIGNED-PAYLOAD-TRAILER requires a checksum trailer declared in x-amz-trailer.",
        ));
    }
    if !presented
        .signed_headers
        .iter()
        .any(|h| h == "x-amz-trailer")
    {
        return Err(incomplete(
            "'X-Amz-Trailer' must be a 'SignedHeader' in the AWS Authorization.".into(),
        ));
    }
    Ok(())
}

/// The signature a request presents, checked for its form only: both
/// kinds at once, the parameters each kind must name. `Ok(None)` when the
/// request is not signed at all (no `Authorization` header, no
/// `X-Amz-Algorithm` parameter, even empty).
fn presented(
    headers: &HeaderMap,
    params: &[(String, String)],
) -> Result<Option<Presented>, WireError> {
    let auth = headers
        .get("authorization")
        .map(|v| String::from_utf8_lossy(v.as_bytes()))
        .filter(|v| !v.is_empty());
    let has_query_auth = params.iter().any(|(k, _)| k == "X-Amz-Algorithm");
    match (auth, has_query_auth) {
        (Some(_), true) => Err(invalid_signature(
            "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as HTTP header.",
        )),
        (Some(a), false) => from_header(&a, headers).map(Some),
        (None, true) => from_query(params).map(Some),
        (None, false) => Ok(None),
    }
}

/// AWS's first checks of a signature, which need no key: whether the
/// request is signed at all (`Ok(false)` when not), and whether the
/// signature it presents has every part it must have. What anonymous mode
/// requires of a request.
pub fn check_form(headers: &HeaderMap, query: &str) -> Result<bool, WireError> {
    Ok(presented(headers, &query_params(query))?.is_some())
}

/// Verifies a request's signature. `Ok(None)` when the request is not signed at all.
pub fn verify(
    parts: &RequestParts,
    secrets: &dyn SecretLookup,
    region: &str,
    service: &str,
    now_secs: i64,
) -> Result<Option<Claims>, WireError> {
    verify_payload(parts, secrets, region, service, now_secs, None)
}

/// [`verify`] before the body arrived, for a body that streams: the
/// signature is checked with the payload hash `x-amz-content-sha256`
/// claims, and the caller must hash the body as it streams and refuse it at
/// its end unless it is that hash (or decode it with [`super::chunked`]
/// when the claims say it streams).
pub fn verify_streamed(
    parts: &RequestParts,
    secrets: &dyn SecretLookup,
    region: &str,
    service: &str,
    now_secs: i64,
) -> Result<Option<Claims>, WireError> {
    // Only a hash stands in for the body; any other claim (UNSIGNED-PAYLOAD,
    // STREAMING-*) is judged as `verify` judges it, against no body.
    let claimed = parts
        .headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_ascii_lowercase);
    verify_payload(parts, secrets, region, service, now_secs, claimed)
}

fn verify_payload(
    parts: &RequestParts,
    secrets: &dyn SecretLookup,
    region: &str,
    service: &str,
    now_secs: i64,
    deferred_hash: Option<String>,
) -> Result<Option<Claims>, WireError> {
    let params = query_params(parts.query);
    let Some(presented) = presented(parts.headers, &params)? else {
        return Ok(None);
    };
    if presented.algorithm != ALGORITHM {
        return Err(incomplete(if presented.presigned {
            format!(
                "Unsupported AWS 'algorithm': '{}'. Re-examine the query-string parameters.",
                presented.algorithm
            )
        } else {
            format!(
                "Unsupported AWS 'algorithm': '{}'. Authorization={}",
                presented.algorithm,
                String::from_utf8_lossy(
                    parts
                        .headers
                        .get("authorization")
                        .map(|v| v.as_bytes())
                        .unwrap_or_default()
                )
            )
        }));
    }
    let scope: Vec<&str> = presented.credential.split('/').collect();
    if scope.len() != 5 || scope[4] != "aws4_request" {
        return Err(incomplete(format!(
            "Credential should be scoped to a valid region, not '{}'. ",
            scope.get(2).copied().unwrap_or("")
        )));
    }
    let (akid, date, cred_region, cred_service) = (scope[0], scope[1], scope[2], scope[3]);
    if cred_service != service {
        return Err(invalid_signature(format!(
            "Credential should be scoped to correct service: '{service}'. "
        )));
    }
    if cred_region != region {
        return Err(invalid_signature(format!(
            "Credential should be scoped to a valid region, not '{cred_region}'. "
        )));
    }
    let Some(secret) = secrets.secret(akid) else {
        return Err(WireError::new(
            http::StatusCode::BAD_REQUEST,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    };
    let Some(signed_at) = parse_amz_date(&presented.amz_date) else {
        return Err(incomplete(format!(
            "Date must be in ISO-8601 'basic format'. Got '{}'.",
            presented.amz_date
        )));
    };
    if !presented.amz_date.starts_with(date) {
        return Err(invalid_signature(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{date}' != '{}', from '{}'.",
            &presented.amz_date[..8],
            presented.amz_date
        )));
    }
    let expires = presented
        .expires
        .as_deref()
        .map(parse_expires)
        .transpose()?;
    check_signed_headers(&presented, parts.headers)?;
    if let Some(expires) = expires {
        if now_secs > signed_at.saturating_add(expires) {
            return Err(WireError::new(
                http::StatusCode::FORBIDDEN,
                "AccessDeniedException",
                "Request has expired",
            ));
        }
    } else if now_secs.saturating_sub(signed_at) > MAX_SKEW_SECS {
        return Err(invalid_signature(format!(
            "Signature expired: {} is now earlier than {} ({} - 15 min.)",
            presented.amz_date,
            format_amz_date(now_secs - MAX_SKEW_SECS),
            format_amz_date(now_secs)
        )));
    }
    if signed_at.saturating_sub(now_secs) > MAX_SKEW_SECS {
        return Err(invalid_signature(format!(
            "Signature not yet current: {} is still later than {} ({} + 15 min.)",
            presented.amz_date,
            format_amz_date(now_secs + MAX_SKEW_SECS),
            format_amz_date(now_secs)
        )));
    }
    let Some(headers) = canonical_headers(parts, &presented.signed_headers) else {
        return Err(invalid_signature(MISMATCH));
    };
    let signed_list = presented.signed_headers.join(";");
    let query = canonical_query(&params, presented.presigned);
    // The body received is always hashed: a claimed hash is only accepted
    // when it is that hash, so a captured signature cannot carry another body.
    let body_hash = deferred_hash.unwrap_or_else(|| sha256_hex(parts.body));
    let unsigned_ok = UNSIGNED_PAYLOAD_SERVICES.contains(&service);
    let mut streaming = None;
    let payload_hashes: Vec<String> = match parts.headers.get("x-amz-content-sha256") {
        Some(h) => {
            let claimed = h.to_str().unwrap_or("");
            // Unsigned chunks are for the services that take UNSIGNED-PAYLOAD.
            let stream_mode = super::chunked::StreamingMode::from_content_sha256(claimed)
                .filter(|_| STREAMING_PAYLOAD_SERVICES.contains(&service))
                .filter(|m| m.signed() || unsigned_ok);
            if stream_mode == Some(super::chunked::StreamingMode::UnsignedTrailer) {
                check_unsigned_trailer(&presented, parts.headers)?;
            }
            if claimed == UNSIGNED_PAYLOAD && unsigned_ok {
                vec![UNSIGNED_PAYLOAD.to_string()]
            } else if let Some(mode) = stream_mode {
                streaming = Some(mode);
                vec![claimed.to_string()]
            } else if claimed.eq_ignore_ascii_case(&body_hash) {
                vec![claimed.to_string()]
            } else {
                return Err(invalid_signature(
                    "The provided 'x-amz-content-sha256' header does not match what was computed.",
                ));
            }
        }
        None if presented.presigned && unsigned_ok => {
            vec![UNSIGNED_PAYLOAD.to_string(), body_hash]
        }
        None => vec![body_hash],
    };
    let key = signing_key(secret, date, cred_region, cred_service);
    let scope_str = format!("{date}/{cred_region}/{cred_service}/aws4_request");
    let presented_sig = presented.signature.to_ascii_lowercase();
    let mut ok = false;
    let path = canonical_path(parts.path, cred_service);
    {
        for payload in &payload_hashes {
            let canonical = format!(
                "{}\n{path}\n{query}\n{headers}\n{signed_list}\n{payload}",
                parts.method
            );
            let to_sign = format!(
                "{ALGORITHM}\n{}\n{scope_str}\n{}",
                presented.amz_date,
                sha256_hex(canonical.as_bytes())
            );
            let expected = hex::encode(hmac(&key, to_sign.as_bytes()));
            ok |= bool::from(expected.as_bytes().ct_eq(presented_sig.as_bytes()));
        }
    }
    if !ok {
        return Err(invalid_signature(MISMATCH));
    }
    Ok(Some(Claims {
        access_key_id: akid.to_string(),
        region: cred_region.to_string(),
        service: cred_service.to_string(),
        signing: SigningContext {
            key,
            amz_date: presented.amz_date.clone(),
            scope: scope_str,
            seed_signature: presented_sig,
        },
        streaming,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct One;
    impl SecretLookup for One {
        fn secret(&self, akid: &str) -> Option<&str> {
            (akid == "AKIDEXAMPLE").then_some("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
        }
    }

    /// Signs like a client would, for round-trip tests.
    fn sign(headers: &mut HeaderMap, body: &[u8], amz_date: &str, secret: &str) {
        sign_with(
            headers,
            &sha256_hex(body),
            amz_date,
            secret,
            &["content-type", "host", "x-amz-date", "x-amz-target"],
        );
    }

    /// Signs `signed` headers and the given payload hash.
    fn sign_with(
        headers: &mut HeaderMap,
        payload_hash: &str,
        amz_date: &str,
        secret: &str,
        signed: &[&str],
    ) {
        sign_for(headers, "kinesis", payload_hash, amz_date, secret, signed)
    }

    /// [`sign_with`] for `service`.
    fn sign_for(
        headers: &mut HeaderMap,
        service: &str,
        payload_hash: &str,
        amz_date: &str,
        secret: &str,
        signed: &[&str],
    ) {
        headers.insert("x-amz-date", amz_date.parse().unwrap());
        let mut canon_headers = String::new();
        for h in signed {
            let value = match *h {
                ":authority" => "127.0.0.1:4567",
                _ => headers[*h].to_str().unwrap(),
            };
            canon_headers.push_str(&format!("{h}:{value}\n"));
        }
        let canonical = format!(
            "POST\n/\n\n{canon_headers}\n{}\n{payload_hash}",
            signed.join(";"),
        );
        let date = &amz_date[..8];
        let scope = format!("{date}/us-east-1/{service}/aws4_request");
        let to_sign = format!(
            "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
            sha256_hex(canonical.as_bytes())
        );
        let sig = hex::encode(hmac(
            &signing_key(secret, date, "us-east-1", service),
            to_sign.as_bytes(),
        ));
        let auth = format!(
            "{ALGORITHM} Credential=AKIDEXAMPLE/{scope}, SignedHeaders={}, Signature={sig}",
            signed.join(";")
        );
        headers.insert("authorization", auth.parse().unwrap());
    }

    fn request(headers: &HeaderMap, body: &'static [u8]) -> RequestParts<'static> {
        let headers: &'static HeaderMap = Box::leak(Box::new(headers.clone()));
        RequestParts {
            method: "POST",
            path: "/",
            query: "",
            host: None,
            headers,
            body,
        }
    }

    fn base_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("host", "127.0.0.1:4567".parse().unwrap());
        h.insert(
            "content-type",
            "application/x-amz-json-1.1".parse().unwrap(),
        );
        h.insert(
            "x-amz-target",
            "Kinesis_20131202.ListStreams".parse().unwrap(),
        );
        h
    }

    const NOW: i64 = 1_795_395_723; // 2026-11-22T..
    fn now_date() -> String {
        format_amz_date(NOW)
    }

    #[test]
    fn dates_round_trip() {
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(1_440_938_160));
        assert_eq!(format_amz_date(1_440_938_160), "20150830T123600Z");
        assert_eq!(parse_amz_date(&format_amz_date(NOW)), Some(NOW));
        assert_eq!(parse_amz_date("2015-08-30"), None);
        assert_eq!(
            http_date_to_amz("Sun, 30 Aug 2015 12:36:00 GMT").as_deref(),
            Some("20150830T123600Z")
        );
    }

    #[test]
    fn good_signature_passes_and_tampering_fails() {
        let mut h = base_headers();
        sign(
            &mut h,
            b"{}",
            &now_date(),
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        );
        let claims = verify(&request(&h, b"{}"), &One, "us-east-1", "kinesis", NOW)
            .unwrap()
            .unwrap();
        assert_eq!(claims.access_key_id, "AKIDEXAMPLE");
        let e = verify(&request(&h, b"{ }"), &One, "us-east-1", "kinesis", NOW).unwrap_err();
        assert_eq!(e.code, "InvalidSignatureException");
        let mut wrong = base_headers();
        sign(&mut wrong, b"{}", &now_date(), "not-the-secret");
        assert_eq!(
            verify(&request(&wrong, b"{}"), &One, "us-east-1", "kinesis", NOW)
                .unwrap_err()
                .code,
            "InvalidSignatureException"
        );
        let e = verify(&request(&h, b"{}"), &One, "eu-west-1", "kinesis", NOW).unwrap_err();
        assert!(e.message.contains("valid region"), "{}", e.message);
    }

    #[test]
    fn the_received_body_is_what_is_verified() {
        const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let all = ["content-type", "host", "x-amz-date", "x-amz-target"];
        // A signature over one body, replayed with another body and the
        // original body's hash claimed in x-amz-content-sha256.
        let mut h = base_headers();
        h.insert("x-amz-content-sha256", sha256_hex(b"{}").parse().unwrap());
        sign_with(&mut h, &sha256_hex(b"{}"), &now_date(), SECRET, &all);
        assert!(verify(&request(&h, b"{}"), &One, "us-east-1", "kinesis", NOW).is_ok());
        let e = verify(
            &request(&h, br#"{"StreamName":"other"}"#),
            &One,
            "us-east-1",
            "kinesis",
            NOW,
        )
        .unwrap_err();
        assert_eq!(e.code, "InvalidSignatureException");
        // UNSIGNED-PAYLOAD is not accepted by the JSON services.
        let mut h = base_headers();
        h.insert("x-amz-content-sha256", UNSIGNED_PAYLOAD.parse().unwrap());
        sign_with(&mut h, UNSIGNED_PAYLOAD, &now_date(), SECRET, &all);
        let e = verify(&request(&h, b"{}"), &One, "us-east-1", "kinesis", NOW).unwrap_err();
        assert_eq!(e.code, "InvalidSignatureException");
    }

    #[test]
    fn a_header_with_a_repeated_parameter_is_refused() {
        let mut h = base_headers();
        h.insert("x-amz-date", now_date().parse().unwrap());
        let one = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/sts/aws4_request, SignedHeaders=host;x-amz-date, Signature=00";
        assert!(from_header(one, &h).is_ok());
        assert_eq!(
            header_credential(one).as_deref(),
            Some("AKIDEXAMPLE/20260101/us-east-1/sts/aws4_request")
        );
        // Routing and verification must see one scope: two are refused.
        let two = format!("{one}, Credential=AKIDEXAMPLE/20260101/us-east-1/other/aws4_request");
        let e = from_header(&two, &h).err().unwrap();
        assert_eq!(e.code, "IncompleteSignatureException");
        assert_eq!(header_credential(&two), None);
        let e = from_header(&format!("{one}, Signature=11"), &h)
            .err()
            .unwrap();
        assert_eq!(e.code, "IncompleteSignatureException");
        // The algorithm token is not a parameter, whatever it looks like.
        let odd = one.replace("AWS4-HMAC-SHA256", "Credential=x/y/z/w/aws4_request");
        assert_eq!(
            header_credential(&odd).as_deref(),
            Some("AKIDEXAMPLE/20260101/us-east-1/sts/aws4_request")
        );
    }

    #[test]
    fn each_service_has_one_canonical_path() {
        // S3: as sent. The others: encoded once more. Never both, or one
        // signature would cover `/b/100%25` and `/b/100%2525`.
        assert_eq!(canonical_path("/b/100%25", "s3"), "/b/100%25");
        assert_eq!(canonical_path("/b/100%25", "kinesisvideo"), "/b/100%2525");
        assert_eq!(canonical_path("", "kinesis"), "/");
        const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let all = ["content-type", "host", "x-amz-date", "x-amz-target"];
        // Signed over `/` (the double encoding of `/`), a request for a path
        // whose double encoding differs does not verify.
        let mut h = base_headers();
        sign_with(&mut h, &sha256_hex(b"{}"), &now_date(), SECRET, &all);
        let mut parts = request(&h, b"{}");
        assert!(verify(&parts, &One, "us-east-1", "kinesis", NOW).is_ok());
        parts.path = "/%2F";
        assert!(verify(&parts, &One, "us-east-1", "kinesis", NOW).is_err());
    }

    #[test]
    fn unsigned_trailer_chunks_need_unsigned_payloads_and_a_signed_checksum_trailer() {
        const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        const MODE: &str = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";
        let attempt = |service: &str, trailer: Option<&str>, sign_trailer: bool| {
            let mut h = HeaderMap::new();
            h.insert("host", "127.0.0.1:4567".parse().unwrap());
            h.insert("x-amz-content-sha256", MODE.parse().unwrap());
            h.insert("x-amz-decoded-content-length", "4".parse().unwrap());
            let mut signed = vec!["host", "x-amz-content-sha256", "x-amz-date"];
            if let Some(t) = trailer {
                h.insert("x-amz-trailer", t.parse().unwrap());
                if sign_trailer {
                    signed.push("x-amz-trailer");
                }
            }
            sign_for(&mut h, service, MODE, &now_date(), SECRET, &signed);
            verify(&request(&h, b""), &One, "us-east-1", service, NOW)
        };
        let claims = attempt("s3", Some("x-amz-checksum-crc32"), true)
            .unwrap()
            .unwrap();
        assert_eq!(
            claims.streaming,
            Some(super::super::chunked::StreamingMode::UnsignedTrailer)
        );
        // Kinesis Video takes signed chunks only, as it takes no UNSIGNED-PAYLOAD.
        let e = attempt("kinesisvideo", Some("x-amz-checksum-crc32"), true).unwrap_err();
        assert_eq!(e.code, "InvalidSignatureException");
        // No checksum trailer: nothing would check the data.
        let e = attempt("s3", None, false).unwrap_err();
        assert_eq!(e.code, "InvalidSignatureException", "{}", e.message);
        let e = attempt("s3", Some("x-amz-meta-x"), true).unwrap_err();
        assert_eq!(e.code, "InvalidSignatureException", "{}", e.message);
        // The declaration must be signed, or it could be dropped on the way.
        let e = attempt("s3", Some("x-amz-checksum-crc32"), false).unwrap_err();
        assert_eq!(e.code, "IncompleteSignatureException", "{}", e.message);
    }

    /// What the JS SDK v3 sends over HTTP/2: no `host` header, and
    /// `:authority` among the signed headers.
    #[test]
    fn a_signed_http2_authority_stands_for_the_host() {
        const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let mut h = base_headers();
        h.remove("host");
        let signed = [":authority", "content-type", "x-amz-date", "x-amz-target"];
        sign_with(&mut h, &sha256_hex(b"{}"), &now_date(), SECRET, &signed);
        let mut parts = request(&h, b"{}");
        parts.host = Some("127.0.0.1:4567");
        let claims = verify(&parts, &One, "us-east-1", "kinesis", NOW)
            .unwrap()
            .unwrap();
        assert_eq!(claims.access_key_id, "AKIDEXAMPLE");
        // The authority is covered: another one does not verify.
        parts.host = Some("127.0.0.1:9999");
        let e = verify(&parts, &One, "us-east-1", "kinesis", NOW).unwrap_err();
        assert_eq!(e.code, "InvalidSignatureException");
        // Without any authority there is nothing to check it against.
        parts.host = None;
        let e = verify(&parts, &One, "us-east-1", "kinesis", NOW).unwrap_err();
        assert_eq!(e.code, "InvalidSignatureException");
    }

    #[test]
    fn host_date_and_target_must_be_signed() {
        const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        for (signed, missing) in [
            (
                &["content-type", "x-amz-date", "x-amz-target"][..],
                "'Host'",
            ),
            (
                &["content-type", "host", "x-amz-target"][..],
                "'X-Amz-Date'",
            ),
            (
                &["content-type", "host", "x-amz-date"][..],
                "'X-Amz-Target'",
            ),
        ] {
            let mut h = base_headers();
            sign_with(&mut h, &sha256_hex(b"{}"), &now_date(), SECRET, signed);
            let e = verify(&request(&h, b"{}"), &One, "us-east-1", "kinesis", NOW).unwrap_err();
            assert_eq!(e.code, "IncompleteSignatureException", "{signed:?}");
            assert!(e.message.contains(missing), "{}", e.message);
        }
    }

    #[test]
    fn presigned_expiry_is_at_most_a_week_and_never_overflows() {
        let query = |expires: &str| {
            format!(
                "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F{}%2Fus-east-1%2Fkinesis%2Faws4_request&X-Amz-Date={}&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host&X-Amz-Signature=00",
                &now_date()[..8],
                now_date()
            )
        };
        for (expires, message) in [
            ("604801", "less than a week"),
            ("9223372036854775807", "less than a week"),
            ("99999999999999999999999", "less than a week"),
            ("-1", "non-negative"),
            ("soon", "should be a number"),
        ] {
            let q: &'static str = Box::leak(query(expires).into_boxed_str());
            let mut req = request(&base_headers(), b"");
            req.query = q;
            let e = verify(&req, &One, "us-east-1", "kinesis", NOW).unwrap_err();
            assert!(e.message.contains(message), "{expires}: {}", e.message);
        }
        // A week is allowed (and then fails only on the bogus signature).
        let q: &'static str = Box::leak(query("604800").into_boxed_str());
        let mut headers = base_headers();
        headers.remove("x-amz-target");
        let mut req = request(&headers, b"");
        req.query = q;
        let e = verify(&req, &One, "us-east-1", "kinesis", NOW).unwrap_err();
        assert_eq!(e.code, "InvalidSignatureException", "{}", e.message);
    }

    #[test]
    fn skew_unknown_keys_and_incomplete_headers() {
        let mut h = base_headers();
        sign(
            &mut h,
            b"{}",
            &format_amz_date(NOW - 16 * 60),
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        );
        let e = verify(&request(&h, b"{}"), &One, "us-east-1", "kinesis", NOW).unwrap_err();
        assert!(e.message.starts_with("Signature expired:"), "{}", e.message);
        let mut h = base_headers();
        h.insert("authorization", "AWS4-HMAC-SHA256 Credential=NOPE/20261122/us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature=00".parse().unwrap());
        h.insert("x-amz-date", now_date().parse().unwrap());
        assert_eq!(
            verify(&request(&h, b"{}"), &One, "us-east-1", "kinesis", NOW)
                .unwrap_err()
                .code,
            "UnrecognizedClientException"
        );
        let mut h = base_headers();
        h.insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261122/us-east-1/kinesis/aws4_request"
                .parse()
                .unwrap(),
        );
        let e = verify(&request(&h, b"{}"), &One, "us-east-1", "kinesis", NOW).unwrap_err();
        assert_eq!(e.code, "IncompleteSignatureException");
        assert!(
            e.message.contains("requires 'Signature' parameter"),
            "{}",
            e.message
        );
        assert_eq!(
            verify(
                &request(&base_headers(), b"{}"),
                &One,
                "us-east-1",
                "kinesis",
                NOW
            )
            .unwrap(),
            None
        );
    }
    /// AWS's form checks, which anonymous mode applies alone: parameters
    /// after the first token whatever it is, a date header's presence, the
    /// query's five parameters with an empty one missing.
    #[test]
    fn the_form_of_a_signature_is_checked_without_a_key() {
        let with = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            h
        };
        let err = |h: &HeaderMap, q: &str| {
            let e = check_form(h, q).unwrap_err();
            (e.code, e.message)
        };
        assert!(!check_form(&HeaderMap::new(), "").unwrap());
        // Without X-Amz-Algorithm there is no query signature at all.
        assert!(
            !check_form(
                &HeaderMap::new(),
                "X-Amz-Credential=a&X-Amz-Signature=b&X-Amz-SignedHeaders=c&X-Amz-Date=d"
            )
            .unwrap()
        );
        assert_eq!(
            err(&with(&[("authorization", "X")]), ""),
            (
                "IncompleteSignatureException",
                "Authorization header requires 'Credential' parameter. Authorization header requires 'Signature' parameter. Authorization header requires 'SignedHeaders' parameter. Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. Authorization=X".to_string()
            )
        );
        for auth in [
            "AWS4- Signature=b Credential=a",
            "AWS4- Signature=b,Credential=a",
            "AWS4- Signature=b, Credential=a",
        ] {
            assert_eq!(
                err(&with(&[("authorization", auth), ("date", "a")]), ""),
                (
                    "IncompleteSignatureException",
                    format!(
                        "Authorization header requires 'SignedHeaders' parameter. Authorization={auth}"
                    )
                )
            );
        }
        // An empty value is missing; the first token is never a parameter.
        assert_eq!(
            err(
                &with(&[
                    ("authorization", "Credential=a Signature= SignedHeaders=c"),
                    ("x-amz-date", "d")
                ]),
                ""
            )
            .1,
            "Authorization header requires 'Credential' parameter. Authorization header requires 'Signature' parameter. Authorization=Credential=a Signature= SignedHeaders=c"
        );
        assert!(
            check_form(
                &with(&[
                    (
                        "authorization",
                        "whatever Credential=a, SignedHeaders=b, Signature=c"
                    ),
                    ("x-amz-date", "d")
                ]),
                ""
            )
            .unwrap()
        );
        // `X-Amz-Algorith` is not `X-Amz-Algorithm`: the header is read.
        assert!(
            err(&with(&[("authorization", "X")]), "X-Amz-Algorith")
                .1
                .ends_with("Authorization=X")
        );
        assert_eq!(
            err(&with(&[("authorization", "X")]), "X-Amz-Algorithm"),
            (
                "InvalidSignatureException",
                "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as HTTP header.".to_string()
            )
        );
        assert_eq!(
            err(&HeaderMap::new(), "X-Amz-Algorithm"),
            (
                "IncompleteSignatureException",
                "AWS query-string parameters must include 'X-Amz-Algorithm'. AWS query-string parameters must include 'X-Amz-Credential'. AWS query-string parameters must include 'X-Amz-Signature'. AWS query-string parameters must include 'X-Amz-SignedHeaders'. AWS query-string parameters must include 'X-Amz-Date'. Re-examine the query-string parameters.".to_string()
            )
        );
        assert_eq!(
            err(
                &HeaderMap::new(),
                "X-Amz-Algorithm=a&X-Amz-Credential=b&X-Amz-Signature=c&X-Amz-Date=d"
            )
            .1,
            "AWS query-string parameters must include 'X-Amz-SignedHeaders'. Re-examine the query-string parameters."
        );
        assert!(
            check_form(
                &HeaderMap::new(),
                "X-Amz-Algorithm=a&X-Amz-Credential=b&X-Amz-Signature=c&X-Amz-SignedHeaders=d&X-Amz-Date=e"
            )
            .unwrap()
        );
    }

    /// With a key, the same form rules, then the algorithm.
    #[test]
    fn verification_reads_the_form_as_aws_does() {
        let mut h = base_headers();
        h.insert(
            "authorization",
            "AWS4- Signature=b Credential=a".parse().unwrap(),
        );
        h.insert("date", "a".parse().unwrap());
        let e = verify(&request(&h, b"{}"), &One, "us-east-1", "kinesis", NOW).unwrap_err();
        assert_eq!(
            e.message,
            "Authorization header requires 'SignedHeaders' parameter. Authorization=AWS4- Signature=b Credential=a"
        );
        let mut h = base_headers();
        sign(
            &mut h,
            b"{}",
            &now_date(),
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        );
        let good = h["authorization"].to_str().unwrap().to_string();
        let other = good.replacen(ALGORITHM, "AWS4-HMAC-SHA512", 1);
        h.insert("authorization", other.parse().unwrap());
        let e = verify(&request(&h, b"{}"), &One, "us-east-1", "kinesis", NOW).unwrap_err();
        assert_eq!(e.code, "IncompleteSignatureException");
        assert!(
            e.message
                .starts_with("Unsupported AWS 'algorithm': 'AWS4-HMAC-SHA512'."),
            "{}",
            e.message
        );
    }
}

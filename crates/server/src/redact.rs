//! What of a refused request may be logged. AWS echoes a malformed
//! `Authorization` header back to the client in its
//! `IncompleteSignatureException` message, which is fine on the wire (the
//! client sent it) but must not reach the server's logs: of the signature
//! material, only the access key id is logged.

use std::borrow::Cow;

use http::HeaderMap;

/// The access key id a request presents (header or presigned query), if any.
pub(crate) fn access_key_id<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<&'a str> {
    let from_header = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split_once("Credential="))
        .map(|(_, rest)| rest);
    let from_query = query.and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("X-Amz-Credential="))
    });
    let credential = from_header.or(from_query)?;
    let end = credential
        .find(['/', ',', ' ', '%', '&'])
        .unwrap_or(credential.len());
    Some(&credential[..end]).filter(|k| !k.is_empty())
}

/// An error message as it may be logged: everything from an echoed
/// `Authorization=` on is replaced by the access key id it carries.
pub(crate) fn message_for_log(message: &str) -> Cow<'_, str> {
    let Some(at) = message.find("Authorization=") else {
        return Cow::Borrowed(message);
    };
    let header = &message[at + "Authorization=".len()..];
    let key = header
        .split_once("Credential=")
        .map(|(_, rest)| rest)
        .map(|c| &c[..c.find(['/', ',', ' ']).unwrap_or(c.len())])
        .filter(|k| !k.is_empty());
    Cow::Owned(format!(
        "{}Authorization=<redacted; access key id {}>",
        &message[..at],
        key.unwrap_or("none")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_never_reach_the_log() {
        let m = "Authorization header requires 'Signature' parameter. Authorization=AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20200101/us-east-1/kinesis/aws4_request, SignedHeaders=host";
        let logged = message_for_log(m);
        assert_eq!(
            logged,
            "Authorization header requires 'Signature' parameter. Authorization=<redacted; access key id AKIDEXAMPLE>"
        );
        let m = "Authorization header requires 'Credential' parameter. Authorization=AWS4-HMAC-SHA256 Signature=deadbeefcafe";
        assert!(!message_for_log(m).contains("deadbeefcafe"));
        assert_eq!(message_for_log("Rate exceeded"), "Rate exceeded");

        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKID1/20200101/us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature=00"
                .parse()
                .unwrap(),
        );
        assert_eq!(access_key_id(&h, None), Some("AKID1"));
        let q = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID2%2F20200101%2Fus-east-1&X-Amz-Signature=ff";
        assert_eq!(access_key_id(&HeaderMap::new(), Some(q)), Some("AKID2"));
        assert_eq!(access_key_id(&HeaderMap::new(), None), None);
    }
}

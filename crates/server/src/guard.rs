//! Who may reach the operator endpoints and the anonymous API.
//!
//! `/metrics` shows stream names and traffic: open on a loopback listener,
//! behind a bearer token elsewhere. An anonymous (no credentials) server is
//! loopback-only, but a browser on the same machine can still be steered at
//! it by DNS rebinding (a hostile name that resolves to 127.0.0.1); such
//! requests carry the hostile name in `Host`, so only loopback names pass.

use std::net::{Ipv4Addr, Ipv6Addr};

use http::{HeaderMap, StatusCode, Uri};
use subtle::ConstantTimeEq;

/// Whether a `Host` value (with or without a port) names this machine:
/// `localhost`, `*.localhost`, `127.0.0.0/8` or `[::1]`.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let host = host.trim();
    let port_ok = |p: &str| p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = host.strip_prefix('[') {
        let Some((ip, tail)) = rest.split_once(']') else {
            return false;
        };
        let tail_ok = tail.is_empty() || tail.strip_prefix(':').is_some_and(port_ok);
        return tail_ok && ip.parse::<Ipv6Addr>().is_ok_and(|a| a.is_loopback());
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port_ok(port) => name,
        Some(_) => return false,
        None => host,
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    name.parse::<Ipv4Addr>().is_ok_and(|a| a.is_loopback())
}

/// Whether every host a request names (`Host`, and the authority of an
/// HTTP/2 or absolute-form request) is a loopback name. A request that names
/// none (HTTP/1.0) is not from a browser and passes.
pub(crate) fn names_only_loopback(uri: &Uri, headers: &HeaderMap) -> bool {
    let authority_ok = uri.authority().is_none_or(|a| is_loopback_host(a.as_str()));
    let hosts_ok = headers
        .get_all(http::header::HOST)
        .iter()
        .all(|v| v.to_str().is_ok_and(is_loopback_host));
    authority_ok && hosts_ok
}

/// A browser origin served from this machine (`http://localhost:8000`,
/// `http://127.0.0.1:3000`, `http://[::1]`); `null` and anything else is not.
pub(crate) fn is_loopback_origin(origin: &str) -> bool {
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    rest.is_some_and(|host| !host.contains('/') && is_loopback_host(host))
}

/// Whether the request's `Host` header and its URI authority (HTTP/2's
/// `:authority`, or an absolute-form URI) name the same host, as HTTP
/// requires: a signature over one must not route by the other.
pub(crate) fn host_and_authority_agree(uri: &Uri, headers: &HeaderMap) -> bool {
    let Some(authority) = uri.authority() else {
        return true;
    };
    headers.get_all(http::header::HOST).iter().all(|h| {
        h.to_str()
            .is_ok_and(|h| h.eq_ignore_ascii_case(authority.as_str()))
    })
}

/// May this request read `/metrics`? `Err` is the status to answer: 403 when
/// no token is configured on a non-loopback listener, 401 for a missing or
/// wrong `Authorization: Bearer <token>`.
pub(crate) fn metrics_access(
    loopback_listener: bool,
    token: Option<&str>,
    headers: &HeaderMap,
) -> Result<(), StatusCode> {
    if loopback_listener {
        return Ok(());
    }
    let Some(token) = token else {
        return Err(StatusCode::FORBIDDEN);
    };
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(p) if bool::from(p.as_bytes().ct_eq(token.as_bytes())) => Ok(()),
        _ => Err(StatusCode::UNAUTHORIZED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_origins() {
        for ok in [
            "http://localhost:8000",
            "http://127.0.0.1:3000",
            "https://localhost",
            "http://[::1]:80",
            "http://app.localhost",
        ] {
            assert!(is_loopback_origin(ok), "{ok}");
        }
        for bad in [
            "null",
            "https://evil.example",
            "http://localhost.evil.example",
            "http://127.0.0.1.evil.example:80",
            "file://",
            "http://localhost:8000/x",
            "",
        ] {
            assert!(!is_loopback_origin(bad), "{bad}");
        }
    }

    #[test]
    fn host_must_match_the_authority() {
        let uri: Uri = "http://a.example:80/".parse().unwrap();
        let mut h = HeaderMap::new();
        assert!(host_and_authority_agree(&uri, &h));
        h.insert(http::header::HOST, "A.example:80".parse().unwrap());
        assert!(host_and_authority_agree(&uri, &h));
        h.insert(http::header::HOST, "b.example:80".parse().unwrap());
        assert!(!host_and_authority_agree(&uri, &h));
        assert!(host_and_authority_agree(&"/".parse().unwrap(), &h));
    }

    #[test]
    fn loopback_names() {
        for h in [
            "localhost",
            "LOCALHOST:4567",
            "localhost.",
            "api.localhost:80",
            "127.0.0.1",
            "127.9.8.7:4567",
            "[::1]",
            "[::1]:4567",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "evil.com",
            "localhost.evil.com",
            "127.0.0.1.nip.io",
            "10.0.0.1:4567",
            "[::2]:80",
            "[::1]x",
            "localhost:http",
            "0.0.0.0",
            "",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn metrics_token() {
        let mut h = HeaderMap::new();
        assert_eq!(metrics_access(true, None, &h), Ok(()));
        assert_eq!(metrics_access(false, None, &h), Err(StatusCode::FORBIDDEN));
        assert_eq!(
            metrics_access(false, Some("s3cret"), &h),
            Err(StatusCode::UNAUTHORIZED)
        );
        h.insert("authorization", "Bearer wrong".parse().unwrap());
        assert_eq!(
            metrics_access(false, Some("s3cret"), &h),
            Err(StatusCode::UNAUTHORIZED)
        );
        h.insert("authorization", "Bearer s3cret".parse().unwrap());
        assert_eq!(metrics_access(false, Some("s3cret"), &h), Ok(()));
    }
}

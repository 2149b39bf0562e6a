//! The operator's allow-list of networks for outbound connections to hosts
//! that API callers choose (push destinations, a Redshift destination's
//! database).
//!
//! The check is made on the addresses a connection is about to use, after
//! DNS resolution, never on the name alone: a caller who controls a DNS
//! name can point it anywhere, and change where between a check and a
//! connection (DNS rebinding). [`Networks::resolve`] resolves and filters
//! in one step, so whoever connects to what it returns connects only to
//! permitted addresses; [`Resolver`] is the same for `reqwest`, whose
//! connector skips a resolver for IP-literal hosts, so those are checked
//! on the URL ([`Networks::check_url`]) before the request is sent.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::Url;
use tracing::{debug, warn};

/// Networks outbound connections may go to. An IPv4-mapped IPv6 address
/// (`::ffff:a.b.c.d`) is the IPv4 address it maps, since that is where
/// the connection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Networks {
    nets: Vec<IpNet>,
}

/// Why a list of networks is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworksError {
    #[error(
        "{0:?} is not a network in CIDR notation (such as 10.0.0.0/8 or fd00::/8) or an address"
    )]
    Invalid(String),
    #[error("the list of networks is empty (leave the setting out to allow any address)")]
    Empty,
}

/// An address outside the allowed networks. The message names no address:
/// it reaches the caller's error output, and the addresses a name
/// resolves to on the server's network are not the caller's to learn (the
/// server log names them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the destination's address is outside the networks this server allows outbound connections to (firehose_destination_networks)"
)]
pub struct NotAllowed;

/// Why [`Networks::resolve`] returned no address.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("cannot resolve {host}: {source}")]
    Lookup {
        host: String,
        source: std::io::Error,
    },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    #[error(transparent)]
    NotAllowed(#[from] NotAllowed),
}

impl Networks {
    /// Parses networks in CIDR notation (`10.0.0.0/8`, `fd00::/8`); a bare
    /// address is the network of that address alone. Host bits below the
    /// prefix are dropped (`10.1.2.3/8` is `10.0.0.0/8`); blank items are
    /// skipped, but at least one network must remain.
    pub fn parse<S: AsRef<str>>(
        items: impl IntoIterator<Item = S>,
    ) -> Result<Networks, NetworksError> {
        let mut nets = Vec::new();
        for item in items {
            let s = item.as_ref().trim();
            if s.is_empty() {
                continue;
            }
            let net = match s.parse::<IpNet>() {
                Ok(n) => n.trunc(),
                Err(_) => s
                    .parse::<IpAddr>()
                    .map(IpNet::from)
                    .map_err(|_| NetworksError::Invalid(s.to_string()))?,
            };
            nets.push(ipv4_of_mapped(net));
        }
        if nets.is_empty() {
            return Err(NetworksError::Empty);
        }
        Ok(Networks { nets })
    }

    /// [`Networks::parse`] of a comma-separated list.
    pub fn parse_list(list: &str) -> Result<Networks, NetworksError> {
        Networks::parse(list.split(','))
    }

    /// Whether a connection to `ip` is allowed. The unspecified address
    /// (`0.0.0.0`, `::`) never is: connecting to it reaches this host,
    /// whatever network a list names it in.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        !ip.is_unspecified() && self.nets.iter().any(|n| n.contains(&ip))
    }

    /// Checks an address, logging a refusal.
    pub fn check(&self, host: &str, ip: IpAddr) -> Result<(), NotAllowed> {
        if self.permits(ip) {
            return Ok(());
        }
        warn!(host = %host, address = %ip, networks = %self, "an outbound connection's address is outside firehose_destination_networks: not connecting to it");
        Err(NotAllowed)
    }

    /// Checks a URL whose host is an IP address (a name is checked when it
    /// is resolved).
    pub fn check_url(&self, url: &Url) -> Result<(), NotAllowed> {
        // The URL parser serializes every IPv4 spelling (`2130706433`,
        // `0x7f.1`) as a dotted quad, and IPv6 in brackets: what the
        // connector parses as an address is what is checked here.
        let Some(host) = url.host_str() else {
            return Ok(());
        };
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        match bare.parse::<IpAddr>() {
            Ok(ip) => self.check(bare, ip),
            Err(_) => Ok(()),
        }
    }

    /// The permitted addresses of `addrs` (what `host` resolved to); none
    /// permitted is [`NotAllowed`], each refused address logged as a
    /// warning. When some are permitted the connection goes ahead through
    /// them, and the others are only a debug line (a name with an IPv6
    /// address beside an allowed IPv4 one is common, and no failure).
    pub fn filter(
        &self,
        host: &str,
        addrs: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<Vec<SocketAddr>, NotAllowed> {
        let (permitted, refused): (Vec<SocketAddr>, Vec<SocketAddr>) =
            addrs.into_iter().partition(|a| self.permits(a.ip()));
        if permitted.is_empty() {
            for a in &refused {
                // Logs the refusal.
                let _ = self.check(host, a.ip());
            }
            return Err(NotAllowed);
        }
        for a in &refused {
            debug!(host = %host, address = %a.ip(), networks = %self, "skipping an address outside firehose_destination_networks");
        }
        Ok(permitted)
    }

    /// Resolves `host` (a name or an IP address) and keeps the permitted
    /// addresses: connect to these, not to the name.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
        let found: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|source| ResolveError::Lookup {
                    host: host.to_string(),
                    source,
                })?
                .collect(),
        };
        if found.is_empty() {
            return Err(ResolveError::NoAddress {
                host: host.to_string(),
            });
        }
        Ok(self.filter(host, found)?)
    }
}

/// A network of IPv4-mapped IPv6 addresses (`::ffff:10.0.0.0/104`) is the
/// IPv4 network it maps: addresses are checked in their IPv4 form.
fn ipv4_of_mapped(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(n) if n.prefix_len() >= 96 => match n.network().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, n.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        _ => net,
    }
}

impl std::fmt::Display for Networks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, n) in self.nets.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{n}")?;
        }
        Ok(())
    }
}

/// `reqwest`'s resolver under an allow-list: the system's resolver, then
/// [`Networks::filter`].
#[derive(Debug)]
pub(crate) struct Resolver {
    pub networks: Arc<Networks>,
}

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let networks = self.networks.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            // Port 0: the connector puts the URL's (or the scheme's) in.
            match networks.resolve(&host, 0).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs),
                // Itself in the error's chain, where the client finds it
                // (a transparent wrapper would hide it from `source()`).
                Err(ResolveError::NotAllowed(n)) => Err(Box::new(n) as _),
                Err(e) => Err(Box::new(e) as _),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_parse_v4_v6_and_bare_addresses() {
        let n = Networks::parse_list("10.0.0.0/8, fd00::/8,192.168.1.7 ,,").unwrap();
        assert_eq!(n.to_string(), "10.0.0.0/8,fd00::/8,192.168.1.7/32");
        assert!(n.permits(ip("10.255.0.1")));
        assert!(n.permits(ip("fd12::1")));
        assert!(n.permits(ip("192.168.1.7")));
        assert!(!n.permits(ip("192.168.1.8")));
        assert!(!n.permits(ip("11.0.0.1")));
        assert!(!n.permits(ip("127.0.0.1")));
        assert!(!n.permits(ip("::1")));
        assert!(!n.permits(ip("fe80::1")));
        // Host bits are dropped, the prefix kept.
        assert_eq!(
            Networks::parse(["10.1.2.3/8"]).unwrap().to_string(),
            "10.0.0.0/8"
        );
        for bad in [
            "10.0.0.0/33",
            "10.0.0/8",
            "example.com",
            "::1/129",
            "10.0.0.0/",
        ] {
            assert_eq!(
                Networks::parse([bad]),
                Err(NetworksError::Invalid(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(Networks::parse_list(" , "), Err(NetworksError::Empty));
        assert_eq!(
            Networks::parse(Vec::<String>::new()),
            Err(NetworksError::Empty)
        );
    }

    #[test]
    fn mapped_addresses_are_their_ipv4_address() {
        let v4 = Networks::parse(["10.0.0.0/8"]).unwrap();
        assert!(v4.permits(ip("::ffff:10.1.2.3")));
        assert!(!v4.permits(ip("::ffff:127.0.0.1")));
        // All of IPv6 is not a way around an IPv4 list.
        let v6 = Networks::parse(["::/0"]).unwrap();
        assert!(v6.permits(ip("2001:db8::1")));
        assert!(!v6.permits(ip("::ffff:127.0.0.1")));
    }

    #[test]
    fn mapped_networks_and_the_unspecified_address() {
        let n = Networks::parse(["::ffff:10.0.0.0/104"]).unwrap();
        assert_eq!(n.to_string(), "10.0.0.0/8");
        assert!(n.permits(ip("10.1.2.3")));
        assert!(n.permits(ip("::ffff:10.1.2.3")));
        let all = Networks::parse(["0.0.0.0/0", "::/0"]).unwrap();
        assert!(all.permits(ip("192.0.2.1")));
        for this_host in ["0.0.0.0", "::", "::ffff:0.0.0.0"] {
            assert!(!all.permits(ip(this_host)), "{this_host}");
        }
    }

    #[test]
    fn ip_literal_urls_are_checked_and_names_left_to_resolution() {
        let n = Networks::parse(["10.0.0.0/8", "::1/128"]).unwrap();
        let url = |s: &str| Url::parse(s).unwrap();
        assert_eq!(
            n.check_url(&url("https://127.0.0.1:8443/x")),
            Err(NotAllowed)
        );
        // The URL parser's other spellings of 127.0.0.1 are the same address.
        assert_eq!(n.check_url(&url("https://2130706433/")), Err(NotAllowed));
        assert_eq!(n.check_url(&url("https://0x7f.1/")), Err(NotAllowed));
        assert_eq!(
            n.check_url(&url("https://[::ffff:7f00:1]/")),
            Err(NotAllowed)
        );
        assert!(n.check_url(&url("https://10.2.3.4/")).is_ok());
        assert!(n.check_url(&url("http://[::1]:80/")).is_ok());
        assert!(n.check_url(&url("https://example.com/")).is_ok());
    }

    #[test]
    fn filtering_keeps_the_permitted_addresses_only() {
        let n = Networks::parse(["127.0.0.0/8"]).unwrap();
        let a = |s: &str| -> SocketAddr { s.parse().unwrap() };
        assert_eq!(
            n.filter("h", [a("[::1]:5"), a("127.0.0.2:5"), a("10.0.0.1:5")]),
            Ok(vec![a("127.0.0.2:5")])
        );
        assert_eq!(n.filter("h", [a("[::1]:5")]), Err(NotAllowed));
    }

    #[tokio::test]
    async fn resolution_is_filtered() {
        let only_v4_loopback = Networks::parse(["127.0.0.0/8"]).unwrap();
        let got = only_v4_loopback.resolve("127.0.0.1", 7).await.unwrap();
        assert_eq!(got, vec!["127.0.0.1:7".parse::<SocketAddr>().unwrap()]);
        // A name is checked on what it resolves to: localhost is loopback.
        let got = only_v4_loopback.resolve("localhost", 7).await.unwrap();
        assert!(
            got.iter().all(|a| a.ip().is_loopback() && a.is_ipv4()),
            "{got:?}"
        );
        let elsewhere = Networks::parse(["10.0.0.0/8"]).unwrap();
        assert!(matches!(
            elsewhere.resolve("localhost", 7).await,
            Err(ResolveError::NotAllowed(NotAllowed))
        ));
        assert!(matches!(
            elsewhere.resolve("::1", 7).await,
            Err(ResolveError::NotAllowed(NotAllowed))
        ));
    }
}

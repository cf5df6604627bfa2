//! The client's address: the TCP peer, or, when the peer is a trusted proxy, the rightmost
//! address its `Forwarded` or `X-Forwarded-For` header names that is not a trusted proxy.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use axum::http::HeaderMap;
use axum::http::header::FORWARDED;
use ipnet::IpNet;

/// The most hops of a forwarding header read, from the right.
const MAX_HOPS: usize = 32;

/// A proxy (an address or a CIDR range) whose forwarding headers name the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedProxy(IpNet);

impl FromStr for TrustedProxy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        text.parse::<IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
            .map(|net| TrustedProxy(net.trunc()))
            .map_err(|_| {
                format!("{text:?} is not an IP address or CIDR range (like 10.0.0.1 or 10.0.0.0/8)")
            })
    }
}

impl fmt::Display for TrustedProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The configured trusted proxies.
#[derive(Debug, Default)]
pub(crate) struct Proxies(Vec<IpNet>);

impl Proxies {
    pub fn new(trusted: &[TrustedProxy]) -> Self {
        Proxies(trusted.iter().map(|proxy| proxy.0).collect())
    }

    pub(super) fn trusts(&self, address: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&address))
    }

    /// The address a request from `peer` acts for. Only a trusted peer's headers are read;
    /// walking its hops from the right, the first one that is not a trusted proxy is the
    /// client. A hop that is no address ends the walk at the last address known.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if self.0.is_empty() || !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        for hop in forwarded_hops(headers).into_iter().rev().take(MAX_HOPS) {
            let Some(address) = hop else { break };
            client = address.to_canonical();
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

/// The hops of `Forwarded` (RFC 7239) when present, else of `X-Forwarded-For`, left to right;
/// `None` for a hop that names no address (`unknown`, an obfuscated name, garbage).
fn forwarded_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let values = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .flat_map(|value| value.to_str().unwrap_or("?").split(','))
            .collect::<Vec<_>>()
    };
    let forwarded = values(FORWARDED.as_str());
    if !forwarded.is_empty() {
        return forwarded.into_iter().map(forwarded_for).collect();
    }
    values("x-forwarded-for")
        .into_iter()
        .map(|hop| parse_node(hop.trim()))
        .collect()
}

/// The `for=` address of one element of `Forwarded`.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("for")
            .then(|| parse_node(value.trim().trim_matches('"')))
            .flatten()
    })
}

/// An address with an optional port: `192.0.2.1`, `192.0.2.1:80`, `2001:db8::1`,
/// `[2001:db8::1]:80`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    node.parse().ok().or_else(|| {
        let (host, port) = node.rsplit_once(':')?;
        port.parse::<u16>().ok()?;
        host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
    })
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn proxies(list: &[&str]) -> Proxies {
        let trusted: Vec<TrustedProxy> = list.iter().map(|p| p.parse().unwrap()).collect();
        Proxies::new(&trusted)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn only_a_trusted_peer_names_the_client() {
        let spoofed = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(
            proxies(&[]).client(ip("192.0.2.1"), &spoofed),
            ip("192.0.2.1")
        );
        assert_eq!(
            proxies(&["10.0.0.0/8"]).client(ip("192.0.2.1"), &spoofed),
            ip("192.0.2.1")
        );
        assert_eq!(
            proxies(&["10.0.0.0/8"]).client(ip("10.1.2.3"), &spoofed),
            ip("203.0.113.9")
        );
        // A trusted peer without the header is the client.
        assert_eq!(
            proxies(&["10.0.0.1"]).client(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let trusted = proxies(&["10.0.0.0/8", "2001:db8::/32"]);
        // What the client wrote itself (198.51.100.7) is left of the address the proxy saw.
        let chain = headers(&[("x-forwarded-for", "198.51.100.7, 203.0.113.9, 10.0.0.2")]);
        assert_eq!(trusted.client(ip("10.0.0.1"), &chain), ip("203.0.113.9"));
        let lines = headers(&[
            ("x-forwarded-for", "198.51.100.7"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(trusted.client(ip("10.0.0.1"), &lines), ip("203.0.113.9"));
        let forwarded = headers(&[(
            "forwarded",
            "for=198.51.100.7, for=\"[2001:db8:cafe::17]:4711\";proto=https, For=203.0.113.9:80",
        )]);
        assert_eq!(
            trusted.client(ip("10.0.0.1"), &forwarded),
            ip("203.0.113.9")
        );
        let through_v6 = headers(&[("forwarded", "for=198.51.100.7;by=x, for=\"[2001:db8::5]\"")]);
        assert_eq!(
            trusted.client(ip("10.0.0.1"), &through_v6),
            ip("198.51.100.7")
        );
        // Forwarded wins over X-Forwarded-For.
        let both = headers(&[
            ("forwarded", "for=192.0.2.60"),
            ("x-forwarded-for", "192.0.2.61"),
        ]);
        assert_eq!(trusted.client(ip("10.0.0.1"), &both), ip("192.0.2.60"));
        // A hop that is no address stops at the last known one.
        let hidden = headers(&[("forwarded", "for=198.51.100.7, for=_hidden, for=10.0.0.3")]);
        assert_eq!(trusted.client(ip("10.0.0.1"), &hidden), ip("10.0.0.3"));
    }

    #[test]
    fn mapped_addresses_are_their_ipv4_address() {
        assert_eq!(
            proxies(&[]).client(ip("::ffff:192.0.2.1"), &HeaderMap::new()),
            ip("192.0.2.1")
        );
    }

    #[test]
    fn trusted_proxies_parse_addresses_and_ranges() {
        assert_eq!(
            "10.0.0.7/8".parse::<TrustedProxy>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            " ::1 ".parse::<TrustedProxy>().unwrap().to_string(),
            "::1/128"
        );
        let error = "10.0.0.0/33".parse::<TrustedProxy>().unwrap_err();
        assert!(error.contains("CIDR"), "{error}");
    }
}

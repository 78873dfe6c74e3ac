//! Who the client is: the TCP peer, unless the peer is one of the
//! `TRUSTED_PROXIES`; then `X-Forwarded-For` (its right-most address that is
//! not itself a trusted proxy) or `X-Real-IP` names it ([`TrustedProxies`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderMap;
use ipnet::IpNet;

/// The proxies whose word on the client's address is taken.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    networks: Vec<IpNet>,
}

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self { networks }
    }

    /// The client's address of `req`: its TCP peer, or what a trusted proxy
    /// says. Unspecified (`0.0.0.0`) for a request without a peer address
    /// (only in-process tests build those).
    pub fn client_of(&self, req: &Request) -> IpAddr {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        match peer {
            Some(peer) => self.client(peer, req.headers()),
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.networks.iter().any(|net| net.contains(&ip))
    }

    /// The client behind `peer`: `peer` itself unless it is a trusted
    /// proxy. From a trusted proxy, `X-Forwarded-For` is read right to left
    /// (each proxy appends the address it saw): the first address that is
    /// not a trusted proxy is the client; anything left of it was written
    /// by the client and proves nothing. Without `X-Forwarded-For`,
    /// `X-Real-IP`. An unreadable hop ends the walk at the last address
    /// vouched for.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let mut vouched = peer;
        let mut any_hop = false;
        for value in headers.get_all("x-forwarded-for").iter().rev() {
            let Ok(value) = value.to_str() else {
                return vouched;
            };
            for hop in value.rsplit(',') {
                any_hop = true;
                let Some(ip) = parse_hop(hop) else {
                    return vouched;
                };
                if !self.trusts(ip) {
                    return ip;
                }
                vouched = ip;
            }
        }
        if any_hop {
            return vouched;
        }
        headers
            .get("x-real-ip")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_hop)
            .unwrap_or(peer)
    }
}

/// One address of a forwarding header: `1.2.3.4`, `1.2.3.4:5678`,
/// `2001:db8::1` or `[2001:db8::1]:5678`.
fn parse_hop(raw: &str) -> Option<IpAddr> {
    let raw = raw.trim();
    raw.parse::<IpAddr>()
        .ok()
        .or_else(|| raw.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxies(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let nobody = TrustedProxies::default();
        let spoofed = headers(&[("x-forwarded-for", "1.1.1.1"), ("x-real-ip", "2.2.2.2")]);
        assert_eq!(
            nobody.client(ip("203.0.113.9"), &spoofed),
            ip("203.0.113.9")
        );
        let some = proxies(&["10.0.0.0/8"]);
        assert_eq!(some.client(ip("203.0.113.9"), &spoofed), ip("203.0.113.9"));
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let p = proxies(&["10.0.0.0/8"]);
        // The client wrote 1.1.1.1; the edge proxy appended what it saw.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 198.51.100.4, 10.0.0.7")]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("198.51.100.4"));
        // Several header lines are one list, in order.
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "198.51.100.4:4431"),
        ]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("198.51.100.4"));
        // Only trusted hops: the furthest one vouched for.
        let h = headers(&[("x-forwarded-for", "10.1.1.1, 10.0.0.7")]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("10.1.1.1"));
        // Garbage ends the walk at the last address vouched for.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, nonsense, 10.0.0.7")]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("10.0.0.7"));
        // IPv6, bracketed with a port.
        let h = headers(&[("x-forwarded-for", "[2001:db8::5]:443")]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("2001:db8::5"));
    }

    #[test]
    fn x_real_ip_counts_only_from_a_trusted_peer_without_x_forwarded_for() {
        let p = proxies(&["127.0.0.1/32"]);
        let h = headers(&[("x-real-ip", "198.51.100.4")]);
        assert_eq!(p.client(ip("127.0.0.1"), &h), ip("198.51.100.4"));
        assert_eq!(p.client(ip("192.0.2.1"), &h), ip("192.0.2.1"));
        // An IPv4-mapped peer is the IPv4 address.
        assert_eq!(p.client(ip("::ffff:127.0.0.1"), &h), ip("198.51.100.4"));
    }
}

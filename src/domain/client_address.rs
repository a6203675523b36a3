//! Where a request came from when it passed through proxies: the trusted proxies (`--trusted-proxies`) and the
//! rule that reads the client's address from `x-forwarded-for` only when a trusted proxy wrote it.

use std::net::{IpAddr, SocketAddr};

use super::cidr::Cidr;

/// The networks of the proxies whose `x-forwarded-for` is believed. Empty (the default): none is, and the client
/// is always the TCP peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    pub fn new(blocks: Vec<Cidr>) -> Self {
        TrustedProxies(blocks)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|block| block.contains(ip))
    }

    /// The client's address: `peer` when it is not a trusted proxy; else the right-most entry of
    /// `forwarded_for` (the header's values in order, each a comma-separated list) that is not a trusted proxy.
    ///
    /// Only the right end of the header is written by proxies we trust; everything to its left came from the
    /// client, who can write anything there. Walking from the right and stopping at the first untrusted hop
    /// takes the address the last trusted proxy saw, and ignores what the client put before it. An entry that is
    /// not an address ends the walk at the trusted hop after it, for the same reason. When every entry is a
    /// trusted proxy, the left-most is the client (a request that started inside the trusted network).
    pub fn client<'a>(&self, peer: IpAddr, forwarded_for: impl IntoIterator<Item = &'a str>) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let entries: Vec<&str> = forwarded_for.into_iter().flat_map(|value| value.split(',')).collect();
        let mut client = peer;
        for entry in entries.iter().rev() {
            let Some(hop) = parse_hop(entry.trim()) else { return client };
            client = hop;
            if !self.trusts(hop) {
                break;
            }
        }
        client
    }
}

/// One `x-forwarded-for` entry: an address, or an address with a port (`203.0.113.7:4711`, `[2001:db8::1]:443`),
/// which some proxies write.
fn parse_hop(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|addr| addr.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(blocks: &[&str]) -> TrustedProxies {
        TrustedProxies::new(blocks.iter().filter_map(|b| b.parse().ok()).collect())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let none = TrustedProxies::default();
        assert_eq!(none.client(ip("198.51.100.9"), ["203.0.113.7"]), ip("198.51.100.9"));
        let some = proxies(&["10.0.0.0/8"]);
        assert_eq!(some.client(ip("198.51.100.9"), ["203.0.113.7, 10.0.0.1"]), ip("198.51.100.9"));
    }

    #[test]
    fn behind_trusted_proxies_the_right_most_untrusted_entry_is_the_client() {
        let trusted = proxies(&["10.0.0.0/8", "127.0.0.1"]);
        // The client wrote a fake first entry; the proxies appended the real address and their own.
        let header = ["1.2.3.4, 203.0.113.7", "10.0.0.5"];
        assert_eq!(trusted.client(ip("127.0.0.1"), header), ip("203.0.113.7"));
        assert_eq!(trusted.client(ip("10.1.1.1"), ["203.0.113.7"]), ip("203.0.113.7"));
        // Ports and IPv6 as some proxies write them; IPv4-mapped addresses are the IPv4 client.
        assert_eq!(trusted.client(ip("10.1.1.1"), ["[2001:db8::1]:443"]), ip("2001:db8::1"));
        assert_eq!(trusted.client(ip("10.1.1.1"), ["203.0.113.7:4711"]), ip("203.0.113.7"));
        assert_eq!(trusted.client(ip("10.1.1.1"), ["::ffff:203.0.113.7"]), ip("203.0.113.7"));
    }

    #[test]
    fn no_header_or_only_proxies_or_garbage_stop_at_a_trusted_hop() {
        let trusted = proxies(&["10.0.0.0/8"]);
        assert_eq!(trusted.client(ip("10.0.0.1"), []), ip("10.0.0.1"));
        assert_eq!(trusted.client(ip("10.0.0.1"), [""]), ip("10.0.0.1"));
        assert_eq!(trusted.client(ip("10.0.0.1"), ["10.0.0.3, 10.0.0.2"]), ip("10.0.0.3"));
        assert_eq!(trusted.client(ip("10.0.0.1"), ["203.0.113.7, unknown, 10.0.0.2"]), ip("10.0.0.2"));
        assert_eq!(trusted.client(ip("10.0.0.1"), ["not-an-address"]), ip("10.0.0.1"));
    }
}

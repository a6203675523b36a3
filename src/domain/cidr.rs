//! IP allow-lists for API keys: parsing, storing and matching IPv4 and IPv6 network blocks (CIDR).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use super::FieldViolation;

/// The most blocks one allow-list may hold. Matching is linear, and a list that long is better served by a
/// firewall than by a key.
pub const MAX_ALLOWED_CIDRS: usize = 100;

/// The IPv6 prefix length from which a block can lie wholly inside `::ffff:0:0/96`, the IPv4-mapped range.
const MAPPED_PREFIX: u8 = 96;

/// An IPv4 or IPv6 network: an address whose host bits are all zero, and a prefix length.
///
/// Parsing never moves a block: `10.0.0.1/8` is refused rather than read as `10.0.0.0/8` (a widening) or as
/// `10.0.0.1/32` (a narrowing), since either would silently change who may use a key.
///
/// # IPv4-mapped addresses
///
/// A dual-stack socket reports an IPv4 client as `::ffff:a.b.c.d`. [`Cidr::contains`] treats such an address
/// as the IPv4 client it is, so that whether the listener is dual-stack never changes the decision:
///
/// - an IPv4 block (`203.0.113.0/24`) matches `203.0.113.7` and `::ffff:203.0.113.7` alike;
/// - an IPv6 block written in mapped form, lying wholly inside `::ffff:0:0/96` (`::ffff:203.0.113.0/120`), is
///   that IPv4 block in another spelling and matches the same clients;
/// - any other IPv6 block, `::/0` included, matches IPv6 clients only, never an IPv4 or IPv4-mapped one.
///
/// The deprecated IPv4-compatible form (`::a.b.c.d`) is an ordinary IPv6 address here: sockets do not report
/// clients that way, and `::1` (loopback) would otherwise become `0.0.0.1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    /// The network's first address (its host bits are zero).
    pub fn network(&self) -> IpAddr {
        self.network
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` lies in this block; see the type's documentation for IPv4-mapped addresses.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => masked_v4(ip, self.prefix_len) == net,
            (IpAddr::V6(net), IpAddr::V6(ip)) => masked_v6(ip, self.prefix_len) == net,
            (IpAddr::V6(net), IpAddr::V4(ip)) => {
                // A shorter IPv6 block (`::/0`, `::/64`) also spans the mapped range, but it was written to
                // mean IPv6 clients; only a block inside the mapped range was written to mean IPv4 ones.
                self.prefix_len >= MAPPED_PREFIX && masked_v6(ip.to_ipv6_mapped(), self.prefix_len) == net
            }
            (IpAddr::V4(_), IpAddr::V6(_)) => false,
        }
    }

    /// Whether every client `inner` matches, this block matches too, with IPv4-mapped blocks read as the IPv4
    /// blocks they are (see the type's documentation): `10.0.0.0/8` contains `::ffff:10.1.0.0/112`, and
    /// `::/0`, which matches IPv6 clients only, contains no IPv4 block.
    ///
    /// An IPv6 block wider than the mapped range is compared as written, although it never matches the mapped
    /// clients inside it: so `::fffe:0:0/95` is not found inside `::fffe:0:0/96`, which matches the same
    /// clients. That answer errs on the side of refusing, and no one writes such blocks.
    pub fn contains_block(&self, inner: &Cidr) -> bool {
        match (self.as_ipv4(), inner.as_ipv4()) {
            (Some((outer, outer_len)), Some((inner, inner_len))) => {
                inner_len >= outer_len && masked_v4(inner, outer_len) == outer
            }
            (None, None) => match (self.network, inner.network) {
                (IpAddr::V6(outer), IpAddr::V6(net)) => {
                    inner.prefix_len >= self.prefix_len && masked_v6(net, self.prefix_len) == outer
                }
                // Blocks that are not IPv4 ones are IPv6 blocks.
                _ => false,
            },
            // An IPv4 block's clients are IPv4 ones, which an unmapped IPv6 block never matches, and the other
            // way round.
            _ => false,
        }
    }

    /// The IPv4 block this block matches the clients of, if it is one: itself, or a mapped IPv6 block.
    fn as_ipv4(&self) -> Option<(Ipv4Addr, u8)> {
        match self.network {
            IpAddr::V4(net) => Some((net, self.prefix_len)),
            // From /96 on, a block lies either wholly inside the mapped range or wholly outside it.
            IpAddr::V6(net) if self.prefix_len >= MAPPED_PREFIX => {
                net.to_ipv4_mapped().map(|v4| (v4, self.prefix_len - MAPPED_PREFIX))
            }
            IpAddr::V6(_) => None,
        }
    }
}

/// Why a text is not a CIDR block. The `Display` text says what is wrong and how to fix it; it never repeats
/// the caller's text, which may be long or hostile, only addresses parsed from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CidrError {
    Empty,
    WhiteSpace,
    ZoneId,
    MissingAddress,
    MissingPrefix,
    BadAddress,
    BadPrefix,
    PrefixOutOfRange { max: u8 },
    HostBitsSet { network: Cidr, address: IpAddr },
}

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CidrError::Empty => {
                f.write_str("must not be empty: write an address (203.0.113.7) or a block (203.0.113.0/24)")
            }
            CidrError::WhiteSpace => f.write_str("must not contain spaces or other white space"),
            CidrError::ZoneId => f.write_str(
                "must not have a zone id (the part from '%'): a zone names a local interface, not a client",
            ),
            CidrError::MissingAddress => {
                f.write_str("has no address before '/': write a block such as 203.0.113.0/24")
            }
            CidrError::MissingPrefix => f.write_str(
                "has nothing after '/': add a prefix length (e.g. /24), or drop the '/' for a single address",
            ),
            CidrError::BadAddress => f.write_str(
                "is not an IP address: write IPv4 as four numbers 0 to 255 without leading zeros \
                 (203.0.113.0) or IPv6 without brackets or port (2001:db8::)",
            ),
            CidrError::BadPrefix => f.write_str(
                "has a bad prefix length: write it after '/' as a decimal number without sign or leading \
                 zeros (e.g. /24)",
            ),
            CidrError::PrefixOutOfRange { max } => {
                let family = if *max == 32 { "IPv4" } else { "IPv6" };
                write!(f, "has a prefix length out of range: it must be 0 to {max} for an {family} address")
            }
            CidrError::HostBitsSet { network, address } => {
                let single = if address.is_ipv4() { 32 } else { 128 };
                write!(
                    f,
                    "has host bits set: write {network} for the whole network, or {address}/{single} for \
                     that one address"
                )
            }
        }
    }
}

impl std::error::Error for CidrError {}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `a.b.c.d`, `a.b.c.d/n` (n from 0 to 32), an IPv6 address as `std::net::Ipv6Addr` reads it, or that
    /// with `/n` (n from 0 to 128). A bare address is a /32 or /128 block.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(CidrError::Empty);
        }
        // Refused rather than trimmed: a stored entry must be exactly what was checked.
        if s.chars().any(char::is_whitespace) {
            return Err(CidrError::WhiteSpace);
        }
        // std's parser refuses zones too, but only as "invalid address", which does not say what to change.
        if s.contains('%') {
            return Err(CidrError::ZoneId);
        }
        let (address, prefix) = match s.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (s, None),
        };
        if address.is_empty() {
            return Err(CidrError::MissingAddress);
        }
        // std refuses IPv4 numbers with leading zeros, which inet_aton reads as octal: `010.0.0.1` can't mean
        // 10.0.0.1 here and 8.0.0.1 to a firewall or proxy in front of keymint.
        let address = address.parse::<IpAddr>().map_err(|_| CidrError::BadAddress)?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix {
            None => max,
            Some(prefix) => parse_prefix(prefix, max)?,
        };
        let network = masked(address, prefix_len);
        if network != address {
            return Err(CidrError::HostBitsSet { network: Cidr { network, prefix_len }, address });
        }
        Ok(Cidr { network, prefix_len })
    }
}

/// A decimal number from 0 to `max`, digits only: `u8::from_str` alone would accept a leading '+'.
fn parse_prefix(prefix: &str, max: u8) -> Result<u8, CidrError> {
    if prefix.is_empty() {
        return Err(CidrError::MissingPrefix);
    }
    if !prefix.bytes().all(|b| b.is_ascii_digit()) || (prefix.len() > 1 && prefix.starts_with('0')) {
        return Err(CidrError::BadPrefix);
    }
    match prefix.parse::<u8>() {
        Ok(n) if n <= max => Ok(n),
        // Only digits are left, so a failure here is a number too large for a u8.
        _ => Err(CidrError::PrefixOutOfRange { max }),
    }
}

/// Always with its prefix length, even /32 and /128, so that a stored entry says plainly it is one address.
impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

fn masked(ip: IpAddr, prefix_len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(ip) => IpAddr::V4(masked_v4(ip, prefix_len)),
        IpAddr::V6(ip) => IpAddr::V6(masked_v6(ip, prefix_len)),
    }
}

fn masked_v4(ip: Ipv4Addr, prefix_len: u8) -> Ipv4Addr {
    // `<<` by the full width overflows (a panic in debug builds, no shift in release); checked_shl makes /0's
    // mask all zeros instead.
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix_len)).unwrap_or(0);
    Ipv4Addr::from_bits(ip.to_bits() & mask)
}

fn masked_v6(ip: Ipv6Addr, prefix_len: u8) -> Ipv6Addr {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix_len)).unwrap_or(0);
    Ipv6Addr::from_bits(ip.to_bits() & mask)
}

/// The blocks an API key may be used from. Empty means no restriction: every address is allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList(Vec<Cidr>);

impl AllowList {
    /// At most [`MAX_ALLOWED_CIDRS`] entries, each a [`Cidr`]; every bad entry is reported, on
    /// `allowed_cidrs[i]`. Repeated blocks are kept once, in the order first given; overlapping ones are kept
    /// as written, so that the stored list is the one the caller recognises.
    pub fn parse(entries: &[String]) -> Result<AllowList, Vec<FieldViolation>> {
        if entries.len() > MAX_ALLOWED_CIDRS {
            return Err(vec![FieldViolation::new(
                "allowedCidrs",
                format!(
                    "must have at most {MAX_ALLOWED_CIDRS} entries, not {}: merge neighbouring blocks into \
                     wider ones",
                    entries.len()
                ),
            )]);
        }
        let mut blocks: Vec<Cidr> = Vec::with_capacity(entries.len());
        let mut seen = std::collections::HashSet::with_capacity(entries.len());
        let mut violations = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            match entry.parse::<Cidr>() {
                Ok(block) if !seen.insert(block) => {}
                Ok(block) => blocks.push(block),
                Err(e) => violations.push(FieldViolation::new(format!("allowedCidrs[{i}]"), e.to_string())),
            }
        }
        if violations.is_empty() { Ok(AllowList(blocks)) } else { Err(violations) }
    }

    /// Whether a client at `ip` may use the key: always if the list is empty, else if a block contains it.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.0.is_empty() || self.0.iter().any(|block| block.contains(ip))
    }

    /// Whether every client of `block` may use the key: always if the list is empty, else if one block of the
    /// list contains it ([`Cidr::contains_block`]). A block that only the union of several entries covers is
    /// not allowed: entries are compared one by one, which is what a reader of the two lists can check.
    pub fn allows_block(&self, block: &Cidr) -> bool {
        self.0.is_empty() || self.0.iter().any(|outer| outer.contains_block(block))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn entries(&self) -> &[Cidr] {
        &self.0
    }

    /// The canonical texts, which [`AllowList::parse`] reads back to the same list.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(Cidr::to_string).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn strings(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ipv4_slash_32_is_one_address() {
        let c = cidr("203.0.113.7/32");
        assert!(c.contains(ip("203.0.113.7")));
        assert!(!c.contains(ip("203.0.113.6")));
        assert!(!c.contains(ip("203.0.113.8")));
    }

    #[test]
    fn ipv4_slash_24_edges() {
        let c = cidr("203.0.113.0/24");
        assert!(c.contains(ip("203.0.113.0")));
        assert!(c.contains(ip("203.0.113.255")));
        assert!(!c.contains(ip("203.0.112.255")));
        assert!(!c.contains(ip("203.0.114.0")));
    }

    #[test]
    fn ipv4_slash_31_edges() {
        let c = cidr("203.0.113.6/31");
        assert!(c.contains(ip("203.0.113.6")));
        assert!(c.contains(ip("203.0.113.7")));
        assert!(!c.contains(ip("203.0.113.5")));
        assert!(!c.contains(ip("203.0.113.8")));
    }

    #[test]
    fn ipv4_slash_0_matches_every_ipv4_address_only() {
        let c = cidr("0.0.0.0/0");
        assert!(c.contains(ip("0.0.0.0")));
        assert!(c.contains(ip("255.255.255.255")));
        assert!(c.contains(ip("::ffff:198.51.100.1")));
        assert!(!c.contains(ip("2001:db8::1")));
        assert!(!c.contains(ip("::")));
    }

    #[test]
    fn ipv6_slash_128_is_one_address() {
        let c = cidr("2001:db8::1/128");
        assert!(c.contains(ip("2001:db8::1")));
        assert!(!c.contains(ip("2001:db8::")));
        assert!(!c.contains(ip("2001:db8::2")));
    }

    #[test]
    fn ipv6_slash_64_edges() {
        let c = cidr("2001:db8:0:1::/64");
        assert!(c.contains(ip("2001:db8:0:1::")));
        assert!(c.contains(ip("2001:db8:0:1:ffff:ffff:ffff:ffff")));
        assert!(!c.contains(ip("2001:db8:0:0:ffff:ffff:ffff:ffff")));
        assert!(!c.contains(ip("2001:db8:0:2::")));
    }

    #[test]
    fn ipv6_slash_127_edges() {
        let c = cidr("2001:db8::2/127");
        assert!(c.contains(ip("2001:db8::2")));
        assert!(c.contains(ip("2001:db8::3")));
        assert!(!c.contains(ip("2001:db8::1")));
        assert!(!c.contains(ip("2001:db8::4")));
    }

    #[test]
    fn ipv6_slash_0_matches_every_ipv6_address_only() {
        let c = cidr("::/0");
        assert!(c.contains(ip("::")));
        assert!(c.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert!(c.contains(ip("2001:db8::1")));
        assert!(!c.contains(ip("203.0.113.7")));
        // A mapped client is an IPv4 client: whether the listener is dual-stack must not let it in.
        assert!(!c.contains(ip("::ffff:203.0.113.7")));
    }

    #[test]
    fn a_bare_address_is_a_single_address_block() {
        let v4 = cidr("203.0.113.7");
        assert_eq!(v4, cidr("203.0.113.7/32"));
        assert_eq!(v4.prefix_len(), 32);
        assert_eq!(v4.to_string(), "203.0.113.7/32");
        let v6 = cidr("2001:db8::1");
        assert_eq!(v6, cidr("2001:db8::1/128"));
        assert_eq!(v6.prefix_len(), 128);
        assert_eq!(v6.to_string(), "2001:db8::1/128");
    }

    #[test]
    fn host_bits_set_are_refused_with_the_network_suggested() {
        let err = "10.0.0.1/8".parse::<Cidr>().unwrap_err();
        assert_eq!(err, CidrError::HostBitsSet { network: cidr("10.0.0.0/8"), address: ip("10.0.0.1") });
        let text = err.to_string();
        assert!(text.contains("10.0.0.0/8"), "{text}");
        assert!(text.contains("10.0.0.1/32"), "{text}");

        let err = "2001:db8::1/32".parse::<Cidr>().unwrap_err();
        let text = err.to_string();
        assert!(text.contains("2001:db8::/32"), "{text}");
        assert!(text.contains("2001:db8::1/128"), "{text}");

        assert!(matches!("203.0.113.7/31".parse::<Cidr>(), Err(CidrError::HostBitsSet { .. })));
        assert!(matches!("1.0.0.0/0".parse::<Cidr>(), Err(CidrError::HostBitsSet { .. })));
    }

    #[test]
    fn prefixes_past_the_family_width_are_refused() {
        assert_eq!("10.0.0.0/33".parse::<Cidr>(), Err(CidrError::PrefixOutOfRange { max: 32 }));
        assert_eq!("2001:db8::/129".parse::<Cidr>(), Err(CidrError::PrefixOutOfRange { max: 128 }));
        assert_eq!("10.0.0.0/256".parse::<Cidr>(), Err(CidrError::PrefixOutOfRange { max: 32 }));
        assert_eq!(
            "10.0.0.0/99999999999999999999999".parse::<Cidr>(),
            Err(CidrError::PrefixOutOfRange { max: 32 })
        );
        assert!("10.0.0.0/32".parse::<Cidr>().is_ok());
        assert!("::/128".parse::<Cidr>().is_ok());
    }

    #[test]
    fn malformed_texts_are_refused() {
        let cases = [
            ("", CidrError::Empty),
            (" 1.2.3.4", CidrError::WhiteSpace),
            ("1.2.3.4 ", CidrError::WhiteSpace),
            ("1.2.3.4/ 8", CidrError::WhiteSpace),
            ("1.2.3.4\t", CidrError::WhiteSpace),
            ("fe80::1%eth0", CidrError::ZoneId),
            ("fe80::%1/64", CidrError::ZoneId),
            ("/24", CidrError::MissingAddress),
            ("1.2.3.4/", CidrError::MissingPrefix),
            ("::1/", CidrError::MissingPrefix),
            ("1.2.3.4/-1", CidrError::BadPrefix),
            ("1.2.3.4/+8", CidrError::BadPrefix),
            ("1.2.3.4/08", CidrError::BadPrefix),
            ("1.2.3.4/x", CidrError::BadPrefix),
            ("1.2.3.0/24/8", CidrError::BadPrefix),
            ("1.2.3", CidrError::BadAddress),
            ("256.1.1.1", CidrError::BadAddress),
            ("01.2.3.4", CidrError::BadAddress),
            ("1.2.3.4.", CidrError::BadAddress),
            ("0x1.2.3.4", CidrError::BadAddress),
            ("1.2.3.4:80", CidrError::BadAddress),
            ("[2001:db8::1]", CidrError::BadAddress),
            ("2001:db8::g", CidrError::BadAddress),
            ("1::2::3", CidrError::BadAddress),
            ("::ffff:01.2.3.4", CidrError::BadAddress),
            ("example.com", CidrError::BadAddress),
        ];
        for (text, expected) in cases {
            assert_eq!(text.parse::<Cidr>(), Err(expected), "{text:?}");
        }
    }

    #[test]
    fn slash_zero_is_a_prefix_not_a_leading_zero() {
        assert_eq!(cidr("0.0.0.0/0").prefix_len(), 0);
        assert_eq!(cidr("::/0").prefix_len(), 0);
    }

    #[test]
    fn a_mapped_client_matches_ipv4_blocks_as_its_ipv4_address() {
        let c = cidr("203.0.113.0/24");
        assert!(c.contains(ip("::ffff:203.0.113.7")));
        assert!(!c.contains(ip("::ffff:198.51.100.7")));
        assert!(!cidr("198.51.100.0/24").contains(ip("::ffff:203.0.113.7")));
    }

    #[test]
    fn a_mapped_block_matches_the_same_clients_as_its_ipv4_spelling() {
        let c = cidr("::ffff:203.0.113.0/120");
        assert_eq!(c.to_string(), "::ffff:203.0.113.0/120");
        assert!(c.contains(ip("203.0.113.7")));
        assert!(c.contains(ip("::ffff:203.0.113.7")));
        assert!(!c.contains(ip("203.0.114.7")));
        assert!(!c.contains(ip("::ffff:203.0.114.7")));
        assert!(cidr("::ffff:0:0/96").contains(ip("198.51.100.1")));
        // Wider than the mapped range: an IPv6 block, for IPv6 clients only.
        assert!(!cidr("::/80").contains(ip("198.51.100.1")));
    }

    #[test]
    fn the_ipv4_compatible_form_is_plain_ipv6() {
        assert!(!cidr("203.0.113.0/24").contains(ip("::203.0.113.7")));
        assert!(!cidr("0.0.0.1/32").contains(ip("::1")));
    }

    #[test]
    fn families_never_cross_for_unmapped_addresses() {
        assert!(!cidr("0.0.0.0/0").contains(ip("2001:db8::1")));
        assert!(!cidr("0.0.0.0/0").contains(ip("::1")));
        assert!(!cidr("2001:db8::/32").contains(ip("32.1.13.184")));
        assert!(!cidr("::/0").contains(ip("127.0.0.1")));
    }

    #[test]
    fn an_ipv4_block_contains_the_blocks_inside_it() {
        let outer = cidr("10.0.0.0/8");
        for inside in
            ["10.0.0.0/8", "10.0.0.0/9", "10.128.0.0/9", "10.1.2.0/24", "10.255.255.255/32", "10.0.0.0"]
        {
            assert!(outer.contains_block(&cidr(inside)), "{inside}");
        }
        for outside in ["0.0.0.0/0", "10.0.0.0/7", "11.0.0.0/8", "9.255.255.255/32", "11.0.0.0/32"] {
            assert!(!outer.contains_block(&cidr(outside)), "{outside}");
        }
    }

    #[test]
    fn an_ipv6_block_contains_the_blocks_inside_it() {
        let outer = cidr("2001:db8::/32");
        for inside in ["2001:db8::/32", "2001:db8:0:1::/64", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff/128"] {
            assert!(outer.contains_block(&cidr(inside)), "{inside}");
        }
        for outside in ["2001:db8::/31", "2001:db9::/48", "::/0", "2001:db7:ffff::/48"] {
            assert!(!outer.contains_block(&cidr(outside)), "{outside}");
        }
    }

    #[test]
    fn slash_zero_contains_its_family_only() {
        let every_v4 = cidr("0.0.0.0/0");
        for inside in
            ["0.0.0.0/0", "203.0.113.7", "255.255.255.255/32", "::ffff:203.0.113.0/120", "::ffff:0:0/96"]
        {
            assert!(every_v4.contains_block(&cidr(inside)), "{inside}");
        }
        assert!(!every_v4.contains_block(&cidr("2001:db8::/32")) && !every_v4.contains_block(&cidr("::/0")));
        let every_v6 = cidr("::/0");
        for inside in ["::/0", "2001:db8::1", "::1/128", "fe80::/10"] {
            assert!(every_v6.contains_block(&cidr(inside)), "{inside}");
        }
        // ::/0 matches no IPv4 client, so it contains no IPv4 block, in either spelling.
        for outside in ["0.0.0.0/0", "127.0.0.1", "::ffff:127.0.0.1/128", "::ffff:0:0/96"] {
            assert!(!every_v6.contains_block(&cidr(outside)), "{outside}");
        }
    }

    #[test]
    fn a_host_block_contains_only_itself() {
        let v4 = cidr("203.0.113.7/32");
        assert!(v4.contains_block(&cidr("203.0.113.7")));
        assert!(v4.contains_block(&cidr("::ffff:203.0.113.7/128")));
        assert!(!v4.contains_block(&cidr("203.0.113.6/31")) && !v4.contains_block(&cidr("203.0.113.8")));
        let v6 = cidr("2001:db8::1/128");
        assert!(v6.contains_block(&cidr("2001:db8::1")));
        assert!(!v6.contains_block(&cidr("2001:db8::/127")) && !v6.contains_block(&cidr("2001:db8::2")));
    }

    #[test]
    fn mapped_blocks_are_compared_as_their_ipv4_spelling() {
        assert!(cidr("10.0.0.0/8").contains_block(&cidr("::ffff:10.1.0.0/112")));
        assert!(cidr("::ffff:10.0.0.0/104").contains_block(&cidr("10.1.0.0/16")));
        assert!(!cidr("::ffff:10.0.0.0/104").contains_block(&cidr("11.0.0.0/8")));
        assert!(!cidr("10.1.0.0/16").contains_block(&cidr("::ffff:10.0.0.0/104")));
        // Wider than the mapped range, an IPv6 block matches IPv6 clients only.
        assert!(!cidr("::/80").contains_block(&cidr("10.0.0.0/8")));
        assert!(!cidr("10.0.0.0/8").contains_block(&cidr("::/80")));
        // The IPv4-compatible form is IPv6.
        assert!(!cidr("203.0.113.0/24").contains_block(&cidr("::203.0.113.7/128")));
    }

    #[test]
    fn display_round_trips_through_parse() {
        for text in [
            "10.0.0.0/8",
            "203.0.113.7/32",
            "0.0.0.0/0",
            "2001:db8::/32",
            "2001:db8::1/128",
            "::/0",
            "::1/128",
            "fe80::/10",
            "::ffff:203.0.113.0/120",
        ] {
            let c = cidr(text);
            assert_eq!(c.to_string(), text);
            assert_eq!(cidr(&c.to_string()), c);
        }
        // Non-canonical spellings come out canonical, and that canonical text reads back the same.
        let c = cidr("2001:0DB8:0000::/32");
        assert_eq!(c.to_string(), "2001:db8::/32");
        assert_eq!(cidr(&c.to_string()), c);
    }

    #[test]
    fn allow_list_reports_each_bad_entry_at_its_index() {
        let entries = strings(&["10.0.0.0/8", "10.0.0.1/8", "2001:db8::/32", "", "1.2.3.4/33"]);
        let violations = AllowList::parse(&entries).unwrap_err();
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["allowedCidrs[1]", "allowedCidrs[3]", "allowedCidrs[4]"]);
        assert!(violations[0].description.contains("10.0.0.0/8"), "{}", violations[0].description);
    }

    #[test]
    fn allow_list_limits_its_length() {
        let full: Vec<String> = (0..=255).take(MAX_ALLOWED_CIDRS).map(|i| format!("10.0.{i}.0/24")).collect();
        assert_eq!(AllowList::parse(&full).unwrap().entries().len(), MAX_ALLOWED_CIDRS);

        let mut too_many = full;
        too_many.push("not an address".to_string());
        let violations = AllowList::parse(&too_many).unwrap_err();
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].field, "allowedCidrs");
    }

    #[test]
    fn allow_list_keeps_each_block_once_in_first_given_order() {
        let entries =
            strings(&["203.0.113.7", "2001:db8::/32", "203.0.113.7/32", "2001:DB8:0::/32", "10.0.0.0/8"]);
        let list = AllowList::parse(&entries).unwrap();
        assert_eq!(list.to_strings(), ["203.0.113.7/32", "2001:db8::/32", "10.0.0.0/8"]);
        assert_eq!(list.entries(), [cidr("203.0.113.7"), cidr("2001:db8::/32"), cidr("10.0.0.0/8")]);
        assert_eq!(AllowList::parse(&list.to_strings()).unwrap(), list);
    }

    #[test]
    fn an_empty_allow_list_allows_every_address() {
        let list = AllowList::parse(&[]).unwrap();
        assert!(list.is_empty());
        assert_eq!(list, AllowList::default());
        assert!(list.allows(ip("203.0.113.7")));
        assert!(list.allows(ip("2001:db8::1")));
        assert!(list.allows(ip("::ffff:203.0.113.7")));
    }

    #[test]
    fn an_allow_list_allows_a_block_inside_one_of_its_entries() {
        assert!(AllowList::default().allows_block(&cidr("0.0.0.0/0")));
        let list =
            AllowList::parse(&strings(&["127.0.0.0/8", "10.0.0.0/24", "10.0.1.0/24", "2001:db8::/32"]))
                .unwrap();
        for inside in ["127.0.0.1", "10.0.0.128/25", "2001:db8:1::/48", "::ffff:127.0.0.0/104"] {
            assert!(list.allows_block(&cidr(inside)), "{inside}");
        }
        // 10.0.0.0/23 is the union of two entries, inside neither alone.
        for outside in ["10.0.0.0/23", "0.0.0.0/0", "::/0", "192.168.0.1"] {
            assert!(!list.allows_block(&cidr(outside)), "{outside}");
        }
    }

    #[test]
    fn a_non_empty_allow_list_allows_only_its_blocks() {
        let list = AllowList::parse(&strings(&["203.0.113.0/24", "2001:db8::/32"])).unwrap();
        assert!(list.allows(ip("203.0.113.7")));
        assert!(list.allows(ip("::ffff:203.0.113.7")));
        assert!(list.allows(ip("2001:db8::1")));
        assert!(!list.allows(ip("198.51.100.7")));
        assert!(!list.allows(ip("::ffff:198.51.100.7")));
        assert!(!list.allows(ip("2001:db9::1")));
    }
}

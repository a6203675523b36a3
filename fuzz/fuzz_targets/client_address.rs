//! Reading the client's address from `x-forwarded-for` (domain/client_address.rs): the header is written by
//! whoever sends the request, so whatever it holds, the answer is the peer or an address the header names, an
//! untrusted peer is always its own client, and entries a client prepends cannot move the answer once a hop the
//! proxies do not trust was found.
#![no_main]

use std::net::IpAddr;

use keymint::domain::{cidr::Cidr, client_address::TrustedProxies};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Line 1: the trusted proxies (comma-separated blocks); line 2: the peer; the rest: one header value a line.
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut lines = text.split('\n');
    let blocks = lines.next().unwrap_or_default().split(',').filter_map(|b| b.trim().parse::<Cidr>().ok());
    let proxies = TrustedProxies::new(blocks.collect());
    let Some(Ok(peer)) = lines.next().map(str::parse::<IpAddr>) else { return };
    let header: Vec<&str> = lines.collect();

    let client = proxies.client(peer, header.iter().copied());
    if !proxies.trusts(peer) {
        assert_eq!(client, peer, "an untrusted peer chose its client address");
        return;
    }
    let named = header.iter().flat_map(|value| value.split(',')).any(|entry| {
        let entry = entry.trim();
        let ip = entry
            .parse::<IpAddr>()
            .ok()
            .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()));
        ip.map(|ip| ip.to_canonical()) == Some(client)
    });
    assert!(client == peer || named, "{client} is neither the peer nor in the header");
    if !proxies.trusts(client) {
        let mut forged = vec!["198.51.100.66, 2001:db8::66"];
        forged.extend(header.iter().copied());
        assert_eq!(proxies.client(peer, forged), client, "entries the client prepended moved the answer");
    }
});

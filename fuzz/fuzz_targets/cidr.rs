//! The CIDR parser (domain/cidr.rs), which reads the `allowedCidrs` of API-key requests and `--trusted-proxies`:
//! what it accepts prints canonically and reads back to the same block, the block holds its own network, and a
//! refusal is an error whose message does not grow with the input.
#![no_main]

use std::net::IpAddr;

use keymint::domain::cidr::{AllowList, Cidr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // One block per line: each line alone, then all of them as one allow-list.
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for line in &lines {
        match line.parse::<Cidr>() {
            Ok(block) => {
                let canonical = block.to_string();
                let again: Cidr =
                    canonical.parse().unwrap_or_else(|e| panic!("{canonical} does not read back: {e}"));
                assert_eq!(again, block, "{canonical}");
                assert_eq!(again.to_string(), canonical);
                assert!(block.contains(block.network()), "{canonical} misses its own network");
                assert!(block.contains_block(&block), "{canonical} does not contain itself");
                let max = if block.network().is_ipv4() { 32 } else { 128 };
                assert!(block.prefix_len() <= max);
                // A bare address is the one-address block of the same address.
                if let Ok(ip) = line.parse::<IpAddr>() {
                    assert_eq!(block.network(), ip);
                    assert_eq!(block.prefix_len(), max);
                }
            }
            Err(error) => {
                let message = error.to_string();
                assert!(message.len() < 300, "an error message of {} bytes", message.len());
            }
        }
    }
    if let Ok(list) = AllowList::parse(&lines) {
        let again = AllowList::parse(&list.to_strings())
            .unwrap_or_else(|_| panic!("the stored list does not read back"));
        assert_eq!(again, list);
        assert!(list.entries().len() <= lines.len());
        for block in list.entries() {
            assert!(list.allows(block.network()));
            assert!(list.allows_block(block));
        }
    }
});

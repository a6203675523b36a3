//! The API-key secret parser (crypto/api_key_secret.rs), which reads every `authorization: Bearer km_…` header
//! before the store is asked: it must refuse with an error, never panic, and what it accepts must describe the
//! secret it was given.
#![no_main]

use keymint::crypto::api_key_secret::{SecretFormatError, looks_like_api_key, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(secret) = std::str::from_utf8(data) else { return };
    match parse(secret) {
        Ok(parsed) => {
            let prefix = parsed.environment.prefix();
            assert!(secret.starts_with(prefix) && looks_like_api_key(secret));
            let body = &secret[prefix.len()..];
            assert!(body.bytes().all(|b| b.is_ascii_alphanumeric()), "accepted a non-alphanumeric body");
            assert!((22 + 6..=86 + 6).contains(&body.len()), "accepted a body of {} characters", body.len());
            assert!(secret.starts_with(&parsed.prefix) && parsed.prefix.len() == prefix.len() + 4);
            assert!(secret.ends_with(&parsed.last_four) && parsed.last_four.len() == 4);
            // The checksum covers every character: changing any one of the body must be refused.
            for at in 0..body.len() {
                let mut changed = secret.as_bytes().to_vec();
                let byte = &mut changed[prefix.len() + at];
                *byte = if *byte == b'a' { b'b' } else { b'a' };
                let changed = String::from_utf8(changed).unwrap_or_default();
                assert!(parse(&changed).is_err(), "a one-character change at {at} still parses");
            }
        }
        Err(error) => {
            if error == SecretFormatError::WrongPrefix {
                assert!(!looks_like_api_key(secret));
            }
            // Refusals never repeat the string: it may be a real secret with a typo. (No message has a digit, so
            // a body with one that shows up in a message came from the input.)
            let shown = format!("{error} {error:?}");
            let body = secret.get(8..).filter(|b| b.len() >= 6 && b.bytes().any(|c| c.is_ascii_digit()));
            if let Some(body) = body {
                assert!(!shown.contains(body), "the error repeats the secret");
            }
        }
    }
});

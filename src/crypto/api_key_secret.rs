//! The format of API key secrets: generating them, and checking a presented one before the store is asked.
//!
//! A secret is `km_live_<body><checksum>` or `km_test_<body><checksum>`. The body is 256 bits from the OS RNG in
//! base62 (alphabet `0-9a-zA-Z`, in that order), so the whole secret matches `km_(live|test)_[0-9A-Za-z]+` and
//! selects with one double click. The checksum is the CRC-32 (IEEE) of everything before it, prefix included, in
//! the same base62, left-padded with `0` to six characters: a mistyped or made-up string is rejected without a
//! store lookup, and secret scanners can confirm a match before reporting a leak. The store keeps only
//! [`hash_secret`](super::secret::hash_secret) of the whole secret.

use aws_lc_rs::rand;
use zeroize::Zeroizing;

use super::CryptoError;

/// Digit values 0..62, in the order the checksum is defined with: scanners that verify it depend on this order.
const ALPHABET: &[u8; 62] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// Random bytes in a new secret: 256 bits, twice the 128 a bearer secret needs.
const RANDOM_BYTES: usize = 32;

/// Base62 digits of a new body: 62^43 > 2^256, so 43 digits hold any 32 bytes.
const BODY_CHARS: usize = 43;

/// Characters of the checksum: 62^6 > 2^32 > 62^5.
const CHECKSUM_CHARS: usize = 6;

/// The shortest body accepted: 22 base62 digits carry 128 bits, the least the design allows for a secret.
const MIN_BODY_CHARS: usize = 22;

/// The longest body accepted: room to lengthen new secrets (up to 512 bits) without rejecting the ones issued
/// before, while an oversized header is turned away before it is scanned.
const MAX_BODY_CHARS: usize = 86;

/// Body characters shown in the display prefix: enough to tell keys apart in a list, too few to matter (~24 of
/// 256 bits).
const DISPLAY_BODY_CHARS: usize = 4;

/// Characters of the secret shown as its end in lists.
const LAST_CHARS: usize = 4;

// The environment is the domain's: the prefix a secret starts with is the key's environment.
pub use crate::domain::api_key::Environment;

/// What a well-formed secret says about itself; nothing here is secret, so it may be stored, shown and logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedSecret {
    /// The environment named by the prefix.
    pub environment: Environment,
    /// The prefix and the first body characters, e.g. `km_live_Ab3x`, to show which key this is.
    pub prefix: String,
    /// The last characters of the whole secret (they are part of the checksum), to show next to the prefix.
    pub last_four: String,
}

/// Why a presented string is not an API key secret. The messages never repeat the string: it may be a real
/// secret with a typo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SecretFormatError {
    /// It does not start with `km_live_` or `km_test_`.
    #[error("an API key starts with km_live_ or km_test_")]
    WrongPrefix,
    /// A character after the prefix is not a letter or digit.
    #[error("an API key has only letters and digits after its prefix")]
    BadCharacter,
    /// Too few characters after the prefix to be a secret.
    #[error("the API key is too short; copy the whole key")]
    TooShort,
    /// More characters after the prefix than any secret has.
    #[error("the API key is too long; copy only the key")]
    TooLong,
    /// The checksum does not match: a typo, a truncated copy, or not a key at all.
    #[error("the API key's checksum does not match; check for typos")]
    BadChecksum,
}

/// A new secret for `env`: its prefix, 256 bits from the OS RNG in base62, and the checksum. Show it once and
/// keep only its hash.
pub fn generate(env: Environment) -> Result<Zeroizing<String>, CryptoError> {
    let mut bytes = Zeroizing::new([0_u8; RANDOM_BYTES]);
    rand::fill(bytes.as_mut()).map_err(|_| CryptoError("the OS random number generator"))?;
    let prefix = env.prefix();
    let mut secret = Zeroizing::new(String::with_capacity(prefix.len() + BODY_CHARS + CHECKSUM_CHARS));
    secret.push_str(prefix);
    push_base62_bytes(&mut bytes, &mut secret);
    let checksum = base62_checksum(crc32(secret.as_bytes()));
    secret.extend(checksum.iter().map(|&digit| char::from(digit)));
    Ok(secret)
}

/// Checks a presented secret's prefix, characters, length and checksum, without a store lookup, and returns
/// what it says about itself. A secret that passes may still be unknown or revoked: only the store can say.
pub fn parse(secret: &str) -> Result<ParsedSecret, SecretFormatError> {
    let (environment, rest) = Environment::ALL
        .into_iter()
        .find_map(|env| secret.strip_prefix(env.prefix()).map(|rest| (env, rest)))
        .ok_or(SecretFormatError::WrongPrefix)?;
    // The upper bound comes first so that an oversized header costs nothing to turn away.
    if rest.len() > MAX_BODY_CHARS + CHECKSUM_CHARS {
        return Err(SecretFormatError::TooLong);
    }
    if !rest.bytes().all(|byte| byte.is_ascii_alphanumeric()) {
        return Err(SecretFormatError::BadCharacter);
    }
    if rest.len() < MIN_BODY_CHARS + CHECKSUM_CHARS {
        return Err(SecretFormatError::TooShort);
    }
    // Every byte is ASCII from here on, so byte offsets are character boundaries.
    let (checked, checksum) = secret.split_at(secret.len() - CHECKSUM_CHARS);
    if base62_checksum(crc32(checked.as_bytes())) != checksum.as_bytes() {
        return Err(SecretFormatError::BadChecksum);
    }
    let display_end = environment.prefix().len() + DISPLAY_BODY_CHARS;
    Ok(ParsedSecret {
        environment,
        prefix: secret[..display_end].to_owned(),
        last_four: secret[secret.len() - LAST_CHARS..].to_owned(),
    })
}

/// Whether a bearer token claims to be an API key, by its prefix alone: cheap enough to route every request.
/// [`parse`] decides whether it is well-formed.
pub fn looks_like_api_key(s: &str) -> bool {
    Environment::ALL.into_iter().any(|env| s.starts_with(env.prefix()))
}

/// Appends `bytes`, read as one big-endian number, as exactly [`BODY_CHARS`] base62 digits. The number is divided
/// down in place, so the caller's copy is consumed (and zeroized by its owner).
fn push_base62_bytes(bytes: &mut [u8; RANDOM_BYTES], out: &mut String) {
    let mut digits = Zeroizing::new([0_u8; BODY_CHARS]);
    for digit in digits.iter_mut().rev() {
        let mut remainder = 0_u32;
        for byte in bytes.iter_mut() {
            let value = (remainder << 8) | u32::from(*byte);
            // remainder < 62, so value < 62 * 256 and the quotient fits in a byte.
            *byte = (value / 62) as u8;
            remainder = value % 62;
        }
        *digit = ALPHABET[remainder as usize];
    }
    for &digit in digits.iter() {
        out.push(char::from(digit));
    }
}

/// A CRC-32 value as six base62 digits, most significant first, left-padded with `0`.
fn base62_checksum(mut crc: u32) -> [u8; CHECKSUM_CHARS] {
    let mut digits = [ALPHABET[0]; CHECKSUM_CHARS];
    for digit in digits.iter_mut().rev() {
        *digit = ALPHABET[(crc % 62) as usize];
        crc /= 62;
    }
    digits
}

/// Lookup table of the reflected IEEE polynomial, built at compile time.
const CRC32_TABLE: [u32; 256] = crc32_table();

const fn crc32_table() -> [u32; 256] {
    let mut table = [0_u32; 256];
    let mut index = 0;
    while index < 256 {
        let mut crc = index as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            bit += 1;
        }
        table[index] = crc;
        index += 1;
    }
    table
}

/// CRC-32 (IEEE 802.3, as in zip and PNG): what secret scanners already know how to compute. It detects every
/// single-character typo; it is not a MAC and protects nothing against someone who knows the format.
fn crc32(data: &[u8]) -> u32 {
    let crc = data
        .iter()
        .fold(0xFFFF_FFFF_u32, |crc, &byte| CRC32_TABLE[usize::from((crc as u8) ^ byte)] ^ (crc >> 8));
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::secret::hash_secret;

    fn live() -> Zeroizing<String> {
        generate(Environment::Live).expect("rng")
    }

    /// A well-formed secret whose body is `body`, with a correct checksum.
    fn with_checksum(prefix: &str, body: &str) -> String {
        let unchecked = format!("{prefix}{body}");
        let checksum = base62_checksum(crc32(unchecked.as_bytes()));
        format!("{unchecked}{}", std::str::from_utf8(&checksum).expect("ascii"))
    }

    #[test]
    fn crc32_has_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn checksum_is_six_padded_base62_digits() {
        assert_eq!(&base62_checksum(0), b"000000");
        assert_eq!(&base62_checksum(61), b"00000Z");
        assert_eq!(&base62_checksum(62), b"000010");
        assert_eq!(&base62_checksum(u32::MAX), b"4GFfc3");
    }

    #[test]
    fn body_encoding_is_big_endian_base62_and_fits_every_value() {
        let mut out = String::new();
        let mut one = [0_u8; RANDOM_BYTES];
        one[RANDOM_BYTES - 1] = 63;
        push_base62_bytes(&mut one, &mut out);
        assert_eq!(out, format!("{}11", "0".repeat(BODY_CHARS - 2)));

        // The largest value still fits in 43 digits: its leading digit is not lost, so it is not '0'...
        let mut max = [0xFF_u8; RANDOM_BYTES];
        let mut out = String::new();
        push_base62_bytes(&mut max, &mut out);
        assert_eq!(out.len(), BODY_CHARS);
        assert_ne!(out.as_bytes()[0], b'0');
        // ...and every digit was taken: nothing is left of the number.
        assert_eq!(max, [0_u8; RANDOM_BYTES]);
    }

    #[test]
    fn generated_secrets_parse_back_with_their_environment() {
        for env in [Environment::Live, Environment::Test] {
            let secret = generate(env).expect("rng");
            let parsed = parse(&secret).expect("well-formed");
            assert_eq!(parsed.environment, env);
            assert!(secret.starts_with(env.prefix()));
            assert_eq!(parsed.prefix, secret[..env.prefix().len() + 4]);
            assert_eq!(parsed.last_four, secret[secret.len() - 4..]);
            assert!(looks_like_api_key(&secret));
        }
    }

    #[test]
    fn environments_name_themselves() {
        assert_eq!(Environment::Live.prefix(), "km_live_");
        assert_eq!(Environment::Test.prefix(), "km_test_");
        assert_eq!(Environment::Live.as_str(), "live");
        assert_eq!(Environment::Test.as_str(), "test");
    }

    #[test]
    fn secrets_are_distinct_and_long_enough() {
        let a = live();
        let b = live();
        assert_ne!(*a, *b);
        assert_ne!(hash_secret(&a), hash_secret(&b));
        assert!(a.len() >= "km_live_".len() + 43 + 6);
        assert_eq!(a.len(), "km_live_".len() + BODY_CHARS + CHECKSUM_CHARS);
    }

    #[test]
    fn secrets_have_the_scannable_shape() {
        for _ in 0..100 {
            for env in [Environment::Live, Environment::Test] {
                let secret = generate(env).expect("rng");
                let body = secret.strip_prefix(env.prefix()).expect("prefix");
                assert!(secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
                assert!(body.bytes().all(|b| b.is_ascii_alphanumeric()));
            }
        }
    }

    #[test]
    fn every_single_character_change_is_rejected() {
        let secret = live();
        let others: Vec<char> = ALPHABET.iter().map(|&b| char::from(b)).chain(['_', '-', ' ', 'é']).collect();
        for (position, original) in secret.char_indices() {
            for &replacement in others.iter().filter(|&&c| c != original) {
                let mut changed = secret.to_string();
                changed.replace_range(position..position + 1, replacement.encode_utf8(&mut [0; 4]));
                let error = parse(&changed).expect_err("a changed character must be rejected");
                assert!(
                    matches!(
                        error,
                        SecretFormatError::WrongPrefix
                            | SecretFormatError::BadCharacter
                            | SecretFormatError::BadChecksum
                    ),
                    "position {position}: {error:?}"
                );
            }
        }
    }

    #[test]
    fn malformed_strings_get_the_right_error() {
        let secret = live();
        let body = &secret["km_live_".len()..];
        let cases = [
            (String::new(), SecretFormatError::WrongPrefix),
            ("km_".to_owned(), SecretFormatError::WrongPrefix),
            (format!("km_prod_{body}"), SecretFormatError::WrongPrefix),
            (format!("KM_LIVE_{body}"), SecretFormatError::WrongPrefix),
            (format!("km_admin_{body}"), SecretFormatError::WrongPrefix),
            (format!(" {}", *secret), SecretFormatError::WrongPrefix),
            ("km_live_".to_owned(), SecretFormatError::TooShort),
            ("km_live_abc".to_owned(), SecretFormatError::TooShort),
            (
                format!("km_live_{}", "a".repeat(MAX_BODY_CHARS + CHECKSUM_CHARS + 1)),
                SecretFormatError::TooLong,
            ),
            (format!("{} ", *secret), SecretFormatError::BadCharacter),
            (format!("km_live_{} {}", &body[..20], &body[20..]), SecretFormatError::BadCharacter),
            (format!("km_live_é{}", &body[2..]), SecretFormatError::BadCharacter),
            (format!("km_live_{}", &body[..body.len() - 1]), SecretFormatError::BadChecksum),
            (format!("km_test_{body}"), SecretFormatError::BadChecksum),
        ];
        for (input, expected) in cases {
            assert_eq!(parse(&input), Err(expected), "{input:?}");
        }
    }

    #[test]
    fn length_bounds_are_inclusive() {
        let shortest = with_checksum("km_test_", &"a".repeat(MIN_BODY_CHARS));
        assert_eq!(parse(&shortest).map(|p| p.environment), Ok(Environment::Test));
        let too_short = with_checksum("km_test_", &"a".repeat(MIN_BODY_CHARS - 1));
        assert_eq!(parse(&too_short), Err(SecretFormatError::TooShort));
        let longest = with_checksum("km_test_", &"a".repeat(MAX_BODY_CHARS));
        assert_eq!(parse(&longest).map(|p| p.environment), Ok(Environment::Test));
        let too_long = with_checksum("km_test_", &"a".repeat(MAX_BODY_CHARS + 1));
        assert_eq!(parse(&too_long), Err(SecretFormatError::TooLong));
    }

    #[test]
    fn errors_and_debug_never_show_the_secret() {
        let secret = live();
        let body = &secret["km_live_".len()..];
        let parsed = parse(&secret).expect("well-formed");
        let debug = format!("{parsed:?}");
        assert!(!debug.contains(body));
        assert!(!debug.contains(&body[..BODY_CHARS / 2]));
        let mut broken = secret.to_string();
        broken.push('!');
        let error = parse(&broken).expect_err("bad character");
        assert!(!error.to_string().contains(body));
        assert!(!format!("{error:?}").contains(body));
    }

    #[test]
    fn only_api_key_prefixes_look_like_api_keys() {
        assert!(looks_like_api_key("km_live_"));
        assert!(looks_like_api_key("km_test_anything"));
        assert!(!looks_like_api_key("km_admin_abc"));
        assert!(!looks_like_api_key("km_prod_abc"));
        assert!(!looks_like_api_key("eyJhbGciOiJSUzI1NiJ9.e30.sig"));
        assert!(!looks_like_api_key(""));
    }
}

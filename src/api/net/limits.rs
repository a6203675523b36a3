//! Count limits of requests: every repeated field and map of a request message has one (the proto comments state
//! it), checked by the codec on the encoded message before it is decoded, so that a request over a limit is
//! refused before it buys any work: not even the allocation of its elements. build.rs implements [`Bounded`]
//! with no limits for every message that has nothing to count; a request that gains a repeated field does not
//! compile until its limit is written here, and a test checks each table against the descriptors.

use crate::domain::{
    api_key::{MAX_METADATA_ENTRIES, MAX_SCOPES, UPDATABLE},
    cidr::MAX_ALLOWED_CIDRS,
    validate::Violations,
};

use crate::api::pb::keymint::{
    apikeys::v1::{CreateApiKeyRequest, UpdateApiKeyRequest, VerifyApiKeyRequest},
    management::v1::{AddApiAppRequest, UpdateApiAppRequest},
};

/// The most entries a repeated field or map (field `number`, named `field`) may have.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub number: u64,
    pub field: &'static str,
    pub max: usize,
}

/// A message whose repeated fields and maps have limits.
pub trait Bounded {
    const LIMITS: &'static [Limit] = &[];
}

include!(concat!(env!("OUT_DIR"), "/keymint_bounded.rs"));

const fn limit(number: u64, field: &'static str, max: usize) -> Limit {
    Limit { number, field, max }
}

impl Bounded for CreateApiKeyRequest {
    const LIMITS: &'static [Limit] = &[
        limit(5, "scopes", MAX_SCOPES),
        limit(6, "allowedCidrs", MAX_ALLOWED_CIDRS),
        limit(13, "metadata", MAX_METADATA_ENTRIES),
    ];
}

impl Bounded for UpdateApiKeyRequest {
    const LIMITS: &'static [Limit] = &[
        // Each updatable field once; a longer mask can only repeat or misspell one.
        limit(2, "updateMask", UPDATABLE.len()),
        limit(5, "scopes", MAX_SCOPES),
        limit(6, "allowedCidrs", MAX_ALLOWED_CIDRS),
        limit(9, "metadata", MAX_METADATA_ENTRIES),
    ];
}

impl Bounded for AddApiAppRequest {
    const LIMITS: &'static [Limit] = &[limit(3, "allowedScopes", MAX_SCOPES)];
}

impl Bounded for UpdateApiAppRequest {
    const LIMITS: &'static [Limit] = &[limit(3, "allowedScopes", MAX_SCOPES)];
}

impl Bounded for VerifyApiKeyRequest {
    // A key holds at most MAX_SCOPES scopes, so a call needing more could never be valid.
    const LIMITS: &'static [Limit] = &[limit(3, "requiredScopes", MAX_SCOPES)];
}

// Envoy's check requests: their maps (headers, context extensions) are nested, out of reach of a count of the
// top-level fields, and the caller is the proxy in front of keymint, not a client; the message size limit bounds
// them. The answer is decoded only by clients (tests).
impl Bounded for crate::api::pb::envoy::service::auth::v3::CheckRequest {}
impl Bounded for crate::api::pb::envoy::service::auth::v3::CheckResponse {}

/// Counts the entries of the limited fields in an encoded message, without decoding it: one pass over its field
/// keys, skipping values, allocating nothing. A malformed message stops the count; decoding then says what is
/// wrong with it.
pub fn check_encoded(message: &[u8], limits: &[Limit], violations: &mut Violations) {
    if limits.is_empty() {
        return;
    }
    let mut counts = vec![0_usize; limits.len()];
    let mut rest = message;
    while let Some(key) = varint(&mut rest) {
        let skip = match key & 7 {
            0 => varint(&mut rest).map(|_| 0),
            1 => Some(8),
            2 => varint(&mut rest).and_then(|n| usize::try_from(n).ok()),
            5 => Some(4),
            _ => None,
        };
        let Some(rest_after) = skip.and_then(|n| rest.get(n..)) else { break };
        rest = rest_after;
        // Each element of a repeated string, and each entry of a map, is one occurrence of its field.
        if let Some(i) = limits.iter().position(|l| l.number == key >> 3) {
            counts[i] += 1;
        }
    }
    for (limit, count) in limits.iter().zip(counts) {
        if count > limit.max {
            violations.add(limit.field, format!("must have at most {} entries, not {count}", limit.max));
        }
    }
}

/// A protobuf varint from the front of `bytes`, which it consumes; None if there is none.
fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0_u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *bytes = &bytes[i + 1..];
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::domain::DomainError;

    fn fields<T: Bounded + Message>(message: &T) -> Vec<String> {
        let mut violations = Violations::new();
        check_encoded(&message.encode_to_vec(), T::LIMITS, &mut violations);
        match violations.into_result() {
            Err(DomainError::InvalidArgument(found)) => found.into_iter().map(|f| f.field).collect(),
            _ => vec![],
        }
    }

    fn n(count: usize) -> Vec<String> {
        (0..count).map(|i| i.to_string()).collect()
    }

    fn map(count: usize) -> std::collections::HashMap<String, String> {
        (0..count).map(|i| (i.to_string(), String::new())).collect()
    }

    #[test]
    fn every_count_over_its_limit_is_named_and_the_limits_are_accepted() {
        let over = UpdateApiKeyRequest {
            id: "1".into(),
            title: "t".into(),
            update_mask: n(10),
            scopes: n(51),
            allowed_cidrs: n(101),
            metadata: map(21),
            rate_limit: Some(crate::api::pb::keymint::apikeys::v1::RateLimit { per_second: 1, burst: 300 }),
            daily_quota: u64::MAX,
            ..Default::default()
        };
        assert_eq!(fields(&over), ["updateMask", "scopes", "allowedCidrs", "metadata"]);
        let at = CreateApiKeyRequest {
            scopes: n(50),
            allowed_cidrs: n(100),
            metadata: map(20),
            ..Default::default()
        };
        assert!(fields(&at).is_empty());
        let verify = VerifyApiKeyRequest { required_scopes: n(100_000), ..Default::default() };
        assert_eq!(fields(&verify), ["requiredScopes"]);
    }

    #[test]
    fn malformed_messages_stop_the_count_and_are_left_to_the_decoder() {
        let mut violations = Violations::new();
        for bytes in [&[0x2a, 0xff][..], &[0xff; 11], &[0x2b], &[0x2a, 0x05, 0x61]] {
            check_encoded(bytes, CreateApiKeyRequest::LIMITS, &mut violations);
        }
        assert!(violations.is_empty());
    }

    /// Each table names every repeated field and map of its message, by the number and JSON name the proto gives
    /// it (field names in errors are the JSON names, for gRPC callers too).
    #[test]
    fn the_tables_match_the_descriptors() {
        let set =
            prost_types::FileDescriptorSet::decode(crate::api::pb::FILE_DESCRIPTOR_SET).unwrap_or_default();
        let tables: [(&str, &[Limit]); 3] = [
            ("CreateApiKeyRequest", CreateApiKeyRequest::LIMITS),
            ("UpdateApiKeyRequest", UpdateApiKeyRequest::LIMITS),
            ("VerifyApiKeyRequest", VerifyApiKeyRequest::LIMITS),
        ];
        for (name, table) in tables {
            let message = set
                .file
                .iter()
                .filter(|f| f.package() == "keymint.apikeys.v1")
                .flat_map(|f| f.message_type.iter())
                .find(|m| m.name() == name);
            let Some(message) = message else { unreachable!("{name} is in the descriptors") };
            let repeated: Vec<(u64, &str)> = message
                .field
                .iter()
                .filter(|f| f.label() == prost_types::field_descriptor_proto::Label::Repeated)
                .map(|f| (u64::try_from(f.number()).unwrap_or_default(), f.json_name()))
                .collect();
            let listed: Vec<(u64, &str)> = table.iter().map(|l| (l.number, l.field)).collect();
            assert_eq!(listed, repeated, "{name}");
        }
    }
}

//! What the use cases count for /metrics: API key verification results, OAuth token and introspection outcomes,
//! and usage flushes. Relaxed atomics in fixed tables: a count costs one add, and no label can come from input.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;

use super::{Error, Result, bounded::CacheStats, verify::VerifyCode};

/// The results of an API key check (VerifyApiKey, ext_authz, and keymint's own callers' API keys), `error` for a
/// check that failed (the store could not answer).
pub const VERIFY_RESULTS: [&str; 11] = [
    "valid",
    "not_found",
    "expired",
    "disabled",
    "revoked",
    "ip_not_allowed",
    "insufficient_scopes",
    "rate_limited",
    "quota_exceeded",
    "test_key_not_allowed",
    "error",
];

/// The outcomes of the OAuth endpoints: a token issued, an introspected token active or not, or the `error` code
/// of the answer (RFC 6749 §5.2, RFC 7009; `temporarily_unavailable` and `server_error` for the store's faults).
pub const OAUTH_OUTCOMES: [&str; 12] = [
    "issued",
    "active",
    "inactive",
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "unsupported_token_type",
    "temporarily_unavailable",
    "server_error",
];

#[derive(Debug)]
pub(super) struct UseCaseCounts {
    verifications: [AtomicU64; VERIFY_RESULTS.len()],
    tokens: [AtomicU64; OAUTH_OUTCOMES.len()],
    introspections: [AtomicU64; OAUTH_OUTCOMES.len()],
    flushes_written: AtomicU64,
    flushes_failed: AtomicU64,
    keys_flushed: AtomicU64,
    /// Microseconds since `started` of the last flush the store took (or that had nothing to write).
    flushed_at_us: AtomicU64,
    started: Instant,
}

impl Default for UseCaseCounts {
    fn default() -> Self {
        UseCaseCounts {
            verifications: Default::default(),
            tokens: Default::default(),
            introspections: Default::default(),
            flushes_written: AtomicU64::new(0),
            flushes_failed: AtomicU64::new(0),
            keys_flushed: AtomicU64::new(0),
            flushed_at_us: AtomicU64::new(0),
            started: Instant::now(),
        }
    }
}

impl UseCaseCounts {
    /// Counts a check by its code; None for one that failed.
    pub fn verified(&self, code: Option<VerifyCode>) {
        let at = code.map_or(VERIFY_RESULTS.len() - 1, |code| code as usize);
        self.verifications[at].fetch_add(1, Ordering::Relaxed);
    }

    pub fn flushed(&self, result: &Result<usize>) {
        match result {
            Ok(keys) => {
                self.flushes_written.fetch_add(1, Ordering::Relaxed);
                self.keys_flushed.fetch_add(*keys as u64, Ordering::Relaxed);
                self.flushed_at_us.store(self.started.elapsed().as_micros() as u64, Ordering::Relaxed);
            }
            Err(_) => {
                self.flushes_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The OAuth error code an error is answered with (the same mapping as the endpoints' answers, api/error.rs).
fn oauth_outcome(error: &Error) -> &'static str {
    match error {
        Error::OAuth(e) => e.code.as_str(),
        Error::Domain(_) => "invalid_request",
        Error::Unauthenticated(_) => "invalid_client",
        Error::Unavailable(_) | Error::Conflict | Error::Aborted | Error::Unwritable(_) => {
            "temporarily_unavailable"
        }
        Error::Internal(_) => "server_error",
    }
}

fn count_outcome(table: &[AtomicU64; OAUTH_OUTCOMES.len()], outcome: &str) {
    if let Some(at) = OAUTH_OUTCOMES.iter().position(|o| *o == outcome) {
        table[at].fetch_add(1, Ordering::Relaxed);
    }
}

/// A snapshot of the counts.
#[derive(Debug, Clone, PartialEq)]
pub struct UseCaseStats {
    /// Per entry of `VERIFY_RESULTS`.
    pub verifications: Vec<u64>,
    /// Per entry of `OAUTH_OUTCOMES`.
    pub tokens: Vec<u64>,
    pub introspections: Vec<u64>,
    pub flushes_written: u64,
    pub flushes_failed: u64,
    pub keys_flushed: u64,
    /// How long ago usage was last written to the store (or found to be nothing): what a crash now would lose
    /// is at most the usage counted in this time.
    pub flush_lag_seconds: f64,
    /// The Unix time of that flush, None before the first.
    pub last_flush_unix: Option<f64>,
}

impl super::Services {
    /// Counts an answer of the token endpoint.
    pub fn count_token_request<T>(&self, answer: &Result<T>) {
        let outcome = match answer {
            Ok(_) => "issued",
            Err(e) => oauth_outcome(e),
        };
        count_outcome(&self.counts.tokens, outcome);
    }

    /// Counts an answer of the introspection endpoint: active, inactive, or why it was refused.
    pub fn count_introspection(&self, answer: &Result<Value>) {
        let outcome = match answer {
            Ok(answer) if answer.get("active") == Some(&Value::Bool(true)) => "active",
            Ok(_) => "inactive",
            Err(e) => oauth_outcome(e),
        };
        count_outcome(&self.counts.introspections, outcome);
    }

    /// The in-memory caches by name, with their sizes and lookups.
    pub(crate) fn cache_stats(&self) -> Vec<(&'static str, CacheStats)> {
        vec![
            ("api_keys", self.api_keys_read.stats()),
            ("api_keys_absent", self.api_keys_read.absent_stats()),
            ("api_key_meters", self.meters.stats()),
            ("app_keys", self.keys_read.stats()),
            ("principals", self.principals.stats()),
            ("access_tokens", self.verified_tokens.stats()),
        ]
    }

    pub fn use_case_stats(&self) -> UseCaseStats {
        let load = |table: &[AtomicU64]| table.iter().map(|n| n.load(Ordering::Relaxed)).collect();
        let c = &self.counts;
        let flushed_at = c.flushed_at_us.load(Ordering::Relaxed);
        let since_start = c.started.elapsed();
        let lag = since_start.as_secs_f64() - flushed_at as f64 / 1e6;
        let last_flush_unix = (c.flushes_written.load(Ordering::Relaxed) > 0).then(|| {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
            now - lag
        });
        UseCaseStats {
            verifications: load(&c.verifications),
            tokens: load(&c.tokens),
            introspections: load(&c.introspections),
            flushes_written: c.flushes_written.load(Ordering::Relaxed),
            flushes_failed: c.flushes_failed.load(Ordering::Relaxed),
            keys_flushed: c.keys_flushed.load(Ordering::Relaxed),
            flush_lag_seconds: lag.max(0.0),
            last_flush_unix,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_results_follow_the_codes() {
        assert_eq!(VERIFY_RESULTS[VerifyCode::Valid as usize], "valid");
        assert_eq!(VERIFY_RESULTS[VerifyCode::IpNotAllowed as usize], "ip_not_allowed");
        assert_eq!(VERIFY_RESULTS[VerifyCode::TestKeyNotAllowed as usize], "test_key_not_allowed");
        let counts = UseCaseCounts::default();
        counts.verified(Some(VerifyCode::RateLimited));
        counts.verified(None);
        assert_eq!(counts.verifications[VerifyCode::RateLimited as usize].load(Ordering::Relaxed), 1);
        assert_eq!(counts.verifications[VERIFY_RESULTS.len() - 1].load(Ordering::Relaxed), 1);
    }

    #[test]
    fn every_oauth_error_code_is_an_outcome() {
        use crate::domain::oauth::ErrorCode::*;
        for code in [
            InvalidRequest,
            InvalidClient,
            InvalidGrant,
            UnauthorizedClient,
            UnsupportedGrantType,
            InvalidScope,
            UnsupportedTokenType,
        ] {
            assert!(OAUTH_OUTCOMES.contains(&code.as_str()), "{}", code.as_str());
        }
    }
}

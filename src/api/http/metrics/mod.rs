//! What keymint counts for `GET /metrics`, and its rendering in the Prometheus text format (0.0.4). The
//! transport's counts (RPCs and HTTP requests by method or route and code, with latency; refusals by reason)
//! live here; the rest is read at scrape time from where it is kept (use cases, caches, key pool, store).
//! Every label value comes from a fixed set: methods from the descriptors, routes and codes from the code, so no
//! ID, name or secret ever becomes a label and cardinality stays bounded.

pub mod registry;

use std::{cell::Cell, collections::HashMap, sync::Arc};

use prost_reflect::DescriptorPool;
use tonic::Code;

use crate::{
    api::net::tls::{TlsCertificates, TlsCounts},
    crypto::pool::KeyPool,
    service::{
        Services,
        oauth::{INTROSPECT_PATH, KEYS_PATH, REVOKE_PATH, TOKEN_PATH},
        stats::{OAUTH_OUTCOMES, VERIFY_RESULTS},
    },
};

use self::registry::{Exposition, Histogram, LabelCounts};

/// The plain-HTTP routes by which HTTP requests are counted; anything else under the same log layer is a JSON
/// call (`json`), which is counted as the RPC it becomes as well.
const HTTP_ROUTES: [&str; 8] = [
    TOKEN_PATH,
    INTROSPECT_PATH,
    REVOKE_PATH,
    KEYS_PATH,
    "/.well-known/openid-configuration",
    "/.well-known/oauth-authorization-server",
    "/openapi.json",
    "json",
];
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// gRPC codes, by their number.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];
/// Distinct refusal reasons kept apart; more than this many count as `other`.
const MAX_REASONS: usize = 128;
/// Services keymint serves that are not in its own descriptor set.
const REFLECTION: [(&str, &str); 2] = [
    ("grpc.reflection.v1.ServerReflection", "ServerReflectionInfo"),
    ("grpc.reflection.v1alpha.ServerReflection", "ServerReflectionInfo"),
];

tokio::task_local! {
    /// The ErrorInfo reason of the error the current call is answered with, noted where errors are mapped
    /// (api/error.rs) for the call's log layer to count: decoding it back out of the response would cost more.
    static REASON: Cell<Option<&'static str>>;
}

/// Notes the reason of the error the current call answers with (no-op outside a counted call).
pub fn note_reason(reason: &'static str) {
    let _ = REASON.try_with(|noted| noted.set(Some(reason)));
}

/// Runs a call with room for its error's reason; returns its output and the reason noted, if any.
pub async fn with_reason<T>(call: impl Future<Output = T>) -> (T, Option<&'static str>) {
    REASON
        .scope(Cell::new(None), async move {
            let output = call.await;
            (output, REASON.with(Cell::get))
        })
        .await
}

/// A gRPC method's place in the tables, looked up once per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodIndex(usize);

/// A plain-HTTP route's place in the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpRoute(usize);

/// The transport's counts. Everything is allocated when the server starts; recording is atomic adds.
pub struct Metrics {
    /// `/package.Service/Method` → index; the last index is `other`.
    methods: HashMap<String, usize>,
    /// (service, method) per index.
    names: Vec<(String, String)>,
    /// Per method and code.
    rpc: Box<[Histogram]>,
    /// Per route and status class.
    http: Box<[Histogram]>,
    refusals: LabelCounts,
    /// The port's TLS, when it speaks TLS: its handshakes and reloads.
    tls: Option<Arc<TlsCertificates>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("methods", &self.names.len()).finish_non_exhaustive()
    }
}

impl Metrics {
    /// Tables for every method of the services in `descriptor_sets` (encoded FileDescriptorSets), plus server
    /// reflection.
    pub fn new(descriptor_sets: &[&[u8]]) -> Result<Metrics, prost_reflect::DescriptorError> {
        let mut names: Vec<(String, String)> = Vec::new();
        for set in descriptor_sets {
            let pool = DescriptorPool::decode(*set)?;
            for service in pool.services() {
                for method in service.methods() {
                    names.push((service.full_name().to_owned(), method.name().to_owned()));
                }
            }
        }
        names.extend(REFLECTION.iter().map(|(s, m)| ((*s).to_owned(), (*m).to_owned())));
        names.sort();
        names.dedup();
        let methods = names.iter().enumerate().map(|(i, (s, m))| (format!("/{s}/{m}"), i)).collect();
        names.push(("other".to_owned(), "other".to_owned()));
        let histograms = |n: usize| (0..n).map(|_| Histogram::default()).collect::<Box<[_]>>();
        Ok(Metrics {
            rpc: histograms(names.len() * CODES.len()),
            http: histograms(HTTP_ROUTES.len() * STATUS_CLASSES.len()),
            methods,
            names,
            refusals: LabelCounts::new(MAX_REASONS),
            tls: None,
        })
    }

    /// Reports the handshakes and reloads of the port's TLS too.
    pub fn with_tls(mut self, tls: Option<Arc<TlsCertificates>>) -> Metrics {
        self.tls = tls;
        self
    }

    /// The method a request path names (`other` for any path keymint does not serve).
    pub fn method(&self, path: &str) -> MethodIndex {
        MethodIndex(self.methods.get(path).copied().unwrap_or(self.names.len() - 1))
    }

    /// Records a finished call, and its refusal reason when its code is a refusal.
    pub fn rpc(&self, method: MethodIndex, code: Code, micros: u64, reason: Option<&'static str>) {
        let code_index = (code as usize).min(CODES.len() - 1);
        self.rpc[method.0 * CODES.len() + code_index].observe(micros);
        if matches!(code, Code::Unauthenticated | Code::PermissionDenied | Code::ResourceExhausted) {
            self.refusals.add(reason.unwrap_or(CODES[code_index]));
        }
    }

    /// The route of a plain-HTTP request: one of a fixed set (the path itself is never a label).
    pub fn http_route(&self, path: &str) -> HttpRoute {
        HttpRoute(HTTP_ROUTES.iter().position(|r| *r == path).unwrap_or(HTTP_ROUTES.len() - 1))
    }

    /// Records a finished plain-HTTP request.
    pub fn http(&self, route: HttpRoute, status: http::StatusCode, micros: u64) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.http[route.0 * STATUS_CLASSES.len() + class].observe(micros);
    }

    /// The whole exposition: these counts and what the services, caches, key pool and store report now.
    pub fn render(&self, services: &Services, key_pool: &KeyPool, ready: bool) -> String {
        let mut out = Exposition::default();
        self.render_transport(&mut out);
        if let Some(tls) = &self.tls {
            render_tls(&mut out, tls.counts());
        }
        render_use_cases(&mut out, services);
        render_resources(&mut out, services, key_pool, ready);
        out.finish()
    }

    fn render_transport(&self, out: &mut Exposition) {
        let rpc_series = || {
            self.rpc.iter().enumerate().filter_map(move |(i, h)| {
                let snapshot = h.snapshot();
                (snapshot.count() > 0).then(|| {
                    let (service, method) = &self.names[i / CODES.len()];
                    (service.as_str(), method.as_str(), CODES[i % CODES.len()], snapshot)
                })
            })
        };
        out.family(
            "keymint_rpc_requests_total",
            "counter",
            "Finished RPCs (gRPC, gRPC-Web and JSON calls) by service, method and gRPC code.",
        );
        for (service, method, code, h) in rpc_series() {
            out.sample(
                "keymint_rpc_requests_total",
                &[("service", service), ("method", method), ("code", code)],
                h.count(),
            );
        }
        out.family(
            "keymint_rpc_duration_seconds",
            "histogram",
            "Time to answer an RPC, by service, method and code.",
        );
        for (service, method, code, h) in rpc_series() {
            out.histogram(
                "keymint_rpc_duration_seconds",
                &[("service", service), ("method", method), ("code", code)],
                &h,
            );
        }
        let http_series = || {
            self.http.iter().enumerate().filter_map(move |(i, h)| {
                let snapshot = h.snapshot();
                (snapshot.count() > 0).then(|| {
                    (
                        HTTP_ROUTES[i / STATUS_CLASSES.len()],
                        STATUS_CLASSES[i % STATUS_CLASSES.len()],
                        snapshot,
                    )
                })
            })
        };
        out.family(
            "keymint_http_requests_total",
            "counter",
            "Finished plain-HTTP requests (OAuth endpoints, metadata; JSON calls as `json`) by route and status class.",
        );
        for (route, status, h) in http_series() {
            out.sample("keymint_http_requests_total", &[("route", route), ("status", status)], h.count());
        }
        out.family("keymint_http_duration_seconds", "histogram", "Time to answer a plain-HTTP request.");
        for (route, status, h) in http_series() {
            out.histogram("keymint_http_duration_seconds", &[("route", route), ("status", status)], &h);
        }
        out.family(
            "keymint_refusals_total",
            "counter",
            "RPCs refused (UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED) by the reason of their ErrorInfo.",
        );
        for (reason, count) in self.refusals.snapshot() {
            out.sample("keymint_refusals_total", &[("reason", reason)], count);
        }
    }
}

fn render_use_cases(out: &mut Exposition, services: &Services) {
    let stats = services.use_case_stats();
    out.family(
        "keymint_api_key_verifications_total",
        "counter",
        "API key checks (VerifyApiKey, ext_authz, API keys calling keymint) by result.",
    );
    for (result, count) in VERIFY_RESULTS.iter().zip(&stats.verifications) {
        out.sample("keymint_api_key_verifications_total", &[("result", *result)], count);
    }
    out.family("keymint_oauth_token_requests_total", "counter", "Token endpoint answers by outcome.");
    for (outcome, count) in OAUTH_OUTCOMES.iter().zip(&stats.tokens) {
        if *outcome != "active" && *outcome != "inactive" {
            out.sample("keymint_oauth_token_requests_total", &[("outcome", *outcome)], count);
        }
    }
    out.family("keymint_oauth_introspections_total", "counter", "Introspection endpoint answers by outcome.");
    for (outcome, count) in OAUTH_OUTCOMES.iter().zip(&stats.introspections) {
        if *outcome != "issued" {
            out.sample("keymint_oauth_introspections_total", &[("outcome", *outcome)], count);
        }
    }
    out.family(
        "keymint_usage_flushes_total",
        "counter",
        "Flushes of API key usage to the store by result (written: also those that found nothing to write).",
    );
    out.sample("keymint_usage_flushes_total", &[("result", "written")], stats.flushes_written);
    out.sample("keymint_usage_flushes_total", &[("result", "failed")], stats.flushes_failed);
    out.family("keymint_usage_flushed_keys_total", "counter", "API keys whose usage a flush wrote.");
    out.sample("keymint_usage_flushed_keys_total", &[], stats.keys_flushed);
    out.family(
        "keymint_usage_flush_lag_seconds",
        "gauge",
        "Seconds since API key usage was last written (what a crash now could lose was counted in this time).",
    );
    out.sample("keymint_usage_flush_lag_seconds", &[], format!("{:.3}", stats.flush_lag_seconds));
    if let Some(at) = stats.last_flush_unix {
        out.family(
            "keymint_usage_last_flush_timestamp_seconds",
            "gauge",
            "Unix time of the last usage write.",
        );
        out.sample("keymint_usage_last_flush_timestamp_seconds", &[], format!("{at:.3}"));
    }
}

fn render_tls(out: &mut Exposition, counts: &TlsCounts) {
    out.family(
        "keymint_tls_handshakes_total",
        "counter",
        "TLS handshakes by result: failed covers plain HTTP to the port and clients without a trusted certificate.",
    );
    for (result, count) in counts.handshakes() {
        out.sample("keymint_tls_handshakes_total", &[("result", result)], count);
    }
    out.family(
        "keymint_tls_reloads_total",
        "counter",
        "Reloads of the certificate, key and client CA (SIGHUP) by result; after a failed one the files loaded \
         before stay in use.",
    );
    for (result, count) in counts.reloads() {
        out.sample("keymint_tls_reloads_total", &[("result", result)], count);
    }
}

fn render_resources(out: &mut Exposition, services: &Services, key_pool: &KeyPool, ready: bool) {
    let caches = services.cache_stats();
    out.family("keymint_cache_entries", "gauge", "Entries in an in-memory cache.");
    for (cache, stats) in &caches {
        out.sample("keymint_cache_entries", &[("cache", *cache)], stats.entries);
    }
    out.family("keymint_cache_capacity", "gauge", "Entries an in-memory cache holds at most.");
    for (cache, stats) in &caches {
        out.sample("keymint_cache_capacity", &[("cache", *cache)], stats.capacity);
    }
    out.family(
        "keymint_cache_lookups_total",
        "counter",
        "Cache lookups by result (hit ratio: hit / (hit + miss)).",
    );
    for (cache, stats) in &caches {
        out.sample("keymint_cache_lookups_total", &[("cache", *cache), ("result", "hit")], stats.hits);
        out.sample("keymint_cache_lookups_total", &[("cache", *cache), ("result", "miss")], stats.misses);
    }

    let pools = key_pool.stats();
    let bits: Vec<String> = pools.iter().map(|p| p.bits.to_string()).collect();
    out.family("keymint_key_pool_keys", "gauge", "Ready RSA key pairs in the pool, by key size.");
    for (pool, bits) in pools.iter().zip(&bits) {
        out.sample("keymint_key_pool_keys", &[("bits", bits.as_str())], pool.depth);
    }
    out.family("keymint_key_pool_capacity", "gauge", "Ready key pairs the pool keeps at most, by key size.");
    for (pool, bits) in pools.iter().zip(&bits) {
        out.sample("keymint_key_pool_capacity", &[("bits", bits.as_str())], pool.capacity);
    }
    out.family(
        "keymint_key_pool_generated_total",
        "counter",
        "Key pairs the pool's workers generated (its refill rate is the rate of this), by key size.",
    );
    for (pool, bits) in pools.iter().zip(&bits) {
        out.sample("keymint_key_pool_generated_total", &[("bits", bits.as_str())], pool.generated);
    }
    out.family(
        "keymint_key_pool_generation_seconds_total",
        "counter",
        "Time the pool's workers spent generating, summed over workers, by key size.",
    );
    for (pool, bits) in pools.iter().zip(&bits) {
        let seconds = registry::seconds(pool.generating.as_micros() as u64);
        out.sample("keymint_key_pool_generation_seconds_total", &[("bits", bits.as_str())], seconds);
    }

    let store = services.store();
    out.family("keymint_store_up", "gauge", "1 while the database answers, 0 while its circuit is open.");
    out.sample("keymint_store_up", &[], u8::from(store.state().is_up()));
    let connections = store.connections();
    out.family("keymint_store_connections", "gauge", "Connections of a store pool, in use or idle.");
    for pool in &connections {
        let in_use = pool.open.saturating_sub(pool.idle);
        out.sample("keymint_store_connections", &[("pool", pool.pool), ("state", "in_use")], in_use);
        out.sample("keymint_store_connections", &[("pool", pool.pool), ("state", "idle")], pool.idle);
    }
    out.family("keymint_store_connections_max", "gauge", "Connections a store pool opens at most.");
    for pool in &connections {
        out.sample("keymint_store_connections_max", &[("pool", pool.pool)], pool.max);
    }
    out.family("keymint_ready", "gauge", "1 when /ready answers 200.");
    out.sample("keymint_ready", &[], u8::from(ready));
}

/// The metrics of a server that has them on, shared by its layers.
pub type Shared = Option<Arc<Metrics>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_come_from_the_descriptors_and_the_rest_is_other() {
        let metrics =
            Metrics::new(&[crate::api::pb::FILE_DESCRIPTOR_SET, tonic_health::pb::FILE_DESCRIPTOR_SET])
                .unwrap();
        let verify = metrics.method("/keymint.apikeys.v1.ApiKeyService/VerifyApiKey");
        let health = metrics.method("/grpc.health.v1.Health/Check");
        let ext_authz = metrics.method("/envoy.service.auth.v3.Authorization/Check");
        let other = metrics.method("/keymint.apikeys.v1.ApiKeyService/NoSuchMethod");
        assert_ne!(verify, other);
        assert_ne!(health, other);
        assert_ne!(ext_authz, other);
        assert_eq!(metrics.method("/a/b"), other);
        assert_eq!(metrics.names[other.0], ("other".to_owned(), "other".to_owned()));
        metrics.rpc(verify, Code::Ok, 40, None);
        metrics.rpc(verify, Code::PermissionDenied, 40, Some("MISSING_SCOPE"));
        metrics.rpc(other, Code::Unauthenticated, 40, None);
        assert_eq!(metrics.refusals.snapshot(), [("MISSING_SCOPE", 1), ("UNAUTHENTICATED", 1)]);
    }

    #[tokio::test]
    async fn a_reason_noted_inside_a_call_comes_back_with_it() {
        note_reason("IGNORED"); // outside any call: nothing to note it in
        let (answer, reason) = with_reason(async {
            note_reason("RATE_LIMITED");
            7
        })
        .await;
        assert_eq!((answer, reason), (7, Some("RATE_LIMITED")));
        assert_eq!(with_reason(async {}).await.1, None);
    }
}

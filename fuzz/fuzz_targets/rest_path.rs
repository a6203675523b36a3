//! Path templates and the route lookup of the JSON transcoder (api/rest/template.rs, rules.rs), which see every
//! request path: templates parse or are refused, a path built from a template and any values matches it and gives
//! those values back, and every route of keymint's own table is found again from a path built from it.
#![no_main]

use std::sync::LazyLock;

use http::Method;
use keymint::api::http::rest::fuzzing::{Lookup, Routes, Template, percent_decode};
use libfuzzer_sys::{arbitrary::Unstructured, fuzz_target};
use prost_reflect::DescriptorPool;

static ROUTES: LazyLock<Routes> = LazyLock::new(|| {
    let pool =
        DescriptorPool::decode(keymint::api::pb::FILE_DESCRIPTOR_SET).unwrap_or_else(|e| panic!("{e}"));
    Routes::from_pool(&pool).unwrap_or_else(|e| panic!("{e}"))
});

const METHODS: [Method; 5] = [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE];

fuzz_target!(|data: &[u8]| {
    // Line 1: a template; line 2: a request path; the rest drives the built templates and paths below.
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let template = std::str::from_utf8(parts.next().unwrap_or_default()).ok();
    let path = std::str::from_utf8(parts.next().unwrap_or_default()).ok();
    let mut u = Unstructured::new(parts.next().unwrap_or_default());

    if let (Some(template), Some(path)) = (template, path) {
        raw_template_and_path(template, path);
        percent_decoding(path);
        for method in &METHODS {
            if let Lookup::Found(route, values) = ROUTES.lookup(method, path) {
                assert_eq!(route.http_method, method);
                assert_eq!(route.template.matches(path), Some(values));
            }
        }
    }
    let _ = built_template_matches_its_paths(&mut u);
    let _ = every_route_is_found_again(&mut u);
});

fn raw_template_and_path(template: &str, path: &str) {
    let Ok(parsed) = Template::parse(template) else { return };
    let _ = parsed.to_string();
    if let Some(values) = parsed.matches(path) {
        let fields: Vec<&str> = parsed.variables.iter().map(|v| v.field_path.as_str()).collect();
        let named: Vec<&str> = values.iter().map(|(field, _)| field.as_str()).collect();
        assert_eq!(named, fields);
    }
}

/// What decodes had only well-formed escapes, and what is encoded decodes back.
fn percent_decoding(text: &str) {
    if percent_decode(text, false).is_some() {
        let bytes = text.as_bytes();
        for (at, _) in text.match_indices('%') {
            let escape = bytes.get(at + 1..at + 3).unwrap_or_default();
            assert!(escape.len() == 2 && escape.iter().all(u8::is_ascii_hexdigit), "{text:?} decoded");
        }
    }
    assert_eq!(percent_decode(&encode(text), false).as_deref(), Some(text));
    assert_eq!(percent_decode(&encode(text), true), Some(text.replace('/', "%2F")));
}

/// Every byte but the unreserved ones (RFC 3986 §2.3) as `%XX`.
fn encode(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn literal(u: &mut Unstructured) -> libfuzzer_sys::arbitrary::Result<String> {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_-.~";
    let len = u.int_in_range(1..=8)?;
    (0..len).map(|_| u.choose(CHARS).map(|&c| char::from(c))).collect()
}

/// `/lit/{f0}/lit/{f1}:verb` from the input, and a path with any values in it: it matches, with those values.
fn built_template_matches_its_paths(u: &mut Unstructured) -> libfuzzer_sys::arbitrary::Result<()> {
    let segments = u.int_in_range(1..=6)?;
    let (mut template, mut path, mut expected) = (String::new(), String::new(), Vec::new());
    for index in 0..segments {
        if u.arbitrary()? {
            let field = format!("f{index}");
            let value: String = u.arbitrary()?;
            template.push_str(&format!("/{{{field}}}"));
            path.push('/');
            path.push_str(&encode(&value));
            expected.push((field, value));
        } else {
            let literal = literal(u)?;
            template.push('/');
            template.push_str(&literal);
            path.push('/');
            path.push_str(&literal);
        }
    }
    if u.arbitrary()? {
        let verb = literal(u)?;
        template.push(':');
        template.push_str(&verb);
        path.push(':');
        path.push_str(&verb);
    }
    let parsed = Template::parse(&template).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(parsed.matches(&path), Some(expected), "{template} with {path}");
    Ok(())
}

/// Each route's template with any values in its variables leads back to a route of the same method.
fn every_route_is_found_again(u: &mut Unstructured) -> libfuzzer_sys::arbitrary::Result<()> {
    let routes: Vec<_> = ROUTES.iter().collect();
    let route = u.choose(&routes)?;
    let mut path = String::new();
    let mut rest = route.template.openapi_path(|field| format!("\u{0}{field}\u{0}"));
    while let Some((before, after)) = rest.split_once("{\u{0}") {
        path.push_str(before);
        let (_, after) = after.split_once("\u{0}}").unwrap_or_default();
        let value: String = u.arbitrary()?;
        path.push_str(&encode(&value));
        rest = after.to_owned();
    }
    path.push_str(&rest);
    match ROUTES.lookup(&route.http_method, &path) {
        Lookup::Found(found, _) => assert_eq!(found.http_method, route.http_method),
        _ => panic!("{} {path} (from {}) finds no route", route.http_method, route.template),
    }
    Ok(())
}

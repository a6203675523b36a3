//! The JSON transcoder's decoding of a request (api/rest/transcode.rs): path values, query parameters and a JSON
//! body become the protobuf request of the route. A refusal is an error (answered 400), and a request it builds
//! survives the trip through protobuf and through the proto3 JSON mapping unchanged.
#![no_main]

use std::sync::LazyLock;

use http::Method;
use keymint::api::http::rest::fuzzing::{Lookup, Routes, request};
use libfuzzer_sys::fuzz_target;
use prost_reflect::{DescriptorPool, DynamicMessage, ReflectMessage, prost::Message};

static ROUTES: LazyLock<Routes> = LazyLock::new(|| {
    let pool =
        DescriptorPool::decode(keymint::api::pb::FILE_DESCRIPTOR_SET).unwrap_or_else(|e| panic!("{e}"));
    Routes::from_pool(&pool).unwrap_or_else(|e| panic!("{e}"))
});

fuzz_target!(|data: &[u8]| {
    // `METHOD /path?query` on the first line, the body after it: an HTTP request, as the seeds show.
    let (head, body) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let Ok(head) = std::str::from_utf8(head) else { return };
    let Some((method, target)) = head.split_once(' ') else { return };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else { return };
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let Lookup::Found(route, values) = ROUTES.lookup(&method, path) else { return };
    let message = match request(route, &values, query, body) {
        Ok(message) => message,
        Err(error) => {
            let _ = error.to_string();
            return;
        }
    };
    let input = route.rpc.input();
    assert_eq!(message.descriptor(), input);

    // Compared as JSON values: a field set to its default and an unset one are the same request, and a map's
    // entries come out in no fixed order, in protobuf and in JSON alike.
    let canonical =
        |m: &DynamicMessage| serde_json::to_value(m).unwrap_or_else(|e| panic!("no JSON form: {e}"));
    let expected = canonical(&message);
    let decoded = DynamicMessage::decode(input.clone(), message.encode_to_vec().as_slice())
        .unwrap_or_else(|e| panic!("the request does not decode from its own encoding: {e}"));
    assert_eq!(canonical(&decoded), expected, "the request changed on a trip through protobuf");

    let json = expected.to_string();
    let mut deserializer = serde_json::Deserializer::from_str(&json);
    let again = DynamicMessage::deserialize(input, &mut deserializer)
        .unwrap_or_else(|e| panic!("the request's JSON {json} does not read back: {e}"));
    assert_eq!(canonical(&again), expected, "the request changed on a trip through JSON");
    // The path's values are the request's: none was lost to the body.
    for (field, value) in &values {
        let mut at = &expected;
        for name in field.split('.') {
            let camel = lower_camel(name);
            at = at.get(&camel).or_else(|| at.get(name)).unwrap_or(&serde_json::Value::Null);
        }
        if let Some(text) = at.as_str() {
            assert_eq!(text, value, "the path's {field}");
        }
    }
});

fn lower_camel(name: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

//! JSON and HTTP to the protobuf request, and the protobuf response back to JSON, by the proto3 JSON mapping
//! (prost-reflect's serde): lowerCamelCase and original field names accepted, lowerCamelCase emitted, 64-bit
//! integers as strings, enums by name, Timestamp as RFC 3339, bytes as base64.

use prost::Message;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage,
    SerializeOptions,
};
use serde_json::{Map, Value};

use crate::api::http::rest::{
    fields,
    rules::{BodyRule, Route},
};

/// Why a request could not become a message; said to the caller as INVALID_ARGUMENT, with the field (its JSON
/// path) when one field's value is what does not fit.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TranscodeError {
    pub message: String,
    pub field: Option<(String, String)>,
}

fn fail(message: impl Into<String>) -> TranscodeError {
    TranscodeError { message: message.into(), field: None }
}

/// A field that cannot take its value: `{context}{path}: {why}`, with the field for the BadRequest detail.
fn misfit(context: &str, path: String, why: String) -> TranscodeError {
    TranscodeError { message: format!("{context}{path}: {why}"), field: Some((path, why)) }
}

/// A body the JSON mapping refused: a syntax error says where (line and column); a value that does not fit its
/// field is found again field by field, so that the answer names the field and what it takes.
fn refused(input: &MessageDescriptor, json: Option<&Value>, e: &serde_json::Error) -> TranscodeError {
    if e.is_data()
        && let Some(json) = json
        && let Some((path, why)) = fields::misfit(input, json)
    {
        return misfit("the JSON body's field ", path, why);
    }
    syntax(e)
}

/// The fields of a dotted path (`query.limit`), each segment by its JSON or its original name.
pub fn resolve(message: &MessageDescriptor, dotted: &str) -> Result<Vec<FieldDescriptor>, String> {
    let mut fields = Vec::new();
    let mut current = message.clone();
    let mut segments = dotted.split('.').peekable();
    while let Some(name) = segments.next() {
        let field = current
            .get_field_by_json_name(name)
            .or_else(|| current.get_field_by_name(name))
            .ok_or_else(|| format!("{} has no field {name:?}", current.name()))?;
        if segments.peek().is_some() {
            match field.kind() {
                Kind::Message(inner) if !field.is_list() && !field.is_map() => current = inner,
                _ => return Err(format!("{name:?} has no fields inside")),
            }
        }
        fields.push(field);
    }
    Ok(fields)
}

/// The JSON name of a dotted field path (`query.limit` stays, `project_id` becomes `projectId`).
pub fn json_path(message: &MessageDescriptor, dotted: &str) -> String {
    match resolve(message, dotted) {
        Ok(fields) => fields.iter().map(|f| f.json_name().to_owned()).collect::<Vec<_>>().join("."),
        Err(_) => dotted.to_owned(),
    }
}

/// The request message of `route` from the path's variables, the query string and the JSON body.
pub fn request(
    route: &Route,
    variables: &[(String, String)],
    query: Option<&str>,
    body: &[u8],
) -> Result<DynamicMessage, TranscodeError> {
    let input = route.rpc.input();
    let mut message = match &route.body {
        BodyRule::Whole => whole_body(&input, body)?,
        BodyRule::Field(field) => {
            let mut message = DynamicMessage::new(input.clone());
            if !is_blank(body) {
                let value: Value = serde_json::from_slice(body).map_err(|e| syntax(&e))?;
                let mut wrapper = Map::new();
                wrapper.insert(field.json_name().to_owned(), value);
                let wrapper = Value::Object(wrapper);
                merge_json(&mut message, wrapper.clone()).map_err(|e| refused(&input, Some(&wrapper), &e))?;
            }
            message
        }
        BodyRule::None => {
            if !is_blank(body) {
                return Err(fail(format!(
                    "{} {} takes no body: send its fields as query parameters",
                    route.http_method, route.template
                )));
            }
            DynamicMessage::new(input.clone())
        }
    };
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        if matches!(route.body, BodyRule::Whole) {
            return Err(fail(format!(
                "{} {} takes its fields in the JSON body, not as query parameters",
                route.http_method, route.template
            )));
        }
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let fields =
                resolve(&input, &name).map_err(|why| fail(format!("query parameter {name:?}: {why}")))?;
            let bound = route.template.variables.iter().any(|v| same_field(&input, &v.field_path, &fields))
                || matches!(&route.body, BodyRule::Field(b) if fields.first() == Some(b));
            if bound {
                return Err(fail(format!(
                    "query parameter {name:?} names a field the path or body already sets"
                )));
            }
            set(&mut message, &fields, &value).map_err(|why| {
                let path = fields.iter().map(|f| f.json_name()).collect::<Vec<_>>().join(".");
                TranscodeError {
                    message: format!("query parameter {name:?}: {why}"),
                    field: Some((path, why)),
                }
            })?;
        }
    }
    // Path values win over the body's, as the rule's definition says: what the body set there is cleared first.
    for (path, value) in variables {
        let fields = resolve(&input, path).map_err(fail)?;
        clear(&mut message, &fields);
        set(&mut message, &fields, value).map_err(|why| fail(format!("path segment for {path}: {why}")))?;
    }
    Ok(message)
}

fn is_blank(body: &[u8]) -> bool {
    body.iter().all(u8::is_ascii_whitespace)
}

fn same_field(input: &MessageDescriptor, dotted: &str, fields: &[FieldDescriptor]) -> bool {
    resolve(input, dotted).is_ok_and(|bound| bound.as_slice() == fields)
}

/// The whole body as the message; an empty body is an empty message. Errors say where (line and column).
fn whole_body(input: &MessageDescriptor, body: &[u8]) -> Result<DynamicMessage, TranscodeError> {
    if is_blank(body) {
        return Ok(DynamicMessage::new(input.clone()));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let message =
        DynamicMessage::deserialize_with_options(input.clone(), &mut deserializer, &deserialize_options())
            .map_err(|e| {
                let json = if e.is_data() { serde_json::from_slice::<Value>(body).ok() } else { None };
                refused(input, json.as_ref(), &e)
            })?;
    deserializer.end().map_err(|e| syntax(&e))?;
    Ok(message)
}

pub fn deserialize_options() -> DeserializeOptions {
    DeserializeOptions::new().deny_unknown_fields(true)
}

fn syntax(e: &serde_json::Error) -> TranscodeError {
    // serde_json's message already ends with "at line L column C".
    fail(format!("the JSON body is not a valid request: {e}"))
}

/// Merges a JSON object (of the message's fields) into the message.
fn merge_json(message: &mut DynamicMessage, json: Value) -> Result<(), serde_json::Error> {
    let part = DynamicMessage::deserialize_with_options(message.descriptor(), json, &deserialize_options())?;
    // Re-encoding a message the pool just built cannot fail to decode as its own type.
    let _ = message.merge(part.encode_to_vec().as_slice());
    Ok(())
}

/// Clears the leaf of `fields` so that a path value replaces, rather than adds to, what the body set.
fn clear(message: &mut DynamicMessage, fields: &[FieldDescriptor]) {
    match fields {
        [] => {}
        [leaf] => message.clear_field(leaf),
        [first, rest @ ..] => {
            if message.has_field(first)
                && let prost_reflect::Value::Message(inner) = message.get_field_mut(first)
            {
                clear(inner, rest);
            }
        }
    }
}

/// Sets (or, for a repeated field, appends to) the field at `fields` from a text value.
fn set(message: &mut DynamicMessage, fields: &[FieldDescriptor], raw: &str) -> Result<(), String> {
    let Some(leaf) = fields.last() else { return Ok(()) };
    if leaf.is_map() {
        return Err("a map cannot be given as a parameter".into());
    }
    let value = match leaf.kind() {
        Kind::Bool => match raw {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(format!("{raw:?} is not true or false")),
        },
        // An enum by its number, as the JSON mapping allows; by its name otherwise.
        Kind::Enum(_) if raw.parse::<i32>().is_ok() => Value::from(raw.parse::<i32>().unwrap_or_default()),
        Kind::Message(inner) if !is_scalar_like(&inner) => {
            return Err("a message cannot be given as a parameter: name one of its fields".into());
        }
        _ => Value::String(raw.to_owned()),
    };
    let mut json = if leaf.is_list() { Value::Array(vec![value]) } else { value };
    for field in fields.iter().rev() {
        let mut object = Map::new();
        object.insert(field.json_name().to_owned(), json);
        json = Value::Object(object);
    }
    merge_json(message, json).map_err(|_| {
        // A query parameter's text is the client's own, but a string field's may be a secret: not repeated.
        let shown = match leaf.kind() {
            Kind::String | Kind::Bytes | Kind::Message(_) => "the value".to_owned(),
            _ => format!("{:?}", raw.chars().take(64).collect::<String>()),
        };
        format!("{shown} does not fit: give {}", fields::takes(leaf))
    })
}

/// Well-known types whose JSON form is a string or a number (Timestamp, Duration, FieldMask, wrappers).
pub fn is_scalar_like(message: &MessageDescriptor) -> bool {
    matches!(
        message.full_name(),
        "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.FieldMask"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
            | "google.protobuf.BoolValue"
            | "google.protobuf.Int32Value"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.FloatValue"
            | "google.protobuf.DoubleValue"
    )
}

/// The JSON of a response message (or of its `response_body` field).
pub fn response(route: &Route, message: &DynamicMessage) -> Result<Vec<u8>, serde_json::Error> {
    let options = SerializeOptions::new().stringify_64_bit_integers(true).skip_default_fields(true);
    match &route.response_body {
        None => {
            let mut out = Vec::new();
            message.serialize_with_options(&mut serde_json::Serializer::new(&mut out), &options)?;
            Ok(out)
        }
        Some(field) => {
            // Serialize the whole message and take the field's JSON: the mapping of a lone field value
            // (a list, a well-known type) is the same as inside its message.
            let mut out = Vec::new();
            let full = SerializeOptions::new().stringify_64_bit_integers(true).skip_default_fields(false);
            message.serialize_with_options(&mut serde_json::Serializer::new(&mut out), &full)?;
            let value: Value = serde_json::from_slice(&out)?;
            serde_json::to_vec(value.get(field.json_name()).unwrap_or(&Value::Null))
        }
    }
}

#[cfg(test)]
mod tests {
    use prost_reflect::DescriptorPool;

    use super::*;
    use crate::api::http::rest::rules::{Lookup, Routes};

    fn routes() -> Routes {
        let pool = DescriptorPool::decode(crate::api::pb::FILE_DESCRIPTOR_SET).unwrap();
        Routes::from_pool(&pool).unwrap()
    }

    fn build(method: http::Method, path: &str, query: Option<&str>, body: &str) -> Result<Value, String> {
        let routes = routes();
        let Lookup::Found(route, variables) = routes.lookup(&method, path) else {
            return Err(format!("no route for {method} {path}"));
        };
        let message = request(route, &variables, query, body.as_bytes()).map_err(|e| e.message)?;
        Ok(serde_json::to_value(&message).unwrap())
    }

    #[test]
    fn path_values_win_over_the_body() {
        let built = build(
            http::Method::POST,
            "/management/v1/projects/7/apps/8/keys",
            None,
            r#"{"projectId": "1", "app_id": "2", "type": "KEY_TYPE_JSON"}"#,
        )
        .unwrap();
        assert_eq!(built, serde_json::json!({"projectId": "7", "appId": "8", "type": "KEY_TYPE_JSON"}));
    }

    #[test]
    fn query_parameters_by_either_name_enums_by_name_or_number() {
        let by_name = build(
            http::Method::GET,
            "/apikeys/v1/keys",
            Some("limit=5&starting_after=9&environment=ENVIRONMENT_TEST"),
            "",
        )
        .unwrap();
        assert_eq!(
            by_name,
            serde_json::json!({"limit": 5, "startingAfter": "9", "environment": "ENVIRONMENT_TEST"})
        );
        let by_number = build(http::Method::GET, "/apikeys/v1/keys", Some("environment=2"), "").unwrap();
        assert_eq!(by_number, serde_json::json!({"environment": "ENVIRONMENT_TEST"}));
    }

    #[test]
    fn nested_fields_by_dotted_names() {
        let pool = DescriptorPool::decode(crate::api::pb::FILE_DESCRIPTOR_SET).unwrap();
        let input = pool.get_message_by_name("keymint.management.v1.ListAppKeysRequest").unwrap();
        let mut message = DynamicMessage::new(input.clone());
        set(&mut message, &resolve(&input, "query.limit").unwrap(), "10").unwrap();
        set(&mut message, &resolve(&input, "query.asc").unwrap(), "true").unwrap();
        set(&mut message, &resolve(&input, "app_id").unwrap(), "7").unwrap();
        assert_eq!(
            serde_json::to_value(&message).unwrap(),
            serde_json::json!({"appId": "7", "query": {"limit": 10, "asc": true}})
        );
        assert_eq!(json_path(&input, "query.limit"), "query.limit");
        assert_eq!(json_path(&input, "project_id"), "projectId");
        assert!(resolve(&input, "appId.x").is_err(), "a string has no fields inside");
        assert!(set(&mut message, &resolve(&input, "query.asc").unwrap(), "yes").is_err());
    }

    #[test]
    fn refusals_name_what_is_wrong() {
        let unknown = build(http::Method::GET, "/apikeys/v1/keys", Some("colour=red"), "").unwrap_err();
        assert!(unknown.contains("colour"), "{unknown}");
        let not_a_number = build(http::Method::GET, "/apikeys/v1/keys", Some("limit=many"), "").unwrap_err();
        assert!(not_a_number.contains("limit"), "{not_a_number}");
        let body_on_get = build(http::Method::GET, "/apikeys/v1/keys/1", None, "{}").unwrap_err();
        assert!(body_on_get.contains("takes no body"), "{body_on_get}");
        let query_on_post =
            build(http::Method::POST, "/management/v1/projects", Some("name=x"), "{}").unwrap_err();
        assert!(query_on_post.contains("JSON body"), "{query_on_post}");
        let unknown_field =
            build(http::Method::POST, "/management/v1/projects", None, r#"{"name": "p", "colour": 1}"#)
                .unwrap_err();
        assert!(unknown_field.contains("colour"), "{unknown_field}");
        let broken =
            build(http::Method::POST, "/management/v1/projects", None, "{\n\"name\": }").unwrap_err();
        assert!(broken.contains("line 2 column"), "{broken}");
        let trailing = build(http::Method::POST, "/management/v1/projects", None, "{} {}").unwrap_err();
        assert!(trailing.contains("trailing"), "{trailing}");
    }

    #[test]
    fn custom_verbs_are_matched_before_plain_variables() {
        let routes = routes();
        match routes.lookup(&http::Method::POST, "/apikeys/v1/keys/7:roll") {
            Lookup::Found(route, variables) => {
                assert_eq!(route.rpc.name(), "RollApiKey");
                assert_eq!(variables, [("id".to_owned(), "7".to_owned())]);
            }
            _ => unreachable!("the roll route"),
        }
        assert!(matches!(
            routes.lookup(&http::Method::GET, "/apikeys/v1/keys/7:roll"),
            Lookup::WrongMethod(allowed) if allowed == [http::Method::POST]
        ));
        assert!(matches!(
            routes.lookup(&http::Method::POST, "/apikeys/v1/keys/_search"),
            Lookup::WrongMethod(_)
        ));
        match routes.lookup(&http::Method::POST, "/management/v1/projects/_search") {
            Lookup::Found(route, _) => assert_eq!(route.rpc.name(), "ListProjects"),
            _ => unreachable!("the search route"),
        }
        assert!(matches!(routes.lookup(&http::Method::GET, "/nothing/here"), Lookup::NotFound));
    }
}

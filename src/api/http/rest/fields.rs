//! Which field of a JSON request holds a value it cannot take, and what it takes: so that an error names the
//! field (`query.limit`) and the allowed values, where the JSON mapping's own error names only a line and column.

use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value};

use crate::api::http::rest::transcode::{deserialize_options, is_scalar_like};

/// The first field of `json` (an object of `message`'s fields) that does not fit: its JSON path and why.
pub fn misfit(message: &MessageDescriptor, json: &Value) -> Option<(String, String)> {
    // Not an object: the JSON mapping's own message says so, and where.
    let Value::Object(object) = json else { return None };
    for (key, value) in object {
        let Some(field) = message.get_field_by_json_name(key).or_else(|| message.get_field_by_name(key))
        else {
            let known = message.fields().map(|f| f.json_name().to_owned()).collect::<Vec<_>>().join(", ");
            return Some((
                key.clone(),
                format!("{} has no field {key:?}; its fields are {known}", message.name()),
            ));
        };
        let mut alone = Map::new();
        alone.insert(key.clone(), value.clone());
        if DynamicMessage::deserialize_with_options(
            message.clone(),
            Value::Object(alone),
            &deserialize_options(),
        )
        .is_ok()
        {
            continue;
        }
        let name = field.json_name().to_owned();
        // Inside a message, or a list of messages, the field within it that does not fit.
        if let Kind::Message(inner) = field.kind()
            && !field.is_map()
            && !is_scalar_like(&inner)
        {
            match value {
                Value::Object(_) if !field.is_list() => {
                    if let Some((path, why)) = misfit(&inner, value) {
                        return Some((format!("{name}.{path}"), why));
                    }
                }
                Value::Array(items) if field.is_list() => {
                    for (i, item) in items.iter().enumerate() {
                        if let Some((path, why)) = misfit(&inner, item) {
                            return Some((format!("{name}[{i}].{path}"), why));
                        }
                    }
                }
                _ => {}
            }
        }
        return Some((name, format!("{} does not fit: give {}", shown(&field, value), takes(&field))));
    }
    None
}

/// What a field takes, for people: "a whole number from 0 to 4294967295", "one of ENVIRONMENT_LIVE, …".
pub fn takes(field: &FieldDescriptor) -> String {
    if field.is_map() {
        return "an object of keys and values".into();
    }
    let one = match field.kind() {
        Kind::Double | Kind::Float => "a number".into(),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            format!("a whole number from {} to {}", i32::MIN, i32::MAX)
        }
        Kind::Uint32 | Kind::Fixed32 => format!("a whole number from 0 to {}", u32::MAX),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            format!("a whole number from {} to {} (a string or a number)", i64::MIN, i64::MAX)
        }
        Kind::Uint64 | Kind::Fixed64 => {
            format!("a whole number from 0 to {} (a string or a number)", u64::MAX)
        }
        Kind::Bool => "true or false".into(),
        Kind::String => "a string".into(),
        Kind::Bytes => "base64 text".into(),
        Kind::Enum(values) => {
            let names = values.values().map(|v| v.name().to_owned()).collect::<Vec<_>>().join(", ");
            format!("one of {names} (or its number)")
        }
        Kind::Message(message) => match message.full_name() {
            "google.protobuf.Timestamp" => "an RFC 3339 time, e.g. 2030-01-31T12:00:00Z".into(),
            "google.protobuf.Duration" => "a duration in seconds ending in s, e.g. 3600s".into(),
            "google.protobuf.FieldMask" => "field names separated by commas".into(),
            name if is_scalar_like(&message) => format!("the JSON form of {name}"),
            _ => format!("an object of {}'s fields", message.name()),
        },
    };
    if field.is_list() { format!("a list, each {one}") } else { one }
}

/// The value as the answer may repeat it: numbers, true/false and enum names; a string of another field could be
/// a secret sent in the wrong place, so it is only called a string.
pub fn shown(field: &FieldDescriptor, value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(_) | Value::Number(_) => value.to_string(),
        Value::String(text) if matches!(field.kind(), Kind::Enum(_)) && text.len() <= 64 => {
            format!("{text:?}")
        }
        Value::String(_) => "a string".into(),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

#[cfg(test)]
mod tests {
    use prost_reflect::DescriptorPool;
    use serde_json::json;

    use super::*;

    fn message(name: &str) -> MessageDescriptor {
        let pool = DescriptorPool::decode(crate::api::pb::FILE_DESCRIPTOR_SET).unwrap();
        pool.get_message_by_name(name).unwrap()
    }

    #[test]
    fn the_misfit_is_named_by_its_path_with_what_it_takes() {
        let search = message("keymint.management.v1.ListProjectsRequest");
        let (path, why) = misfit(&search, &json!({"query": {"limit": -1}})).unwrap();
        assert_eq!(path, "query.limit");
        assert!(why.contains("-1") && why.contains("from 0 to 4294967295"), "{why}");
        assert_eq!(misfit(&search, &json!({"query": {"limit": 5}})), None);
        assert_eq!(misfit(&search, &json!([1])), None, "not an object: the mapping's own message says where");
        let create = message("keymint.apikeys.v1.CreateApiKeyRequest");
        let (path, why) = misfit(&create, &json!({"title": "t", "environment": "ENVIRONMENT_X"})).unwrap();
        assert_eq!(path, "environment");
        assert!(why.contains("ENVIRONMENT_LIVE") && why.contains("ENVIRONMENT_TEST"), "{why}");
        let (path, why) = misfit(&create, &json!({"title": 7})).unwrap();
        assert_eq!((path.as_str(), why.contains("a string")), ("title", true), "{why}");
        let (path, why) = misfit(&create, &json!({"colour": 7})).unwrap();
        assert_eq!(path, "colour");
        assert!(why.contains("title"), "the fields it has: {why}");
    }

    #[test]
    fn strings_of_other_fields_are_not_repeated() {
        let create = message("keymint.apikeys.v1.CreateApiKeyRequest");
        let (_, why) = misfit(&create, &json!({"title": "t", "scopes": "km_live_secret"})).unwrap();
        assert!(!why.contains("km_live_secret"), "{why}");
    }
}

//! Conversions between the API's messages and the service's values.

use prost_types::Timestamp as PbTimestamp;

use crate::{
    domain::{DomainError, Timestamp},
    service::{ListView, Written},
    store::RowDetails,
};

use crate::api::pb::keymint::v1::{ListDetails, ObjectDetails};

pub fn timestamp(t: Timestamp) -> PbTimestamp {
    let (seconds, nanos) = t.to_seconds_nanos();
    PbTimestamp { seconds, nanos }
}

pub fn from_timestamp(field: &str, t: &PbTimestamp) -> Result<Timestamp, DomainError> {
    Timestamp::from_seconds_nanos(t.seconds, t.nanos)
        .ok_or_else(|| DomainError::invalid(field, "must be a valid time between years 1 and 9999"))
}

/// The details of a write: both dates are the write's time, as the created or changed object reports them.
pub fn written(w: Written, org_id: &str) -> Option<ObjectDetails> {
    Some(ObjectDetails {
        sequence: w.sequence,
        creation_date: Some(timestamp(w.at)),
        change_date: Some(timestamp(w.at)),
        resource_owner: org_id.to_owned(),
    })
}

/// The details of a read-model row.
pub fn row(d: &RowDetails) -> Option<ObjectDetails> {
    Some(ObjectDetails {
        sequence: u64::try_from(d.sequence).unwrap_or_default(),
        creation_date: Some(timestamp(Timestamp(d.created_at))),
        change_date: Some(timestamp(Timestamp(d.changed_at))),
        resource_owner: d.org_id.clone(),
    })
}

pub fn list<T>(view: &ListView<T>) -> Option<ListDetails> {
    Some(ListDetails {
        total_result: view.total,
        processed_sequence: view.processed_position,
        view_timestamp: Some(timestamp(view.viewed_at)),
    })
}

/// JSON to google.protobuf.Struct, for event payloads in change lists.
pub fn json_struct(json: &str) -> Option<prost_types::Struct> {
    json_value_struct(serde_json::from_str(json).ok()?)
}

/// A JSON object as google.protobuf.Struct; None for any other JSON value.
pub fn json_value_struct(json: serde_json::Value) -> Option<prost_types::Struct> {
    match json {
        serde_json::Value::Object(map) => Some(struct_of(map)),
        _ => None,
    }
}

fn struct_of(map: serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct { fields: map.into_iter().map(|(k, v)| (k, value_of(v))).collect() }
}

fn value_of(json: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    use serde_json::Value;
    let kind = match json {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(items) => {
            Kind::ListValue(prost_types::ListValue { values: items.into_iter().map(value_of).collect() })
        }
        Value::Object(map) => Kind::StructValue(struct_of(map)),
    };
    prost_types::Value { kind: Some(kind) }
}

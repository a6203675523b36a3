//! The OpenAPI 3.0 document of the JSON routes, made at start from the same descriptors and rules the transcoder
//! uses, with the proto comments as descriptions: every route with its path and query parameters, request and
//! response schemas (components from the messages, in their proto3 JSON form), the error body, bearer auth.

use std::collections::{BTreeMap, HashMap, HashSet};

use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use crate::api::http::rest::{
    rules::{BodyRule, Route, Routes},
    transcode::{is_scalar_like, json_path, resolve},
};

/// How deep query parameters reach into nested messages (`query.limit` is depth 2).
const MAX_QUERY_DEPTH: usize = 3;
const ERROR_SCHEMA: &str = "google.rpc.Status";

pub fn document(pool: &DescriptorPool, routes: &Routes) -> Value {
    let comments = Comments::new(pool);
    let mut schemas = Schemas { comments: &comments, done: BTreeMap::new(), pending: Vec::new() };
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut operation_ids = HashSet::new();
    let mut tags = BTreeMap::new();
    let mut operations = Vec::new();

    for route in routes.iter() {
        let input = route.rpc.input();
        let service = route.rpc.parent_service();
        tags.entry(service.name().to_owned()).or_insert_with(|| {
            json!({ "name": service.name(), "description": comments.of(service.parent_file().name(), service.path()) })
        });
        let path = route.template.openapi_path(|field| json_path(&input, field));
        let mut id = format!("{}_{}", service.name(), route.rpc.name());
        let mut n = 1;
        while !operation_ids.insert(id.clone()) {
            n += 1;
            id = format!("{}_{}{n}", service.name(), route.rpc.name());
        }

        let mut parameters = Vec::new();
        let mut bound: Vec<Vec<FieldDescriptor>> = Vec::new();
        for variable in &route.template.variables {
            let Ok(fields) = resolve(&input, &variable.field_path) else { continue };
            let Some(leaf) = fields.last() else { continue };
            let mut schema = schemas.field(leaf);
            if schema.get("type") == Some(&json!("string")) && schema.get("format").is_none() {
                schema["minLength"] = json!(1);
            }
            parameters.push(json!({
                "name": json_path(&input, &variable.field_path),
                "in": "path",
                "required": true,
                "description": comments.of_field(leaf),
                "schema": schema,
            }));
            bound.push(fields);
        }
        if let BodyRule::Field(field) = &route.body {
            bound.push(vec![field.clone()]);
        }
        if !matches!(route.body, BodyRule::Whole) {
            query_parameters(&mut schemas, &input, "", &bound, &mut Vec::new(), &mut parameters);
        }

        let comment = comments.of(route.rpc.parent_file().name(), route.rpc.path());
        let mut operation = json!({
            "operationId": id,
            "tags": [service.name()],
            "summary": summary(&comment),
            "description": comment,
            "parameters": parameters,
            "responses": {
                "200": {
                    "description": format!("{} answered", route.rpc.name()),
                    "content": { "application/json": { "schema": response_schema(&mut schemas, route) } },
                },
                "default": {
                    "description": "An error: the HTTP status follows the gRPC code (400, 401, 403, 404, 409, 429, …)",
                    "content": { "application/json": { "schema": reference(ERROR_SCHEMA) } },
                },
            },
        });
        let body_schema = match &route.body {
            BodyRule::None => None,
            BodyRule::Whole => Some(schemas.message(&input)),
            BodyRule::Field(field) => Some(schemas.field(field)),
        };
        if let Some(schema) = body_schema {
            operation["requestBody"] = json!({
                "required": false,
                "content": { "application/json": { "schema": schema } },
            });
        }
        let method = route.http_method.as_str().to_ascii_lowercase();
        let names = route.template.variables.iter().map(|v| json_path(&input, &v.field_path)).collect();
        let output = route.response_body.is_none().then(|| route.rpc.output());
        operations.push(Operation { id, method: method.clone(), path: path.clone(), params: names, output });
        paths.entry(path).or_default().insert(method, operation);
    }
    for (from, links) in links(&operations) {
        if let Some(operation) = paths.get_mut(&from.path).and_then(|ops| ops.get_mut(&from.method)) {
            operation["responses"]["200"]["links"] = Value::Object(links);
        }
    }

    schemas.finish();
    let mut components = schemas.done;
    components.insert(ERROR_SCHEMA.to_owned(), error_schema());
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "keymint",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "keymint's JSON API: the gRPC services by their google.api.http rules, transcoded on \
                the same port. Field names are lowerCamelCase (the original names are accepted too), 64-bit \
                integers are strings, enums are names and timestamps RFC 3339.",
        },
        "servers": [{ "url": "/" }],
        "security": [{ "bearer": [] }],
        "tags": tags.into_values().collect::<Vec<_>>(),
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An instance-admin token or an API key secret (km_live_…, km_test_…)",
                },
            },
            "schemas": components,
        },
    })
}

/// What links between operations are made from.
struct Operation {
    id: String,
    method: String,
    path: String,
    params: Vec<String>,
    output: Option<MessageDescriptor>,
}

/// OpenAPI links from each creating call (POST) to the calls that take what it returns, so that clients and
/// stateful testers follow real objects: the ID a call returns fills the variable right after its path
/// (`POST /projects` → `/projects/{id}`, `/projects/{projectId}/apps/api`), a field of the answer fills the
/// variable of its name (`appId`), and the creating call's own path variables fill those of the same name.
fn links(operations: &[Operation]) -> Vec<(&Operation, Map<String, Value>)> {
    let mut out = Vec::new();
    for from in operations.iter().filter(|o| o.method == "post") {
        let Some(output) = &from.output else { continue };
        let id = identifier(output);
        let mut links = Map::new();
        for to in operations.iter().filter(|o| o.id != from.id && !o.params.is_empty()) {
            let mut parameters = Map::new();
            let mut from_answer = false;
            for param in &to.params {
                let after_path = to.path.starts_with(&format!("{}/{{{param}}}", from.path));
                let value = if after_path && let Some(id) = &id {
                    from_answer = true;
                    format!("$response.body#{id}")
                } else if from.params.contains(param) {
                    format!("$request.path.{param}")
                } else if param != "id"
                    && output.get_field_by_json_name(param).is_some_and(|f| f.kind() == Kind::String)
                {
                    from_answer = true;
                    format!("$response.body#/{param}")
                } else {
                    break;
                };
                parameters.insert(param.clone(), json!(value));
            }
            if from_answer && parameters.len() == to.params.len() {
                links.insert(to.id.clone(), json!({ "operationId": to.id, "parameters": parameters }));
            }
        }
        if !links.is_empty() {
            out.push((from, links));
        }
    }
    out
}

/// The JSON pointer of the ID an answer reports: its `id`, or the `id` of the one object it holds.
fn identifier(output: &MessageDescriptor) -> Option<String> {
    let is_id = |message: &MessageDescriptor| {
        message.get_field_by_name("id").is_some_and(|f| f.kind() == Kind::String && !f.is_list())
    };
    if is_id(output) {
        return Some("/id".to_owned());
    }
    output.fields().find_map(|field| match field.kind() {
        Kind::Message(inner) if !field.is_list() && is_id(&inner) => {
            Some(format!("/{}/id", field.json_name()))
        }
        _ => None,
    })
}

fn response_schema(schemas: &mut Schemas<'_>, route: &Route) -> Value {
    match &route.response_body {
        Some(field) => schemas.field(field),
        None => schemas.message(&route.rpc.output()),
    }
}

/// The fields of `message` not bound by the path or body, as query parameters; nested messages as `a.b`.
fn query_parameters(
    schemas: &mut Schemas<'_>,
    message: &MessageDescriptor,
    prefix: &str,
    bound: &[Vec<FieldDescriptor>],
    trail: &mut Vec<FieldDescriptor>,
    out: &mut Vec<Value>,
) {
    for field in message.fields() {
        trail.push(field.clone());
        let taken = bound.iter().any(|b| b.as_slice() == trail.as_slice());
        let name = format!("{prefix}{}", field.json_name());
        match field.kind() {
            _ if taken || field.is_map() => {}
            Kind::Message(inner) if !is_scalar_like(&inner) => {
                if !field.is_list() && trail.len() < MAX_QUERY_DEPTH {
                    query_parameters(schemas, &inner, &format!("{name}."), bound, trail, out);
                }
            }
            _ => out.push(json!({
                "name": name,
                "in": "query",
                "required": false,
                "description": schemas.comments.of_field(&field),
                "schema": schemas.field(&field),
                "style": "form",
                "explode": true,
            })),
        }
        trail.pop();
    }
}

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn error_schema() -> Value {
    json!({
        "type": "object",
        "description": "An error: the gRPC code, a message for people, and details for machines \
            (google.rpc.ErrorInfo with a stable reason, google.rpc.BadRequest with the invalid fields).",
        "properties": {
            "code": { "type": "integer", "format": "int32", "description": "The gRPC status code" },
            "message": { "type": "string" },
            "details": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": { "@type": { "type": "string" } },
                    "required": ["@type"],
                    "additionalProperties": true,
                },
            },
        },
        "required": ["code", "message", "details"],
    })
}

/// The first sentence of a comment.
fn summary(comment: &str) -> String {
    let first = comment.split("\n\n").next().unwrap_or_default().replace('\n', " ");
    match first.find(". ") {
        Some(at) => first[..=at].to_owned(),
        None => first,
    }
}

/// Component schemas of the messages met, by full name.
struct Schemas<'a> {
    comments: &'a Comments,
    done: BTreeMap<String, Value>,
    pending: Vec<MessageDescriptor>,
}

impl Schemas<'_> {
    /// A message: a reference to its component (made later), or the JSON form of a well-known type.
    fn message(&mut self, message: &MessageDescriptor) -> Value {
        if let Some(schema) = well_known(message) {
            return schema;
        }
        let name = message.full_name().to_owned();
        if !self.done.contains_key(&name) && !self.pending.iter().any(|m| m.full_name() == name) {
            self.pending.push(message.clone());
        }
        reference(&name)
    }

    fn field(&mut self, field: &FieldDescriptor) -> Value {
        if field.is_map()
            && let Kind::Message(entry) = field.kind()
        {
            let value = self.kind(&entry.map_entry_value_field());
            return json!({ "type": "object", "additionalProperties": value });
        }
        let item = self.kind(field);
        if field.is_list() { json!({ "type": "array", "items": item }) } else { item }
    }

    fn kind(&mut self, field: &FieldDescriptor) -> Value {
        match field.kind() {
            Kind::Double => json!({ "type": "number", "format": "double" }),
            Kind::Float => json!({ "type": "number", "format": "float" }),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                json!({ "type": "integer", "format": "int32", "minimum": i32::MIN, "maximum": i32::MAX })
            }
            Kind::Uint32 | Kind::Fixed32 => {
                json!({ "type": "integer", "format": "int64", "minimum": 0, "maximum": u32::MAX })
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => int64_string(true),
            Kind::Uint64 | Kind::Fixed64 => int64_string(false),
            Kind::Bool => json!({ "type": "boolean" }),
            Kind::String => json!({ "type": "string" }),
            Kind::Bytes => json!({ "type": "string", "format": "byte" }),
            Kind::Enum(e) => json!({
                "type": "string",
                "enum": e.values().map(|v| v.name().to_owned()).collect::<Vec<_>>(),
                "description": self.comments.of(e.parent_file().name(), e.path()),
            }),
            Kind::Message(m) => self.message(&m),
        }
    }

    /// Makes the components of every message referenced, and of the messages those reference.
    fn finish(&mut self) {
        while let Some(message) = self.pending.pop() {
            let mut properties = Map::new();
            for field in message.fields() {
                let mut schema = self.field(&field);
                let description = self.comments.of_field(&field);
                if !description.is_empty() && schema.get("$ref").is_none() {
                    schema["description"] = json!(description);
                }
                properties.insert(field.json_name().to_owned(), schema);
            }
            let schema = json!({
                "type": "object",
                "description": self.comments.of(message.parent_file().name(), message.path()),
                "properties": properties,
            });
            self.done.insert(message.full_name().to_owned(), schema);
        }
    }
}

fn int64_string(signed: bool) -> Value {
    json!({
        "type": "string",
        "format": if signed { "int64" } else { "uint64" },
        "pattern": if signed { "^-?[0-9]{1,18}$" } else { "^[0-9]{1,19}$" },
    })
}

/// The proto3 JSON forms of the well-known types.
fn well_known(message: &MessageDescriptor) -> Option<Value> {
    let schema = match message.full_name() {
        "google.protobuf.Timestamp" => json!({ "type": "string", "format": "date-time" }),
        "google.protobuf.Duration" => {
            json!({ "type": "string", "pattern": "^-?[0-9]{1,12}(\\.[0-9]{1,9})?s$" })
        }
        "google.protobuf.FieldMask" => json!({ "type": "string" }),
        "google.protobuf.Empty" => json!({ "type": "object" }),
        "google.protobuf.Struct" => json!({ "type": "object", "additionalProperties": true }),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.ListValue" => json!({ "type": "array", "items": {} }),
        "google.protobuf.Any" => json!({
            "type": "object",
            "properties": { "@type": { "type": "string" } },
            "additionalProperties": true,
        }),
        "google.protobuf.StringValue" => json!({ "type": "string" }),
        "google.protobuf.BytesValue" => json!({ "type": "string", "format": "byte" }),
        "google.protobuf.BoolValue" => json!({ "type": "boolean" }),
        "google.protobuf.Int32Value" => json!({ "type": "integer", "format": "int32" }),
        "google.protobuf.UInt32Value" => json!({ "type": "integer", "format": "int64", "minimum": 0 }),
        "google.protobuf.Int64Value" => int64_string(true),
        "google.protobuf.UInt64Value" => int64_string(false),
        "google.protobuf.FloatValue" | "google.protobuf.DoubleValue" => json!({ "type": "number" }),
        _ => return None,
    };
    Some(schema)
}

/// A proto comment as text: its lines joined into paragraphs, which blank lines separate.
fn paragraphs(comment: &str) -> String {
    let lines: Vec<&str> = comment.lines().map(str::trim).collect();
    lines
        .split(|line| line.is_empty())
        .filter(|p| !p.is_empty())
        .map(|p| p.join(" "))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// The leading comments of the descriptors, by file and source path.
struct Comments(HashMap<(String, Vec<i32>), String>);

impl Comments {
    fn new(pool: &DescriptorPool) -> Comments {
        let mut map = HashMap::new();
        for file in pool.files() {
            let proto = file.file_descriptor_proto();
            for location in proto.source_code_info.iter().flat_map(|info| info.location.iter()) {
                if let Some(comment) = &location.leading_comments {
                    map.insert((file.name().to_owned(), location.path.clone()), paragraphs(comment));
                }
            }
        }
        Comments(map)
    }

    fn of(&self, file: &str, path: &[i32]) -> String {
        self.0.get(&(file.to_owned(), path.to_vec())).cloned().unwrap_or_default()
    }

    fn of_field(&self, field: &FieldDescriptor) -> String {
        self.of(field.parent_file().name(), field.path())
    }
}

//! The route table: every `google.api.http` rule (and its additional bindings) of the descriptor set, read once
//! at start, and the lookup of a request's method and path in it.

use http::Method;
use prost_reflect::{DescriptorPool, DynamicMessage, FieldDescriptor, MethodDescriptor, Value};

use crate::api::http::rest::template::Template;

/// Where the request message comes from besides the path.
#[derive(Debug, Clone)]
pub enum BodyRule {
    /// No body: the fields not in the path come from query parameters.
    None,
    /// `body: "*"`: the JSON body is the request message (path fields win over it).
    Whole,
    /// `body: "field"`: the JSON body is that field; the other fields not in the path are query parameters.
    Field(FieldDescriptor),
}

/// One HTTP binding of one RPC.
#[derive(Debug, Clone)]
pub struct Route {
    pub http_method: Method,
    pub template: Template,
    pub body: BodyRule,
    /// `response_body`: the answer is this field of the response instead of the whole message.
    pub response_body: Option<FieldDescriptor>,
    pub rpc: MethodDescriptor,
}

impl Route {
    /// The gRPC path the route calls: `/package.Service/Method`.
    pub fn grpc_path(&self) -> String {
        format!("/{}/{}", self.rpc.parent_service().full_name(), self.rpc.name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{rpc}: {source}")]
    Template { rpc: String, source: crate::api::http::rest::template::TemplateError },
    #[error("{rpc}: {why}")]
    Invalid { rpc: String, why: String },
}

/// What a request's method and path found.
pub enum Lookup<'a> {
    Found(&'a Route, Vec<(String, String)>),
    /// The path is known, but not with this method: the methods it has.
    WrongMethod(Vec<Method>),
    NotFound,
}

/// Every rule of the unary RPCs in the pool, most specific template first.
#[derive(Debug, Clone)]
pub struct Routes {
    routes: Vec<Route>,
}

impl Routes {
    pub fn from_pool(pool: &DescriptorPool) -> Result<Routes, RuleError> {
        let mut routes = Vec::new();
        if let Some(http) = pool.get_extension_by_name("google.api.http") {
            for service in pool.services() {
                for rpc in service.methods() {
                    if rpc.is_client_streaming() || rpc.is_server_streaming() {
                        continue;
                    }
                    let options = rpc.options();
                    if !options.has_extension(&http) {
                        continue;
                    }
                    if let Value::Message(rule) = options.get_extension(&http).as_ref() {
                        add_rule(&mut routes, &rpc, rule, true)?;
                    }
                }
            }
        }
        // Stable: among equally specific templates the order of the descriptors stays.
        routes.sort_by_key(|r| std::cmp::Reverse(r.template.literal_count()));
        Ok(Routes { routes })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    /// Routes with a custom verb are tried first, and if one's path matches, the others are not: `GET
    /// /keys/7:roll` is the roll route with the wrong method, not a read of the key called `7:roll`.
    pub fn lookup(&self, method: &Method, path: &str) -> Lookup<'_> {
        let mut allowed = Vec::new();
        for with_verb in [true, false] {
            for route in self.routes.iter().filter(|r| r.template.verb.is_some() == with_verb) {
                if let Some(values) = route.template.matches(path) {
                    if route.http_method == *method {
                        return Lookup::Found(route, values);
                    }
                    if !allowed.contains(&route.http_method) {
                        allowed.push(route.http_method.clone());
                    }
                }
            }
            if !allowed.is_empty() {
                return Lookup::WrongMethod(allowed);
            }
        }
        Lookup::NotFound
    }
}

fn add_rule(
    routes: &mut Vec<Route>,
    rpc: &MethodDescriptor,
    rule: &DynamicMessage,
    top: bool,
) -> Result<(), RuleError> {
    let invalid = |why: String| RuleError::Invalid { rpc: rpc.full_name().to_owned(), why };
    let text = |name: &str| match rule.get_field_by_name(name).as_deref() {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    let mut binding = None;
    for (name, method) in [
        ("get", Method::GET),
        ("put", Method::PUT),
        ("post", Method::POST),
        ("delete", Method::DELETE),
        ("patch", Method::PATCH),
    ] {
        if let Some(path) = text(name) {
            binding = Some((method, path));
        }
    }
    if binding.is_none()
        && let Some(Value::Message(custom)) = rule.get_field_by_name("custom").as_deref()
    {
        let kind = custom.get_field_by_name("kind").and_then(|v| v.as_str().map(str::to_owned));
        let path = custom.get_field_by_name("path").and_then(|v| v.as_str().map(str::to_owned));
        if let (Some(kind), Some(path)) = (kind, path) {
            let method =
                Method::from_bytes(kind.as_bytes()).map_err(|e| invalid(format!("custom kind: {e}")))?;
            binding = Some((method, path));
        }
    }
    if let Some((http_method, path)) = binding {
        let template = Template::parse(&path)
            .map_err(|source| RuleError::Template { rpc: rpc.full_name().to_owned(), source })?;
        let input = rpc.input();
        for variable in &template.variables {
            crate::api::http::rest::transcode::resolve(&input, &variable.field_path)
                .map_err(|why| invalid(format!("path variable {}: {why}", variable.field_path)))?;
        }
        let body = match text("body").as_deref() {
            None => BodyRule::None,
            Some("*") => BodyRule::Whole,
            Some(field) => BodyRule::Field(
                input
                    .get_field_by_name(field)
                    .ok_or_else(|| invalid(format!("body field {field} is unknown")))?,
            ),
        };
        let response_body = match text("response_body") {
            None => None,
            Some(field) => Some(
                rpc.output()
                    .get_field_by_name(&field)
                    .ok_or_else(|| invalid(format!("response_body field {field} is unknown")))?,
            ),
        };
        routes.push(Route { http_method, template, body, response_body, rpc: rpc.clone() });
    }
    // Bindings of bindings are not allowed by the rule's own definition.
    if top && let Some(Value::List(more)) = rule.get_field_by_name("additional_bindings").as_deref() {
        for binding in more {
            if let Value::Message(binding) = binding {
                add_rule(routes, rpc, binding, false)?;
            }
        }
    }
    Ok(())
}

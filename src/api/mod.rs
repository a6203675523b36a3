//! The transport: gRPC, gRPC-Web, reflection, JSON/REST, Envoy's ext_authz and the OAuth HTTP endpoints on one
//! port, in clear or over TLS. Decodes
//! requests, authenticates, picks the organization, calls one use case, and maps its answer (errors in exactly one
//! place: `error.rs`).

pub mod error;
pub mod grpc;
pub mod http;
pub mod net;
pub mod server;
mod telemetry;

/// The code generated from proto/.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/keymint_protos.rs"));

    /// The encoded descriptors of every keymint proto and its imports, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/keymint_descriptor.bin"));
}

/// Checks the ID fields of a request: each non-empty and at most 200 characters.
fn validate_ids(fields: &[(&str, &str)]) -> Result<(), tonic::Status> {
    let mut violations = crate::domain::validate::Violations::new();
    for (field, value) in fields {
        violations.id(field, value);
    }
    violations.into_result().map_err(|e| error::status(e.into()))
}

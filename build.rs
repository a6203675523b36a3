//! Compiles the contracts in proto/ with protox (pure Rust: no protoc on the machine), generates the tonic code,
//! writes the encoded descriptor set that server reflection serves, and lists which messages need a count limit
//! written by hand (src/api/limits.rs).

use std::{
    collections::{HashMap, HashSet},
    env, fs,
    path::PathBuf,
};

use heck::ToUpperCamelCase;
use tonic_prost_build::FileDescriptorSet;

const PROTOS: &[&str] = &[
    "keymint/v1/object.proto",
    "keymint/admin/v1/admin.proto",
    "keymint/management/v1/management.proto",
    "keymint/apikeys/v1/apikeys.proto",
    // Envoy's external authorization API, which keymint serves.
    "envoy/service/auth/v3/external_auth.proto",
    // The error details keymint sends: in the descriptor set, so that reflection clients and Envoy's JSON
    // transcoder decode them.
    "google/rpc/error_details.proto",
];

/// Messages whose generated Debug would print a secret.
const SECRET_MESSAGES: &[&str] = &[
    "keymint.apikeys.v1.CreateApiKeyResponse",
    "keymint.apikeys.v1.RollApiKeyResponse",
    "keymint.apikeys.v1.VerifyApiKeyRequest",
    "keymint.management.v1.AddAppKeyResponse",
    // Its public_key is public, unless a caller pastes a private key there by mistake (which is refused).
    "keymint.management.v1.AddAppKeyRequest",
    // The headers of a request Envoy asks about: its credential among them.
    "envoy.service.auth.v3.AttributeContext.HttpRequest",
];

/// `FieldDescriptorProto.label` and `.type` values (descriptor.proto).
const LABEL_REPEATED: i32 = 3;
const TYPE_MESSAGE: i32 = 11;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTOS)?;

    // Reflection serves the encoded set as protox wrote it, so options such as google.api.http survive.
    fs::write(out_dir.join("keymint_descriptor.bin"), compiler.encode_file_descriptor_set())?;
    let descriptors = compiler.file_descriptor_set();
    fs::write(out_dir.join("keymint_bounded.rs"), bounded_impls(&descriptors))?;

    tonic_prost_build::configure()
        // Messages that carry a secret or a private key get a redacting Debug by hand (src/api/redact.rs).
        .skip_debug(SECRET_MESSAGES)
        // Decode errors answer INVALID_ARGUMENT, and request counts are checked before a message is decoded.
        .codec_path("crate::api::grpc::codec::KeymintCodec")
        .build_client(true)
        .build_server(true)
        .include_file("keymint_protos.rs")
        .compile_fds(descriptors)?;
    Ok(())
}

/// `impl Bounded for T {}` for every keymint message that is not a request with a repeated field or map: those
/// must have their limits written by hand, and the build fails until they are, since the codec requires the
/// trait of every message it decodes.
fn bounded_impls(set: &FileDescriptorSet) -> String {
    // Every message by full name (".pkg.Name"), with the message types its fields use and whether one repeats.
    let mut messages: HashMap<String, (bool, Vec<String>)> = HashMap::new();
    let mut keymint: Vec<(String, String)> = Vec::new();
    let mut inputs: HashSet<String> = HashSet::new();
    for file in &set.file {
        let package = file.package.clone().unwrap_or_default();
        for message in &file.message_type {
            let name = message.name.clone().unwrap_or_default();
            let mut repeated = false;
            let mut uses = Vec::new();
            // Map entries are nested messages; their fields count as the map's.
            for field in message.field.iter().chain(message.nested_type.iter().flat_map(|n| n.field.iter())) {
                repeated |= field.label == Some(LABEL_REPEATED);
                if field.r#type == Some(TYPE_MESSAGE) {
                    uses.push(field.type_name.clone().unwrap_or_default());
                }
            }
            messages.insert(format!(".{package}.{name}"), (repeated, uses));
            if package.starts_with("keymint.") {
                keymint.push((package.clone(), name));
            }
        }
        if package.starts_with("keymint.") {
            for service in &file.service {
                inputs.extend(service.method.iter().filter_map(|m| m.input_type.clone()));
            }
        }
    }
    let mut by_hand = HashSet::new();
    for input in &inputs {
        // Whether the request, or a message inside it, holds a repeated field or a map.
        let mut stack = vec![input.clone()];
        let mut seen = HashSet::new();
        while let Some(name) = stack.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            if let Some((repeated, uses)) = messages.get(&name) {
                if *repeated {
                    by_hand.insert(input.clone());
                    break;
                }
                stack.extend(uses.iter().cloned());
            }
        }
    }
    let mut out = String::from(
        "// Generated by build.rs: the messages without a repeated field or map in a request.\n",
    );
    keymint.sort();
    for (package, name) in keymint {
        if by_hand.contains(&format!(".{package}.{name}")) {
            continue;
        }
        let module = package.replace('.', "::");
        out.push_str(&format!(
            "impl Bounded for crate::api::pb::{module}::{} {{}}\n",
            name.to_upper_camel_case()
        ));
    }
    out
}

//! Compiles the contracts in proto/ with protox (pure Rust: no protoc on the machine), generates the tonic code,
//! and writes the encoded descriptor set that server reflection serves.

use std::{env, fs, path::PathBuf};

const PROTOS: &[&str] = &[
    "keymint/v1/object.proto",
    "keymint/admin/v1/admin.proto",
    "keymint/management/v1/management.proto",
    "keymint/apikeys/v1/apikeys.proto",
];

/// Messages whose generated Debug would print a secret.
const SECRET_MESSAGES: &[&str] = &[
    "keymint.apikeys.v1.CreateApiKeyResponse",
    "keymint.apikeys.v1.RollApiKeyResponse",
    "keymint.apikeys.v1.VerifyApiKeyRequest",
    "keymint.management.v1.AddAppKeyResponse",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTOS)?;

    // Reflection serves the encoded set as protox wrote it, so options such as google.api.http survive.
    fs::write(out_dir.join("keymint_descriptor.bin"), compiler.encode_file_descriptor_set())?;

    tonic_prost_build::configure()
        // Messages that carry a secret or a private key get a redacting Debug by hand (src/api/redact.rs).
        .skip_debug(SECRET_MESSAGES)
        .build_client(true)
        .build_server(true)
        .include_file("keymint_protos.rs")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}

//! TLS settings of the port: the certificate chain, its private key and the optional client CA, read from PEM
//! files into a rustls server configuration (aws-lc-rs, ALPN h2 and http/1.1), and read again on reload. A reload
//! swaps the configuration that new handshakes take; connections already open keep the one they were made with,
//! and a reload that fails leaves the current configuration in place.

use std::{
    fmt, io,
    path::{Path, PathBuf},
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use rustls::{
    RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};

/// The PEM files TLS is served from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    /// Its private key: PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`).
    pub key: PathBuf,
    /// CA certificates that client certificates must chain to; None: clients present none.
    pub client_ca: Option<PathBuf>,
}

/// Why TLS files could not be used. The messages name files and say what is wrong with them, never their
/// contents: PEM errors are described here rather than printed, as their text can quote the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {role} {path}: {source}")]
    Read { role: Role, path: PathBuf, source: io::Error },
    #[error("the TLS {role} {path} is not usable PEM: {problem}")]
    Pem { role: Role, path: PathBuf, problem: &'static str },
    #[error("the TLS {role} {path} holds no {expected}")]
    Empty { role: Role, path: PathBuf, expected: &'static str },
    #[error("the TLS client CA {path} holds {ignored} certificate(s) that cannot be trust anchors")]
    BadClientCa { path: PathBuf, ignored: usize },
    #[error("the TLS certificate {cert} and key {key} cannot be used together: {reason}")]
    Certificate { cert: PathBuf, key: PathBuf, reason: String },
    #[error("the TLS client CA {path} cannot verify clients: {reason}")]
    ClientVerifier { path: PathBuf, reason: String },
}

/// Which of the files an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Certificate,
    Key,
    ClientCa,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Certificate => "certificate",
            Role::Key => "key",
            Role::ClientCa => "client CA",
        })
    }
}

/// The TLS configuration new handshakes use, and the files it is read from.
pub struct TlsCertificates {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
    counts: TlsCounts,
}

/// What the TLS side has done, for `/metrics`: a failed reload (a renewal gone wrong) and refused handshakes (a
/// client without the right certificate, or plain HTTP to the TLS port) are otherwise only in the log.
#[derive(Debug, Default)]
pub struct TlsCounts {
    pub handshakes_completed: AtomicU64,
    pub handshakes_failed: AtomicU64,
    pub handshakes_timed_out: AtomicU64,
    pub reloads_succeeded: AtomicU64,
    pub reloads_failed: AtomicU64,
}

impl TlsCounts {
    /// (label value, count) per handshake result, and per reload result.
    pub fn handshakes(&self) -> [(&'static str, u64); 3] {
        [
            ("completed", self.handshakes_completed.load(Ordering::Relaxed)),
            ("failed", self.handshakes_failed.load(Ordering::Relaxed)),
            ("timed_out", self.handshakes_timed_out.load(Ordering::Relaxed)),
        ]
    }

    pub fn reloads(&self) -> [(&'static str, u64); 2] {
        [
            ("succeeded", self.reloads_succeeded.load(Ordering::Relaxed)),
            ("failed", self.reloads_failed.load(Ordering::Relaxed)),
        ]
    }
}

impl fmt::Debug for TlsCertificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsCertificates").field("files", &self.files).finish_non_exhaustive()
    }
}

impl TlsCertificates {
    /// Reads the files; an error says which one is wrong and how.
    pub fn load(files: TlsFiles) -> Result<TlsCertificates, TlsError> {
        let config = server_config(&files)?;
        Ok(TlsCertificates { files, current: RwLock::new(Arc::new(config)), counts: TlsCounts::default() })
    }

    /// Reads the files again. New handshakes use what they hold from now on; on an error nothing changes.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = match server_config(&self.files) {
            Ok(config) => Arc::new(config),
            Err(error) => {
                self.counts.reloads_failed.fetch_add(1, Ordering::Relaxed);
                return Err(error);
            }
        };
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = config;
        self.counts.reloads_succeeded.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    pub fn counts(&self) -> &TlsCounts {
        &self.counts
    }

    /// The configuration for the next handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}

fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = certificates(&files.cert, Role::Certificate)?;
    let key = private_key(&files.key)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| certificate_error(files, e))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => builder.with_client_cert_verifier(client_verifier(path, provider)?),
    };
    // rustls checks here that the key is the one of the chain's first certificate.
    let mut config = builder.with_single_cert(chain, key).map_err(|e| certificate_error(files, e))?;
    // gRPC needs HTTP/2; gRPC-Web from browsers, curl and the JSON routes may come over HTTP/1.1.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn certificate_error(files: &TlsFiles, error: rustls::Error) -> TlsError {
    TlsError::Certificate { cert: files.cert.clone(), key: files.key.clone(), reason: error.to_string() }
}

fn client_verifier(
    path: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    let (_, ignored) = roots.add_parsable_certificates(certificates(path, Role::ClientCa)?);
    if ignored > 0 {
        return Err(TlsError::BadClientCa { path: path.to_path_buf(), ignored });
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| TlsError::ClientVerifier { path: path.to_path_buf(), reason: e.to_string() })
}

fn certificates(path: &Path, role: Role) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path, role)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, role, &e))?;
    if chain.is_empty() {
        return Err(TlsError::Empty { role, path: path.to_path_buf(), expected: "CERTIFICATE block" });
    }
    Ok(chain)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    // The file's bytes are the private key too: wiped when parsed.
    let pem = zeroize::Zeroizing::new(read(path, Role::Key)?);
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            role: Role::Key,
            path: path.to_path_buf(),
            expected: "private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block)",
        },
        e => pem_error(path, Role::Key, &e),
    })
}

fn read(path: &Path, role: Role) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { role, path: path.to_path_buf(), source })
}

fn pem_error(path: &Path, role: Role, error: &rustls::pki_types::pem::Error) -> TlsError {
    use rustls::pki_types::pem::Error;
    let problem = match error {
        Error::MissingSectionEnd { .. } => "a block has no END line",
        Error::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        Error::Base64Decode(_) => "a block's base64 is invalid",
        Error::SectionTooLarge => "a block is too large",
        Error::NoItemsFound => "it holds nothing of the expected kind",
        _ => "it cannot be parsed",
    };
    TlsError::Pem { role, path: path.to_path_buf(), problem }
}

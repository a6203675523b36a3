//! tls: what TLS on the port costs, against h2c in the same run. The health RPC over open connections, one call at
//! a time and at `--concurrency` in flight; then new connections that each make one call (TCP connect, full TLS
//! handshake without resumption, HTTP/2 handshake, health), one at a time and at `--concurrency` at once, with an
//! ECDSA P-256 and then an RSA-2048 certificate (switched by a reload). Certificates come from the `openssl`
//! command. Client sockets close with a reset (SO_LINGER 0) so that the connection scenarios leave no TIME_WAIT
//! sockets to run out of ports with; h2c and TLS connect the same way.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::Duration,
};

use hyper_util::rt::TokioIo;
use keymint::{
    app::{self, Running},
    config::{Config, TlsArgs},
};
use rustls::{
    ClientConfig, RootCertStore,
    client::Resumption,
    pki_types::{CertificateDer, ServerName, pem::PemObject},
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::{Args, BenchResult, Figures, health, load, named};

/// The health RPC over h2c (`channels`, to `running`) and over TLS (a second server in this process, same
/// settings); then connections made for one call each.
pub(super) async fn run(
    running: &Running,
    config: &Config,
    channels: &[Channel],
    args: &Args,
    dir: &Path,
) -> BenchResult<Vec<Figures>> {
    let pki = Pki::create(&dir.join("tls-certificates"))?;
    let tls_config = Config {
        data_dir: dir.join("tls"),
        node_id: Some(4),
        tls: TlsArgs { cert: Some(pki.live_cert.clone()), key: Some(pki.live_key.clone()), client_ca: None },
        ..config.clone()
    };
    std::fs::create_dir_all(&tls_config.data_dir)?;
    let tls_server = app::start(&tls_config).await?;
    let client = pki.client_config()?;
    let mut tls_channels = Vec::new();
    for _ in 0..channels.len() {
        tls_channels.push(tls_channel(tls_server.addr, client.clone()).await?);
    }
    let seconds = Duration::from_secs(args.seconds);
    let mut all = Vec::new();

    for level in [1, args.concurrency] {
        let lane = if level == 1 { 1 } else { channels.len() };
        let h2c = named("tls-health-h2c", health(&channels[..lane], level, seconds).await);
        h2c.print();
        let tls = compared("tls-health-tls", health(&tls_channels[..lane], level, seconds).await, &h2c);
        tls.print();
        all.extend([h2c, tls]);
    }

    let plain = running.addr;
    for (certificate, tls_name) in
        [("ecdsa-p256", "tls-connect-call-p256"), ("rsa-2048", "tls-connect-call-rsa2048")]
    {
        pki.make_live(certificate)?;
        tls_server.reload_tls().await?;
        for level in [1, args.concurrency] {
            let h2c = connect_and_call("tls-connect-call-h2c", level, seconds, move || async move {
                h2c_channel(plain).await
            })
            .await;
            h2c.print();
            let (addr, client) = (tls_server.addr, client.clone());
            let tls = connect_and_call(tls_name, level, seconds, move || {
                let client = client.clone();
                async move { tls_channel(addr, client).await }
            })
            .await;
            let tls = compared(tls_name, tls, &h2c);
            tls.print();
            all.extend([h2c, tls]);
        }
    }
    drop(tls_channels);
    tls_server.shutdown().await?;
    Ok(all)
}

/// `figures` with its throughput ratio to `baseline` and the latency it adds at the median.
fn compared(name: &'static str, mut figures: Figures, baseline: &Figures) -> Figures {
    figures.name = name;
    figures.extra.insert("ratio_to_h2c", figures.per_second() / baseline.per_second());
    figures.extra.insert("p50_added_ms", figures.percentile_ms(50.0) - baseline.percentile_ms(50.0));
    figures
}

/// New connections that make one health call each, `level` at once: per second, and each one's latency.
async fn connect_and_call<F, Fut>(name: &'static str, level: usize, duration: Duration, connect: F) -> Figures
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = BenchResult<Channel>> + Send,
{
    let connect = Arc::new(connect);
    load(name, level, duration, move |_, _| {
        let connect = connect.clone();
        async move {
            let Ok(channel) = connect().await else { return false };
            HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await.is_ok()
        }
    })
    .await
}

async fn tcp(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
    Ok(stream)
}

async fn h2c_channel(addr: SocketAddr) -> BenchResult<Channel> {
    let connector = tower::service_fn(move |_: http::Uri| async move { tcp(addr).await.map(TokioIo::new) });
    Ok(Endpoint::from_shared(format!("http://{addr}"))?.connect_with_connector(connector).await?)
}

async fn tls_channel(addr: SocketAddr, client: Arc<ClientConfig>) -> BenchResult<Channel> {
    let connector = tower::service_fn(move |_: http::Uri| {
        let connector = TlsConnector::from(client.clone());
        async move {
            let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
            connector.connect(name, tcp(addr).await?).await.map(TokioIo::new)
        }
    });
    Ok(Endpoint::from_shared(format!("https://localhost:{}", addr.port()))?
        .connect_with_connector(connector)
        .await?)
}

/// A CA and two server certificates for localhost (ECDSA P-256 and RSA-2048), and the files the server reads.
struct Pki {
    dir: PathBuf,
    live_cert: PathBuf,
    live_key: PathBuf,
}

const OPENSSL_CONFIG: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = keymint-bench
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost
";

impl Pki {
    fn create(dir: &Path) -> BenchResult<Pki> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("openssl.cnf"), OPENSSL_CONFIG)?;
        let pki =
            Pki { dir: dir.to_path_buf(), live_cert: dir.join("live.pem"), live_key: dir.join("live.key") };
        let p256 = ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out"];
        pki.openssl(&[&p256[..], &["ca.key"]].concat())?;
        pki.openssl(&[
            "req",
            "-x509",
            "-config",
            "openssl.cnf",
            "-extensions",
            "ca",
            "-key",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
        ])?;
        pki.openssl(&[&p256[..], &["ecdsa-p256.key"]].concat())?;
        pki.openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "rsa-2048.key",
        ])?;
        for (serial, name) in [("1", "ecdsa-p256"), ("2", "rsa-2048")] {
            let (key, csr, cert) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
            pki.openssl(&["req", "-new", "-config", "openssl.cnf", "-key", &key, "-out", &csr])?;
            pki.openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                serial,
                "-days",
                "1",
                "-extfile",
                "openssl.cnf",
                "-extensions",
                "server",
                "-out",
                &cert,
            ])?;
        }
        pki.make_live("ecdsa-p256")?;
        Ok(pki)
    }

    fn openssl(&self, args: &[&str]) -> BenchResult<()> {
        let output = Command::new("openssl").args(args).current_dir(&self.dir).output()?;
        if !output.status.success() {
            return Err(format!("openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr)).into());
        }
        Ok(())
    }

    fn make_live(&self, name: &str) -> BenchResult<()> {
        std::fs::copy(self.dir.join(format!("{name}.pem")), &self.live_cert)?;
        std::fs::copy(self.dir.join(format!("{name}.key")), &self.live_key)?;
        Ok(())
    }

    /// Trusts the CA; offers h2; never resumes, so that every connection makes a full handshake.
    fn client_config(&self) -> BenchResult<Arc<ClientConfig>> {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(self.dir.join("ca.pem"))?)?;
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        config.resumption = Resumption::disabled();
        Ok(Arc::new(config))
    }
}

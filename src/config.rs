//! Settings: each a flag and a KEYMINT_* environment variable. Secrets are redacted in Debug output.

use std::{ffi::OsString, fmt, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Arg, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::{
    api::{net::tls::TlsFiles, server::Limits},
    crypto::{keygen::RsaBits, pool::PoolConfig},
    domain::{cidr::Cidr, client_address::TrustedProxies},
};

/// The command line: the subcommand, and the settings given before it, after it, or in KEYMINT_* variables.
#[derive(Debug)]
pub struct Cli {
    pub command: Option<Command>,
    pub config: Config,
}

/// What clap reads: plain `keymint [settings]` serves, so every setting is accepted before a subcommand.
#[derive(Parser)]
#[command(
    name = "keymint",
    version,
    about = "Issues application keys (RSA, EC P-256, Ed25519) and API keys over gRPC, gRPC-Web and JSON, and \
             serves OAuth 2.0 (JWT bearer grant, private_key_jwt, introspection, revocation)"
)]
struct Line {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

/// The settings each subcommand reads (by their ids, the field names of `Config`), listed after it in its
/// `--help`; `serve` reads every one.
const STORE_SETTINGS: &[&str] = &["data_dir", "database_url", "log_format"];
const SIGNING_SETTINGS: &[&str] = &["data_dir", "database_url", "master_key", "node_id", "log_format"];

/// The subcommands that take settings: the path to each, and which settings it reads (None: all).
const TAKING_SETTINGS: &[(&[&str], Option<&[&str]>)] = &[
    (&["serve"], None),
    (&["migrate"], Some(STORE_SETTINGS)),
    (&["projections", "rebuild"], Some(STORE_SETTINGS)),
    (&["backup"], Some(STORE_SETTINGS)),
    (&["signing-keys", "rotate"], Some(SIGNING_SETTINGS)),
];

impl Cli {
    /// The command line of this process; prints help, the version or a usage error and exits as clap does.
    pub fn parse() -> Cli {
        Cli::parse_from(std::env::args_os())
    }

    pub fn parse_from<I, T>(args: I) -> Cli
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        Cli::try_parse_from(args).unwrap_or_else(|e| e.exit())
    }

    /// Settings given after the subcommand win over the same ones given before it; those before it, the
    /// KEYMINT_* variables and the defaults fill in the rest.
    pub fn try_parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let matches = Cli::command().try_get_matches_from(&args)?;
        let Line { command, mut config } = Line::from_arg_matches(&matches)?;
        // Read again by a command whose subcommands' settings have no defaults and no variables, so that only
        // the settings actually written after the subcommand are present there.
        let given = with_subcommand_settings(Line::command(), true).try_get_matches_from(&args)?;
        let mut leaf = &given;
        while let Some((_, inner)) = leaf.subcommand() {
            leaf = inner;
        }
        if !std::ptr::eq(leaf, &given) {
            config.update_from_arg_matches(leaf)?;
        }
        Ok(Cli { command, config })
    }

    /// The command with each subcommand's settings, as `--help` shows it.
    pub fn command() -> clap::Command {
        with_subcommand_settings(Line::command(), false)
    }
}

/// Adds to each subcommand the settings it reads. `bare`: without defaults and variables (see `try_parse_from`);
/// then every subcommand takes every setting, as the first parse has already refused the ones it does not read.
fn with_subcommand_settings(command: clap::Command, bare: bool) -> clap::Command {
    let settings: Vec<Arg> =
        Config::augment_args(clap::Command::new("settings")).get_arguments().cloned().collect();
    let mut command = command;
    for (path, reads) in TAKING_SETTINGS {
        let chosen: Vec<Arg> = settings
            .iter()
            .filter(|arg| bare || reads.is_none_or(|ids| ids.contains(&arg.get_id().as_str())))
            .map(|arg| if bare { arg.clone().default_value(None).env(None) } else { arg.clone() })
            .collect();
        command = add_to(command, path, chosen);
    }
    command
}

fn add_to(command: clap::Command, path: &[&str], args: Vec<Arg>) -> clap::Command {
    match path {
        [] => command.args(args),
        [first, rest @ ..] => command.mut_subcommand(*first, |sub| add_to(sub, rest, args)),
    }
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Serve the API (the default): gRPC, gRPC-Web, JSON, OAuth 2.0 and Envoy ext_authz on one port. Every
    /// setting may come before or after `serve`.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Maintain the read models.
    Projections {
        #[command(subcommand)]
        action: ProjectionsAction,
    },
    /// Copy the SQLite database into a new file while keymint keeps serving (`VACUUM INTO`), and check the copy.
    /// The master key (<data dir>/master.key or KEYMINT_MASTER_KEY) is not in it: keep it, apart, too.
    Backup {
        /// The file to write; it must not exist yet (or be empty).
        to: PathBuf,
    },
    /// Maintain keymint's token-signing keys.
    SigningKeys {
        #[command(subcommand)]
        action: SigningKeysAction,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum SigningKeysAction {
    /// Add a new signing key, which signs from now on; the previous one stays in the JWKS until the tokens it
    /// signed have expired. Running servers pick it up at once on PostgreSQL, within a minute on SQLite.
    Rotate,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ProjectionsAction {
    /// Empty the read models and replay every event into them.
    Rebuild,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

// Each setting may come before the subcommand, and after it when the subcommand reads it (`TAKING_SETTINGS`).
#[derive(Clone, Args)]
pub struct Config {
    /// Address and port to listen on; port 0 picks a free one (the log says which).
    #[arg(long, env = "KEYMINT_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Directory for the SQLite database, the master key file (SQLite only) and the first admin token.
    #[arg(long, env = "KEYMINT_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// A postgres://… URL switches to PostgreSQL; a sqlite:… URL picks another SQLite file.
    #[arg(long, env = "KEYMINT_DATABASE_URL")]
    pub database_url: Option<String>,
    /// How log lines are written (to standard output): pretty, for people, or json, one object per line for log
    /// collectors. KEYMINT_LOG sets the level and filters (e.g. `debug`, `info,keymint=debug`).
    #[arg(long, env = "KEYMINT_LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,
    /// This process's node number (0-1023) in IDs; give every process sharing a database its own. Random if unset.
    #[arg(long, env = "KEYMINT_NODE_ID", value_parser = clap::value_parser!(u16).range(0..=1023))]
    pub node_id: Option<u16>,
    /// Largest request message in bytes.
    #[arg(long, env = "KEYMINT_MAX_MESSAGE_BYTES", default_value_t = 1024 * 1024)]
    pub max_message_bytes: usize,
    /// Longest time a call may run, in seconds.
    #[arg(long, env = "KEYMINT_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,
    /// RSA key sizes this server issues (2048, 3072, 4096), comma-separated; each gets its own key pool.
    #[arg(long, env = "KEYMINT_KEY_SIZES", value_delimiter = ',', default_value = "2048", value_parser = parse_bits)]
    pub key_sizes: Vec<RsaBits>,
    /// The size a request that names none gets; must be one of --key-sizes.
    #[arg(long, env = "KEYMINT_DEFAULT_KEY_SIZE", default_value = "2048", value_parser = parse_bits)]
    pub default_key_size: RsaBits,
    /// Ready key pairs kept per size.
    #[arg(long, env = "KEYMINT_KEY_POOL_SIZE", default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    pub key_pool_size: u16,
    /// Threads generating keys per size; default: the number of cores.
    #[arg(long, env = "KEYMINT_KEY_POOL_WORKERS", value_parser = clap::value_parser!(u16).range(1..))]
    pub key_pool_workers: Option<u16>,
    /// How often API key usage counted in memory is written to the store, in milliseconds (and on shutdown).
    #[arg(long, env = "KEYMINT_USAGE_FLUSH_MS", default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(10..))]
    pub usage_flush_ms: u64,
    /// Entries each in-memory cache holds: API keys by secret, the meters of recently verified keys, application
    /// keys. The least recently used beyond it are evicted (a meter only once its usage is written).
    #[arg(long, env = "KEYMINT_CACHE_CAPACITY", default_value_t = crate::service::DEFAULT_CACHE_CAPACITY, value_parser = parse_capacity)]
    pub cache_capacity: usize,
    /// The instance-admin token to create on first start (instead of generating one), or to add later.
    #[arg(long, env = "KEYMINT_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// The public base URL of the OAuth endpoints (`iss` of tokens); default http://<listen address>.
    #[arg(long, env = "KEYMINT_ISSUER")]
    pub issuer: Option<String>,
    /// Lifetime of access tokens: a number with s, m, h or d (e.g. 15m, 1h).
    #[arg(long, env = "KEYMINT_ACCESS_TOKEN_TTL", default_value = "1h", value_parser = parse_duration)]
    pub access_token_ttl: Duration,
    /// How old the token-signing key may get before it is rotated (s, m, h or d).
    #[arg(long, env = "KEYMINT_SIGNING_KEY_ROTATION", default_value = "30d", value_parser = parse_duration)]
    pub signing_key_rotation: Duration,
    /// Networks of the proxies in front of keymint (CIDRs or addresses, comma-separated), e.g. Envoy's. For a
    /// request from one of them, the client is the right-most address in x-forwarded-for that is not a trusted
    /// proxy: API-key network rules, ext_authz and the logs see that address. Others' x-forwarded-for is ignored.
    #[arg(long, env = "KEYMINT_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_cidr)]
    pub trusted_proxies: Vec<Cidr>,
    /// The key (32 bytes, base64) that seals the signing keys in the store. Required with PostgreSQL; with
    /// SQLite, generated into <data dir>/master.key on the first start when not given.
    #[arg(long, env = "KEYMINT_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,
    /// Serve Prometheus metrics at /metrics, without a credential (as scrapers expect): keep the port internal,
    /// or turn this off (`--metrics false`), which also stops the per-call recording.
    #[arg(long, env = "KEYMINT_METRICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub metrics: bool,
    /// On SIGTERM or Ctrl-C, how long /ready answers 503 (and health NOT_SERVING) while calls are still served,
    /// before the listener closes, so that load balancers stop sending calls first: 0, 500ms, 5s, 1m.
    #[arg(long, env = "KEYMINT_SHUTDOWN_DRAIN", default_value = "0s", value_parser = parse_drain)]
    pub shutdown_drain: Duration,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// TLS on the port: the files' paths (not secrets, so Debug shows them).
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// PEM certificate chain (the server's certificate first); with --tls-key the port speaks only TLS (ALPN h2
    /// and http/1.1). Read again on SIGHUP.
    #[arg(long = "tls-cert", env = "KEYMINT_TLS_CERT")]
    pub cert: Option<PathBuf>,
    /// PEM private key of the certificate: PKCS#8, PKCS#1 (RSA) or SEC1 (EC). Read again on SIGHUP.
    #[arg(long = "tls-key", env = "KEYMINT_TLS_KEY")]
    pub key: Option<PathBuf>,
    /// PEM CA certificates: clients must present a certificate that chains to one (mutual TLS). Read again on
    /// SIGHUP.
    #[arg(long = "tls-client-ca", env = "KEYMINT_TLS_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
}

impl Config {
    /// The key pools this configuration asks for; an error names a default size that is not issued.
    pub fn pool(&self) -> Result<PoolConfig, String> {
        if !self.key_sizes.contains(&self.default_key_size) {
            return Err(format!(
                "--default-key-size {} is not among --key-sizes",
                self.default_key_size.bits()
            ));
        }
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Ok(PoolConfig {
            sizes: self.key_sizes.clone(),
            default: self.default_key_size,
            depth: usize::from(self.key_pool_size),
            workers: self.key_pool_workers.map_or(cores, usize::from),
        })
    }

    /// Whether several processes may share the database (PostgreSQL).
    pub fn shared_database(&self) -> bool {
        self.database_url.as_deref().is_some_and(|url| url.starts_with("postgres"))
    }

    pub fn trusted_proxies(&self) -> TrustedProxies {
        TrustedProxies::new(self.trusted_proxies.clone())
    }

    /// The TLS files, or None for a port in clear; an error names the setting that is missing.
    pub fn tls_files(&self) -> Result<Option<TlsFiles>, String> {
        match (&self.tls.cert, &self.tls.key) {
            (Some(cert), Some(key)) => {
                Ok(Some(TlsFiles { cert: cert.clone(), key: key.clone(), client_ca: self.tls.client_ca.clone() }))
            }
            (Some(_), None) => Err("--tls-cert (KEYMINT_TLS_CERT) is set but --tls-key (KEYMINT_TLS_KEY) is not: \
                                    TLS needs both"
                .into()),
            (None, Some(_)) => Err("--tls-key (KEYMINT_TLS_KEY) is set but --tls-cert (KEYMINT_TLS_CERT) is not: \
                                    TLS needs both"
                .into()),
            (None, None) if self.tls.client_ca.is_some() => Err("--tls-client-ca (KEYMINT_TLS_CLIENT_CA) needs \
                                                                 --tls-cert and --tls-key: client certificates \
                                                                 are checked only over TLS"
                .into()),
            (None, None) => Ok(None),
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_message_bytes: self.max_message_bytes,
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            ..Limits::default()
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.database_url.as_deref().map(redact_password))
            .field("log_format", &self.log_format)
            .field("node_id", &self.node_id)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("request_timeout_secs", &self.request_timeout_secs)
            .field("key_sizes", &self.key_sizes)
            .field("default_key_size", &self.default_key_size)
            .field("key_pool_size", &self.key_pool_size)
            .field("key_pool_workers", &self.key_pool_workers)
            .field("usage_flush_ms", &self.usage_flush_ms)
            .field("cache_capacity", &self.cache_capacity)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<redacted>"))
            .field("issuer", &self.issuer)
            .field("access_token_ttl", &self.access_token_ttl)
            .field("signing_key_rotation", &self.signing_key_rotation)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("master_key", &self.master_key.as_ref().map(|_| "<redacted>"))
            .field("metrics", &self.metrics)
            .field("shutdown_drain", &self.shutdown_drain)
            .field("tls", &self.tls)
            .finish()
    }
}

fn parse_bits(value: &str) -> Result<RsaBits, String> {
    value
        .trim()
        .parse::<u32>()
        .ok()
        .and_then(RsaBits::from_bits)
        .ok_or_else(|| format!("{value:?} is not a key size keymint issues: use 2048, 3072 or 4096"))
}

fn parse_cidr(value: &str) -> Result<Cidr, String> {
    value.trim().parse::<Cidr>().map_err(|e| format!("{value:?}: {e}"))
}

fn parse_capacity(value: &str) -> Result<usize, String> {
    match value.trim().replace('_', "").parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{value:?} is not a capacity: give a number of entries, at least 1")),
    }
}

/// `90s`, `15m`, `1h`, `30d` (or bare seconds): at least a second.
fn parse_duration(value: &str) -> Result<Duration, String> {
    let value = value.trim();
    let (number, unit) = value.split_at(value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len()));
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{value:?}: use a number with s, m, h or d, e.g. 1h")),
    };
    match number.parse::<u64>().ok().and_then(|n| n.checked_mul(seconds)) {
        Some(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        _ => Err(format!("{value:?}: use a positive number with s, m, h or d, e.g. 1h")),
    }
}

/// A drain delay: `0`, milliseconds (`500ms`), or a number with s, m (at most an hour).
fn parse_drain(value: &str) -> Result<Duration, String> {
    let value = value.trim();
    let (number, unit) = value.split_at(value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len()));
    let millis = match unit {
        "" | "s" => 1_000,
        "ms" => 1,
        "m" => 60_000,
        _ => return Err(format!("{value:?}: use a number with ms, s or m, e.g. 5s")),
    };
    match number.parse::<u64>().ok().and_then(|n| n.checked_mul(millis)) {
        Some(ms) if ms <= 3_600_000 => Ok(Duration::from_millis(ms)),
        _ => Err(format!("{value:?}: use a number of at most an hour with ms, s or m, e.g. 5s")),
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    match rest.split_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_secrets() {
        let cli = Cli::parse_from([
            "keymint",
            "--database-url",
            "postgres://app:hunter2@db/keymint",
            "--admin-token",
            "super-secret-token-value-123",
            "--master-key",
            "bWFzdGVyLWtleS1tYXN0ZXIta2V5LW1hc3Rlci1rZXk=",
        ]);
        let printed = format!("{:?}", cli.config);
        assert!(!printed.contains("hunter2"));
        assert!(!printed.contains("super-secret"));
        assert!(!printed.contains("bWFzdGVy"));
        assert!(printed.contains("postgres://app:***@db/keymint"));
    }

    #[test]
    fn key_sizes_are_checked() {
        let cli = Cli::parse_from(["keymint", "--key-sizes", "2048,4096", "--default-key-size", "4096"]);
        assert_eq!(cli.config.pool().map(|p| p.default), Ok(RsaBits::Rsa4096));
        assert!(Cli::try_parse_from(["keymint", "--key-sizes", "1024"]).is_err());
        let cli = Cli::parse_from(["keymint", "--key-sizes", "3072"]);
        assert!(cli.config.pool().is_err(), "the default 2048 is not issued");
    }

    #[test]
    fn durations_take_a_unit() {
        let cli = Cli::parse_from(["keymint", "--access-token-ttl", "15m"]);
        assert_eq!(cli.config.access_token_ttl, Duration::from_secs(900));
        assert_eq!(Cli::parse_from(["keymint"]).config.access_token_ttl, Duration::from_secs(3600));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn settings_follow_the_subcommand_too() {
        let cli = Cli::parse_from(["keymint", "serve", "--listen", "127.0.0.1:0", "--data-dir", "/tmp/km"]);
        assert!(matches!(cli.command, Some(Command::Serve)));
        assert_eq!(cli.config.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(cli.config.data_dir, PathBuf::from("/tmp/km"));
        let cli = Cli::parse_from(["keymint", "--data-dir", "/tmp/km", "serve"]);
        assert_eq!(cli.config.data_dir, PathBuf::from("/tmp/km"));
        assert!(Cli::parse_from(["keymint"]).command.is_none(), "no subcommand serves");
        let mut command = Cli::command();
        command.build();
        let help = command.find_subcommand_mut("serve").map(|c| c.render_long_help().to_string());
        let help = help.unwrap_or_default();
        for flag in ["--listen", "--data-dir", "--database-url", "--trusted-proxies", "--master-key"] {
            assert!(help.contains(flag), "serve --help lists {flag}");
        }
    }

    #[test]
    fn settings_after_the_subcommand_win_and_each_subcommand_takes_only_its_own() {
        let cli = Cli::parse_from([
            "keymint",
            "--listen",
            "127.0.0.1:1",
            "--node-id",
            "7",
            "serve",
            "--listen",
            "127.0.0.1:2",
        ]);
        assert_eq!(cli.config.listen, "127.0.0.1:2".parse().unwrap(), "after the subcommand wins");
        assert_eq!(cli.config.node_id, Some(7), "before the subcommand stays when not given after it");
        let cli = Cli::parse_from(["keymint", "--data-dir", "/a", "migrate"]);
        assert!(matches!(cli.command, Some(Command::Migrate)));
        assert_eq!(cli.config.data_dir, PathBuf::from("/a"));
        let cli =
            Cli::parse_from(["keymint", "--data-dir", "/a", "projections", "rebuild", "--data-dir", "/b"]);
        assert_eq!(cli.config.data_dir, PathBuf::from("/b"));
        let cli = Cli::parse_from(["keymint", "backup", "/copy.db", "--database-url", "sqlite:/x.db"]);
        assert_eq!(cli.config.database_url.as_deref(), Some("sqlite:/x.db"));
        assert!(
            matches!(cli.command, Some(Command::Backup { to }) if to == std::path::Path::new("/copy.db"))
        );
        let cli =
            Cli::parse_from(["keymint", "signing-keys", "rotate", "--master-key", "k", "--node-id", "3"]);
        assert_eq!((cli.config.master_key.as_deref(), cli.config.node_id), (Some("k"), Some(3)));
        assert_eq!(cli.config.listen, "127.0.0.1:50051".parse().unwrap(), "the default");
        for refused in [
            &["keymint", "migrate", "--listen", "127.0.0.1:0"][..],
            &["keymint", "backup", "/copy.db", "--master-key", "k"],
            &["keymint", "projections", "rebuild", "--key-sizes", "2048"],
            &["keymint", "signing-keys", "rotate", "--trusted-proxies", "10.0.0.0/8"],
        ] {
            assert!(
                Cli::try_parse_from(refused).is_err(),
                "{refused:?} names a setting its subcommand does not read"
            );
        }
    }

    #[test]
    fn trusted_proxies_are_networks() {
        let cli = Cli::parse_from(["keymint", "--trusted-proxies", "10.0.0.0/8,127.0.0.1"]);
        let trusted = cli.config.trusted_proxies();
        assert!(trusted.trusts("10.2.3.4".parse().unwrap()));
        assert!(trusted.trusts("127.0.0.1".parse().unwrap()));
        assert!(!trusted.trusts("127.0.0.2".parse().unwrap()));
        assert!(Cli::parse_from(["keymint"]).config.trusted_proxies().is_empty());
        assert!(Cli::try_parse_from(["keymint", "--trusted-proxies", "10.0.0.1/8"]).is_err());
    }

    #[test]
    fn metrics_can_be_turned_off_and_the_drain_takes_milliseconds() {
        let defaults = Cli::parse_from(["keymint"]).config;
        assert!(defaults.metrics);
        assert_eq!(defaults.shutdown_drain, Duration::ZERO);
        let cli = Cli::parse_from(["keymint", "--metrics", "false", "--shutdown-drain", "250ms"]);
        assert!(!cli.config.metrics);
        assert_eq!(cli.config.shutdown_drain, Duration::from_millis(250));
        assert_eq!(parse_drain("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_drain("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_drain("2h").is_err());
        assert!(parse_drain("-1s").is_err());
        assert!(Cli::try_parse_from(["keymint", "--metrics", "maybe"]).is_err());
    }

    #[test]
    fn tls_needs_a_certificate_and_its_key() {
        let tls = |args: &[&str]| Cli::parse_from(["keymint"].iter().chain(args).copied()).config.tls_files();
        assert_eq!(tls(&[]), Ok(None));
        let both = tls(&["--tls-cert", "c.pem", "serve", "--tls-key", "k.pem", "--tls-client-ca", "ca.pem"]);
        let files = both.expect("both given").expect("TLS on");
        assert_eq!(
            (files.cert, files.key, files.client_ca),
            ("c.pem".into(), "k.pem".into(), Some("ca.pem".into()))
        );
        let error = tls(&["--tls-cert", "c.pem"]).expect_err("no key");
        assert!(error.contains("--tls-key (KEYMINT_TLS_KEY) is not"), "{error}");
        let error = tls(&["--tls-key", "k.pem"]).expect_err("no certificate");
        assert!(error.contains("--tls-cert (KEYMINT_TLS_CERT) is not"), "{error}");
        let error = tls(&["--tls-client-ca", "ca.pem"]).expect_err("client CA alone");
        assert!(error.contains("needs --tls-cert and --tls-key"), "{error}");
    }

    #[test]
    fn node_ids_are_bounded() {
        assert!(Cli::try_parse_from(["keymint", "--node-id", "1024"]).is_err());
        assert!(Cli::try_parse_from(["keymint", "--node-id", "1023"]).is_ok());
    }
}

//! The keymint command: `serve` (the default), `migrate`, `projections rebuild`, `signing-keys rotate`, `backup`.

use std::process::ExitCode;

use keymint::{
    app,
    config::{Cli, Command, LogFormat, ProjectionsAction, SigningKeysAction},
};
use tracing_subscriber::EnvFilter;

/// Cargo.toml says why.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.config.log_format);
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => app::run(&cli.config).await,
        Command::Migrate => app::open_store(&cli.config).await.map(|_| tracing::info!("migrations applied")),
        Command::Projections { action: ProjectionsAction::Rebuild } => rebuild(&cli.config).await,
        Command::Backup { to } => backup(&cli.config, &to).await,
        Command::SigningKeys { action: SigningKeysAction::Rotate } => app::rotate_signing_key(&cli.config)
            .await
            .map(|kid| tracing::info!(%kid, "rotated: this key signs from now on")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "keymint stopped with an error");
            ExitCode::FAILURE
        }
    }
}

async fn rebuild(config: &keymint::config::Config) -> Result<(), app::AppError> {
    let store = app::open_store(config).await?;
    let replayed = store.rebuild_projections().await?;
    tracing::info!(replayed, "rebuilt the read models from the events");
    Ok(())
}

async fn backup(config: &keymint::config::Config, to: &std::path::Path) -> Result<(), app::AppError> {
    let done = keymint::store::backup::backup(config.database_url.as_deref(), &config.data_dir, to).await?;
    tracing::info!(
        path = %done.path.display(),
        bytes = done.bytes,
        events = done.events,
        last_position = done.last_position,
        "backed up: the copy passed SQLite's integrity check"
    );
    Ok(())
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_env("KEYMINT_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

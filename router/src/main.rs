use clap::Parser;
use skiff_core::store::Store;
use skiff_router::RouterApp;
use skiff_router::config::RouterSettings;

/// Skiff router: /fn/<user>/<name>/... to the function's instance.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    settings: RouterSettings,
    #[command(flatten)]
    log: skiff_core::telemetry::LogArgs,
    /// Print which sandbox layers this host enforces for function instances, then exit
    #[arg(long)]
    check_sandbox: bool,
    /// Once listening, write the bound port to this file (for supervisors and tests)
    #[arg(long, env = "SKIFF_READY_FILE")]
    ready_file: Option<std::path::PathBuf>,
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let (url, cfg) = cli.settings.into_config()?;
    // The router reads the schema the manager owns; it never migrates.
    let store = Store::connect(url.expose(), 4).await?;
    let app = RouterApp::build(cfg, store).await?;
    let handle = app.handle();
    tracing::info!(port = app.port(), "skiff-router listening");
    match app.metrics_addr() {
        Some(addr) => tracing::info!(%addr, "metrics at http://{addr}/metrics"),
        None => tracing::info!("no metrics listener (SKIFF_METRICS_LISTEN=off)"),
    }
    if let Some(f) = &cli.ready_file {
        skiff_core::ready::announce(f, app.port())
            .map_err(|e| anyhow::anyhow!("writing the ready file {}: {e}", f.display()))?;
    }
    tokio::spawn(async move {
        skiff_core::signals::terminated().await;
        tracing::info!("stopping");
        handle.stop();
    });
    app.run_until_stopped().await
}

fn main() -> std::process::ExitCode {
    skiff_core::memory::bound_malloc_arenas();
    let cli = Cli::parse();
    skiff_core::telemetry::init(cli.log.log_format);
    if cli.check_sandbox {
        return match skiff_router::process::sandbox::check(&cli.settings.sandbox_config()) {
            Ok(text) => {
                print!("{text}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("skiff-router: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.settings.worker_threads())
        .enable_all()
        .build();
    let result = match runtime {
        Ok(rt) => rt.block_on(run(cli)),
        Err(e) => Err(anyhow::Error::from(e).context("starting the async runtime")),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("skiff-router: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

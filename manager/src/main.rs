use clap::{Parser, Subcommand};
use skiff_core::store::Store;
use skiff_manager::config::ManagerSettings;
use skiff_manager::startup::Application;
use skiff_manager::{secrets_cli, telemetry, users_cli};

/// Skiff manager: users, tokens and functions over HTTP.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    settings: ManagerSettings,
    #[command(flatten)]
    log: telemetry::LogArgs,
    #[command(subcommand)]
    command: Option<Command>,
    /// Print which sandbox layers this host enforces for deploy-time checks, then exit
    #[arg(long)]
    check_sandbox: bool,
    /// Once listening, write the bound port to this file (for supervisors and tests)
    #[arg(long, env = "SKIFF_READY_FILE")]
    ready_file: Option<std::path::PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default)
    Serve,
    /// Apply pending database migrations and exit
    Migrate,
    /// Manage users from the shell
    #[command(subcommand)]
    User(users_cli::UserCommand),
    /// Manage the key that seals function secrets
    #[command(subcommand)]
    Secrets(secrets_cli::SecretsCommand),
    /// Print the Kubernetes objects of one function version as YAML (no database or cluster needed)
    Render(skiff_manager::kube::render::RenderArgs),
    /// Run only the deploy-time checker, answering managers on a Unix socket (in Kubernetes: its
    /// own container of the manager's pod, another uid, none of the manager's secrets)
    Checker {
        /// The Unix socket to answer on; managers set SKIFF_CHECKER_SOCKET to it
        #[arg(long, env = "SKIFF_CHECKER_LISTEN")]
        listen: std::path::PathBuf,
    },
}

async fn store(settings: &ManagerSettings) -> anyhow::Result<Store> {
    let url = settings
        .database_url
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("SKIFF_DATABASE_URL is required"))?;
    let store = Store::connect(url.expose(), 2).await?;
    store.migrate().await?;
    Ok(store.with_quotas(settings.quotas.clone()))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if cli.check_sandbox {
        let sandbox =
            skiff_manager::typecheck::sandbox::CheckerSandbox::detect(&cli.settings.checker)?;
        print!("{}", sandbox.describe());
        return Ok(());
    }
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let config = cli.settings.into_config()?;
            let listen = config.listen;
            let app = Application::build(config).await?;
            tracing::info!(%listen, port = app.port(), "skiff-manager listening");
            if let Some(f) = &cli.ready_file {
                skiff_core::ready::announce(f, app.port())
                    .map_err(|e| anyhow::anyhow!("writing the ready file {}: {e}", f.display()))?;
            }
            app.run_until_stopped().await?;
        }
        Command::Migrate => {
            store(&cli.settings).await?;
            println!("migrations applied");
        }
        Command::Render(args) => {
            print!(
                "{}",
                skiff_manager::kube::render::run_with_policy(
                    &cli.settings.kubernetes,
                    &cli.settings.policy,
                    &args
                )?
            );
        }
        Command::Checker { listen } => {
            let s = &cli.settings;
            let deno = skiff_core::deno::locate(s.deno.as_deref())
                .await
                .map_err(|e| e.to_string());
            let checker = skiff_manager::typecheck::LocalChecker::relocating(
                deno,
                s.deno.clone(),
                &s.data_dir,
                &s.checker,
            )?;
            checker.prewarm();
            let listener = skiff_manager::typecheck::remote::bind(&listen)?;
            tracing::info!(socket = %listen.display(), "skiff-manager checker answering");
            let serving = checker.clone();
            tokio::select! {
                () = skiff_manager::typecheck::remote::serve(listener, serving, s.max_source_bytes.max(s.checker.archive.max_archive_bytes)) => {}
                () = skiff_core::signals::terminated() => tracing::info!("stopping"),
            }
            checker.shutdown().await;
            let _ = std::fs::remove_file(&listen);
        }
        Command::User(cmd) => {
            let store = store(&cli.settings).await?;
            println!("{}", users_cli::run(&store, cmd).await?);
        }
        Command::Secrets(cmd) => {
            let store = store(&cli.settings).await?;
            let old = cli.settings.secrets_key.as_ref();
            println!("{}", secrets_cli::run(&store, old, cmd).await?);
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    // Before any thread starts: it may start the process again.
    skiff_core::memory::bound_malloc_arenas();
    actix_web::rt::System::new().block_on(service_main())
}

async fn service_main() -> std::process::ExitCode {
    let cli = Cli::parse();
    telemetry::init_with(cli.log.log_format);
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("skiff-manager: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

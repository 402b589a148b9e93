//! The `token-broker` command: `serve`, `check-config`, `exchange`, and `dev` in builds with the
//! `dev` feature (the production build has no `dev` subcommand). No logic lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The process allocator (issue 16): mimalloc instead of glibc's malloc. Each request allocates
/// and frees dozens of small objects and a few larger ones (boxed futures, buffers) across the
/// worker threads; glibc's `malloc`/`free`/`malloc_consolidate` were ~4 % of a cache hit's CPU
/// and ~10 % of a proxied call's. Built without transparent huge pages (`no_thp`): with them,
/// idle RSS doubled. Measured in docs/benchmarks.md (round 5).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "token-broker",
    version,
    about = "Per-user downstream tokens via RFC 8693 token exchange at Keycloak"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker with a configuration file (the production entry point).
    Serve {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a configuration file, print every error with its key path, exit non-zero on error.
    CheckConfig {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Also contact the IdP: discovery, JWKS, the broker's client authentication and each
        /// target's audience, each ok or failed with the fix (side-effect free).
        #[arg(long)]
        online: bool,
    },
    /// One token exchange at Keycloak, without the cache: the decoded result, or Keycloak's
    /// error and the hint; `--explain` adds the request sent and the checklist.
    Exchange {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        #[arg(long, value_name = "T")]
        target: String,
        /// File holding the user's Keycloak access token (the subject token).
        #[arg(long, value_name = "F")]
        subject_token_file: PathBuf,
        #[arg(long)]
        explain: bool,
    },
    /// DEVELOPMENT ONLY: run the broker with an embedded Keycloak-compatible IdP on loopback.
    #[cfg(feature = "dev")]
    Dev {
        /// Use this configuration instead of the embedded config/dev.yaml.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Trust a Backstage backend at URL (plugins at URL/api/{pluginId}, auth at URL/api/auth).
        #[arg(long, value_name = "URL")]
        backstage: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config, online } => match token_broker::config::load_file(&config) {
            Ok(c) => {
                println!(
                    "{}: OK ({} target(s): {})",
                    config.display(),
                    c.targets.len(),
                    c.targets.keys().cloned().collect::<Vec<_>>().join(", ")
                );
                for w in token_broker::config::warnings(&c) {
                    println!("warning: {w}");
                }
                if online {
                    return actix_web::rt::System::new()
                        .block_on(token_broker::tester::online::run(&c));
                }
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{}: {} error(s)", config.display(), errors.issues.len());
                eprintln!("{errors}");
                ExitCode::from(1)
            }
        },
        Command::Serve { config } => {
            let path = config.clone();
            let cfg = match token_broker::config::load_file(&config) {
                Ok(c) => c,
                Err(errors) => {
                    eprintln!("{}: {} error(s)", config.display(), errors.issues.len());
                    eprintln!("{errors}");
                    return ExitCode::from(1);
                }
            };
            // Held to the end: dropping it flushes the audit log; `shutdown` sends queued spans.
            let mut telemetry = token_broker::telemetry::init(
                cfg.logging.format,
                &cfg.logging.level,
                &cfg.telemetry,
            );
            let code = run_system(async move {
                let broker = token_broker::app::start(cfg)
                    .await
                    .map_err(|e| e.to_string())?;
                broker.probe_client_auth().await;
                token_broker::app::serve_signals(&broker, &path).await;
                broker.shutdown().await;
                Ok(())
            });
            // After the server stopped, outside the runtime: send the spans still queued.
            telemetry.shutdown();
            code
        }
        Command::Exchange {
            config,
            target,
            subject_token_file,
            explain,
        } => actix_web::rt::System::new().block_on(token_broker::tester::cli::run(
            &config,
            &target,
            &subject_token_file,
            explain,
        )),
        #[cfg(feature = "dev")]
        Command::Dev { config, backstage } => run_system(async move {
            token_broker::dev::run(token_broker::dev::DevOptions { config, backstage })
                .await
                .map_err(|e| e.to_string())
        }),
    }
}

fn run_system<F>(fut: F) -> ExitCode
where
    F: std::future::Future<Output = Result<(), String>> + 'static,
{
    match actix_web::rt::System::new().block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("token-broker: {e}");
            ExitCode::from(1)
        }
    }
}

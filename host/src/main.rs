//! `petstore`: the Pet Store service, and its operating commands.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use petstore_host::config::Config;
use petstore_host::telemetry::logging::{self, Output};
use petstore_host::{backup, precompile, server};

/// mimalloc: musl's malloc costs the image's static build about a quarter more
/// CPU per request, and glibc's gains too (docs/performance.md, "allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The Pet Store service: HTTP in front, business logic in WebAssembly components.
#[derive(Parser)]
#[command(name = "petstore", version, after_help = "Configuration comes from the environment (see README.md).")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Pet Store API (the default)
    Serve,
    /// Precompile the components in COMPONENTS_DIR for a fast start
    Compile,
    /// Write every pet and order from DATABASE_URL to a JSON-lines backup
    Export {
        /// The backup file to write; - for stdout
        #[arg(long, value_name = "FILE")]
        to: String,
    },
    /// Load a backup into DATABASE_URL in one transaction
    Import {
        /// The backup file to read; - for stdin
        #[arg(long, value_name = "FILE")]
        from: String,
        /// Replace the pets and orders the database holds (refused otherwise)
        #[arg(long)]
        replace: bool,
    },
    /// Print a completion script for a shell
    Completions { shell: clap_complete::Shell },
}

fn main() -> ExitCode {
    let command = Cli::parse().command.unwrap_or(Command::Serve);
    if let Command::Completions { shell } = command {
        clap_complete::generate(shell, &mut Cli::command(), "petstore", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    logging::no_error_backtraces();
    // The service logs to stdout at LOG_LEVEL, and traces; the commands print
    // their own outcome, so their log shows only warnings, on stderr.
    let serve = matches!(command, Command::Serve);
    let start = Config::from_env().map_err(|err| err.to_string()).and_then(|config| {
        let (level, out) = if serve { (&*config.log_level, Output::Stdout) } else { ("warn", Output::Stderr) };
        Ok((logging::init(level, out, serve).map_err(|err| format!("traces: {err}"))?, config))
    });
    let Ok((_flush, config)) = start.map_err(|err| eprintln!("petstore: {err}")) else { return ExitCode::from(2) };
    let result = match command {
        Command::Serve => run_async(async { server::Service::build(config).await?.serve().await }),
        Command::Compile => precompile::run(&config),
        Command::Export { to } => run_async(backup::export_command(config, to)),
        Command::Import { from, replace } => run_async(backup::import_command(config, from, replace)),
        Command::Completions { .. } => Ok(()),
    };
    let Err(err) = result else { return ExitCode::SUCCESS };
    if serve {
        tracing::error!(error = format!("{err:#}"), "stopped by an error");
    }
    eprintln!("petstore: {err:#}");
    ExitCode::FAILURE
}

fn run_async(work: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(work)
}

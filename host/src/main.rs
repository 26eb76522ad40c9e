//! `petstore`: the Pet Store service, and its operating commands.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use petstore_host::config::Config;
use petstore_host::storage::{ConnectOptions, Database};
use petstore_host::telemetry::logging::{self, Output};
use petstore_host::{backup, precompile, server};

const USAGE: &str = "usage: petstore [serve | compile | export --to FILE | import --from FILE [--replace]]

  serve     serve the Pet Store API (the default)
  compile   precompile the components in COMPONENTS_DIR for a fast start
  export    write every pet and order to FILE (- for stdout), a versioned JSON-lines backup
  import    load a backup from FILE (- for stdin) in one transaction; refuses a database
            that has data unless --replace is given

Configuration comes from the environment (see README.md); DATABASE_URL picks the database.";

/// How long export and import wait for a database that is starting.
const DATABASE_WAIT: Duration = Duration::from_secs(30);

enum Command {
    Serve,
    Compile,
    Export { to: String },
    Import { from: String, replace: bool },
}

fn parse(args: &[String]) -> Result<Command, String> {
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    match args.first().map(String::as_str) {
        None | Some("serve") => Ok(Command::Serve),
        Some("compile") => Ok(Command::Compile),
        Some("export") => flag("--to").map(|to| Command::Export { to }).ok_or("export needs --to FILE".into()),
        Some("import") => flag("--from")
            .map(|from| Command::Import { from, replace: args.iter().any(|a| a == "--replace") })
            .ok_or("import needs --from FILE".into()),
        Some(other) => Err(format!("unknown command {other:?}")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if matches!(args.first().map(String::as_str), Some("-h" | "--help" | "help")) {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let command = match parse(&args) {
        Ok(command) => command,
        Err(message) => {
            eprintln!("petstore: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // Errors that carry a backtrace (anyhow, wasmtime traps) would capture and
    // symbolize one per guest trap when RUST_BACKTRACE is set: costly in time
    // and memory on a hot path. Panics still get backtraces from RUST_BACKTRACE.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("petstore: {err}");
            return ExitCode::from(2);
        }
    };
    // The service logs to stdout at LOG_LEVEL; the commands print their own
    // outcome, so their log shows only warnings, on stderr.
    let serve = matches!(command, Command::Serve);
    let _log_flush =
        if serve { logging::init(&config.log_level, Output::Stdout) } else { logging::init("warn", Output::Stderr) };
    let result = match command {
        Command::Compile => compile(&config),
        Command::Serve => run_async(server::run(config)),
        Command::Export { to } => run_async(export(config, to)),
        Command::Import { from, replace } => run_async(import(config, from, replace)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if serve {
                tracing::error!(error = format!("{err:#}"), "stopped by an error");
            }
            eprintln!("petstore: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_async(work: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(work)
}

fn compile(config: &Config) -> anyhow::Result<()> {
    for artifact in precompile::precompile(config)? {
        println!("{}", artifact.display());
    }
    Ok(())
}

async fn open(config: &Config) -> anyhow::Result<Database> {
    let options = ConnectOptions {
        max_connections: 2,
        acquire_timeout: config.db_acquire_timeout,
        // A backup's statements may legitimately run long.
        statement_timeout: Duration::from_secs(600),
        user: config.db_user.clone(),
        password: config.db_password.clone(),
    };
    let db = Database::open(&config.database_url, &options).await?;
    db.wait_ready(DATABASE_WAIT).await?;
    Ok(db)
}

async fn export(config: Config, to: String) -> anyhow::Result<()> {
    let db = open(&config).await?;
    let started = Instant::now();
    let exported_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let counts = if to == "-" {
        backup::export(&db, &mut std::io::stdout().lock(), &exported_at).await?
    } else {
        // Write beside the target and rename, so a failed export leaves no half file.
        let partial = PathBuf::from(format!("{to}.partial"));
        let mut file = BufWriter::new(File::create(&partial)?);
        let counts = backup::export(&db, &mut file, &exported_at).await?;
        file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&partial, &to)?;
        counts
    };
    eprintln!(
        "exported {} pets and {} orders to {to} in {:.1} s",
        counts.pets,
        counts.orders,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn import(config: Config, from: String, replace: bool) -> anyhow::Result<()> {
    let db = open(&config).await?;
    let started = Instant::now();
    let counts = if from == "-" {
        backup::import(&db, std::io::stdin().lock(), 0, replace).await?
    } else {
        let file = File::open(&from).map_err(|e| anyhow::anyhow!("cannot open {from}: {e}"))?;
        let size = file.metadata()?.len();
        backup::import(&db, BufReader::new(file), size, replace).await?
    };
    eprintln!(
        "imported {} pets and {} orders from {from} in {:.1} s",
        counts.pets,
        counts.orders,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

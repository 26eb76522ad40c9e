//! `petstore`: the Pet Store service.

use std::process::ExitCode;

use petstore_host::config::Config;
use petstore_host::telemetry::logging;
use petstore_host::{precompile, server};

const USAGE: &str = "usage: petstore [serve | compile]

  serve     serve the Pet Store API (the default)
  compile   precompile the components in COMPONENTS_DIR for a fast start

Configuration comes from the environment (see README.md).";

enum Command {
    Serve,
    Compile,
}

fn main() -> ExitCode {
    let command = match std::env::args().nth(1).as_deref() {
        None | Some("serve") => Command::Serve,
        Some("compile") => Command::Compile,
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("petstore: unknown command {other:?}\n{USAGE}");
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
    logging::init(&config.log_level);
    match command {
        Command::Compile => compile(&config),
        Command::Serve => serve(config),
    }
}

fn compile(config: &Config) -> ExitCode {
    match precompile::precompile(config) {
        Ok(written) => {
            for artifact in written {
                println!("{}", artifact.display());
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("petstore compile: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("petstore: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "start-up failed");
            eprintln!("petstore: {err:#}");
            ExitCode::FAILURE
        }
    }
}

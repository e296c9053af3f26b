//! `wirehub`: the real-time WebSocket pub/sub server, its command-line client and its load
//! generator, in one binary.
//!
//! This is the only crate that uses `anyhow`, reads the environment and installs signal
//! handlers; everything else lives in the library crates.

mod bench;
mod duration;
mod publish;
mod serve;
mod sub;
mod token;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Real-time WebSocket pub/sub: server, client and load generator.
#[derive(Parser, Debug)]
#[command(name = "wirehub", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server: HTTP and WebSocket on one port.
    #[command(
        after_help = "Every flag is also read from WIREHUB_<NAME> and from the --config \
        file (key <name>). The defaults are the embedded settings: `wirehub config` prints them."
    )]
    Serve(Box<serve::Settings>),
    /// Subscribe to channels and print each message's data as one JSON line (reconnects by itself).
    Sub(sub::SubArgs),
    /// Publish one message and exit 0 once the server acknowledged it.
    #[command(name = "pub")]
    Pub(publish::PubArgs),
    /// Print the embedded default settings (a starting point for --config).
    Config,
    /// Print an HS256 token for development (verified by `serve --jwt-secret`).
    Token(token::TokenArgs),
    /// Load-test a running server (loopback only).
    Bench(bench::BenchArgs),
}

fn init_tracing(format: serve::LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        serve::LogFormat::Json => builder.json().init(),
        serve::LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let matches = Cli::command()
        .mut_subcommand("serve", serve::with_defaults)
        .get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("wirehub: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve(args) => {
            let resolved = match serve::resolve(&args) {
                Ok(resolved) => resolved,
                Err(err) => {
                    eprintln!("wirehub: {err}");
                    return ExitCode::from(2);
                }
            };
            init_tracing(resolved.log_format);
            match runtime.block_on(serve::run(resolved)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!("{err:#}");
                    eprintln!("wirehub: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Sub(args) => exit_with(runtime.block_on(sub::run(args))),
        Command::Pub(args) => exit_with(runtime.block_on(publish::run(args))),
        Command::Token(args) => match token::token(&args) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("wirehub: {err:#}");
                ExitCode::from(2)
            }
        },
        Command::Bench(args) => bench::run(args),
        Command::Config => {
            print!("{}", serve::DEFAULT_CONFIG);
            ExitCode::SUCCESS
        }
    }
}

/// Exit 0 on success; print the error and exit 1 otherwise.
fn exit_with(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("wirehub: {err:#}");
            ExitCode::FAILURE
        }
    }
}

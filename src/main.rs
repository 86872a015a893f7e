//! `mailfarm`: the one binary of the farm. Subcommands run the daemons (coordinator, smurf),
//! manage the farm's certificates, and launch and follow campaigns.

#![warn(clippy::unwrap_used)]

mod bounce_inspect;
mod cli;
mod farm_cmd;
mod forward_cmd;
mod local;
mod man;
mod progress;
mod remote;
mod sink;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let default_level = if cli.is_daemon() { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MAILFARM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

//! The `kadr` command: run a node, detect on still images, publish a video, subscribe to results.
//! Each subcommand is a module of [`cli`].

use clap::Parser;

mod cli;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,ort=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli::run(cli::Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kadr: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

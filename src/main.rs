//! The `kadr` command: run a node, detect on still images, publish a video, subscribe to results.
//! Each subcommand is a module of [`cli`].

use clap::Parser;

mod cli;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    use tracing_subscriber::{
        filter::FilterExt, layer::SubscriberExt, util::SubscriberInitExt, Layer,
    };
    let levels = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,ort=warn".into());
    // The cluster library's own lines are held to a budget: junk connections cannot fill the log.
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(levels.and(kadr::LibraryLogBudget::new())),
        )
        .init();
    match cli::run(cli::Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kadr: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

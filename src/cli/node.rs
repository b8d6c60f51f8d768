//! `kadr node`: run a node until SIGTERM or Ctrl-C (or until it gives up: exit status 1).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Args;

use kadr::Config;
use kadr::Node;

#[derive(Args)]
pub struct NodeArgs {
    #[arg(long, short, default_value = "cluster.toml")]
    pub config: PathBuf,
    /// Overrides `redis.url` from the config.
    #[arg(long, env = "KADR_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Override any config field, e.g. `--set node.name=node-2 --set cluster.listen=127.0.0.1:7401`
    /// (values are read as TOML: `3`, `true`, `["a", "b"]`; anything else is a string).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let NodeArgs {
        config,
        redis_url,
        mut overrides,
    } = args;
    if let Some(url) = redis_url {
        overrides.insert(0, format!("redis.url=\"{url}\""));
    }
    let cfg = Config::load_with(&config, &overrides)?;
    match kadr::raise_open_files_limit() {
        Ok(n) => tracing::debug!(open_files = n, "file descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the file descriptor limit"),
    }
    let node = Node::start(&cfg).await?;
    let stats = node.stats().clone();
    let report = kadr::OwnedTask::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        tick.tick().await;
        loop {
            tick.tick().await;
            tracing::info!(%stats, "stats");
        }
    });
    // A node that gave up (a part failing past its restart budget) exits non-zero, so that
    // systemd, Docker or Kubernetes starts it afresh.
    let gave_up = tokio::select! {
        _ = wait_for_shutdown_signal() => None,
        why = node.failed() => Some(why),
    };
    tracing::info!("shutting down");
    drop(report);
    node.shutdown(Duration::from_secs(10)).await;
    match gave_up {
        Some(why) => bail!("{why}"),
        None => Ok(()),
    }
}

async fn wait_for_shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

//! `kadr bench-model`: the model alone, with a node's settings.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use kadr::client::publish::video;
use kadr::{Config, Purpose};

#[derive(Args)]
pub struct BenchModelArgs {
    #[arg(long, short, default_value = "cluster.toml")]
    pub config: PathBuf,
    /// Override config fields, as for `kadr node`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Video whose frames are decoded (1280x720 JPEG, as `kadr publish` sends them).
    #[arg(long, default_value = ".deps/video/bigbuckbunny.mp4")]
    pub input: String,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Sessions at once (default: the config's pool size).
    #[arg(long)]
    pub parallel: Option<usize>,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Measure every provider x precision x pool shape this machine can run, and print the
    /// fastest as `--set` lines.
    #[arg(long)]
    pub sweep: bool,
}

pub async fn run(args: BenchModelArgs) -> anyhow::Result<()> {
    if args.sweep {
        return kadr::client::bench::sweep(
            &args.config,
            &args.overrides,
            &args.input,
            args.seconds,
            args.json.as_deref(),
        );
    }
    bench_model(
        args.config,
        args.overrides,
        args.input,
        args.seconds,
        args.parallel,
        args.json,
    )
    .await
}

async fn bench_model(
    config: PathBuf,
    overrides: Vec<String>,
    input: String,
    seconds: f64,
    parallel: Option<usize>,
    json: Option<PathBuf>,
) -> anyhow::Result<()> {
    // Only the model's settings are checked: no cookie is needed to benchmark.
    let cfg = Config::load_for(&config, &overrides, Purpose::BenchModel)?;
    let frames = video::load_frames(&input, Some((1280, 720)), 3, 300).await?;
    let parallel = parallel.unwrap_or_else(|| cfg.pool_size());
    eprintln!(
        "bench-model: {} frames of {input}, {parallel} session(s) x {} thread(s), {seconds} s each",
        frames.len(),
        cfg.detector.intra_threads
    );
    let opts = cfg.model_options();
    let report = tokio::task::spawn_blocking(move || {
        kadr::client::bench::bench_model(&opts, std::sync::Arc::new(frames), parallel, seconds)
    })
    .await??;
    println!("{report}");
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

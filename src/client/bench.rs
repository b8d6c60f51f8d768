//! `kadr bench-model`: what the model alone costs on this machine, with the node's own settings
//! (model, provider, precision, threads, pool size, decoding), so the pipeline's throughput can
//! be set beside it.
//!
//! Two measurements, each with `parallel` sessions running at once (a node's detectors):
//! - `inference`: ONNX Runtime and NMS on a tensor already letterboxed;
//! - `frame`: everything a detector does per frame: JPEG decode, letterbox, inference, NMS,
//!   with the mean time of each step.
//!
//! [`sweep`] runs the measurement for every provider x precision x pool shape this machine can
//! run, each in a child process (a process loads one ONNX Runtime library), and names the fastest.

use std::fmt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::model::backend::CpuInfo;
use crate::model::letterbox::Letterboxer;
use crate::model::{ModelOptions, StepTimes, Yolo};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    pub model: String,
    pub input: String,
    pub cpu: String,
    pub provider: String,
    pub precision: String,
    pub parallel: usize,
    pub intra_threads: usize,
    pub dct_scaling: bool,
    pub seconds: f64,
    /// Frames per second, all sessions together.
    pub inference_fps: f64,
    pub frame_fps: f64,
    /// Mean wall time of one call, per session.
    pub inference_ms: f64,
    pub frame_ms: f64,
    /// Mean wall time of each step of a whole frame, per session.
    pub decode_ms: f64,
    pub letterbox_ms: f64,
    pub infer_ms: f64,
    pub postprocess_ms: f64,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "model {} ({}) on {}: {} {}, {} session(s) x {} thread(s), dct_scaling {}",
            self.model,
            self.input,
            self.cpu,
            self.provider,
            self.precision,
            self.parallel,
            self.intra_threads,
            self.dct_scaling
        )?;
        writeln!(
            f,
            "  inference only: {:>6.1} fps ({:.1} ms per call)",
            self.inference_fps, self.inference_ms
        )?;
        write!(
            f,
            "  whole frame:    {:>6.1} fps ({:.1} ms per call: decode {:.2}, letterbox {:.2}, inference {:.2}, NMS {:.2})",
            self.frame_fps,
            self.frame_ms,
            self.decode_ms,
            self.letterbox_ms,
            self.infer_ms,
            self.postprocess_ms
        )
    }
}

/// Run each measurement for `seconds` over `frames` (JPEGs), `parallel` sessions at once.
pub fn bench_model(
    opts: &ModelOptions,
    frames: Arc<Vec<Vec<u8>>>,
    parallel: usize,
    seconds: f64,
) -> anyhow::Result<BenchReport> {
    let parallel = parallel.max(1);
    let mut sessions = (0..parallel)
        .map(|_| Yolo::load(opts))
        .collect::<Result<Vec<_>, _>>()?;
    let info = sessions[0].info().clone();
    let backend = sessions[0].backend().clone();
    let (w, h) = (info.input_width, info.input_height);
    // Warm up (first runs allocate and pick kernels).
    for y in sessions.iter_mut() {
        for f in frames.iter().take(3) {
            y.detect_jpeg(f)?;
        }
        y.reset_step_times();
    }
    // A real frame, letterboxed once: constant input would make NMS see unreal box counts.
    let (rgb, fw, fh) = crate::model::decode_image(&frames[0])?;
    let mut tensor = vec![0f32; (3 * w * h) as usize];
    let place = Letterboxer::new().run(&rgb, fw, fh, w, h, &mut tensor);
    let (sessions, inference) = run_for(sessions, seconds, {
        let tensor = Arc::new(tensor);
        move |y: &mut Yolo, _i: usize| {
            let _ = y.detect_tensor(&tensor, &place);
        }
    });
    let mut sessions = sessions;
    for y in sessions.iter_mut() {
        y.reset_step_times();
    }
    let (sessions, frame) = run_for(sessions, seconds, move |y: &mut Yolo, i: usize| {
        let _ = y.detect_jpeg(&frames[i % frames.len()]);
    });
    let mut steps = StepTimes::default();
    for y in &sessions {
        steps.add(&y.step_times());
    }
    let [decode, letterbox, infer, post] = steps.mean_ms();
    let per_call = |fps: f64| 1000.0 * parallel as f64 / fps.max(1e-9);
    Ok(BenchReport {
        model: info.name,
        input: format!("{w}x{h}"),
        cpu: backend.cpu,
        provider: backend.provider.to_string(),
        precision: backend.precision.to_string(),
        parallel,
        intra_threads: opts.intra_threads,
        dct_scaling: backend.dct_scaling,
        seconds,
        inference_fps: round1(inference),
        frame_fps: round1(frame),
        inference_ms: round1(per_call(inference)),
        frame_ms: round1(per_call(frame)),
        decode_ms: round2(decode),
        letterbox_ms: round2(letterbox),
        infer_ms: round2(infer),
        postprocess_ms: round2(post),
    })
}

/// Run `work` on every session in its own thread for `seconds`; returns calls per second.
fn run_for<F>(sessions: Vec<Yolo>, seconds: f64, work: F) -> (Vec<Yolo>, f64)
where
    F: Fn(&mut Yolo, usize) + Send + Sync + Clone + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = sessions
        .into_iter()
        .enumerate()
        .map(|(k, mut y)| {
            let (stop, done, work) = (stop.clone(), done.clone(), work.clone());
            std::thread::spawn(move || {
                let mut i = k * 7;
                while !stop.load(Ordering::Relaxed) {
                    work(&mut y, i);
                    i += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                y
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    let sessions: Vec<Yolo> = handles
        .into_iter()
        .map(|h| h.join().expect("bench thread"))
        .collect();
    let elapsed = start.elapsed().as_secs_f64();
    (sessions, done.load(Ordering::Relaxed) as f64 / elapsed)
}

/// One configuration the sweep tries: `--set` overrides and a label.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepPoint {
    pub provider: &'static str,
    pub precision: &'static str,
    pub sessions: usize,
    pub threads: usize,
}

impl SweepPoint {
    pub fn overrides(&self) -> Vec<String> {
        vec![
            format!("model.execution_provider=\"{}\"", self.provider),
            format!("model.precision=\"{}\"", self.precision),
            "model.dct_scaling=true".into(),
            format!("detector.pool_size={}", self.sessions),
            format!("detector.intra_threads={}", self.threads),
        ]
    }
}

/// Every provider x precision x pool shape worth trying on `cores` cores: bf16 only where the
/// CPU computes it, OpenVINO only where it is installed; shapes from one session per core to one
/// session using every core.
pub fn sweep_points(cores: usize, bf16: bool, openvino: bool) -> Vec<SweepPoint> {
    let cores = cores.max(1);
    let mut shapes = vec![(cores, 1)];
    if cores >= 4 {
        shapes.push((cores / 2, 2));
    }
    if cores > 1 {
        shapes.push((1, cores));
    }
    let mut backends = vec![("cpu", "fp32")];
    if openvino {
        backends.push(("openvino", "fp32"));
        if bf16 {
            backends.push(("openvino", "bf16"));
        }
    }
    let mut points = Vec::new();
    for (provider, precision) in backends {
        for &(sessions, threads) in &shapes {
            points.push(SweepPoint {
                provider,
                precision,
                sessions,
                threads,
            });
        }
    }
    points
}

/// `kadr bench-model --sweep`: bench every point in a child process, print a table, and the
/// fastest whole-frame configuration as `--set` lines.
pub fn sweep(
    config: &Path,
    overrides: &[String],
    input: &str,
    seconds: f64,
    json: Option<&Path>,
) -> anyhow::Result<()> {
    let cpu = CpuInfo::detect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let openvino = crate::runtime::find_openvino_library().is_some();
    let points = sweep_points(cores, cpu.has_bf16(), openvino);
    eprintln!(
        "sweep on {} ({cores} cores, bf16 {}, OpenVINO {}): {} configurations, {seconds} s each measurement",
        cpu.model,
        if cpu.has_bf16() { "yes" } else { "no" },
        if openvino { "installed" } else { "not installed" },
        points.len()
    );
    let exe = std::env::current_exe().context("cannot find the kadr executable")?;
    let dir = std::env::temp_dir().join(format!("kadr-sweep-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut reports: Vec<(SweepPoint, BenchReport)> = Vec::new();
    println!("| provider | precision | sessions x threads | inference fps | whole-frame fps | ms per frame: decode / letterbox / inference / NMS |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (i, point) in points.iter().enumerate() {
        let out = dir.join(format!("{i}.json"));
        let mut cmd = Command::new(&exe);
        cmd.arg("bench-model")
            .arg("--config")
            .arg(config)
            .args([
                "--input",
                input,
                "--seconds",
                &seconds.to_string(),
                "--json",
            ])
            .arg(&out);
        for o in overrides.iter().cloned().chain(point.overrides()) {
            cmd.arg("--set").arg(o);
        }
        let status = cmd
            .stdout(std::process::Stdio::null())
            .status()
            .context("running bench-model")?;
        let label = format!(
            "| {} | {} | {} x {} |",
            point.provider, point.precision, point.sessions, point.threads
        );
        let report = status
            .success()
            .then(|| std::fs::read(&out).ok())
            .flatten()
            .and_then(|b| serde_json::from_slice::<BenchReport>(&b).ok());
        match report {
            Some(r) => {
                println!(
                    "{label} {} | {} | {:.2} / {:.2} / {:.2} / {:.2} |",
                    r.inference_fps,
                    r.frame_fps,
                    r.decode_ms,
                    r.letterbox_ms,
                    r.infer_ms,
                    r.postprocess_ms
                );
                reports.push((point.clone(), r));
            }
            None => println!("{label} failed | | |"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let Some((best, report)) = reports
        .iter()
        .max_by(|a, b| a.1.frame_fps.total_cmp(&b.1.frame_fps))
    else {
        bail!("no configuration ran");
    };
    println!(
        "\nfastest whole frame: {} {}, {} x {} at {} fps; for `kadr node` or cluster.toml:",
        best.provider, best.precision, best.sessions, best.threads, report.frame_fps
    );
    for o in best.overrides() {
        println!("  --set '{o}'");
    }
    if let Some(path) = json {
        let all: Vec<&BenchReport> = reports.iter().map(|(_, r)| r).collect();
        std::fs::write(path, serde_json::to_vec_pretty(&all)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_tries_bf16_only_where_the_cpu_has_it() {
        let all = sweep_points(2, true, true);
        assert_eq!(all.len(), 6);
        assert!(all.iter().any(|p| p.precision == "bf16"));
        assert!(sweep_points(2, false, true)
            .iter()
            .all(|p| p.precision == "fp32"));
        let cpu_only = sweep_points(2, true, false);
        assert!(cpu_only.iter().all(|p| p.provider == "cpu"));
        assert_eq!(
            cpu_only
                .iter()
                .map(|p| (p.sessions, p.threads))
                .collect::<Vec<_>>(),
            [(2, 1), (1, 2)]
        );
        let shapes: Vec<_> = sweep_points(8, false, false)
            .iter()
            .map(|p| (p.sessions, p.threads))
            .collect();
        assert_eq!(shapes, [(8, 1), (4, 2), (1, 8)]);
        assert_eq!(sweep_points(1, false, false).len(), 1);
        assert!(all[0]
            .overrides()
            .contains(&"detector.pool_size=2".to_string()));
    }
}

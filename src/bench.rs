//! `kadr bench-model`: what the model alone costs on this machine, with the node's own settings
//! (model, threads, pool size, decoding), so the pipeline's throughput can be set beside it.
//!
//! Two measurements, each with `parallel` sessions running at once (a node's detectors):
//! - `inference`: ONNX Runtime and NMS on a tensor already letterboxed;
//! - `frame`: everything a detector does per frame: JPEG decode, letterbox, inference, NMS.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::model::letterbox::Letterboxer;
use crate::model::{ModelOptions, Yolo};

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub input: String,
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
    let (w, h) = (info.input_width, info.input_height);
    // Warm up (first runs allocate and pick kernels).
    for y in sessions.iter_mut() {
        for f in frames.iter().take(3) {
            y.detect_jpeg(f)?;
        }
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
    let (_, frame) = run_for(sessions, seconds, move |y: &mut Yolo, i: usize| {
        let _ = y.detect_jpeg(&frames[i % frames.len()]);
    });
    let per_call = |fps: f64| 1000.0 * parallel as f64 / fps.max(1e-9);
    Ok(BenchReport {
        model: info.name,
        input: format!("{w}x{h}"),
        parallel,
        intra_threads: opts.intra_threads,
        dct_scaling: opts.dct_scaling,
        seconds,
        inference_fps: round1(inference),
        frame_fps: round1(frame),
        inference_ms: round1(per_call(inference)),
        frame_ms: round1(per_call(frame)),
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

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

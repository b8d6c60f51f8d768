//! The speed tools and options work (speed itself is measured in BENCHMARKS.md, not here):
//! `kadr bench-model`, `kadr-loadtest` against a real node, the OpenVINO execution provider,
//! and the int8 quantization script.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn loadtest_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_kadr")).with_file_name("kadr-loadtest");
    assert!(
        bin.is_file(),
        "{} is missing: build the workspace first (scripts/test.sh does)",
        bin.display()
    );
    bin
}

fn fixture_images() -> Option<Vec<PathBuf>> {
    let dir = common::fixtures()?.join("yolov7");
    Some(
        ["bbb_frame60.jpg", "bus.jpg", "horses.jpg", "zidane.jpg"]
            .iter()
            .map(|f| dir.join(f))
            .collect(),
    )
}

fn detections(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn bench_model_reports_inference_and_whole_frame_rates() {
    let (Some(model), Some(video)) = (common::model_384x640(), common::video("bikes.mp4")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    common::stdout_of(
        common::kadr()
            .current_dir(common::root())
            .args(["bench-model", "--seconds", "0.5", "--parallel", "1"])
            .args(["--set", &format!("model.path=\"{}\"", model.display())])
            .arg("--input")
            .arg(&video)
            .arg("--json")
            .arg(&json),
    );
    let r: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(r["input"], "640x384");
    assert_eq!(r["parallel"], 1);
    assert!(r["inference_fps"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["frame_fps"].as_f64().unwrap() > 0.0, "{r}");
}

#[test]
fn loadtest_accounts_for_every_frame_it_publishes() {
    let (Some(model), Some(video)) = (common::model_384x640(), common::video("bikes.mp4")) else {
        return;
    };
    let loadtest = loadtest_bin();
    let redis = common::Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("node.log");
    let mut node = common::kadr()
        .current_dir(common::root())
        .args([
            "node",
            "--config",
            "cluster.toml",
            "--redis-url",
            &redis.url,
        ])
        .args(["--set", &format!("model.path=\"{}\"", model.display())])
        .args([
            "--set",
            "redis.channel_prefix=lt",
            "--set",
            "detector.pool_size=1",
        ])
        .args([
            "--set",
            &format!("cluster.listen=\"127.0.0.1:{}\"", common::free_port()),
        ])
        .args([
            "--set",
            &format!("admin.listen=\"127.0.0.1:{}\"", common::free_port()),
        ])
        .env("KADR_CLUSTER_COOKIE", "test-cookie")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("node started")
    {
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let json = dir.path().join("run.json");
    let out = Command::new(loadtest)
        .args([
            "--redis-url",
            &redis.url,
            "--prefix",
            "lt",
            "--fps",
            "10",
            "--seconds",
            "3",
        ])
        .args(["--keep", "--node-pid", &node.id().to_string(), "--json"])
        .arg(&json)
        .arg("--input")
        .arg(&video)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let _ = node.kill();
    let _ = node.wait();
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("| delivered fps |"), "{table}");
    let r: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(r["published"], 30, "{r}");
    assert_eq!(r["detected"], 30, "{r}");
    assert_eq!(r["accounted"], 30, "{r}");
    assert_eq!(r["order_violations"], 0, "{r}");
    assert!(r["latency_ms_p99"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["nodes_rss_mib"][0].as_f64().unwrap() > 10.0, "{r}");
}

#[test]
fn openvino_detects_what_the_cpu_provider_detects() {
    let (Some(model), Some(images)) = (common::model_384x640(), fixture_images()) else {
        return;
    };
    let ov = common::root().join(".deps/onnxruntime-openvino");
    if !ov.is_dir() {
        common::skip(&format!("{} is absent; run scripts/setup.sh", ov.display()));
        return;
    }
    let run = |openvino: bool| {
        let mut cmd = common::kadr();
        cmd.current_dir(common::root())
            .arg("detect")
            .args(["--precision", "fp32", "--model"])
            .arg(&model);
        if openvino {
            cmd.arg("--openvino");
        }
        detections(&common::stdout_of(cmd.args(&images)))
    };
    let (cpu, ov) = (run(false), run(true));
    assert_eq!(cpu.len(), ov.len());
    let mut boxes = 0;
    for (a, b) in cpu.iter().zip(&ov) {
        let (da, db) = (
            a["detections"].as_array().unwrap(),
            b["detections"].as_array().unwrap(),
        );
        boxes += da.len();
        // Float kernels differ in the last bits; a box at the threshold may come or go.
        assert!(da.len().abs_diff(db.len()) <= 1, "{a}\n{b}");
        let same = da
            .iter()
            .filter(|d| {
                db.iter()
                    .any(|e| e["class_id"] == d["class_id"] && e["box"] == d["box"])
            })
            .count();
        assert!(same + 1 >= da.len(), "{a}\n{b}");
    }
    assert!(boxes > 0);
}

#[test]
fn int8_quantization_makes_a_working_int8_model() {
    let (Some(model), Some(video), Some(images)) = (
        common::model_384x640(),
        common::video("bigbuckbunny.mp4"),
        fixture_images(),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let int8 = dir.path().join("int8.onnx");
    common::stdout_of(
        Command::new(common::root().join(".deps/venv/bin/python"))
            .arg(common::root().join("models/quantize_int8.py"))
            .arg("--model")
            .arg(&model)
            .arg("--video")
            .arg(&video)
            .args(["--frames", "8", "--out"])
            .arg(&int8),
    );
    // Really int8: quantize/dequantize pairs around the convolutions.
    let bytes = std::fs::read(&int8).unwrap();
    assert!(bytes.windows(14).any(|w| w == b"QuantizeLinear"));
    assert!(bytes.len() < std::fs::metadata(&model).unwrap().len() as usize / 2);
    // And it still finds things (a quantized score head would find nothing at all).
    let found = detections(&common::stdout_of(
        common::kadr()
            .current_dir(common::root())
            .arg("detect")
            .arg("--model")
            .arg(&int8)
            .args(&images),
    ));
    let boxes: usize = found
        .iter()
        .map(|d| d["detections"].as_array().unwrap().len())
        .sum();
    assert!(boxes >= 4, "{boxes} boxes on {} images", images.len());
}

/// `kadr detect` with the given environment and arguments: (stderr's backend line, detections).
fn detect_with(
    model: &Path,
    images: &[PathBuf],
    env: &[(&str, &str)],
    args: &[&str],
) -> (String, Vec<Value>) {
    let mut cmd = common::kadr();
    cmd.current_dir(common::root())
        .arg("detect")
        .arg("--model")
        .arg(model)
        .args(args)
        .args(images);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("kadr detect: ") && l.contains("dct_scaling"))
        .unwrap_or_else(|| panic!("no backend line in {stderr}"))
        .to_string();
    (line, detections(&String::from_utf8_lossy(&out.stdout)))
}

fn openvino_installed() -> bool {
    let ov = common::root().join(".deps/onnxruntime-openvino");
    if !ov.is_dir() {
        common::skip(&format!("{} is absent; run scripts/setup.sh", ov.display()));
    }
    ov.is_dir()
}

#[test]
fn auto_runs_fp32_on_the_cpu_kernels_where_the_cpu_has_no_bf16() {
    let (Some(model), Some(images)) = (common::model_384x640(), fixture_images()) else {
        return;
    };
    // The same answer as the explicit exact path, bit for bit, apart from DCT-scaled decoding
    // (explicitly off here so the two are comparable).
    let (line, auto) = detect_with(
        &model,
        &images,
        &[("KADR_CPU_FLAGS", "fpu sse2 avx2 avx512f")],
        &["--dct-scaling", "false"],
    );
    assert!(line.contains("cpu fp32"), "{line}");
    assert!(line.contains("no bf16"), "{line}");
    let (line, exact) = detect_with(&model, &images, &[], &["--precision", "fp32"]);
    assert!(line.contains("cpu fp32"), "{line}");
    assert_eq!(auto, exact);
}

#[test]
fn auto_falls_back_to_fp32_when_openvino_is_refused() {
    let (Some(model), Some(images)) = (common::model_384x640(), fixture_images()) else {
        return;
    };
    // A bf16 CPU, but the library given has no OpenVINO provider: auto runs fp32, and says why.
    let plain = common::root().join(".deps/onnxruntime");
    let (line, found) = detect_with(
        &model,
        &images,
        &[("KADR_CPU_FLAGS", "avx512_bf16")],
        &["--onnxruntime", plain.to_str().unwrap()],
    );
    assert!(line.contains("cpu fp32"), "{line}");
    assert!(line.contains("not available"), "{line}");
    assert_eq!(found.len(), images.len());
    // Asked for explicitly, OpenVINO that does not load is an error, not a silent fallback.
    let out = common::kadr()
        .current_dir(common::root())
        .args(["detect", "--execution-provider", "openvino", "--model"])
        .arg(&model)
        .arg("--onnxruntime")
        .arg(&plain)
        .args(&images)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("OpenVINO execution provider is not available"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn auto_runs_bf16_on_openvino_where_the_cpu_has_bf16() {
    let (Some(model), Some(images)) = (common::model_384x640(), fixture_images()) else {
        return;
    };
    if !openvino_installed() {
        return;
    }
    let bf16_cpu = [("KADR_CPU_FLAGS", "amx_bf16")];
    let (line, _) = detect_with(&model, &images, &bf16_cpu, &[]);
    assert!(line.contains("openvino bf16"), "{line}");
    assert!(line.contains("dct_scaling true"), "{line}");
    // bf16 alone, against the exact path: close, not equal. The fixture model is chaotic by
    // construction (random weights), so "close" is most boxes, not all; BENCHMARKS.md has the
    // full comparison. Measured: 78% of fp32's boxes matched (IoU >= 0.5, same class).
    let (_, fp32) = detect_with(&model, &images, &[], &["--precision", "fp32"]);
    let (line, bf16) = detect_with(&model, &images, &bf16_cpu, &["--dct-scaling", "false"]);
    assert!(line.contains("openvino bf16"), "{line}");
    let (matched, boxes) = matched_boxes(&fp32, &bf16);
    assert!(boxes > 0);
    assert!(
        matched * 10 >= boxes * 6,
        "{matched} of {boxes} fp32 boxes found in bf16"
    );
}

/// How many of `a`'s boxes have a box of the same class with IoU >= 0.5 in `b`, of how many.
fn matched_boxes(a: &[Value], b: &[Value]) -> (usize, usize) {
    let (mut boxes, mut matched) = (0, 0);
    for (a, b) in a.iter().zip(b) {
        assert_eq!(a["width"], b["width"]);
        let (da, db) = (
            a["detections"].as_array().unwrap(),
            b["detections"].as_array().unwrap(),
        );
        boxes += da.len();
        matched += da
            .iter()
            .filter(|d| {
                db.iter()
                    .any(|e| e["class_id"] == d["class_id"] && box_iou(&d["box"], &e["box"]) >= 0.5)
            })
            .count();
    }
    (matched, boxes)
}

fn box_iou(a: &Value, b: &Value) -> f64 {
    let v = |x: &Value| -> Vec<f64> {
        x.as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    let (a, b) = (v(a), v(b));
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |x: &[f64]| (x[2] - x[0]) * (x[3] - x[1]);
    inter / (area(&a) + area(&b) - inter).max(1e-9)
}

#[test]
fn bench_model_sweep_measures_each_backend_and_names_the_fastest() {
    let (Some(model), Some(video)) = (common::model_384x640(), common::video("bikes.mp4")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("sweep.json");
    let stdout = common::stdout_of(
        common::kadr()
            .current_dir(common::root())
            .args(["bench-model", "--sweep", "--seconds", "0.3"])
            .args(["--set", &format!("model.path=\"{}\"", model.display())])
            .arg("--input")
            .arg(&video)
            .arg("--json")
            .arg(&json),
    );
    let reports: Vec<Value> = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("| cpu") || l.starts_with("| openvino"))
        .collect();
    assert_eq!(rows.len(), reports.len(), "{stdout}");
    assert!(rows.iter().all(|r| !r.contains("failed")), "{stdout}");
    // CPU kernels in fp32, one session per core and one with every core, at least.
    assert!(reports.len() >= 2, "{stdout}");
    for r in &reports {
        assert!(r["frame_fps"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["infer_ms"].as_f64().unwrap() > 0.0, "{r}");
    }
    if openvino_installed() {
        assert!(
            reports.iter().any(|r| r["provider"] == "openvino"),
            "{stdout}"
        );
    }
    // The fastest, as lines to paste.
    let best = reports
        .iter()
        .map(|r| r["frame_fps"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(stdout.contains(&format!("at {best} fps")), "{stdout}");
    assert!(stdout.contains("--set 'detector.pool_size="), "{stdout}");
    assert!(stdout.contains("--set 'model.precision="), "{stdout}");
}

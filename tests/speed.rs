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
        eprintln!("SKIP: {} is absent; run scripts/setup.sh", ov.display());
        return;
    }
    let run = |openvino: bool| {
        let mut cmd = common::kadr();
        cmd.current_dir(common::root())
            .arg("detect")
            .arg("--model")
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

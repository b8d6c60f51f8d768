//! The Python client example and the model generator, run for real.

mod common;

use std::time::Duration;

use kadr::Node;

fn venv_python() -> Option<std::path::PathBuf> {
    let py = common::root().join(".deps/venv/bin/python");
    if py.is_file() {
        Some(py)
    } else {
        common::skip(".deps/venv is absent; run scripts/setup.sh");
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_example_publishes_a_video_and_prints_detections() {
    python_example_over("pubsub").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_example_over_redis_streams() {
    python_example_over("streams").await;
}

async fn python_example_over(transport: &str) {
    let (Some(py), Some(model), Some(video)) = (
        venv_python(),
        common::model_384x640(),
        common::video("bikes.mp4"),
    ) else {
        return;
    };
    let redis = common::Redis::start();
    let cfg = common::single_node_config(&model, &redis.url, "py", "");
    let node = Node::start_with(&cfg, false).await.unwrap();
    let out = tokio::process::Command::new(py)
        .arg(common::root().join("examples/python/kadr_client.py"))
        .args([
            "--stream",
            "bikes",
            "--prefix",
            "py",
            "--max-frames",
            "12",
            "--fps",
            "0",
            "--redis-url",
            &redis.url,
            "--transport",
            transport,
            "--video",
        ])
        .arg(&video)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let frames: Vec<&str> = stdout.lines().filter(|l| l.starts_with("frame ")).collect();
    assert_eq!(frames.len(), 12, "{stdout}");
    assert!(
        frames[0].starts_with("frame 0:") && frames[11].starts_with("frame 11:"),
        "{stdout}"
    );
    assert!(stdout.contains("12 of 12 frames accounted for"));
    assert_eq!(node.stats().detected.get(), 12);
    node.shutdown(Duration::from_secs(5)).await;
}

#[test]
fn generated_model_has_the_yolov7_tiny_architecture_and_runs() {
    let Some(py) = venv_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gen-320x512.onnx");
    let status = std::process::Command::new(&py)
        .arg(common::root().join("models/generate_random_yolov7_tiny.py"))
        .args(["--height", "320", "--width", "512", "-o"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    // Same graph as the reference export: node types in order, parameter names and shapes.
    if let Some(fixtures) = common::fixtures() {
        let reference = fixtures.join("yolov7/yolov7-tiny-random-640x640.onnx");
        let check = r#"
import sys, onnx
a, b = onnx.load(sys.argv[1]), onnx.load(sys.argv[2])
assert [n.op_type for n in a.graph.node] == [n.op_type for n in b.graph.node], "node types differ"
assert [(t.name, list(t.dims)) for t in a.graph.initializer] == [(t.name, list(t.dims)) for t in b.graph.initializer], "parameters differ"
print("same architecture")
"#;
        common::stdout_of(
            std::process::Command::new(&py)
                .args(["-c", check])
                .arg(&path)
                .arg(&reference),
        );
    }
    // kadr loads it, reads H and W from it, and finds something on a picture.
    let mut yolo = kadr::model::Yolo::load(&kadr::model::ModelOptions::exact(path)).unwrap();
    assert_eq!(
        (
            yolo.info().input_width,
            yolo.info().input_height,
            yolo.info().classes
        ),
        (512, 320, Some(80))
    );
    let img = image::RgbImage::from_fn(1280, 720, |x, y| {
        image::Rgb([(x / 5) as u8, (y / 3) as u8, ((x + y) / 8) as u8])
    });
    let found = yolo.detect_rgb(img.as_raw(), 1280, 720).unwrap();
    assert!(!found.detections.is_empty(), "calibrated head finds boxes");
}

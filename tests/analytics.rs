//! `kadr track --analytics`: lines and zones counted on the tracks of a MOTChallenge file, run
//! as a user runs it, and a bad lines-and-zones file refused with its key.

mod common;

use serde_json::Value;

/// One car (class 2) driving down through a line at y = 400 (its box's bottom jittering 4 px on
/// the line for a while), into a zone and out of it again; then one that stops short of the
/// line and turns back.
fn detections() -> String {
    let mut rows = Vec::new();
    let mut frame = 1;
    let bottom = |y: f64, rows: &mut Vec<String>, frame: &mut u64| {
        rows.push(format!("{frame},-1,480,{:.1},80,60,0.9,2", y - 60.0));
        *frame += 1;
    };
    for i in 0..20 {
        bottom(300.0 + 4.0 * i as f64, &mut rows, &mut frame); // up to 376
    }
    for i in 0..12 {
        bottom(
            if i % 2 == 0 { 397.0 } else { 403.0 },
            &mut rows,
            &mut frame,
        );
    }
    for i in 0..60 {
        bottom(420.0 + 4.0 * i as f64, &mut rows, &mut frame); // through the zone, to 656
    }
    let there_and_back = (300..=392).step_by(4).chain((300..=392).rev().step_by(4));
    for (frame, y) in (200..).zip(there_and_back) {
        rows.push(format!("{frame},-1,900,{},80,60,0.9,2", y - 60));
    }
    rows.join("\n") + "\n"
}

const LINES_AND_ZONES: &str = r#"
[[lines]]
name = "gate"
from = [100, 400]
to = [1180, 400]

[[zones]]
name = "bay"
polygon = [[400, 480], [640, 480], [640, 560], [400, 560]]
"#;

/// `kadr track` on [`detections`] with `lines_and_zones`, its events to `events.jsonl`, all in
/// a temporary folder (kept as long as the returned guard lives).
fn kadr_track_with(lines_and_zones: &str) -> (tempfile::TempDir, std::process::Command) {
    let dir = tempfile::tempdir().unwrap();
    let (det, cfg) = (dir.path().join("det.txt"), dir.path().join("a.toml"));
    std::fs::write(&det, detections()).unwrap();
    std::fs::write(&cfg, lines_and_zones).unwrap();
    let mut cmd = common::kadr();
    cmd.arg("track")
        .arg("--mot")
        .arg(det)
        .arg("--analytics")
        .arg(cfg)
        .arg("--events")
        .arg(dir.path().join("events.jsonl"));
    (dir, cmd)
}

#[test]
fn kadr_track_counts_a_crossing_once_and_a_zone_visit_and_writes_the_counts_last() {
    let (dir, mut track) = kadr_track_with(LINES_AND_ZONES);
    let events = dir.path().join("events.jsonl");
    let tracks = common::stdout_of(&mut track);
    assert!(
        tracks.lines().count() > 100,
        "the tracks still go to stdout"
    );
    let rows: Vec<Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let told: Vec<(&str, &str)> = rows[..rows.len() - 1]
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["event"].as_str().unwrap()))
        .collect();
    assert_eq!(
        told,
        [("gate", "in"), ("bay", "enter"), ("bay", "exit")],
        "{rows:?}"
    );
    let counts = rows.last().unwrap();
    assert_eq!(counts["type"], "counts");
    assert_eq!(counts["lines"]["gate"]["in"], 1);
    assert_eq!(counts["lines"]["gate"]["out"], 0);
    assert_eq!(counts["lines"]["gate"]["by_class"]["2"]["in"], 1);
    assert_eq!(counts["zones"]["bay"]["entered"], 1);
    assert_eq!(counts["zones"]["bay"]["inside"], 0);
}

#[test]
fn a_bad_lines_and_zones_file_is_refused_with_its_key_before_anything_runs() {
    let (dir, mut track) = kadr_track_with(
        "[[zones]]\nname = \"bow tie\"\npolygon = [[0, 0], [100, 100], [100, 0], [0, 100]]\n",
    );
    let events = dir.path().join("events.jsonl");
    let out = track.output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("zones[0].polygon: its edges cross each other"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing tracked");
    assert!(!events.exists(), "no events file");
}

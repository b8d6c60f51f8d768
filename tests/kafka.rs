//! Kafka beside Redis (issue 31): nodes read frames from a real broker (tansu, which speaks
//! Kafka's protocol), keyed by stream id, and answer them as they answer frames from Redis:
//! results in order on the stream's Redis channel, junk refused on its error channel, a
//! failed node's partitions read by the others.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

/// A `kadr node` reading the frames topic of `kafka` in consumer group `group`.
struct Node {
    child: Child,
    log: PathBuf,
}

impl Node {
    fn start(dir: &Path, name: &str, redis: &str, kafka: &common::Kafka, group: &str) -> Node {
        let model = common::model_384x640().expect("checked by the caller");
        let log = dir.join(format!("{name}.log"));
        let child = common::kadr()
            .current_dir(common::root())
            .args(["node", "--config", "cluster.toml", "--redis-url", redis])
            .args(["--set", &format!("node.name=\"{name}\"")])
            .args(["--set", &format!("model.path=\"{}\"", model.display())])
            .args(["--set", "detector.pool_size=1"])
            .args(["--set", &format!("kafka.brokers=[\"{}\"]", kafka.brokers)])
            .args(["--set", "kafka.frames_topic=\"frames\""])
            .args(["--set", &format!("kafka.group_id=\"{group}\"")])
            .args(["--set", "kafka.session_timeout_ms=6000"])
            // Every frame the test publishes, even one published as the group forms.
            .args(["--set", "kafka.start_at=\"earliest\""])
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
        Node { child, log }
    }

    /// The node's log, without its colours.
    fn log(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut plain = String::with_capacity(log.len());
        let mut in_escape = false;
        for c in log.chars() {
            match (in_escape, c) {
                (false, '\x1b') => in_escape = true,
                (false, c) => plain.push(c),
                (true, 'm') => in_escape = false,
                (true, _) => {}
            }
        }
        plain
    }

    /// Wait until the node's log says `text`.
    fn wait_for(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.log().contains(text) {
            assert!(Instant::now() < deadline, "no {text:?} in:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `kadr subscribe` to a stream's results over Redis, writing its summary as JSON (and what
/// it prints to a file beside it).
fn subscribe(dir: &Path, redis: &str, stream: &str, idle_s: u32) -> (Child, PathBuf) {
    let summary = dir.join(format!("{stream}.json"));
    let printed = std::fs::File::create(summary.with_extension("out")).unwrap();
    let ready = dir.join(format!("{stream}.ready"));
    let child = common::kadr()
        .args(["subscribe", "--redis-url", redis, "--stream", stream])
        .args([
            "--errors",
            "--idle-timeout",
            &idle_s.to_string(),
            "--summary-json",
        ])
        .arg(&summary)
        .arg("--ready-file")
        .arg(&ready)
        .stdout(printed)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "kadr subscribe did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, summary)
}

/// Wait for a subscriber to end (at most `within`), its summary and what it printed.
fn finished(mut child: Child, summary: &Path, within: Duration) -> (Value, String) {
    let deadline = Instant::now() + within;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.wait();
    let printed = std::fs::read_to_string(summary.with_extension("out")).unwrap_or_default();
    let s = std::fs::read(summary)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    (s, printed)
}

/// `kadr publish --transport kafka`: `count` frames of a real clip at `fps`, every one kept.
fn publish(kafka: &common::Kafka, video: &Path, stream: &str, count: u64, fps: u32) -> Child {
    common::kadr()
        .args([
            "publish",
            "--transport",
            "kafka",
            "--kafka-brokers",
            &kafka.brokers,
        ])
        .args([
            "--kafka-frames-topic",
            "frames",
            "--stream",
            stream,
            "--keep-all",
        ])
        .args(["--fps", &fps.to_string(), "--limit", &count.to_string()])
        .arg("--input")
        .arg(video)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn prerequisites() -> Option<(PathBuf, common::Kafka)> {
    common::model_384x640()?;
    let video = common::video("bikes.mp4")?;
    let kafka = common::Kafka::start()?;
    kafka.create_topic("frames", 3);
    Some((video, kafka))
}

#[test]
fn a_node_reads_a_camera_s_frames_from_kafka_in_order_and_refuses_junk_as_over_redis() {
    let Some((video, kafka)) = prerequisites() else {
        return;
    };
    let redis = common::Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), "node-1", &redis.url, &kafka, "one");
    node.wait_for("Kafka gave this node partitions");
    let (cam, cam_summary) = subscribe(dir.path(), &redis.url, "kcam", 5);
    let (junk, junk_summary) = subscribe(dir.path(), &redis.url, "kjunk", 5);

    let mut publisher = publish(&kafka, &video, "kcam", 40, 20);
    // Junk on the same topic: not a frame message, and a message without a stream id.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .create()
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let wait = Duration::from_secs(10);
    let not_a_frame = FutureRecord::to("frames")
        .key("kjunk")
        .payload("not a frame message, nor anything like one");
    // (Both are produced before the camera's first frame: the node starts at the earliest.)
    runtime.block_on(producer.send(not_a_frame, wait)).unwrap();
    let unkeyed = FutureRecord::<(), _>::to("frames").payload("no stream id");
    runtime.block_on(producer.send(unkeyed, wait)).unwrap();
    assert!(publisher.wait().unwrap().success());

    let (s, _) = finished(cam, &cam_summary, Duration::from_secs(60));
    assert_eq!(s["frames"], 40, "{s}\n{}", node.log());
    assert_eq!(s["detected"], 40, "{s}");
    assert_eq!(
        (&s["order_violations"], &s["duplicates"]),
        (&0.into(), &0.into()),
        "{s}"
    );
    let (s, printed) = finished(junk, &junk_summary, Duration::from_secs(30));
    assert_eq!(s["errors"], 1, "{s}\n{}", node.log());
    assert!(printed.contains("bad_magic"), "{printed}");
    node.wait_for("Kafka message without a stream id as its key: let go");
}

/// Fails today, kept to be turned on with the fix (issue 31): the survivor gets the killed
/// node's partitions and reads on from the last commit, so it reads again a few frames
/// whose results were published already; their stream looks to it like a camera that
/// restarted its numbering, and they come out again in a new epoch (151 of 150 in one run).
#[test]
#[ignore = "known: frames read again after a node failure start a new epoch (issue 31)"]
fn a_killed_node_s_partitions_go_to_the_other_node_and_every_frame_is_accounted_for_once() {
    let Some((video, kafka)) = prerequisites() else {
        return;
    };
    let redis = common::Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = [
        Node::start(dir.path(), "node-1", &redis.url, &kafka, "two"),
        Node::start(dir.path(), "node-2", &redis.url, &kafka, "two"),
    ];
    for n in &nodes {
        n.wait_for("Kafka gave this node partitions");
    }
    // Kafka moves the partitions of a node silent for the session timeout (6 s here).
    let (cam, cam_summary) = subscribe(dir.path(), &redis.url, "kcam", 20);
    let mut publisher = publish(&kafka, &video, "kcam", 150, 10);
    // Kill the node reading the camera once it has detected a few of its frames.
    let deadline = Instant::now() + Duration::from_secs(60);
    let holder = loop {
        if let Some(i) = nodes.iter().position(|n| n.log().contains("stream=kcam")) {
            break i;
        }
        assert!(Instant::now() < deadline, "nobody read kcam");
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_secs(3));
    nodes[holder].kill();
    let other = &nodes[1 - holder];
    assert!(publisher.wait().unwrap().success());

    let (s, _) = finished(cam, &cam_summary, Duration::from_secs(90));
    let logs = format!("{}\n----\n{}", nodes[holder].log(), other.log());
    assert_eq!(s["frames"], 150, "{s}\n{logs}");
    assert_eq!(
        (&s["order_violations"], &s["duplicates"]),
        (&0.into(), &0.into()),
        "{s}\n{logs}"
    );
    // The survivor went on with the camera: most frames were detected, on both sides of the kill.
    assert!(s["detected"].as_u64().unwrap() >= 100, "{s}\n{logs}");
    assert!(other.log().contains("stream=kcam"), "{logs}");
}

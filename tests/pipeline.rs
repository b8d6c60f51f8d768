//! One node end to end, against a real redis-server, real ONNX Runtime and real video.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use kadr::protocol::{
    encode_frame, ErrorMessage, GapReason, OutputMessage, Transport, FLAG_KEEP, FRAME_FIELD,
};
use kadr::Node;
use kadr::PoolMsg;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A channel prefix of its own per test, so tests can share a Redis.
fn unique_prefix() -> String {
    format!(
        "t{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Everything a test sees come out of the node.
struct Outputs {
    messages: Vec<OutputMessage>,
    errors: Vec<ErrorMessage>,
}

/// A node under test with a Redis of its own, a channel prefix of its own, a subscriber to one
/// stream's results (and every error channel), and a connection to publish with.
struct TestNode {
    redis: common::Redis,
    prefix: String,
    stream: String,
    node: Node,
    subscriber: redis::aio::PubSub,
    publisher: redis::aio::MultiplexedConnection,
    /// How `publish` sends frames: PUBLISH, or XADD to the frames stream of the same name.
    transport: Transport,
}

impl TestNode {
    /// `extra` is appended to the config (sections `[detector]`, `[limits]`).
    async fn start(model: &Path, extra: &str, stream: &str) -> TestNode {
        Self::start_on(common::Redis::start(), model, extra, stream).await
    }

    /// On a Redis of the test's choosing.
    async fn start_on(redis: common::Redis, model: &Path, extra: &str, stream: &str) -> TestNode {
        let prefix = unique_prefix();
        let cfg = common::single_node_config(model, &redis.url, &prefix, extra);
        Self::start_configured(redis, prefix, &cfg, stream).await
    }

    /// A node of this config (whose channel prefix is `prefix`); the test publishes and
    /// subscribes on `redis.url`.
    async fn start_configured(
        redis: common::Redis,
        prefix: String,
        cfg: &kadr::Config,
        stream: &str,
    ) -> TestNode {
        let node = Node::start_with(cfg, false).await.unwrap();
        let (subscriber, publisher) = Self::connect(&redis.url, &prefix, stream).await;
        TestNode {
            redis,
            prefix,
            stream: stream.to_string(),
            node,
            subscriber,
            publisher,
            transport: Transport::PubSub,
        }
    }

    async fn connect(
        url: &str,
        prefix: &str,
        stream: &str,
    ) -> (redis::aio::PubSub, redis::aio::MultiplexedConnection) {
        let client = redis::Client::open(url).unwrap();
        let mut ps = client.get_async_pubsub().await.unwrap();
        ps.subscribe(format!("{prefix}:detections:{stream}"))
            .await
            .unwrap();
        ps.psubscribe(format!("{prefix}:errors:*")).await.unwrap();
        let conn = client.get_multiplexed_async_connection().await.unwrap();
        (ps, conn)
    }

    /// Open the subscriber and publisher again (after a Redis restart).
    async fn reconnect(&mut self) {
        (self.subscriber, self.publisher) =
            Self::connect(&self.redis.url, &self.prefix, &self.stream).await;
    }

    /// Wait until the node's source is subscribed to Redis again and says Redis is up; fail
    /// with `what` past `deadline`.
    async fn wait_source_subscribed(&self, deadline: Instant, what: &str) {
        let client = redis::Client::open(self.redis.url.as_str()).unwrap();
        let mut admin = client.get_multiplexed_async_connection().await.unwrap();
        loop {
            let patterns: i64 = redis::cmd("PUBSUB")
                .arg("NUMPAT")
                .query_async(&mut admin)
                .await
                .unwrap();
            if patterns > 0 && self.node.stats().redis_down.get() == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The frames channel of the test's stream.
    fn frames_channel(&self) -> String {
        format!("{}:frames:{}", self.prefix, self.stream)
    }

    async fn publish_raw(&mut self, channel: &[u8], payload: &[u8]) {
        match self.transport {
            Transport::PubSub => {
                let _: i64 = redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(payload)
                    .query_async(&mut self.publisher)
                    .await
                    .unwrap();
            }
            Transport::Kafka => unreachable!("these tests run over Redis (tests/kafka.rs)"),
            Transport::Streams => {
                let _: String = redis::cmd("XADD")
                    .arg(channel)
                    .arg("*")
                    .arg("frame")
                    .arg(payload)
                    .query_async(&mut self.publisher)
                    .await
                    .unwrap();
            }
        }
    }

    /// Publish a frame of the test's stream.
    async fn publish(&mut self, seq: u64, flags: u8, jpeg: &[u8]) {
        let stream = self.stream.clone();
        self.publish_as(&stream, seq, flags, jpeg).await;
    }

    /// Publish a frame of another stream, on its own frames channel (or stream).
    async fn publish_as(&mut self, stream: &str, seq: u64, flags: u8, jpeg: &[u8]) {
        let mut msg = Vec::new();
        encode_frame(&mut msg, stream, seq, kadr::protocol::now_us(), flags, jpeg);
        let channel = format!("{}:frames:{stream}", self.prefix);
        self.publish_raw(channel.as_bytes(), &msg).await;
    }

    /// Collect until `frames` sequence numbers are accounted for and `errors` errors have
    /// come, or `timeout` passes.
    async fn collect(&mut self, frames: u64, errors: usize, timeout: Duration) -> Outputs {
        let mut out = Outputs {
            messages: vec![],
            errors: vec![],
        };
        let mut accounted = 0;
        let deadline = Instant::now() + timeout;
        let mut stream = self.subscriber.on_message();
        while accounted < frames || out.errors.len() < errors {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(Some(msg)) = tokio::time::timeout(left, stream.next()).await else {
                break;
            };
            let channel: Vec<u8> = msg.get_channel().unwrap();
            if channel.windows(8).any(|w| w == b":errors:") {
                out.errors
                    .push(serde_json::from_slice(msg.get_payload_bytes()).unwrap());
            } else {
                let m: OutputMessage = serde_json::from_slice(msg.get_payload_bytes()).unwrap();
                accounted += match &m {
                    OutputMessage::Detections(_) => 1,
                    OutputMessage::Gap(g) => g.count,
                };
                out.messages.push(m);
            }
        }
        out
    }

    async fn stop(self) {
        self.node.shutdown(Duration::from_secs(5)).await;
    }
}

/// Every sequence number from `first` exactly once, in order; returns (detected, gaps by reason).
fn check_order(messages: &[OutputMessage], first: u64) -> (u64, Vec<(GapReason, u64)>) {
    let mut next = first;
    let mut detected = 0;
    let mut gaps = vec![];
    for m in messages {
        match m {
            OutputMessage::Detections(d) => {
                assert_eq!(d.seq, next, "out of order");
                next += 1;
                detected += 1;
            }
            OutputMessage::Gap(g) => {
                assert_eq!(g.seq, next, "gap out of order");
                next += g.count;
                gaps.push((g.reason, g.count));
            }
        }
    }
    (detected, gaps)
}

/// A real 1280x720 frame of the demo video, as JPEG.
fn sample_jpeg() -> Option<Vec<u8>> {
    if let Some(dir) = common::fixtures() {
        return Some(std::fs::read(dir.join("yolov7/bbb_frame60.jpg")).unwrap());
    }
    let img = image::RgbImage::from_fn(1280, 720, |x, y| {
        image::Rgb([(x / 5) as u8, (y / 3) as u8, 128])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .encode_image(&img)
        .unwrap();
    Some(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_frame_of_a_real_video_comes_out_in_order() {
    let (Some(model), Some(video)) = (common::model_384x640(), common::video("bigbuckbunny.mp4"))
    else {
        return;
    };
    let mut t = TestNode::start(&model, "[detector]\npool_size = 2\n", "bbb").await;

    let status = common::kadr()
        .args([
            "publish",
            "--stream",
            "bbb",
            "--fast",
            "--keep-all",
            "--prefix",
            &t.prefix,
            "--redis-url",
            &t.redis.url,
            "--input",
        ])
        .arg(&video)
        .status()
        .unwrap();
    assert!(status.success());

    let out = t.collect(132, 0, Duration::from_secs(180)).await;
    let (detected, gaps) = check_order(&out.messages, 0);
    assert_eq!(detected, 132, "gaps: {gaps:?}");
    assert!(gaps.is_empty());
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    // Detection messages carry the documented fields, boxes inside the frame.
    let mut boxes = 0;
    for m in &out.messages {
        let OutputMessage::Detections(d) = m else {
            unreachable!()
        };
        assert_eq!((d.width, d.height, d.stream.as_str()), (1280, 720, "bbb"));
        assert!(d.model.starts_with("yolov7-tiny"));
        assert!(d.done_ts_us >= d.capture_ts_us);
        for det in &d.detections {
            let [x1, y1, x2, y2] = det.bbox;
            assert!(
                0.0 <= x1 && x1 <= x2 && x2 <= 1280.0 && 0.0 <= y1 && y1 <= y2 && y2 <= 720.0,
                "{det:?}"
            );
            assert!(det.score > 0.25 && det.score <= 1.0);
            boxes += 1;
        }
    }
    assert!(boxes > 0, "the demo model finds something on real frames");
    assert_eq!(t.node.stats().detected.get(), 132);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_an_error_and_the_node_keeps_serving() {
    let (Some(model), Some(jpeg)) = (common::model_384x640(), sample_jpeg()) else {
        return;
    };
    let limits = "[detector]\npool_size = 1\n[limits]\nmax_payload_bytes = 1048576\nmax_stream_id_bytes = 16\ngap_wait_ms = 300\n";
    let mut t = TestNode::start(&model, limits, "cam").await;
    let prefix = t.prefix.clone();
    let chan = t.frames_channel();

    let mut good = Vec::new();
    encode_frame(&mut good, "cam", 0, 1, FLAG_KEEP, &jpeg);
    // A JPEG with a bogus Huffman table, and one cut off in the middle of its scan.
    let mut bad_huffman = jpeg.clone();
    let dht = bad_huffman
        .windows(2)
        .position(|w| w == [0xFF, 0xC4])
        .unwrap();
    bad_huffman[dht + 5..dht + 21].fill(0);
    let truncated = jpeg[..jpeg.len() / 2].to_vec();
    // A JPEG that declares a zero width (SOF0 at: FF C0, len(2), precision(1), height(2), width(2)).
    let mut zero = jpeg.clone();
    let sof = zero.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    zero[sof + 7] = 0;
    zero[sof + 8] = 0;
    let frame = |seq: u64, body: &[u8]| {
        let mut m = Vec::new();
        encode_frame(&mut m, "cam", seq, 1, FLAG_KEEP, body);
        m
    };
    let mut wrong_magic = frame(100, &jpeg);
    wrong_magic[0] = b'X';
    let mut wrong_version = frame(100, &jpeg);
    wrong_version[4] = 9;
    let oversized = frame(100, &vec![0u8; 1_100_000]);

    // (channel, payload, expected error code); each is followed by a good frame. Payloads that
    // are only a JPEG body get a valid header with the next sequence number when published.
    enum Payload {
        Raw(Vec<u8>),
        Jpeg(Vec<u8>),
    }
    let long = "x".repeat(17);
    let mut long_msg = Vec::new();
    encode_frame(&mut long_msg, &long, 0, 1, 0, &jpeg);
    let mut not_utf8_channel = format!("{prefix}:frames:").into_bytes();
    not_utf8_channel.extend_from_slice(&[0xC3, 0x28]);
    let cam = chan.clone().into_bytes();
    let cases: Vec<(Vec<u8>, Payload, &str)> = vec![
        (cam.clone(), Payload::Raw(wrong_magic), "bad_magic"),
        (cam.clone(), Payload::Raw(wrong_version), "bad_version"),
        (cam.clone(), Payload::Raw(good[..20].to_vec()), "truncated"),
        (cam.clone(), Payload::Raw(oversized), "too_large"),
        (
            format!("{prefix}:frames:{long}").into_bytes(),
            Payload::Raw(long_msg),
            "bad_stream_id",
        ),
        (
            not_utf8_channel,
            Payload::Raw(good.clone()),
            "bad_stream_id",
        ),
        (cam.clone(), Payload::Jpeg(zero), "zero_size"),
        (
            cam.clone(),
            Payload::Jpeg(b"\xff\xd8 not really a jpeg".to_vec()),
            "bad_image",
        ),
        (cam.clone(), Payload::Jpeg(bad_huffman), "bad_image"),
        (cam.clone(), Payload::Jpeg(truncated), "bad_image"),
    ];
    t.publish_raw(chan.as_bytes(), &good).await; // seq 0
    let mut seq = 1;
    for (channel, payload, _) in &cases {
        match payload {
            Payload::Raw(bytes) => t.publish_raw(channel, bytes).await,
            Payload::Jpeg(body) => {
                t.publish_raw(channel, &frame(seq, body)).await;
                seq += 1;
            }
        }
        t.publish_raw(chan.as_bytes(), &frame(seq, &jpeg)).await;
        seq += 1;
    }
    let out = t.collect(seq, cases.len(), Duration::from_secs(120)).await;

    let (detected, gaps) = check_order(&out.messages, 0);
    // seq 0 and every good frame after a bad one came through; the four bad frames with a
    // valid header are reported in order as failed.
    assert_eq!(
        detected,
        1 + cases.len() as u64,
        "gaps {gaps:?} {:#?}",
        out.errors
    );
    assert!(
        gaps.iter().all(|g| g.0 == GapReason::Failed),
        "{gaps:?} {:#?}",
        out.errors
    );
    assert_eq!(gaps.iter().map(|g| g.1).sum::<u64>(), 4, "{gaps:?}");
    let mut codes: Vec<&str> = out.errors.iter().map(|e| e.code.as_str()).collect();
    let mut want: Vec<&str> = cases.iter().map(|c| c.2).collect();
    codes.sort();
    want.sort();
    assert_eq!(codes, want, "{:#?}", out.errors);
    assert!(out
        .errors
        .iter()
        .all(|e| e.kind == "error" && !e.message.is_empty()));
    assert!(
        out.errors.iter().any(|e| e.stream == long),
        "error published on the stream's own error channel"
    );
    // Each refusal counted once; the refused frames that had a sequence number count as failed.
    assert_eq!(t.node.stats().errors.get(), cases.len() as u64);
    assert_eq!(t.node.stats().failed.get(), 4);
    assert_eq!(t.node.stats().detected.get(), 1 + cases.len() as u64);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_detector_is_restarted_and_its_frame_sent_again() {
    let (Some(model), Some(jpeg)) = (common::model_384x640(), sample_jpeg()) else {
        return;
    };
    let mut t = TestNode::start(&model, "[detector]\npool_size = 2\n", "s").await;
    let pool = t.node.pool().unwrap();
    pool.cast(PoolMsg::InjectFault).unwrap();
    for seq in 0..12 {
        t.publish(seq, FLAG_KEEP, &jpeg).await;
    }
    let out = t.collect(12, 0, Duration::from_secs(120)).await;
    // The frame the crash took down went to the other detector: nothing is lost.
    let (detected, gaps) = check_order(&out.messages, 0);
    assert_eq!((detected, gaps), (12, vec![]));
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert_eq!(t.node.stats().detector_restarts.get(), 1);
    // Sent again when its detector left, or (on a loaded machine, where the crash is noticed
    // late) already sent to the other detector as a silent detector's kept frame.
    let (redispatched, resent) = (
        t.node.stats().redispatched.get(),
        t.node.stats().resent.get(),
    );
    assert!(
        redispatched <= 1 && redispatched + resent >= 1,
        "redispatched {redispatched}, resent {resent}"
    );
    // The pool is whole again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = t.node.pool_status().await.unwrap().unwrap();
        if s.alive == 2 && t.node.stats().cluster_detectors.get() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "detector not restarted: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And it works after the restart.
    for seq in 12..16 {
        t.publish(seq, FLAG_KEEP, &jpeg).await;
    }
    let out = t.collect(4, 0, Duration::from_secs(60)).await;
    assert_eq!(check_order(&out.messages, 12), (4, vec![]));
    t.stop().await;
}

/// The supervision tree: each kind of actor is killed in a running node, with frames inside it.
/// The part comes back (the source, dispatcher and sequencer together), and every frame published
/// is accounted for once, in order: the ones the crash took as gaps, the rest detected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_part_of_a_node_is_restarted_and_the_stream_goes_on() {
    let (Some(model), Some(jpeg)) = (common::model_384x640(), sample_jpeg()) else {
        return;
    };
    let mut t = TestNode::start(&model, "[detector]\npool_size = 1\n", "crash").await;
    // The stream is known first (a result published): frames a crash takes before anything of
    // a new stream was published could not be reported by anyone, since nothing says where its
    // numbering began.
    t.publish(0, FLAG_KEEP, &jpeg).await;
    assert_eq!(
        check_order(&t.collect(1, 0, Duration::from_secs(60)).await.messages, 0).0,
        1
    );
    let mut next = 1;
    for (round, part) in ["source", "dispatcher", "sequencer", "pool"]
        .into_iter()
        .enumerate()
    {
        let restarts = |t: &TestNode| {
            t.node.stats().ingress_restarts.get() + t.node.stats().pool_restarts.get()
        };
        let first = next;
        for _ in 0..3 {
            t.publish(next, FLAG_KEEP, &jpeg).await;
            next += 1;
        }
        t.node.inject_crash(part);
        let deadline = Instant::now() + Duration::from_secs(30);
        while restarts(&t) < round as u64 + 1 || t.node.stats().parts_down.get() > 0 {
            assert!(Instant::now() < deadline, "{part} was not restarted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        t.wait_source_subscribed(deadline, "source not back").await;
        for _ in 0..3 {
            t.publish(next, FLAG_KEEP, &jpeg).await;
            next += 1;
        }
        let out = t.collect(6, 0, Duration::from_secs(60)).await;
        // check_order asserts each number once, in order, from `first`.
        let (detected, gaps) = check_order(&out.messages, first);
        let accounted = detected + gaps.iter().map(|(_, n)| n).sum::<u64>();
        assert_eq!(accounted, 6, "{part}: {gaps:?}");
        assert!(
            gaps.iter()
                .all(|(r, _)| matches!(r, GapReason::Lost | GapReason::Missing)),
            "{part}: {gaps:?}"
        );
        // Frames published after the restart are detected.
        let last = out.messages.last().unwrap();
        assert!(
            matches!(last, OutputMessage::Detections(d) if d.seq == next - 1),
            "{part}: {last:?}"
        );
        eprintln!("{part}: {detected} of 6 detected, gaps {gaps:?}");
    }
    assert_eq!(t.node.stats().ingress_restarts.get(), 3);
    assert_eq!(t.node.stats().pool_restarts.get(), 1);
    t.stop().await;
}

/// A part that keeps failing is not restarted for ever: past the budget the node gives up and
/// says why (`kadr node` then exits non-zero for its own supervisor to act).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_part_keeps_failing_gives_up() {
    let Some(model) = common::model_384x640() else {
        return;
    };
    let t = TestNode::start(&model, "[detector]\npool_size = 1\n", "budget").await;
    let gave_up = async {
        for _ in 0..=kadr::MAX_RESTARTS {
            let before = t.node.stats().ingress_restarts.get();
            t.node.inject_crash("sequencer");
            while t.node.stats().ingress_restarts.get() == before {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let why = tokio::select! {
        why = t.node.failed() => why,
        _ = gave_up => t.node.failed().await,
        _ = tokio::time::sleep(Duration::from_secs(60)) => panic!("the node did not give up"),
    };
    assert!(
        why.contains("ingress") && why.contains("giving up"),
        "{why}"
    );
    assert_eq!(
        t.node.stats().ingress_restarts.get(),
        kadr::MAX_RESTARTS as u64
    );
    t.stop().await;
}

/// `limits.queue_capacity`, the memory bound on live frames waiting, holds on its own too: a
/// stream allowed to queue deeper than it (`live.queue_depth`) loses its oldest frames there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_drops_its_oldest_frames_when_the_pool_falls_behind() {
    let (Some(model), Some(jpeg)) = (common::model_384x640(), sample_jpeg()) else {
        return;
    };
    let extra =
        "[detector]\npool_size = 1\n[limits]\nqueue_capacity = 2\n[live]\nqueue_depth = 64\n";
    let mut t = TestNode::start(&model, extra, "live").await;
    for seq in 0..40 {
        t.publish(seq, 0, &jpeg).await;
    }
    let out = t.collect(40, 0, Duration::from_secs(120)).await;
    let (detected, gaps) = check_order(&out.messages, 0);
    let dropped: u64 = gaps
        .iter()
        .filter(|g| g.0 == GapReason::Dropped)
        .map(|g| g.1)
        .sum();
    assert_eq!(
        detected + dropped,
        40,
        "every frame accounted for: {gaps:?}"
    );
    assert!(
        dropped > 0,
        "one detector cannot keep up with 40 frames at once"
    );
    assert!(detected >= 3, "the newest frames are detected");
    // The last frame published is never the one dropped.
    assert!(matches!(out.messages.last(), Some(OutputMessage::Detections(d)) if d.seq == 39));
    assert_eq!(t.node.stats().dropped.get(), dropped);
    t.stop().await;
}

/// A live camera much faster than its one detector: results stay fresh. With the default
/// `[live]` rule a frame waits at most about one inference behind the frame before it,
/// never behind a queue of its own stream's older frames (the old 32-frame queue made every
/// result about 32 inferences old); the frames passed over are `dropped` gaps that say why,
/// and every frame is accounted for, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_faster_than_its_detector_gets_fresh_results() {
    let (Some(model), Some(jpeg)) = (common::model_384x640(), sample_jpeg()) else {
        return;
    };
    let extra = "[detector]\npool_size = 1\n";
    let mut t = TestNode::start(&model, extra, "fast").await;
    const FRAMES: u64 = 80;
    for seq in 0..FRAMES {
        t.publish(seq, 0, &jpeg).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let out = t.collect(FRAMES, 0, Duration::from_secs(120)).await;
    let (detected, gaps) = check_order(&out.messages, 0);
    let dropped: u64 = gaps.iter().map(|g| g.1).sum();
    assert_eq!(
        detected + dropped,
        FRAMES,
        "every frame accounted for: {gaps:?}"
    );
    assert!(
        dropped > 0 && detected >= 2,
        "{detected} detected, {gaps:?}"
    );
    let mut max_detect: f64 = 0.0;
    let mut max_queued: f64 = 0.0;
    for m in &out.messages {
        match m {
            OutputMessage::Gap(g) => {
                assert_eq!(g.reason, GapReason::Dropped, "{g:?}");
                assert_eq!(
                    g.detail.as_deref(),
                    Some("superseded: a newer frame of the stream was waiting"),
                    "a live frame is dropped only for a newer one"
                );
            }
            OutputMessage::Detections(d) => {
                max_queued = max_queued.max(d.queued_ms.expect("timed by the node"));
                max_detect = max_detect.max(d.detect_ms.expect("timed by the node"));
            }
        }
    }
    // The bound: a frame waits for at most the inference ahead of it (relative to this run's
    // own inference time, so a slow or busy machine does not change the verdict).
    assert!(
        max_queued <= 2.0 * max_detect + 50.0,
        "a frame waited {max_queued} ms for a detector whose longest frame took {max_detect} ms"
    );
    assert!(
        matches!(out.messages.last(), Some(OutputMessage::Detections(d)) if d.seq == FRAMES - 1),
        "the newest frame is never the one dropped"
    );
    assert_eq!(t.node.stats().superseded.get(), dropped);
    t.stop().await;
}

/// Many slow cameras publishing in step (40 of them, a frame each at the same moment, twice)
/// against one detector: each has one frame waiting, none newer, so none is stale and every
/// frame is detected. The old rule shed 8 of each burst because the shared queue held 32.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_cameras_in_step_lose_no_frame_to_each_other() {
    let (Some(model), Some(jpeg)) = (common::model_384x640(), sample_jpeg()) else {
        return;
    };
    let extra = "[detector]\npool_size = 1\n";
    let mut t = TestNode::start(&model, extra, "unused").await;
    let client = redis::Client::open(t.redis.url.as_str()).unwrap();
    let mut results = client.get_async_pubsub().await.unwrap();
    results
        .psubscribe(format!("{}:detections:*", t.prefix))
        .await
        .unwrap();
    let mut results = results.into_on_message();
    const CAMERAS: u64 = 40;
    let mut msg = Vec::new();
    for round in 0..2u64 {
        for cam in 0..CAMERAS {
            let stream = format!("slow{cam}");
            msg.clear();
            encode_frame(&mut msg, &stream, round, kadr::protocol::now_us(), 0, &jpeg);
            let channel = format!("{}:frames:{stream}", t.prefix);
            t.publish_raw(channel.as_bytes(), &msg).await;
        }
        // The next frames come once these are all out, as a slow camera's would.
        let mut seen = 0;
        while seen < CAMERAS {
            let m = tokio::time::timeout(Duration::from_secs(120), results.next())
                .await
                .expect("every camera's frame comes out")
                .unwrap();
            let m: OutputMessage = serde_json::from_slice(m.get_payload_bytes()).unwrap();
            match m {
                OutputMessage::Detections(d) => assert_eq!(d.seq, round),
                OutputMessage::Gap(g) => panic!("round {round}: {g:?}"),
            }
            seen += 1;
        }
    }
    assert_eq!(t.node.stats().detected.get(), 2 * CAMERAS);
    assert_eq!(t.node.stats().dropped.get(), 0);
    t.stop().await;
}

/// A stream with an age limit (`[live.streams."strict"] max_wait_ms`) has a frame that waited
/// longer dropped as stale, with the reason; others keep the default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_with_an_age_limit_drops_frames_that_waited_too_long() {
    let (Some(model), Some(jpeg)) = (common::model_384x640(), sample_jpeg()) else {
        return;
    };
    let extra = "[detector]\npool_size = 1\n[live.streams.strict]\nmax_wait_ms = 1\n";
    let mut t = TestNode::start(&model, extra, "strict").await;
    const FRAMES: u64 = 60;
    for seq in 0..FRAMES {
        t.publish(seq, 0, &jpeg).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let out = t.collect(FRAMES, 0, Duration::from_secs(120)).await;
    let (detected, gaps) = check_order(&out.messages, 0);
    let gap_frames: u64 = gaps.iter().map(|g| g.1).sum();
    assert_eq!(detected + gap_frames, FRAMES, "{gaps:?}");
    let stale: Vec<&str> = out
        .messages
        .iter()
        .filter_map(|m| match m {
            OutputMessage::Gap(g) => g.detail.as_deref(),
            _ => None,
        })
        .filter(|d| d.starts_with("stale: waited"))
        .collect();
    assert!(!stale.is_empty(), "no frame dropped for its age: {gaps:?}");
    assert!(t.node.stats().too_old.get() > 0);
    assert!(detected >= 1);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_sequence_numbers_are_reported_as_one_gap_after_the_wait() {
    let (Some(model), Some(jpeg)) = (common::model_384x640(), sample_jpeg()) else {
        return;
    };
    let extra = "[detector]\npool_size = 1\n[limits]\ngap_wait_ms = 200\n";
    let mut t = TestNode::start(&model, extra, "g").await;
    for seq in [0, 1, 5, 6] {
        t.publish(seq, FLAG_KEEP, &jpeg).await;
    }
    // A repeated sequence number is refused as stale.
    t.publish(6, FLAG_KEEP, &jpeg).await;
    let out = t.collect(7, 1, Duration::from_secs(60)).await;
    let (detected, gaps) = check_order(&out.messages, 0);
    assert_eq!(detected, 4);
    assert_eq!(gaps, vec![(GapReason::Missing, 3)]);
    assert_eq!(out.errors.len(), 1);
    assert_eq!(out.errors[0].code, "stale_seq");
    t.stop().await;
}

#[test]
fn node_start_up_errors_say_what_to_do() {
    let Some(model) = common::model_384x640() else {
        return;
    };
    let redis = common::Redis::start();
    let taken_by = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken_by.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let cases = [
        (
            write(
                "missing-model.toml",
                "[model]\npath = \"nope.onnx\"\n".into(),
            ),
            None,
            "model.path",
        ),
        (
            write(
                "typo.toml",
                format!("[model]\npath = \"{}\"\nthreshold = 0.3\n", model.display()),
            ),
            None,
            "unknown field `threshold`",
        ),
        (
            write(
                "no-redis.toml",
                format!(
                    "[model]\npath = \"{}\"\n[redis]\nurl = \"redis://127.0.0.1:{}\"\n",
                    model.display(),
                    common::free_port()
                ),
            ),
            None,
            "connection refused",
        ),
        (
            write(
                "no-runtime.toml",
                format!("[model]\npath = \"{}\"\n", model.display()),
            ),
            Some("/nonexistent/libonnxruntime.so"),
            "scripts/setup.sh",
        ),
        (
            write(
                "port-in-use.toml",
                format!(
                    "[model]\npath = \"{}\"\n[redis]\nurl = \"{}\"\n[cluster]\nlisten = \"{taken}\"\n",
                    model.display(),
                    redis.url
                ),
            ),
            None,
            "cluster.listen",
        ),
        (
            write(
                "no-seed.toml",
                format!(
                    "[model]\npath = \"{}\"\n[redis]\nurl = \"{}\"\n[cluster]\nlisten = \"127.0.0.1:{}\"\n\
                     seeds = [\"127.0.0.1:{}\"]\njoin_timeout_ms = 500\n[admin]\nlisten = \"127.0.0.1:{}\"\n",
                    model.display(),
                    redis.url,
                    common::free_port(),
                    common::free_port(),
                    common::free_port()
                ),
            ),
            None,
            "cluster.seeds",
        ),
        (
            write(
                "admin-port-in-use.toml",
                format!(
                    "[model]\npath = \"{}\"\n[redis]\nurl = \"{}\"\n[cluster]\nlisten = \"127.0.0.1:{}\"\n[admin]\nlisten = \"{taken}\"\n",
                    model.display(),
                    redis.url,
                    common::free_port()
                ),
            ),
            None,
            "admin.listen",
        ),
    ];
    for (path, runtime, expect) in cases {
        let mut cmd = common::kadr();
        cmd.arg("node")
            .arg("--config")
            .arg(&path)
            .env("KADR_CLUSTER_COOKIE", "test-cookie")
            .env_remove("KADR_REDIS_URL");
        if let Some(r) = runtime {
            cmd.env("KADR_ONNXRUNTIME", r);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}: started anyway", path.display());
        assert!(stderr.contains(expect), "{}: {stderr}", path.display());
    }
    // No cookie at all: refused before anything starts.
    let out = common::kadr()
        .arg("node")
        .arg("--config")
        .arg(dir.path().join("no-runtime.toml"))
        .env_remove("KADR_CLUSTER_COOKIE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cluster.cookie"));
}

#[test]
fn kadr_detect_reads_jpeg_and_png_and_prints_json_lines() {
    let (Some(model), Some(jpeg)) = (common::model_384x640(), sample_jpeg()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let jpg = dir.path().join("frame.jpg");
    std::fs::write(&jpg, &jpeg).unwrap();
    let png = dir.path().join("frame.png");
    image::load_from_memory(&jpeg).unwrap().save(&png).unwrap();
    let lines = common::kadr_detect(&model, &["--conf", "0.2"], [&jpg, &png]);
    assert_eq!(lines.len(), 2);
    for l in &lines {
        assert_eq!(
            (l["width"].as_u64(), l["height"].as_u64()),
            (Some(1280), Some(720))
        );
        for d in l["detections"].as_array().unwrap() {
            assert!(d["score"].as_f64().unwrap() > 0.2);
            assert_eq!(d["box"].as_array().unwrap().len(), 4);
            assert!(d["class"].is_string() && d["class_id"].is_u64());
        }
    }
    // A file that is not an image fails with its name, and a non-zero exit.
    let bad = dir.path().join("bad.jpg");
    std::fs::write(&bad, b"nope").unwrap();
    let out = common::kadr()
        .arg("detect")
        .arg("--model")
        .arg(&model)
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.jpg"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_rides_out_a_redis_restart() {
    let (Some(model), Some(jpeg)) = (common::model_384x640(), sample_jpeg()) else {
        return;
    };
    let mut t = TestNode::start(&model, "[detector]\npool_size = 1\n", "r").await;
    if !t.redis.owned() {
        common::skip("REDIS_URL is set; this test restarts its own server");
        return;
    }
    for seq in 0..3 {
        t.publish(seq, FLAG_KEEP, &jpeg).await;
    }
    let out = t.collect(3, 0, Duration::from_secs(60)).await;
    assert_eq!(check_order(&out.messages, 0), (3, vec![]));

    t.redis.restart();
    // Wait until the source has resubscribed (it retries with backoff).
    let deadline = Instant::now() + Duration::from_secs(30);
    t.wait_source_subscribed(deadline, "source did not resubscribe")
        .await;
    t.reconnect().await;
    for seq in 3..6 {
        t.publish(seq, FLAG_KEEP, &jpeg).await;
    }
    let out = t.collect(3, 0, Duration::from_secs(60)).await;
    assert_eq!(
        check_order(&out.messages, 3),
        (3, vec![]),
        "results flow again, in order, none lost"
    );
    t.stop().await;
}

/// An outage longer than a few seconds used to black the node out for about two minutes (the
/// redis crate's default reconnection backoff); now it recovers within a couple of seconds of
/// Redis coming back, says so in the log, `/health` and `/metrics`, and loses no frame it took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_redis_outage_costs_seconds_after_redis_returns_not_minutes() {
    let (Some(model), Some(jpeg)) = (common::model_384x640(), sample_jpeg()) else {
        return;
    };
    let mut t = TestNode::start(&model, "[detector]\npool_size = 1\n", "long").await;
    if !t.redis.owned() {
        common::skip("REDIS_URL is set; this test stops its own server");
        return;
    }
    t.publish(0, FLAG_KEEP, &jpeg).await;
    let out = t.collect(1, 0, Duration::from_secs(60)).await;
    assert_eq!(check_order(&out.messages, 0), (1, vec![]));
    assert_eq!(t.node.stats().redis_down.get(), 0);

    t.redis.stop();
    // Long enough for the old backoff to have reached its 60 s step.
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.node.stats().redis_down.get() == 0 {
        assert!(Instant::now() < deadline, "the outage was not noticed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        t.node.stats().redis_outages.get(),
        1,
        "one outage, counted once"
    );
    t.redis.start_again();
    let back = Instant::now();

    // Resubscribed: measured in seconds (about 2), asserted with room for a slow machine, and
    // far below the two minutes it took before.
    t.wait_source_subscribed(
        back + Duration::from_secs(20),
        "source not back 20 s after Redis returned",
    )
    .await;
    eprintln!(
        "source resubscribed {:?} after Redis returned",
        back.elapsed()
    );
    t.reconnect().await;
    for seq in 1..4 {
        t.publish(seq, FLAG_KEEP, &jpeg).await;
    }
    // And results are published again (the egress reconnects as fast).
    let out = t.collect(3, 0, Duration::from_secs(20)).await;
    assert_eq!(check_order(&out.messages, 1), (3, vec![]));
    eprintln!("results flowing {:?} after Redis returned", back.elapsed());
    t.stop().await;
}

/// Hostile publishers: junk on a thousand new stream ids registers none of them (a real camera
/// that comes next is served), and one forged frame far ahead cannot take a stream's numbering
/// over (the genuine frames carry on, no `missing` gap, no `stale_seq`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_streams_and_forged_sequence_jumps_do_not_lock_cameras_out() {
    let (Some(model), Some(jpeg)) = (common::model_384x640(), sample_jpeg()) else {
        return;
    };
    let extra = "[detector]\npool_size = 1\n[limits]\nmax_streams = 4\nmax_seq_jump = 300\n";
    let mut t = TestNode::start(&model, extra, "cam").await;
    for i in 0..1100u64 {
        t.publish_as(&format!("junk{i}"), 0, 0, b"x").await;
    }
    for seq in 0..3 {
        t.publish(seq, FLAG_KEEP, &jpeg).await;
    }
    // The forgery: one frame 900 ahead.
    t.publish(902, FLAG_KEEP, &jpeg).await;
    for seq in 3..6 {
        t.publish(seq, FLAG_KEEP, &jpeg).await;
    }
    let out = t.collect(6, 1, Duration::from_secs(60)).await;
    assert_eq!(
        check_order(&out.messages, 0),
        (6, vec![]),
        "every genuine frame detected, in order, no gap"
    );
    let codes: Vec<&str> = out.errors.iter().map(|e| e.code.as_str()).collect();
    assert!(codes.contains(&"seq_jump"), "{codes:?}");
    assert!(!codes.contains(&"too_many_streams"), "{codes:?}");
    assert!(!codes.contains(&"stale_seq"), "{codes:?}");
    t.stop().await;
}

/// A consumer group rewound (`XGROUP SETID ... 0`) or destroyed under the node used to replay
/// every frame still in the stream as a new epoch, detected again. Now the entries read
/// already are acknowledged and not read again, the publisher is told (`redis_state`), and the
/// stream goes on in its epoch with nothing published twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_streams_a_rewound_or_destroyed_group_replays_nothing() {
    let (Some(model), Some(jpeg)) = (common::model_384x640(), sample_jpeg()) else {
        return;
    };
    let mut t = TestNode::start(&model, "[detector]\npool_size = 1\n", "cam").await;
    t.transport = Transport::Streams;
    for seq in 0..5 {
        t.publish(seq, FLAG_KEEP, &jpeg).await;
    }
    let out = t.collect(5, 0, Duration::from_secs(60)).await;
    assert_eq!(check_order(&out.messages, 0), (5, vec![]));
    let client = redis::Client::open(t.redis.url.as_str()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let key = t.frames_channel();
    let (mut next, mut errors) = (5, Vec::new());
    for how in [
        &["SETID", key.as_str(), "kadr", "0"][..],
        &["DESTROY", key.as_str(), "kadr"],
    ] {
        let _: redis::Value = redis::cmd("XGROUP")
            .arg(how)
            .query_async(&mut admin)
            .await
            .unwrap();
        for seq in next..next + 3 {
            t.publish(seq, FLAG_KEEP, &jpeg).await;
        }
        let out = t.collect(3, 0, Duration::from_secs(60)).await;
        assert_eq!(
            check_order(&out.messages, next),
            (3, vec![]),
            "after XGROUP {how:?}: only the new frames, once: {:?}",
            out.messages
        );
        assert!(
            out.messages.iter().all(|m| m.epoch() == 0),
            "{:?}",
            out.messages
        );
        errors.extend(out.errors);
        next += 3;
    }
    if !errors.iter().any(|e| e.code == "redis_state") {
        errors.extend(t.collect(0, 1, Duration::from_secs(10)).await.errors);
    }
    let codes: Vec<&str> = errors.iter().map(|e| e.code.as_str()).collect();
    assert!(
        codes.contains(&"redis_state"),
        "the rewind is told: {codes:?}"
    );
    assert!(!codes.contains(&"seq_restart"), "{codes:?}");
    t.stop().await;
}

/// The node-wide source lease forged (`SET source-lease x EX 3600`) used to keep every source
/// node standing by for the hour. A lease no node writes (no expiry, or over ten lifetimes) is
/// deleted, counted, and taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_source_lease_is_found_and_the_node_reads() {
    let (Some(model), Some(jpeg)) = (common::model_384x640(), sample_jpeg()) else {
        return;
    };
    let redis = common::Redis::start();
    let prefix = unique_prefix();
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}:source-lease"))
        .arg("ghost/0000000000000001")
        .arg("EX")
        .arg(3600)
        .query_async(&mut admin)
        .await
        .unwrap();
    let cfg = common::single_node_config(
        &model,
        &redis.url,
        &prefix,
        "stream_leases = false\n[detector]\npool_size = 1\n",
    );
    let mut t = TestNode::start_configured(redis, prefix, &cfg, "cam").await;
    t.transport = Transport::Streams;
    for seq in 0..5 {
        t.publish(seq, FLAG_KEEP, &jpeg).await;
    }
    let out = t.collect(5, 0, Duration::from_secs(60)).await;
    assert_eq!(check_order(&out.messages, 0), (5, vec![]), "the node reads");
    assert_eq!(t.node.stats().redis_state_refused.get(), 1);
    t.stop().await;
}

/// A stream lease forged before the stream's first frame (`SET lease:cam x EX 3600`, held by no
/// node) used to stall the stream for the hour: 0 of 120 frames through, nothing said. Now the
/// lease, held by no live node and longer than any node writes, is deleted and said
/// (`redis_state`), and the stream is read: over Streams, every frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_stream_leases_a_forged_lease_is_found_and_the_stream_is_read() {
    let (Some(model), Some(jpeg)) = (common::model_384x640(), sample_jpeg()) else {
        return;
    };
    let extra = "stream_leases = true\n[detector]\npool_size = 1\n";
    let mut t = TestNode::start(&model, extra, "cam").await;
    t.transport = Transport::Streams;
    let client = redis::Client::open(t.redis.url.as_str()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("{}:lease:cam", t.prefix))
        .arg("ghost/0000000000000001")
        .arg("EX")
        .arg(3600)
        .query_async(&mut admin)
        .await
        .unwrap();
    for seq in 0..20 {
        t.publish(seq, FLAG_KEEP, &jpeg).await;
    }
    let out = t.collect(20, 1, Duration::from_secs(60)).await;
    assert_eq!(
        check_order(&out.messages, 0),
        (20, vec![]),
        "every frame read once the forged lease is gone"
    );
    let codes: Vec<&str> = out.errors.iter().map(|e| e.code.as_str()).collect();
    assert_eq!(codes, ["redis_state"], "the forged lease is told");
    assert_eq!(t.node.stats().redis_state_refused.get(), 1);
    t.stop().await;
}

/// With a lease per stream, junk on new stream ids used to take a lease per id (the audit:
/// 20,000 junk messages left 7,436 `lease:*` keys, renewed minutes later, and an INFO line
/// each). Junk is now refused before the lease is looked at: each id gets its error, once, and
/// leaves no lease; the camera after it takes its own and is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_stream_leases_junk_on_new_ids_takes_no_lease() {
    let (Some(model), Some(jpeg)) = (common::model_384x640(), sample_jpeg()) else {
        return;
    };
    // Appended right after the config's `[cluster]` lines: the first line is in that table.
    let extra = "stream_leases = true\n[detector]\npool_size = 1\n";
    let mut t = TestNode::start(&model, extra, "cam").await;
    const JUNK: u64 = 600;
    for i in 0..JUNK {
        let id = format!("junk{i}");
        // Half not frames at all, half frames whose JPEG no decoder could use.
        if i % 2 == 0 {
            let channel = format!("{}:frames:{id}", t.prefix);
            t.publish_raw(channel.as_bytes(), b"not a frame").await;
        } else {
            t.publish_as(&id, 0, 0, b"x").await;
        }
    }
    for seq in 0..3 {
        t.publish(seq, FLAG_KEEP, &jpeg).await;
    }
    let out = t.collect(3, JUNK as usize, Duration::from_secs(60)).await;
    assert_eq!(
        check_order(&out.messages, 0),
        (3, vec![]),
        "the camera is served"
    );
    let junk_told: HashSet<&str> = out
        .errors
        .iter()
        .filter(|e| e.stream.starts_with("junk"))
        .map(|e| e.stream.as_str())
        .collect();
    assert_eq!(junk_told.len() as u64, JUNK, "each junk id told, once");
    assert_eq!(out.errors.len() as u64, JUNK, "{:?}", &out.errors[..5]);
    let client = redis::Client::open(t.redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let leases: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:lease:*", t.prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        leases.len(),
        1,
        "only the camera's lease: {:?}...",
        &leases[..leases.len().min(5)]
    );
    assert!(leases[0].contains("cam"), "{leases:?}");
    t.stop().await;
}

/// Over Redis Streams, a frames stream with nothing to read (its entries read and acknowledged
/// long ago: a junk stream, a camera gone quiet) took a lease whenever a node found it (at
/// every start, and again each time it was forgotten after five silent minutes), and held it,
/// renewed, for nothing. Now a stream takes a lease only once it has entries waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_streams_a_stream_with_nothing_to_read_takes_no_lease() {
    let (Some(model), Some(jpeg)) = (common::model_384x640(), sample_jpeg()) else {
        return;
    };
    let redis = common::Redis::start();
    let prefix = unique_prefix();
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{prefix}:frames:old");
    let _: String = redis::cmd("XADD")
        .arg(&key)
        .arg("*")
        .arg("frame")
        .arg("junk, read and acknowledged long ago")
        .query_async(&mut admin)
        .await
        .unwrap();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&key)
        .arg("kadr")
        .arg("$")
        .query_async(&mut admin)
        .await
        .unwrap();
    let cfg =
        common::single_node_config(&model, &redis.url, &prefix, "[detector]\npool_size = 1\n");
    let mut t = TestNode::start_configured(redis, prefix, &cfg, "old").await;
    t.transport = Transport::Streams;
    let leases = |mut conn: redis::aio::MultiplexedConnection, prefix: String| async move {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:lease:*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        keys
    };
    // Three scans (redis.frames_scan_ms = 1000): found each time, never taken.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        leases(admin.clone(), t.prefix.clone()).await,
        Vec::<String>::new()
    );
    // Frames come: the stream is taken and read.
    for seq in 0..2 {
        t.publish(seq, FLAG_KEEP, &jpeg).await;
    }
    let out = t.collect(2, 0, Duration::from_secs(60)).await;
    assert_eq!(check_order(&out.messages, 0), (2, vec![]));
    assert_eq!(
        leases(admin, t.prefix.clone()).await,
        vec![format!("{}:lease:old", t.prefix)]
    );
    t.stop().await;
}

/// Over Redis Streams, frames streams holding nothing but junk used to keep their places among
/// `limits.max_streams` for good (their keys never expire): 1,025 of them locked every new
/// camera out, silently. Now a stream that sends no valid frame gives its place to one with
/// entries waiting, and the camera that comes after the junk is served in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_streams_junk_streams_cannot_lock_a_new_camera_out() {
    let (Some(model), Some(jpeg)) = (common::model_384x640(), sample_jpeg()) else {
        return;
    };
    let extra = "[detector]\npool_size = 1\n[limits]\nmax_streams = 4\n";
    let mut t = TestNode::start(&model, extra, "cam").await;
    t.transport = Transport::Streams;
    for i in 0..12u64 {
        t.publish_as(&format!("junk{i}"), 0, 0, b"x").await;
    }
    // The junk streams are found and read first.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for seq in 0..6 {
        t.publish(seq, FLAG_KEEP, &jpeg).await;
    }
    let out = t.collect(6, 0, Duration::from_secs(60)).await;
    assert_eq!(
        check_order(&out.messages, 0),
        (6, vec![]),
        "every frame of the camera detected, in order: {:?}",
        out.messages
    );
    let camera_errors: Vec<_> = out.errors.iter().filter(|e| e.stream == "cam").collect();
    assert!(camera_errors.is_empty(), "{camera_errors:?}");
    t.stop().await;
}

/// Over Redis Streams a kept frame waits in Redis for room; it is never shed for it (the audit:
/// 2,000 streams of one KEEP frame each against `max_kept_frames = 288`, and 1,387 became
/// `dropped` gaps, their entries acknowledged and gone). Here 60 streams of one kept frame each
/// against room for 4: every one detected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_streams_kept_frames_of_many_new_streams_wait_for_room_and_none_is_shed() {
    let (Some(model), Some(jpeg)) = (common::model_384x640(), sample_jpeg()) else {
        return;
    };
    let extra = "[detector]\npool_size = 1\n[limits]\nmax_kept_frames = 4\n";
    let mut t = TestNode::start(&model, extra, "cam0").await;
    t.transport = Transport::Streams;
    let client = redis::Client::open(t.redis.url.as_str()).unwrap();
    let mut results = client.get_async_pubsub().await.unwrap();
    results
        .psubscribe(format!("{}:detections:*", t.prefix))
        .await
        .unwrap();
    const STREAMS: usize = 60;
    for i in 0..STREAMS {
        t.publish_as(&format!("cam{i}"), 0, FLAG_KEEP, &jpeg).await;
    }
    let (mut detected, mut gaps) = (HashSet::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut messages = results.on_message();
    while detected.len() + gaps.len() < STREAMS {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(msg)) = tokio::time::timeout(left, messages.next()).await else {
            break;
        };
        match serde_json::from_slice(msg.get_payload_bytes()).unwrap() {
            OutputMessage::Detections(d) => {
                assert!(detected.insert(d.stream.clone()), "twice: {}", d.stream);
            }
            OutputMessage::Gap(g) => gaps.push((g.stream, g.reason, g.detail)),
        }
    }
    assert!(gaps.is_empty(), "kept frames shed over Streams: {gaps:?}");
    assert_eq!(
        detected.len(),
        STREAMS,
        "every stream's kept frame detected"
    );
    drop(messages);
    t.stop().await;
}

/// Forged numbers and sizes: a frame numbered near 2^64 is refused `bad_seq` (the sequencer's
/// arithmetic used to wrap, and a `missing` counter read 18446744073709551605), and a frame
/// whose header declares 16000x2500 is refused `image_too_large` by the default limit (each
/// detector used to keep a 120 MB buffer for good). The genuine frames around them carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_sequence_numbers_and_frame_sizes_are_refused_and_the_stream_carries_on() {
    let (Some(model), Some(jpeg)) = (common::model_384x640(), sample_jpeg()) else {
        return;
    };
    let (w, h) = kadr::jpeg::dimensions(&jpeg).unwrap();
    let mut huge = jpeg.clone();
    let at = (2..huge.len() - 9)
        .find(|&i| huge[i] == 0xFF && huge[i + 1] == 0xC0)
        .expect("a baseline frame header");
    huge[at + 5..at + 7].copy_from_slice(&2500u16.to_be_bytes());
    huge[at + 7..at + 9].copy_from_slice(&16000u16.to_be_bytes());
    assert_eq!(kadr::jpeg::dimensions(&huge), Some((16000, 2500)));
    assert_eq!((w, h), (1280, 720));

    let mut t = TestNode::start(&model, "[detector]\npool_size = 1\n", "forged").await;
    // Before the stream is registered, a refused image is only an error: the stream's output
    // starts at its first good frame, 1.
    t.publish(0, FLAG_KEEP, &huge).await;
    t.publish(1, FLAG_KEEP, &jpeg).await;
    for seq in [u64::MAX - 10, u64::MAX, kadr::protocol::MAX_SEQ + 1] {
        t.publish(seq, FLAG_KEEP, &jpeg).await;
    }
    // After, it takes its place as a `failed` gap.
    t.publish(2, FLAG_KEEP, &huge).await;
    for seq in 3..5 {
        t.publish(seq, FLAG_KEEP, &jpeg).await;
    }
    // A 12-bit JPEG (the same header with 12 for its sample precision): refused from its header.
    let mut twelve_bit = jpeg.clone();
    twelve_bit[at + 4] = 12;
    t.publish(5, FLAG_KEEP, &twelve_bit).await;
    t.publish(6, FLAG_KEEP, &jpeg).await;
    let out = t.collect(6, 6, Duration::from_secs(60)).await;
    let codes: Vec<&str> = out.errors.iter().map(|e| e.code.as_str()).collect();
    assert_eq!(
        codes.iter().filter(|&&c| c == "bad_seq").count(),
        3,
        "{codes:?}"
    );
    let too_large: Vec<Option<u64>> = out
        .errors
        .iter()
        .filter(|e| e.code == "image_too_large")
        .map(|e| e.seq)
        .collect();
    assert_eq!(too_large, vec![Some(0), Some(2)], "{codes:?}");
    assert!(
        out.errors
            .iter()
            .any(|e| e.code == "bad_image" && e.message.contains("12-bit")),
        "{:?}",
        out.errors
    );
    // Seqs 2 and 5 took their places in the stream and are accounted for as failed frames;
    // seq 0 left only its error.
    let (detected, gaps) = check_order(&out.messages, 1);
    assert_eq!(detected, 4, "{gaps:?}");
    assert_eq!(gaps, vec![(GapReason::Failed, 1), (GapReason::Failed, 1)]);
    // Counted by code (only a few of each are logged).
    let by_code = |code: kadr::protocol::ErrorCode| {
        let i = kadr::protocol::ErrorCode::ALL
            .iter()
            .position(|c| *c == code)
            .unwrap();
        t.node.stats().errors_by_code[i].get()
    };
    assert_eq!(by_code(kadr::protocol::ErrorCode::BadSeq), 3);
    assert_eq!(by_code(kadr::protocol::ErrorCode::BadImage), 1);
    t.stop().await;
}

/// TLS to Redis: a node given `rediss://` and the CA that signed Redis's certificate takes
/// frames in and publishes results as over plain TCP (the test's own publisher and subscriber
/// use Redis's plain port); a node given another CA refuses to start and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reaches_redis_over_tls_and_refuses_a_certificate_it_cannot_trust() {
    let (Some(model), Some(jpeg)) = (common::model_384x640(), sample_jpeg()) else {
        return;
    };
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // Two CAs, and Redis's certificate (for 127.0.0.1) signed by the first.
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for ca in ["ca", "other-ca"] {
        let (key, pem, subject) = (
            format!("{ca}.key"),
            format!("{ca}.pem"),
            format!("/CN={ca}"),
        );
        openssl(
            &[
                &["req", "-x509"],
                &ec[..],
                &[
                    "-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subject,
                ],
            ]
            .concat(),
        );
    }
    std::fs::write(dir.join("redis.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        &[
            &["req"],
            &ec[..],
            &[
                "-keyout",
                "redis.key",
                "-out",
                "redis.csr",
                "-subj",
                "/CN=redis",
            ],
        ]
        .concat(),
    );
    openssl(&[
        "x509",
        "-req",
        "-in",
        "redis.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "redis.pem",
        "-days",
        "2",
        "-extfile",
        "redis.ext",
    ]);
    let tls_port = common::free_port().to_string();
    let path = |name: &str| dir.join(name).display().to_string();
    let redis = common::Redis::start_with(&[
        "--appendonly",
        "no",
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &path("redis.pem"),
        "--tls-key-file",
        &path("redis.key"),
        "--tls-ca-cert-file",
        &path("ca.pem"),
        "--tls-auth-clients",
        "no",
    ]);
    if !redis.owned() {
        common::skip("REDIS_URL is set: this test needs a redis-server of its own, with TLS");
        return;
    }
    let config = |prefix: &str, ca: &str| {
        let text = format!(
            "[redis]\nurl = \"rediss://127.0.0.1:{tls_port}\"\nchannel_prefix = \"{prefix}\"\n\
             tls_ca = \"{}\"\n[model]\npath = \"{}\"\n[detector]\npool_size = 1\n\
             [cluster]\ncookie = \"test-cookie\"\nlisten = \"127.0.0.1:{}\"\n",
            path(ca),
            model.display(),
            common::free_port()
        );
        kadr::Config::parse(&text, Path::new("tls.toml"), Path::new(".")).unwrap()
    };

    // Another CA: refused at start, with the reason.
    let refused = Node::start_with(&config("tls-refused", "other-ca.pem"), false)
        .await
        .err()
        .expect("a node that cannot trust Redis's certificate does not start");
    let why = format!("{refused:#}");
    assert!(why.to_lowercase().contains("certificate"), "{why}");

    let prefix = unique_prefix();
    let cfg = config(&prefix, "ca.pem");
    let mut t = TestNode::start_configured(redis, prefix, &cfg, "tls").await;
    for seq in 0..3 {
        t.publish(seq, FLAG_KEEP, &jpeg).await;
    }
    let out = t.collect(3, 0, Duration::from_secs(60)).await;
    assert_eq!(check_order(&out.messages, 0), (3, vec![]));

    // The clients over TLS too: `kadr subscribe` and `kadr publish` with --redis-ca.
    let url = format!("rediss://127.0.0.1:{tls_port}");
    let frames = dir.join("frames");
    std::fs::create_dir(&frames).unwrap();
    for i in 0..3 {
        std::fs::write(frames.join(format!("{i}.jpg")), &jpeg).unwrap();
    }
    let client_args = |ca: &str| -> Vec<String> {
        vec![
            "--redis-url".into(),
            url.clone(),
            "--redis-ca".into(),
            path(ca),
            "--prefix".into(),
            t.prefix.clone(),
        ]
    };
    let ready = dir.join("subscribed");
    let summary = dir.join("summary.json");
    let subscriber = common::kadr()
        .args([
            "subscribe",
            "--stream",
            "tls-cli",
            "--count",
            "3",
            "--quiet",
        ])
        .args(client_args("ca.pem"))
        .arg("--ready-file")
        .arg(&ready)
        .arg("--summary-json")
        .arg(&summary)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready.exists() {
        assert!(
            Instant::now() < deadline,
            "kadr subscribe over TLS did not subscribe"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let published = common::kadr()
        .args([
            "publish",
            "--stream",
            "tls-cli",
            "--fast",
            "--keep-all",
            "--source-size",
        ])
        .arg("--input")
        .arg(&frames)
        .args(client_args("ca.pem"))
        .output()
        .unwrap();
    assert!(
        published.status.success(),
        "{}",
        String::from_utf8_lossy(&published.stderr)
    );
    let done = subscriber.wait_with_output().unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(summary["detected"], 3, "{summary}");
    // A client that cannot trust Redis's certificate says so.
    let refused = common::kadr()
        .args(["publish", "--stream", "tls-cli", "--fast", "--source-size"])
        .arg("--input")
        .arg(&frames)
        .args(client_args("other-ca.pem"))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr).to_lowercase();
    assert!(why.contains("certificate"), "{why}");
    t.stop().await;
}

/// One message bigger than Redis's output buffer limit for subscribers makes Redis close the
/// node's subscription. The node subscribes again at once, keeping its own source lease (it used
/// to stand by behind its own lease until it expired), counts it and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_closed_by_redis_is_reopened_at_once_under_the_same_lease() {
    let (Some(model), Some(jpeg)) = (common::model_384x640(), sample_jpeg()) else {
        return;
    };
    // A lease far longer than the test waits: standing by behind it would show. The node-wide
    // lease: the one a subscription's loss used to give up.
    let extra = "source_lease_ms = 30000\nstream_leases = false\n[detector]\npool_size = 1\n";
    let mut t = TestNode::start(&model, extra, "big").await;
    t.publish(0, FLAG_KEEP, &jpeg).await;
    let out = t.collect(1, 0, Duration::from_secs(60)).await;
    assert_eq!(check_order(&out.messages, 0), (1, vec![]));

    let client = redis::Client::open(t.redis.url.as_str()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let lease_key = format!("{}:source-lease", t.prefix);
    let holder: String = redis::cmd("GET")
        .arg(&lease_key)
        .query_async(&mut admin)
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("client-output-buffer-limit")
        .arg("pubsub 262144 262144 0")
        .query_async(&mut admin)
        .await
        .unwrap();
    // 1 MB on another stream: over the 256 KB limit, under the node's payload limit.
    let mut msg = Vec::new();
    encode_frame(
        &mut msg,
        "huge",
        0,
        kadr::protocol::now_us(),
        0,
        &vec![0u8; 1 << 20],
    );
    let channel = format!("{}:frames:huge", t.prefix);
    t.publish_raw(channel.as_bytes(), &msg).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.node.stats().pubsub_disconnects.get() == 0 {
        assert!(
            Instant::now() < deadline,
            "Redis did not close the subscription"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("client-output-buffer-limit")
        .arg("pubsub 33554432 8388608 60")
        .query_async(&mut admin)
        .await
        .unwrap();
    t.wait_source_subscribed(
        deadline,
        "not subscribed again (standing by behind its own lease?)",
    )
    .await;
    let still: String = redis::cmd("GET")
        .arg(&lease_key)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(still, holder, "the same node holds the lease");
    for seq in 1..4 {
        t.publish(seq, FLAG_KEEP, &jpeg).await;
    }
    let out = t.collect(3, 0, Duration::from_secs(60)).await;
    assert_eq!(check_order(&out.messages, 1), (3, vec![]));
    t.stop().await;
}

/// One publisher flooding its own stream cannot starve another: when the queue is full, the
/// stream with the most frames waiting loses its own oldest, so a camera at a modest rate gets
/// its frames detected while the flood is shed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_stream_sheds_its_own_frames_not_another_cameras() {
    let extra = "[detector]\npool_size = 1\n[limits]\nqueue_capacity = 8\ngap_wait_ms = 3000\n";
    if let Some(camera) = flood_beside_a_camera(extra, 0, 0).await {
        camera.was_not_starved();
    }
}

/// The same with every frame marked KEEP, flood and camera alike: the flood may not hold more
/// than its share of `limits.max_kept_frames` once the camera keeps frames too (it used to take
/// every place, and the camera's kept frames were shed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_kept_frames_sheds_its_own_not_another_cameras() {
    let extra = "[detector]\npool_size = 1\n[limits]\nqueue_capacity = 8\nmax_kept_frames = 8\ngap_wait_ms = 3000\n";
    if let Some(camera) = flood_beside_a_camera(extra, FLAG_KEEP, FLAG_KEEP).await {
        // The camera keeps frames from before the flood starts: the flood never has more than
        // its half. How many camera frames are detected depends on how fast this machine
        // detects (a camera behind its own share sheds its own frames); what must never
        // happen is a camera frame shed because the flood took the room.
        assert!(
            camera
                .gaps
                .iter()
                .all(|(r, d)| *r == GapReason::Dropped && d.contains("this stream holds its share")),
            "camera frames shed for the flood's sake: {camera:?}"
        );
        assert!(camera.detected >= 3, "{camera:?}");
    }
}

/// A live camera (droppable frames) beside a flood of kept frames: kept frames fill the queue
/// past `queue_capacity` (they are bounded by `max_kept_frames` instead), and every camera frame
/// used to be the one dropped; frames now also leave round robin between streams, so the
/// camera's do not wait behind the flood's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_kept_frames_does_not_starve_a_live_camera() {
    let extra = "[detector]\npool_size = 1\n[limits]\nqueue_capacity = 8\nmax_kept_frames = 64\ngap_wait_ms = 3000\n";
    if let Some(camera) = flood_beside_a_camera(extra, FLAG_KEEP, 0).await {
        camera.was_not_starved();
    }
}

/// A 200 fps flood on one stream (`flood_flags`) and a 5 fps camera on another
/// (`camera_flags`); the camera's (detected, gaps), after checking that the flood was shed.
async fn flood_beside_a_camera(
    extra: &str,
    flood_flags: u8,
    camera_flags: u8,
) -> Option<CameraBesideFlood> {
    let (Some(model), Some(jpeg)) = (common::model_384x640(), sample_jpeg()) else {
        return None;
    };
    let mut t = TestNode::start(&model, extra, "cam").await;
    // The camera's first frame, then the flood beside the rest.
    t.publish(0, camera_flags, &jpeg).await;
    // The flood: 200 fps for 3 s on a stream of its own, from its own connection.
    let flood = {
        let (url, channel, jpeg) = (
            t.redis.url.clone(),
            format!("{}:frames:flood", t.prefix),
            jpeg.clone(),
        );
        tokio::spawn(async move {
            let client = redis::Client::open(url.as_str()).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let mut msg = Vec::new();
            for seq in 0..600u64 {
                msg.clear();
                encode_frame(
                    &mut msg,
                    "flood",
                    seq,
                    kadr::protocol::now_us(),
                    flood_flags,
                    &jpeg,
                );
                let _: i64 = redis::cmd("PUBLISH")
                    .arg(&channel)
                    .arg(&msg[..])
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // The camera: 5 fps, during the flood.
    for seq in 1..10 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        t.publish(seq, camera_flags, &jpeg).await;
    }
    let out = t.collect(10, 0, Duration::from_secs(60)).await;
    flood.await.unwrap();
    let (detected, _) = check_order(&out.messages, 0);
    let gaps = out
        .messages
        .iter()
        .filter_map(|m| match m {
            OutputMessage::Gap(g) => Some((g.reason, g.detail.clone().unwrap_or_default())),
            _ => None,
        })
        .collect();
    let last_detected =
        matches!(out.messages.last(), Some(OutputMessage::Detections(d)) if d.seq == 9);
    // The flood's gaps come out in its own order, behind its kept frames still at the
    // detector: wait for them.
    let deadline = Instant::now() + Duration::from_secs(60);
    while t.node.stats().dropped.get() <= 100 {
        assert!(
            Instant::now() < deadline,
            "the flood was not shed: {}",
            t.node.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t.stop().await;
    Some(CameraBesideFlood {
        detected,
        gaps,
        last_detected,
    })
}

/// What became of a camera's 10 frames beside a flood.
#[derive(Debug)]
struct CameraBesideFlood {
    detected: u64,
    /// Its gaps: reason and detail.
    gaps: Vec<(GapReason, String)>,
    last_detected: bool,
}

impl CameraBesideFlood {
    /// A live camera is not starved by another stream: it only ever loses a frame to its own
    /// newer frame (the live rule: how many depends on how fast this machine detects), and its
    /// newest frame is detected.
    fn was_not_starved(&self) {
        assert!(
            self.gaps
                .iter()
                .all(|(r, d)| *r == GapReason::Dropped && d.starts_with("superseded")),
            "the camera lost frames to the flood: {self:?}"
        );
        assert!(self.last_detected && self.detected >= 3, "{self:?}");
    }
}

/// KEEP overload: a publisher far faster than the pool, every frame marked KEEP. The node holds
/// at most `limits.max_kept_frames` of them (memory bounded by configuration: Redis's client
/// would otherwise buffer without limit) and sheds the rest as `dropped` gaps that say why;
/// every frame is still accounted for, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_frames_beyond_the_configured_bound_are_shed_with_the_reason() {
    let (Some(model), Some(jpeg)) = (common::model_384x640(), sample_jpeg()) else {
        return;
    };
    let extra = "[detector]\npool_size = 1\n[limits]\nqueue_capacity = 2\nmax_kept_frames = 4\n";
    let mut t = TestNode::start(&model, extra, "keep").await;
    for seq in 0..60 {
        t.publish(seq, FLAG_KEEP, &jpeg).await;
    }
    let out = t.collect(60, 0, Duration::from_secs(120)).await;
    let (detected, gaps) = check_order(&out.messages, 0);
    let dropped: u64 = gaps.iter().map(|g| g.1).sum();
    assert_eq!(
        detected + dropped,
        60,
        "every frame accounted for: {gaps:?}"
    );
    assert!(gaps.iter().all(|g| g.0 == GapReason::Dropped), "{gaps:?}");
    assert!(dropped > 0, "one detector cannot hold 60 frames at once");
    assert!(detected >= 4, "the frames that found room were detected");
    let detail = out.messages.iter().find_map(|m| match m {
        OutputMessage::Gap(g) => g.detail.clone(),
        _ => None,
    });
    assert!(
        detail
            .as_deref()
            .is_some_and(|d| d.contains("max_kept_frames = 4")),
        "{detail:?}"
    );
    t.stop().await;
}

/// One forged frame numbered 0, or 2,000 behind, on a flowing camera's channel: refused
/// (`seq_restart`), and the genuine output carries on in order with no gap (it used to restart
/// the stream's output, report thousands of numbers again as `missing` and make the camera's
/// own frames stale). A publisher that really restarted is believed on its third frame, and its
/// output is a new epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_frame_cannot_send_a_stream_backwards_and_a_real_restart_is_a_new_epoch() {
    forged_frames_backwards_over(Transport::PubSub).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_streams_a_forged_frame_cannot_send_a_stream_backwards() {
    forged_frames_backwards_over(Transport::Streams).await;
}

async fn forged_frames_backwards_over(transport: Transport) {
    let (Some(model), Some(jpeg)) = (common::model_384x640(), sample_jpeg()) else {
        return;
    };
    let mut t = TestNode::start(&model, "[detector]\npool_size = 1\n", "back").await;
    t.transport = transport;
    for seq in 2000..2010 {
        t.publish(seq, FLAG_KEEP, &jpeg).await;
    }
    t.publish(0, FLAG_KEEP, &jpeg).await;
    for seq in 2010..2015 {
        t.publish(seq, FLAG_KEEP, &jpeg).await;
    }
    t.publish(5, FLAG_KEEP, &jpeg).await;
    for seq in 2015..2020 {
        t.publish(seq, FLAG_KEEP, &jpeg).await;
    }
    let out = t.collect(20, 2, Duration::from_secs(60)).await;
    assert_eq!(check_order(&out.messages, 2000), (20, vec![]));
    assert!(out.messages.iter().all(|m| m.epoch() == 0));
    let codes: Vec<&str> = out.errors.iter().map(|e| e.code.as_str()).collect();
    assert_eq!(codes, ["seq_restart", "seq_restart"]);

    // The camera rebooted: its first two frames are refused, then a new epoch begins.
    for seq in 0..5 {
        t.publish(seq, FLAG_KEEP, &jpeg).await;
    }
    let out = t.collect(3, 2, Duration::from_secs(60)).await;
    assert_eq!(check_order(&out.messages, 2), (3, vec![]));
    assert!(
        out.messages.iter().all(|m| m.epoch() == 1),
        "{:?}",
        out.messages
    );
    assert_eq!(out.errors.len(), 2);
    t.stop().await;
}

/// Three forged frames 100,000 ahead: the third is believed (they are consecutive), and its
/// result held behind the hole; the genuine camera carries on below it and is believed on its
/// third frame, as a new epoch. The forged result is abandoned and counted, never published (it
/// used to come out a minute later, after a 99,000-frame `missing` gap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_of_forged_frames_far_ahead_never_surface_in_the_genuine_stream() {
    let (Some(model), Some(jpeg)) = (common::model_384x640(), sample_jpeg()) else {
        return;
    };
    let extra = "[detector]\npool_size = 1\n[limits]\ngap_wait_ms = 200\n";
    let mut t = TestNode::start(&model, extra, "ahead").await;
    for seq in 0..5 {
        t.publish(seq, FLAG_KEEP, &jpeg).await;
    }
    let out = t.collect(5, 0, Duration::from_secs(60)).await;
    assert_eq!(check_order(&out.messages, 0), (5, vec![]));
    for seq in 100_000..100_003 {
        t.publish(seq, FLAG_KEEP, &jpeg).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while t.node.stats().accepted.get() < 6 {
        assert!(
            Instant::now() < deadline,
            "the forged jump was not believed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for seq in 5..11 {
        t.publish(seq, FLAG_KEEP, &jpeg).await;
    }
    let out = t.collect(4, 4, Duration::from_secs(60)).await;
    let codes: Vec<&str> = out.errors.iter().map(|e| e.code.as_str()).collect();
    assert_eq!(
        codes,
        ["seq_jump", "seq_jump", "seq_restart", "seq_restart"]
    );
    assert_eq!(check_order(&out.messages, 7), (4, vec![]));
    assert!(
        out.messages.iter().all(|m| m.epoch() == 1),
        "{:?}",
        out.messages
    );
    // Many gap waits later, nothing else has come out.
    let late = t.collect(1, 0, Duration::from_secs(2)).await;
    assert!(late.messages.is_empty(), "{:?}", late.messages);
    assert_eq!(t.node.stats().abandoned.get(), 1);
    t.stop().await;
}

/// Redis frozen for 5 s (SIGSTOP) with a camera flowing: the source's lease runs out meanwhile
/// and is taken again, publishes wait or are retried. No sequence number comes out twice or out
/// of order (a retried publish whose first try Redis had carried out used to repeat a result).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_duplicates_no_result() {
    frozen_redis_over(Transport::PubSub).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_streams_a_frozen_redis_duplicates_no_result() {
    frozen_redis_over(Transport::Streams).await;
}

async fn frozen_redis_over(transport: Transport) {
    let (Some(model), Some(jpeg)) = (common::model_384x640(), sample_jpeg()) else {
        return;
    };
    let mut t = TestNode::start(&model, "[detector]\npool_size = 1\n", "frozen").await;
    if !t.redis.owned() {
        common::skip("REDIS_URL is set; this test freezes its own server");
        return;
    }
    // The camera on a connection of its own, at 10 fps for 12 s; a publish that fails while
    // Redis is frozen is that frame lost in transit, as for a real camera.
    let url = t.redis.url.clone();
    let channel = t.frames_channel();
    let camera = tokio::spawn(async move {
        let client = redis::Client::open(url).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        for seq in 0..120u64 {
            let mut msg = Vec::new();
            encode_frame(&mut msg, "frozen", seq, kadr::protocol::now_us(), 0, &jpeg);
            let _: redis::RedisResult<redis::Value> = match transport {
                Transport::PubSub => {
                    redis::cmd("PUBLISH")
                        .arg(&channel)
                        .arg(msg)
                        .query_async(&mut conn)
                        .await
                }
                Transport::Kafka => unreachable!("this test runs over Redis"),
                Transport::Streams => {
                    redis::cmd("XADD")
                        .arg(&channel)
                        .arg("*")
                        .arg("frame")
                        .arg(msg)
                        .query_async(&mut conn)
                        .await
                }
            };
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    t.redis.signal("STOP");
    tokio::time::sleep(Duration::from_secs(5)).await;
    t.redis.signal("CONT");
    camera.await.unwrap();
    let out = t.collect(u64::MAX, 0, Duration::from_secs(8)).await;
    let mut tally = kadr::client::tally::StreamTally::default();
    for m in &out.messages {
        tally.record(m, 0, Instant::now());
    }
    let s = tally.summary();
    eprintln!("after the freeze: {s:?}");
    assert_eq!(
        (s.duplicates, s.order_violations),
        (0, 0),
        "{:?}",
        out.messages
    );
    assert!(s.detected > 0 && s.next_seq == Some(120), "{s:?}");
    t.stop().await;
}

/// Frames over Redis Streams, with hostile entries among them: an entry without the `frame`
/// field (`bad_entry`), one whose frame is junk (`bad_magic`), a key of another type under the
/// frames prefix, and the stream deleted and created again mid-way. Every good frame is
/// detected once, in order; every entry is acknowledged (none left pending); results and
/// errors are also in their streams, with the protocol version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_over_redis_streams_with_hostile_entries_among_them() {
    let (Some(model), Some(jpeg)) = (common::model_384x640(), sample_jpeg()) else {
        return;
    };
    let mut t = TestNode::start(&model, "[detector]\npool_size = 1\n", "sx").await;
    let key = t.frames_channel();
    let xadd = |fields: Vec<(&'static str, Vec<u8>)>| {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&key).arg("*");
        for (f, v) in fields {
            cmd.arg(f).arg(v);
        }
        cmd
    };
    let frame = |seq: u64| {
        let mut msg = Vec::new();
        encode_frame(
            &mut msg,
            "sx",
            seq,
            kadr::protocol::now_us(),
            FLAG_KEEP,
            &jpeg,
        );
        msg
    };
    let mut conn = t.publisher.clone();
    let other_type = format!("{}:frames:not-a-stream", t.prefix);
    let _: () = redis::cmd("SET")
        .arg(&other_type)
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    for seq in 0..3 {
        let _: String = xadd(vec![("frame", frame(seq))])
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let _: String = xadd(vec![("picture", b"x".to_vec())])
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: String = xadd(vec![("frame", b"junk".to_vec())])
        .query_async(&mut conn)
        .await
        .unwrap();
    for seq in 3..5 {
        let _: String = xadd(vec![("frame", frame(seq))])
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let out = t.collect(5, 2, Duration::from_secs(60)).await;
    assert_eq!(check_order(&out.messages, 0), (5, vec![]));
    let mut codes: Vec<&str> = out.errors.iter().map(|e| e.code.as_str()).collect();
    codes.sort();
    assert_eq!(codes, ["bad_entry", "truncated"]);

    // The stream deleted and created again: found again, read from its start.
    let _: i64 = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    for seq in 5..7 {
        let _: String = xadd(vec![("frame", frame(seq))])
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let out = t.collect(2, 0, Duration::from_secs(60)).await;
    assert_eq!(check_order(&out.messages, 5), (2, vec![]));

    // Nothing pending, and the results stream holds the last two results, versioned.
    let pending: Vec<redis::Value> = redis::cmd("XPENDING")
        .arg(&key)
        .arg("kadr")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(pending[0], redis::Value::Int(0), "{pending:?}");
    let results: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(format!("{}:detections:sx", t.prefix))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let seqs: Vec<u64> = results
        .iter()
        .map(|(_, fields)| {
            assert_eq!(fields[0], ("v".to_string(), "1".to_string()));
            let m: OutputMessage = serde_json::from_str(&fields[1].1).unwrap();
            m.seqs().0
        })
        .collect();
    assert_eq!(seqs, (0..7).collect::<Vec<u64>>());
    let errors: i64 = redis::cmd("XLEN")
        .arg(format!("{}:errors:sx", t.prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(errors, 2);
    t.stop().await;
}

/// Redis killed and started again mid-stream with `appendonly yes` (`appendfsync everysec`),
/// frames over Streams: the frames stream, its consumer group and the results stream come back
/// from the append-only file, the node reconnects, the results it could not publish meanwhile
/// are published once Redis is back, and the publisher's frames go on. Every frame is detected
/// once, in order, and the results stream holds them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_streams_a_redis_restart_with_aof_loses_no_frame() {
    let (Some(model), Some(jpeg)) = (common::model_384x640(), sample_jpeg()) else {
        return;
    };
    let redis = common::Redis::start_with(&["--appendonly", "yes", "--appendfsync", "everysec"]);
    if !redis.owned() {
        common::skip("REDIS_URL is set; this test restarts its own server");
        return;
    }
    let mut t = TestNode::start_on(redis, &model, "[detector]\npool_size = 1\n", "aof").await;
    let (url, key) = (t.redis.url.clone(), t.frames_channel());
    // The camera: 60 kept frames at 20 fps; a frame Redis cannot take now is tried again.
    let camera = tokio::spawn(async move {
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut conn = redis::aio::ConnectionManager::new(client).await.unwrap();
        for seq in 0..60u64 {
            let mut msg = Vec::new();
            encode_frame(
                &mut msg,
                "aof",
                seq,
                kadr::protocol::now_us(),
                FLAG_KEEP,
                &jpeg,
            );
            loop {
                let added: redis::RedisResult<String> = redis::cmd("XADD")
                    .arg(&key)
                    .arg("*")
                    .arg("frame")
                    .arg(&msg)
                    .query_async(&mut conn)
                    .await;
                if added.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    t.redis.restart();
    camera.await.unwrap();

    let client = redis::Client::open(t.redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let results_key = format!("{}:detections:aof", t.prefix);
    let deadline = Instant::now() + Duration::from_secs(90);
    let seqs = loop {
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(&results_key)
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .unwrap();
        let seqs: Vec<(String, u64)> = entries
            .iter()
            .map(|(_, f)| {
                let m: serde_json::Value = serde_json::from_str(&f[1].1).unwrap();
                (
                    m["type"].as_str().unwrap().to_string(),
                    m["seq"].as_u64().unwrap(),
                )
            })
            .collect();
        if seqs.last().is_some_and(|(_, s)| *s == 59) || Instant::now() > deadline {
            break seqs;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let expected: Vec<(String, u64)> = (0..60).map(|s| ("detections".to_string(), s)).collect();
    assert_eq!(seqs, expected, "{}", t.node.stats());
    t.stop().await;
}

/// The node as a Redis ACL user with only the commands docs/configuration.md lists, on its
/// prefix's keys and channels only, and a camera user that may only add frames: a stream goes
/// through over pub/sub and over Redis Streams, and the node's user cannot touch another
/// prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_runs_as_an_acl_user_with_only_the_documented_commands() {
    let (Some(model), Some(jpeg)) = (common::model_384x640(), sample_jpeg()) else {
        return;
    };
    let prefix = unique_prefix();
    let keys = format!("~{prefix}:*");
    let channels = format!("&{prefix}:*");
    let frame_keys = format!("~{prefix}:frames:*");
    let frame_channels = format!("&{prefix}:frames:*");
    let mut settings = vec![
        "--appendonly",
        "no",
        "--user",
        "kadr-node",
        "on",
        ">node-pass",
    ];
    // A PSUBSCRIBE pattern must be granted exactly, not merely covered by a wider one.
    settings.extend([
        keys.as_str(),
        channels.as_str(),
        frame_channels.as_str(),
        "-@all",
    ]);
    settings.extend(NODE_COMMANDS);
    settings.extend(["--user", "camera", "on", ">camera-pass"]);
    settings.extend([
        frame_keys.as_str(),
        frame_channels.as_str(),
        "-@all",
        "+publish",
        "+xadd",
    ]);
    let redis = common::Redis::start_with(&settings);
    if !redis.owned() {
        common::skip("REDIS_URL is set: this test needs a redis-server of its own, with ACL users");
        return;
    }
    let port = redis.url.rsplit(':').next().unwrap().to_string();
    let node_url = format!("redis://kadr-node:node-pass@127.0.0.1:{port}");
    let cfg = common::single_node_config(&model, &node_url, &prefix, "[detector]\npool_size = 1\n");
    let mut t = TestNode::start_configured(redis, prefix.clone(), &cfg, "acl").await;
    // The camera publishes as its own user.
    let camera =
        redis::Client::open(format!("redis://camera:camera-pass@127.0.0.1:{port}")).unwrap();
    let mut camera = camera.get_multiplexed_async_connection().await.unwrap();
    let channel = t.frames_channel();
    for (seq, transport) in [(0u64, "PUBLISH"), (1, "PUBLISH"), (2, "XADD"), (3, "XADD")] {
        let mut msg = Vec::new();
        encode_frame(
            &mut msg,
            "acl",
            seq,
            kadr::protocol::now_us(),
            FLAG_KEEP,
            &jpeg,
        );
        let sent: redis::RedisResult<redis::Value> = if transport == "PUBLISH" {
            redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(msg)
                .query_async(&mut camera)
                .await
        } else {
            redis::cmd("XADD")
                .arg(&channel)
                .arg("*")
                .arg(FRAME_FIELD)
                .arg(msg)
                .query_async(&mut camera)
                .await
        };
        sent.unwrap();
        // The pub/sub frames first, then the stream's (the source reads both).
        if seq == 1 {
            let out = t.collect(2, 0, Duration::from_secs(60)).await;
            assert_eq!(check_order(&out.messages, 0), (2, vec![]));
        }
    }
    let out = t.collect(2, 0, Duration::from_secs(60)).await;
    assert_eq!(check_order(&out.messages, 2), (2, vec![]));

    // Nothing was refused on the way: Redis logs every ACL denial.
    let client = redis::Client::open(t.redis.url.as_str()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let denials: Vec<redis::Value> = redis::cmd("ACL")
        .arg("LOG")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(denials.is_empty(), "ACL denials: {denials:?}");
    // And the camera may not read anything.
    let read: redis::RedisResult<Option<String>> = redis::cmd("GET")
        .arg(format!("{prefix}:last-seq:acl"))
        .query_async(&mut camera)
        .await;
    assert!(read.is_err());
    t.stop().await;
}

/// What docs/configuration.md (`redis.url`) says the node's Redis user needs.
const NODE_COMMANDS: [&str; 23] = [
    "+psubscribe",
    "+punsubscribe",
    "+subscribe",
    "+unsubscribe",
    "+publish",
    "+ping",
    "+get",
    "+set",
    "+mget",
    "+exists",
    "+pexpire",
    "+expire",
    "+del",
    "+scan",
    "+eval",
    "+evalsha",
    "+xgroup",
    "+xreadgroup",
    "+xautoclaim",
    "+xack",
    "+xadd",
    "+script|load",
    "+xinfo|groups",
];

//! `kadr publish` from each kind of source, against a real redis-server: a video file (looped,
//! paced), a folder of images, and an HTTP MJPEG camera served here that drops and freezes.

mod common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use kadr::protocol::{parse_frame, ErrorMessage, FrameLimits};

use common::camera::{clip_frames, MjpegCamera};

/// What a subscriber to a stream's frames and errors channels saw.
#[derive(Default)]
struct Seen {
    /// (seq, width, height, jpeg)
    frames: Vec<(u64, u32, u32, Vec<u8>)>,
    errors: Vec<ErrorMessage>,
}

impl Seen {
    fn seqs(&self) -> Vec<u64> {
        self.frames.iter().map(|f| f.0).collect()
    }
}

struct Listener {
    pubsub: redis::aio::PubSub,
    prefix: String,
}

impl Listener {
    async fn start(redis: &common::Redis, stream: &str) -> Listener {
        Self::start_with(redis, stream, format!("src{}", common::free_port())).await
    }

    async fn start_with(redis: &common::Redis, stream: &str, prefix: String) -> Listener {
        let client = redis::Client::open(redis.url.as_str()).unwrap();
        let mut pubsub = client.get_async_pubsub().await.unwrap();
        pubsub
            .subscribe(format!("{prefix}:frames:{stream}"))
            .await
            .unwrap();
        pubsub
            .subscribe(format!("{prefix}:errors:{stream}"))
            .await
            .unwrap();
        Listener { pubsub, prefix }
    }

    /// Collect until `frames` frames arrived or nothing came for `quiet`; `on_frame` sees each
    /// frame's count as it arrives (tests act on the source mid-stream).
    async fn collect(
        &mut self,
        frames: usize,
        quiet: Duration,
        mut on_frame: impl FnMut(usize),
    ) -> Seen {
        let mut seen = Seen::default();
        let mut messages = self.pubsub.on_message();
        while seen.frames.len() < frames {
            let Ok(Some(msg)) = tokio::time::timeout(quiet, messages.next()).await else {
                break;
            };
            let payload: Vec<u8> = msg.get_payload().unwrap();
            if msg.get_channel_name().contains(":errors:") {
                seen.errors.push(serde_json::from_slice(&payload).unwrap());
                continue;
            }
            let stream = msg
                .get_channel_name()
                .rsplit(':')
                .next()
                .unwrap()
                .to_string();
            let limits = FrameLimits {
                max_message_bytes: 8 << 20,
                max_stream_id_bytes: 128,
            };
            let frame = parse_frame(payload.into(), &stream, limits).unwrap();
            let (w, h) = dims(&frame.jpeg);
            seen.frames.push((frame.seq, w, h, frame.jpeg.to_vec()));
            on_frame(seen.frames.len());
        }
        seen
    }
}

fn dims(jpeg: &[u8]) -> (u32, u32) {
    image::ImageReader::with_format(std::io::Cursor::new(jpeg), image::ImageFormat::Jpeg)
        .into_dimensions()
        .unwrap()
}

fn publish(redis: &common::Redis, prefix: &str, stream: &str, input: &str, args: &[&str]) -> Child {
    common::kadr()
        .args([
            "publish", "--stream", stream, "--prefix", prefix, "--input", input,
        ])
        .args(["--redis-url", &redis.url])
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "kadr publish failed: {stderr}");
    stderr
}

fn consecutive(seqs: &[u64]) -> bool {
    seqs.iter().enumerate().all(|(i, &s)| s == i as u64)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_video_file_loops_at_1280x720_and_is_paced() {
    let Some(clip) = common::video("bikes.mp4") else {
        return;
    };
    let redis = common::Redis::start();
    let mut listener = Listener::start(&redis, "clip").await;
    // bikes.mp4 has 250 frames: 300 means it looped.
    let child = publish(
        &redis,
        &listener.prefix,
        "clip",
        clip.to_str().unwrap(),
        &["--loop", "--fast", "--limit", "300"],
    );
    let seen = listener.collect(300, Duration::from_secs(20), |_| {}).await;
    finish(child);
    assert_eq!(seen.frames.len(), 300);
    assert!(consecutive(&seen.seqs()));
    assert!(seen.frames.iter().all(|f| (f.1, f.2) == (1280, 720)));
    assert!(seen.errors.is_empty());

    // Real-time pacing at --fps 20: 21 frames cannot go out in less than a second.
    let started = Instant::now();
    let child = publish(
        &redis,
        &listener.prefix,
        "clip",
        clip.to_str().unwrap(),
        &["--fps", "20", "--limit", "21", "--source-size"],
    );
    let seen = listener.collect(21, Duration::from_secs(20), |_| {}).await;
    finish(child);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(seen.frames.len(), 21);
    assert!(
        seen.frames.iter().all(|f| (f.1, f.2) == (640, 272)),
        "--source-size keeps 640x272"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_folder_goes_out_in_name_order_and_skips_bad_files() {
    let redis = common::Redis::start();
    let mut listener = Listener::start(&redis, "shots").await;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, w: u32, h: u32, format: image::ImageFormat| {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 99])
        });
        img.save_with_format(dir.path().join(name), format).unwrap();
        std::fs::read(dir.path().join(name)).unwrap()
    };
    let exact = write("2-exact.jpg", 1280, 720, image::ImageFormat::Jpeg);
    write("1-small.png", 320, 240, image::ImageFormat::Png);
    write("3-tall.jpeg", 360, 640, image::ImageFormat::Jpeg);
    std::fs::write(dir.path().join("4-broken.jpg"), &exact[..exact.len() / 3]).unwrap();
    std::fs::write(dir.path().join("README.txt"), "not an image").unwrap();
    let folder = dir.path().to_str().unwrap();

    let child = publish(&redis, &listener.prefix, "shots", folder, &["--fast"]);
    let seen = listener.collect(4, Duration::from_secs(2), |_| {}).await;
    let stderr = finish(child);
    assert_eq!(
        seen.seqs(),
        [0, 1, 2],
        "three readable images, in name order"
    );
    assert!(seen.frames.iter().all(|f| (f.1, f.2) == (1280, 720)));
    assert_eq!(
        seen.frames[1].3, exact,
        "a 1280x720 JPEG goes out untouched"
    );
    assert!(
        stderr.contains("4-broken.jpg"),
        "the bad image is named: {stderr}"
    );
    assert!(stderr.contains("1 unreadable images skipped"), "{stderr}");

    let child = publish(
        &redis,
        &listener.prefix,
        "shots",
        folder,
        &["--fast", "--loop", "--limit", "7", "--source-size"],
    );
    let seen = listener.collect(7, Duration::from_secs(5), |_| {}).await;
    finish(child);
    assert!(consecutive(&seen.seqs()) && seen.frames.len() == 7);
    let sizes: Vec<(u32, u32)> = seen.frames.iter().map(|f| (f.1, f.2)).collect();
    assert_eq!(
        sizes[..4],
        [(320, 240), (1280, 720), (360, 640), (320, 240)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_mjpeg_camera_that_drops_and_freezes_is_reconnected_and_seqs_keep_moving() {
    let Some(clip) = common::video("bikes.mp4") else {
        return;
    };
    let camera = MjpegCamera::start(clip_frames(&clip, (640, 360), 50).await, 25.0);
    let redis = common::Redis::start();
    let mut listener = Listener::start(&redis, "cam1").await;
    let child = publish(
        &redis,
        &listener.prefix,
        "cam1",
        &camera.url,
        &[
            "--limit",
            "120",
            "--stall-timeout-ms",
            "1000",
            "--reconnect-max-ms",
            "500",
        ],
    );
    // Unplugged for 1.5 s after 30 frames, frozen for 2.5 s after 70.
    let seen = listener
        .collect(120, Duration::from_secs(15), |n| match n {
            30 => camera.unplug_for(Duration::from_millis(1500)),
            70 => camera.freeze_for(Duration::from_millis(2500)),
            _ => {}
        })
        .await;
    let stderr = finish(child);
    assert_eq!(seen.frames.len(), 120, "{stderr}");
    assert!(
        consecutive(&seen.seqs()),
        "sequence numbers go on across outages"
    );
    assert!(seen.frames.iter().all(|f| (f.1, f.2) == (1280, 720)));
    assert!(stderr.contains("2 outages"), "{stderr}");

    let codes: Vec<&str> = seen.errors.iter().map(|e| e.code.as_str()).collect();
    assert_eq!(
        codes,
        [
            "source_outage",
            "source_resumed",
            "source_outage",
            "source_resumed"
        ]
    );
    for pair in seen.errors.chunks(2) {
        assert_eq!(
            pair[0].seq, pair[1].seq,
            "no sequence number is spent while down"
        );
        assert!(pair[0].message.contains(&camera.url));
    }
    let (first, second) = (seen.errors[0].seq.unwrap(), seen.errors[2].seq.unwrap());
    assert!(
        (30..=40).contains(&first),
        "the unplug came after ~30 frames: {first}"
    );
    assert!(
        (70..=80).contains(&second),
        "the freeze came after ~70 frames: {second}"
    );
    assert!(
        seen.errors[2].message.contains("no frame for"),
        "{:?}",
        seen.errors[2]
    );
}

#[test]
fn sources_that_cannot_be_opened_fail_with_their_name() {
    let redis = common::Redis::start();
    let empty = tempfile::tempdir().unwrap();
    let closed = format!("http://127.0.0.1:{}/video.mjpg", common::free_port());
    let not_found = {
        // A server that is there but has no such camera.
        let camera = MjpegCamera::start(vec![vec![0xFF, 0xD8, 0xFF, 0xD9]], 1.0);
        camera.url.replace("/video.mjpg", "/nothing.mjpg")
    };
    let cases = [
        "/no/such/clip.mp4".to_string(),
        empty.path().display().to_string(),
        closed,
        not_found,
        "ftp://127.0.0.1/clip.mp4".to_string(),
    ];
    for input in cases {
        let out = common::kadr()
            .args([
                "publish",
                "--stream",
                "x",
                "--stall-timeout-ms",
                "1000",
                "--input",
                &input,
            ])
            .args(["--redis-url", &redis.url])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{input} should fail");
        assert!(stderr.contains(&input), "the error names {input}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_camera_publisher_rides_out_a_redis_restart() {
    let Some(clip) = common::video("bikes.mp4") else {
        return;
    };
    let mut redis = common::Redis::start();
    if !redis.owned() {
        common::skip("REDIS_URL is set; this test restarts its own Redis");
        return;
    }
    let camera = MjpegCamera::start(clip_frames(&clip, (640, 360), 50).await, 25.0);
    let mut listener = Listener::start(&redis, "cam1").await;
    let mut child = publish(&redis, &listener.prefix, "cam1", &camera.url, &[]);
    let before = listener.collect(20, Duration::from_secs(15), |_| {}).await;
    assert_eq!(before.seqs(), (0..20).collect::<Vec<u64>>());

    redis.restart();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut listener = Listener::start_with(&redis, "cam1", listener.prefix.clone()).await;
    let after = listener.collect(20, Duration::from_secs(15), |_| {}).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the publisher is still running"
    );
    let _ = child.kill();
    let stderr = String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr).into_owned();
    assert_eq!(after.frames.len(), 20, "frames flow again: {stderr}");
    let seqs = after.seqs();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive after the restart: {seqs:?}"
    );
    assert!(seqs[0] >= 20, "numbering goes on: {seqs:?}");
    assert!(stderr.contains("cannot publish to Redis"), "{stderr}");
}

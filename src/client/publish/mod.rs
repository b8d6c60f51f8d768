//! `kadr publish`: frames from a video file, a folder of images, a V4L2 webcam, an RTSP camera
//! or an HTTP MJPEG camera, published as frame messages on Redis (or produced to Kafka).
//!
//! Files and folders end (or loop with `loop_input`) and are paced at their frame rate unless
//! `pace` says otherwise. Live sources pace themselves; when one drops or stalls, the publisher
//! reports the outage on the stream's error channel, reconnects with backoff, reports the
//! recovery, and goes on with the next sequence number, so nothing downstream waits for frames
//! that were never captured.

pub mod folder;
pub mod input;
pub mod video;

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::kafka::{KafkaOptions, KafkaProducer};
use crate::protocol::{
    self, encode_frame, Channels, ErrorCode, ErrorMessage, Transport, FLAG_KEEP, FRAME_FIELD,
};
use folder::ImageFolder;
pub use input::{Input, InputError};
use video::JpegFrames;

/// How fast frames go out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// As fast as they can be read.
    Fast,
    /// A file at its own frame rate (from ffprobe), a folder at 25 fps, a camera as it sends.
    Source,
    /// This many frames a second (files and folders).
    Fps(f64),
}

/// Frames per second for a folder when no rate is given.
pub const FOLDER_FPS: f64 = 25.0;

#[derive(Debug, Clone)]
pub struct PublishOptions {
    pub input: Input,
    pub stream: String,
    pub redis_url: String,
    /// `redis_url` is a node of a Redis Cluster: version 2 names.
    pub redis_cluster: bool,
    /// For `rediss://`.
    pub redis_tls: crate::redis_conn::RedisTls,
    pub prefix: String,
    /// Frame size (letterboxed); `None` keeps the source's.
    pub size: Option<(u32, u32)>,
    /// JPEG quality as FFmpeg's `-q:v` (2 best .. 31 worst).
    pub quality: u8,
    pub pace: Pace,
    pub keep_all: bool,
    /// Start a file or folder again at its end.
    pub loop_input: bool,
    pub limit: Option<u64>,
    pub start_seq: u64,
    /// A live source silent this long is treated as dropped.
    pub stall_timeout: Duration,
    /// Longest wait between reconnection attempts (the wait doubles from 250 ms).
    pub reconnect_max: Duration,
    /// PUBLISH on the frames channel, XADD to the frames stream, or produce to Kafka.
    pub transport: Transport,
    /// Where Kafka is (`Transport::Kafka`).
    pub kafka: Option<KafkaOptions>,
    /// Streams: frames the stream keeps at most (approximately: `MAXLEN ~`), so Redis holds
    /// about this many times the frame size per camera.
    pub frames_maxlen: u64,
}

/// Frames a stream keeps by default: 10 s at 30 fps, about 45 MB of 1280x720 JPEG.
pub const FRAMES_MAXLEN: u64 = 300;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct PublishReport {
    pub sent: u64,
    pub seconds: f64,
    /// Times a live source dropped and came back.
    pub outages: u64,
    /// Images of a folder that could not be read.
    pub skipped: u64,
    /// Live frames let go while Redis was unreachable.
    pub unpublished: u64,
}

/// Where frames come from once opened.
enum Frames {
    /// Boxed: the FFmpeg reader is a few hundred bytes, the folder's a few dozen.
    Ffmpeg(Box<JpegFrames>),
    Folder(ImageFolder),
}

impl Frames {
    async fn next(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        match self {
            Frames::Ffmpeg(f) => f.next().await,
            // Decoding and scaling an image is CPU work: keep it off the async workers' queue.
            Frames::Folder(f) => Ok(tokio::task::block_in_place(|| f.next_frame())?),
        }
    }
}

/// Where frames and reports go.
enum Sink {
    /// One connection (Redis keeps a connection's messages in order), which comes back by itself
    /// after Redis restarts.
    Redis {
        conn: crate::redis_conn::RedisConn,
        frames_channel: String,
        errors_channel: String,
        transport: Transport,
        frames_maxlen: u64,
    },
    /// An idempotent producer: the frames keyed by the stream id go to one partition, in order.
    Kafka {
        producer: KafkaProducer,
        frames_topic: String,
        errors_topic: String,
    },
}

impl Sink {
    fn name(&self) -> &'static str {
        match self {
            Sink::Redis { .. } => "Redis",
            Sink::Kafka { .. } => "Kafka",
        }
    }
}

/// Publishes frame messages and outage reports for one stream.
struct Publisher {
    sink: Sink,
    stream: String,
    flags: u8,
    message: Vec<u8>,
    seq: u64,
    sent: u64,
    /// When publishing started to fail, while it fails.
    down_since: Option<Instant>,
    /// Live frames not published because Redis (or Kafka) was unreachable (no sequence number
    /// spent).
    unpublished: u64,
}

impl Publisher {
    /// Publish a frame, riding out an outage of Redis (or Kafka): a file's frame is retried
    /// until it is back (files can wait); a live frame is let go (a camera cannot), and the next live frame
    /// takes its sequence number, so the outage leaves no hole for a node to wait on.
    async fn send(&mut self, jpeg: &[u8], live: bool) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            match self.frame(jpeg).await {
                Ok(()) => {
                    if let Some(since) = self.down_since.take() {
                        info!(
                            seconds = since.elapsed().as_secs_f64(),
                            unpublished = self.unpublished,
                            "{} is back",
                            self.sink.name()
                        );
                    }
                    return;
                }
                Err(e) => {
                    if self.down_since.is_none() {
                        self.down_since = Some(Instant::now());
                        warn!(error = %format!("{e:#}"), "cannot publish to {}; {}", self.sink.name(),
                            if live { "letting live frames go until it is back" } else { "retrying" });
                    }
                    if live {
                        self.unpublished += 1;
                        return;
                    }
                    tokio::time::sleep(backoff.next_wait()).await;
                }
            }
        }
    }

    async fn frame(&mut self, jpeg: &[u8]) -> anyhow::Result<()> {
        encode_frame(
            &mut self.message,
            &self.stream,
            self.seq,
            protocol::now_us(),
            self.flags,
            jpeg,
        );
        match &mut self.sink {
            Sink::Redis {
                conn,
                frames_channel,
                transport: Transport::Streams,
                frames_maxlen,
                ..
            } => {
                let _: String = redis::cmd("XADD")
                    .arg(&*frames_channel)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(*frames_maxlen)
                    .arg("*")
                    .arg(FRAME_FIELD)
                    .arg(&self.message[..])
                    .query_async(conn)
                    .await
                    .context("appending a frame to its stream")?;
            }
            Sink::Redis {
                conn,
                frames_channel,
                ..
            } => {
                let _: i64 = redis::cmd("PUBLISH")
                    .arg(&*frames_channel)
                    .arg(&self.message[..])
                    .query_async(conn)
                    .await
                    .context("publishing a frame")?;
            }
            Sink::Kafka {
                producer,
                frames_topic,
                ..
            } => {
                producer
                    .send(frames_topic, &self.stream, &self.message)
                    .await?;
            }
        }
        self.seq += 1;
        self.sent += 1;
        Ok(())
    }

    /// An event about the source (`source_outage`, `source_resumed`) on the error channel;
    /// `seq` is the next sequence number to be published. Logged too, so a report Redis (or
    /// Kafka) cannot take is not lost without a trace.
    async fn report(&mut self, code: ErrorCode, message: String) {
        let msg = ErrorMessage::new(&self.stream, Some(self.seq), code, message);
        let json = serde_json::to_string(&msg).expect("serializable");
        let published = match &mut self.sink {
            Sink::Redis {
                conn,
                errors_channel,
                ..
            } => redis::cmd("PUBLISH")
                .arg(&*errors_channel)
                .arg(&json)
                .query_async::<i64>(conn)
                .await
                .map(drop)
                .map_err(anyhow::Error::from),
            Sink::Kafka {
                producer,
                errors_topic,
                ..
            } => producer
                .send(errors_topic, &self.stream, json.as_bytes())
                .await
                .map(drop),
        };
        if let Err(e) = published {
            warn!(report = %json, error = %e, "could not publish a source report");
        }
    }
}

/// Publish until the input ends, `limit` frames are out, or Ctrl-C.
pub async fn run(opts: PublishOptions) -> anyhow::Result<PublishReport> {
    let fps = match (opts.pace, &opts.input) {
        (Pace::Fast, _) => None,
        (Pace::Fps(fps), _) if fps > 0.0 => Some(fps),
        (Pace::Fps(fps), _) => bail!("--fps must be positive, not {fps}"),
        (Pace::Source, Input::File(p)) => Some(video::frame_rate(&p.display().to_string()).await?),
        (Pace::Source, Input::Folder(_)) => Some(FOLDER_FPS),
        (Pace::Source, _) => None, // a camera sends at its own rate
    };
    let sink = match (opts.transport, &opts.kafka) {
        (Transport::Kafka, Some(kafka)) => Sink::Kafka {
            producer: kafka.producer()?,
            frames_topic: kafka.frames_topic.clone(),
            errors_topic: kafka.errors_topic.clone(),
        },
        (Transport::Kafka, None) => bail!("the Kafka transport needs Kafka's brokers"),
        (transport, _) => {
            let (_, conn) = opts
                .redis_tls
                .connect(&opts.redis_url, opts.redis_cluster)
                .await?;
            let channels = Channels::with_tags(opts.prefix.clone(), opts.redis_cluster);
            Sink::Redis {
                conn,
                frames_channel: channels.frames(&opts.stream),
                errors_channel: channels.errors(&opts.stream),
                transport,
                frames_maxlen: opts.frames_maxlen,
            }
        }
    };
    let mut publisher = Publisher {
        sink,
        stream: opts.stream.clone(),
        flags: if opts.keep_all { FLAG_KEEP } else { 0 },
        message: Vec::new(),
        seq: opts.start_seq,
        sent: 0,
        down_since: None,
        unpublished: 0,
    };

    let (mut frames, first) = open(&opts).await?;
    info!(input = %opts.input, stream = %opts.stream, "publishing");
    let mut pending = Some(first);
    let mut outages = 0;
    let start = Instant::now();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        if opts.limit.is_some_and(|l| publisher.sent >= l) {
            break;
        }
        let jpeg = match pending.take() {
            Some(jpeg) => jpeg,
            None => {
                let next = tokio::select! {
                    _ = &mut ctrl_c => break,
                    next = async {
                        if opts.input.is_live() {
                            tokio::time::timeout(opts.stall_timeout, frames.next()).await
                        } else {
                            Ok(frames.next().await)
                        }
                    } => next,
                };
                match next {
                    Ok(Ok(Some(jpeg))) => jpeg,
                    Ok(Ok(None)) if !opts.input.is_live() => break,
                    Ok(Err(e)) if !opts.input.is_live() => return Err(e),
                    dropped => {
                        let why = match dropped {
                            Err(_) => format!("no frame for {:?}", opts.stall_timeout),
                            Ok(Err(e)) => format!("{e:#}"),
                            Ok(Ok(_)) => "the stream ended".into(),
                        };
                        let reconnected = tokio::select! {
                            _ = &mut ctrl_c => break,
                            r = reconnect(&opts, &mut publisher, why) => r?,
                        };
                        outages += 1;
                        frames = reconnected.0;
                        reconnected.1
                    }
                }
            }
        };
        if let Some(fps) = fps {
            // Pace against the start, so small delays do not add up to drift.
            let due = start + Duration::from_secs_f64(publisher.sent as f64 / fps);
            tokio::time::sleep_until(due.into()).await;
        }
        publisher.send(&jpeg, opts.input.is_live()).await;
    }
    Ok(PublishReport {
        sent: publisher.sent,
        seconds: start.elapsed().as_secs_f64(),
        outages,
        unpublished: publisher.unpublished,
        skipped: match &frames {
            Frames::Folder(f) => f.skipped,
            Frames::Ffmpeg(_) => 0,
        },
    })
}

/// Open the input and read its first frame; an input that gives none is not open. The error
/// names the input.
async fn open(opts: &PublishOptions) -> anyhow::Result<(Frames, Vec<u8>)> {
    let mut frames = match opts.input.ffmpeg(opts.loop_input) {
        Some(ffmpeg) => Frames::Ffmpeg(Box::new(JpegFrames::open_with(
            &ffmpeg,
            opts.size,
            opts.quality,
            opts.input.is_live(),
        )?)),
        None => {
            let Input::Folder(dir) = &opts.input else {
                unreachable!("only folders are read without FFmpeg")
            };
            Frames::Folder(ImageFolder::open(
                dir,
                opts.size,
                opts.quality,
                opts.loop_input,
            )?)
        }
    };
    // A live source gets the stall timeout, and a little more for FFmpeg to probe the stream.
    let wait = opts.stall_timeout + Duration::from_secs(2);
    let first = if opts.input.is_live() {
        tokio::time::timeout(wait, frames.next())
            .await
            .map_err(|_| anyhow::anyhow!("no frame within {wait:?}"))
            .and_then(|r| r)
    } else {
        frames.next().await
    };
    match first {
        Ok(Some(jpeg)) => Ok((frames, jpeg)),
        Ok(None) => bail!("{} has no frames", opts.input),
        Err(e) => Err(e.context(format!("cannot open {}", opts.input))),
    }
}

/// After a live source dropped: report it, retry with doubling waits until it gives a frame
/// again, report that, and hand back the new source with its first frame.
async fn reconnect(
    opts: &PublishOptions,
    publisher: &mut Publisher,
    why: String,
) -> anyhow::Result<(Frames, Vec<u8>)> {
    warn!(input = %opts.input, reason = %why, "source dropped; reconnecting");
    publisher
        .report(
            ErrorCode::SourceOutage,
            format!("{} dropped: {why}; reconnecting", opts.input),
        )
        .await;
    let down = Instant::now();
    let mut backoff = Backoff::new(Duration::from_millis(250), opts.reconnect_max);
    let mut attempts = 0u32;
    loop {
        tokio::time::sleep(backoff.next_wait()).await;
        attempts += 1;
        match open(opts).await {
            Ok(opened) => {
                let secs = down.elapsed().as_secs_f64();
                info!(input = %opts.input, seconds = secs, attempts, "source is back");
                publisher
                    .report(
                        ErrorCode::SourceResumed,
                        format!(
                            "{} is back after {secs:.1} s ({attempts} attempts)",
                            opts.input
                        ),
                    )
                    .await;
                return Ok(opened);
            }
            Err(e) => {
                warn!(input = %opts.input, attempt = attempts, error = %format!("{e:#}"), "still down");
            }
        }
    }
}

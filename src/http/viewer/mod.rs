//! The live viewer, served by the admin HTTP server: a page per stream that plays the video with
//! its detections drawn on it.
//!
//! | path                  | what |
//! |-----------------------|------|
//! | `GET /`               | every stream, linked to its viewer |
//! | `GET /view/{stream}`  | the viewer page |
//! | `GET /view/{stream}/ws` | WebSocket: joined frames for the page |
//!
//! The server does not re-encode video. Each WebSocket reads the stream's frames, detections and
//! errors channels from Redis, joins frames to their results by sequence number ([`Joiner`]),
//! and sends the publisher's JPEG with the result beside it; the browser draws the boxes on a
//! canvas. The browser acknowledges each frame it has drawn, and the server sends only while
//! fewer than two are unacknowledged ([`Pacer`]): a slow browser skips to the newest frame and
//! never falls behind.

pub(crate) mod join;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::Message;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use redis::AsyncCommands;
use serde::Serialize;
use tracing::{debug, warn};

use crate::analytics::{AnalyticsConfig, Counts};
use crate::config::Config;
use crate::pipeline::analytics::{choose_geometry, Geometry};
use crate::pipeline::sequencer::SequencerMsg;
use crate::protocol::{self, parse_frame, Channels, DetectionsMessage, FrameLimits, OutputMessage};
pub(crate) use join::{Counters, Joiner, Pacer};

const VIEWER_PAGE: &str = include_str!("viewer.html");
/// Frames held waiting for their results: about two seconds at 30 fps.
const JOIN_FRAMES: usize = 64;
/// Frames sent and not yet drawn by the browser.
const IN_FLIGHT: u32 = 2;
/// Largest message a browser may send (it sends only `ack`).
const MAX_CLIENT_MESSAGE: usize = 1024;
/// Streams listed on the index page.
const MAX_LISTED: usize = 1000;

pub(crate) struct ViewerState {
    redis: redis::Client,
    channels: Channels,
    limits: FrameLimits,
    max_viewers: usize,
    open: Arc<AtomicUsize>,
    parts: crate::supervisor::Parts,
    /// `[streams."ID".analytics]`, by stream: drawn when Redis has none set for the stream.
    analytics: std::collections::HashMap<String, AnalyticsConfig>,
}

impl ViewerState {
    pub(crate) fn new(cfg: &Config, parts: crate::supervisor::Parts) -> anyhow::Result<Self> {
        Ok(Self {
            redis: crate::redis_conn::client(&cfg.redis.url, &cfg.redis.tls_files())?,
            channels: cfg.channels(),
            limits: FrameLimits {
                max_message_bytes: cfg.limits.max_payload_bytes,
                max_stream_id_bytes: cfg.limits.max_stream_id_bytes,
            },
            max_viewers: cfg.admin.max_viewers,
            open: Arc::new(AtomicUsize::new(0)),
            parts,
            analytics: cfg.analytics_by_stream(),
        })
    }
}

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index))
        .route("/view/{stream}", web::get().to(page))
        .route("/view/{stream}/ws", web::get().to(socket));
}

/// One message to the browser: a 4-byte big-endian length, that much JSON, then the JPEG.
#[derive(Serialize)]
struct FrameHeader<'a> {
    #[serde(flatten)]
    result: &'a DetectionsMessage,
    counters: Counters,
    sent_ts_us: u64,
    /// The stream's lines and zones with their counts, when it has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    analytics: Option<&'a Overlay>,
}

/// What the page draws of a stream's analytics: each line and zone, with its counts.
#[derive(Debug, Default, PartialEq, Serialize)]
struct Overlay {
    lines: Vec<LineOverlay>,
    zones: Vec<ZoneOverlay>,
}

#[derive(Debug, PartialEq, Serialize)]
struct LineOverlay {
    name: String,
    from: [f32; 2],
    to: [f32; 2],
    #[serde(rename = "in")]
    in_: u64,
    out: u64,
}

#[derive(Debug, PartialEq, Serialize)]
struct ZoneOverlay {
    name: String,
    polygon: Vec<[f32; 2]>,
    inside: u64,
    entered: u64,
}

/// How often a viewer reads the stream's lines, zones and counts again.
const OVERLAY_REFRESH: std::time::Duration = std::time::Duration::from_millis(500);

/// The lines and zones (`cfg`) with their counts as last saved (none yet: zero).
fn overlay(cfg: &AnalyticsConfig, counts: Option<&Counts>) -> Overlay {
    let line = |name: &str| counts.and_then(|c| c.lines.get(name));
    let zone = |name: &str| counts.and_then(|c| c.zones.get(name));
    Overlay {
        lines: cfg
            .lines
            .iter()
            .map(|l| LineOverlay {
                name: l.name.clone(),
                from: l.from,
                to: l.to,
                in_: line(&l.name).map_or(0, |c| c.in_),
                out: line(&l.name).map_or(0, |c| c.out),
            })
            .collect(),
        zones: cfg
            .zones
            .iter()
            .map(|z| ZoneOverlay {
                name: z.name.clone(),
                polygon: z.polygon.clone(),
                inside: zone(&z.name).map_or(0, |c| c.inside),
                entered: zone(&z.name).map_or(0, |c| c.entered),
            })
            .collect(),
    }
}

/// The stream's lines and zones (set through the admin API, else `cluster.toml`'s) with the
/// counts saved with its last result, from Redis; None when it has none (or Redis is away).
async fn read_overlay(
    state: &ViewerState,
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
) -> Option<Overlay> {
    let (geometry, saved): (Option<Vec<u8>>, Option<Vec<u8>>) = redis::pipe()
        .get(state.channels.geometry_key(stream))
        .get(state.channels.analytics_key(stream))
        .query_async(conn)
        .await
        .ok()?;
    let cfg = match choose_geometry(geometry.as_deref(), state.analytics.get(stream)) {
        Geometry::Admin(cfg) => cfg,
        Geometry::Configured(cfg) => cfg.clone(),
        // The node counting it says on the error channel what is wrong with it.
        Geometry::Nothing | Geometry::Unusable(_) => return None,
    };
    let counts = saved.and_then(|s| crate::analytics::saved_counts(&s).ok());
    Some(overlay(&cfg, counts.as_ref()))
}

fn encode_for_browser(
    result: &DetectionsMessage,
    counters: Counters,
    analytics: Option<&Overlay>,
    jpeg: &[u8],
) -> Bytes {
    let header = serde_json::to_vec(&FrameHeader {
        result,
        counters,
        sent_ts_us: protocol::now_us(),
        analytics,
    })
    .expect("serializable");
    let mut out = BytesMut::with_capacity(4 + header.len() + jpeg.len());
    out.put_u32(header.len() as u32);
    out.put_slice(&header);
    out.put_slice(jpeg);
    out.freeze()
}

/// The refusal for a stream id the wire would refuse too.
fn invalid_stream(state: &ViewerState, stream: &str) -> Option<HttpResponse> {
    (stream.is_empty() || stream.len() > state.limits.max_stream_id_bytes).then(|| {
        HttpResponse::build(StatusCode::BAD_REQUEST).body(format!(
            "a stream id is 1 to {} bytes",
            state.limits.max_stream_id_bytes
        ))
    })
}

async fn page(state: web::Data<ViewerState>, stream: web::Path<String>) -> HttpResponse {
    if let Some(refusal) = invalid_stream(&state, &stream) {
        return refusal;
    }
    // The page reads its stream from its own URL: nothing from the request goes into the HTML.
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(VIEWER_PAGE)
}

/// Streams known here: the local sequencer's, and every stream with results in Redis
/// (`{prefix}:last-seq:{stream}` keys, written by whichever node publishes them).
async fn known_streams(state: &ViewerState) -> Vec<String> {
    let mut names = std::collections::BTreeSet::new();
    if let Some(seq) = &state.parts.sequencer() {
        if let Ok(reports) = ractor::call_t!(seq, SequencerMsg::Streams, 2000) {
            names.extend(reports.into_iter().map(|r| r.stream));
        }
    }
    // On a Redis Cluster this sees the keys of one shard only (the local sequencer's streams
    // are listed whatever their shard).
    if let Ok(mut conn) = state.redis.get_multiplexed_async_connection().await {
        let pattern = state.channels.last_seq_pattern();
        if let Ok(mut keys) = conn.scan_match::<_, String>(&pattern).await {
            while let Some(key) = keys.next().await {
                if names.len() >= MAX_LISTED {
                    break;
                }
                if let Some(stream) = state.channels.stream_of_last_seq_key(&key) {
                    names.insert(stream.to_string());
                }
            }
        }
    }
    names.into_iter().take(MAX_LISTED).collect()
}

async fn index(state: web::Data<ViewerState>) -> HttpResponse {
    let streams = known_streams(&state).await;
    let mut items = String::new();
    for s in &streams {
        items += &format!(
            "<li><a href=\"/view/{}\">{}</a></li>\n",
            percent_encode(s),
            html_escape(s)
        );
    }
    if streams.is_empty() {
        items =
            "<li class=\"none\">No streams yet: publish one with <code>kadr publish</code>.</li>"
                .into();
    }
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>kadr streams</title>\
         <style>body{{font:16px system-ui,sans-serif;margin:2em;background:#111;color:#eee}}\
         a{{color:#7cf}}li{{margin:.4em 0}}.none{{color:#999}}</style></head><body>\
         <h1>kadr streams</h1><ul id=\"streams\">{items}</ul>\
         <p><a href=\"/streams\">/streams</a> · <a href=\"/cluster\">/cluster</a> · \
         <a href=\"/metrics\">/metrics</a></p></body></html>"
    );
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(body)
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Browsers send `Origin` with every WebSocket; refuse pages from elsewhere, so another site open
/// in the operator's browser cannot watch the cameras through a loopback admin server.
/// Clients that are not browsers send no `Origin` and are let through.
fn same_origin(request: &HttpRequest) -> bool {
    let Some(origin) = request.headers().get("origin") else {
        return true;
    };
    let host = request
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .is_some_and(|(_, origin_host)| !host.is_empty() && origin_host == host)
}

/// Counts open viewers; the slot frees itself when the session ends.
struct ViewerSlot(Arc<AtomicUsize>);

impl Drop for ViewerSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn socket(
    state: web::Data<ViewerState>,
    stream: web::Path<String>,
    request: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let stream = stream.into_inner();
    if let Some(refusal) = invalid_stream(&state, &stream) {
        return Ok(refusal);
    }
    if !same_origin(&request) {
        return Ok(HttpResponse::build(StatusCode::FORBIDDEN)
            .body("the viewer's WebSocket is for pages served by this node"));
    }
    if state.open.fetch_add(1, Ordering::SeqCst) >= state.max_viewers {
        state.open.fetch_sub(1, Ordering::SeqCst);
        return Ok(
            HttpResponse::build(StatusCode::SERVICE_UNAVAILABLE).body(format!(
                "{} viewers are open (admin.max_viewers)",
                state.max_viewers
            )),
        );
    }
    let slot = ViewerSlot(state.open.clone());
    let (response, session, messages) = actix_ws::handle(&request, body)?;
    let messages = messages.max_frame_size(MAX_CLIENT_MESSAGE);
    let state = state.into_inner();
    actix_web::rt::spawn(async move {
        let _slot = slot;
        if let Err(e) = run_session(&state, &stream, session, messages).await {
            debug!(%stream, error = %e, "viewer session ended");
        }
    });
    Ok(response)
}

/// Read the stream from Redis, join, and send to the browser at the pace it draws.
async fn run_session(
    state: &ViewerState,
    stream: &str,
    mut session: actix_ws::Session,
    mut from_browser: actix_ws::MessageStream,
) -> anyhow::Result<()> {
    let frames_channel = state.channels.frames(stream);
    let detections_channel = state.channels.detections(stream);
    let errors_channel = state.channels.errors(stream);
    let mut pubsub = match crate::redis_conn::subscribe(&state.redis, &[], &[]).await {
        Ok(p) => p,
        Err(why) => {
            warn!(%stream, error = %why, "viewer cannot reach Redis");
            let _ = session
                .close(Some(actix_ws::CloseReason {
                    code: actix_ws::CloseCode::Again,
                    description: Some("Redis is unreachable".into()),
                }))
                .await;
            return Ok(());
        }
    };
    for channel in [&frames_channel, &detections_channel, &errors_channel] {
        pubsub.subscribe(channel).await?;
    }
    let mut from_redis = pubsub.into_on_message();
    let mut joiner = Joiner::new(JOIN_FRAMES);
    let mut pacer = Pacer::new(IN_FLIGHT);
    let mut keys = state.redis.get_multiplexed_async_connection().await.ok();
    let mut analytics = None;
    let mut refresh = tokio::time::interval(OVERLAY_REFRESH);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = refresh.tick() => {
                if let Some(conn) = keys.as_mut() {
                    analytics = read_overlay(state, conn, stream).await;
                }
            }
            msg = from_redis.next() => {
                let Some(msg) = msg else { break };
                let channel = msg.get_channel_name();
                let payload = msg.get_payload_bytes();
                if channel == frames_channel {
                    let copy = Bytes::copy_from_slice(payload);
                    if let Ok(frame) = parse_frame(copy, stream, state.limits) {
                        joiner.frame(frame.seq, frame.jpeg);
                    }
                } else if channel == detections_channel {
                    let Ok(result) = serde_json::from_slice::<OutputMessage>(payload) else {
                        continue;
                    };
                    if let Some((result, jpeg)) = joiner.result(result) {
                        let mut counters = joiner.counters;
                        counters.skipped = pacer.skipped;
                        let message =
                            encode_for_browser(&result, counters, analytics.as_ref(), &jpeg);
                        if let Some(message) = pacer.offer(message) {
                            session.binary(message).await?;
                        }
                    }
                } else if channel == errors_channel {
                    joiner.error();
                }
            }
            msg = from_browser.next() => {
                match msg {
                    Some(Ok(Message::Text(t))) if t.trim() == "ack" => {
                        if let Some(message) = pacer.ack() {
                            session.binary(message).await?;
                        }
                    }
                    Some(Ok(Message::Ping(p))) => session.pong(&p).await?,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                }
            }
        }
    }
    let _ = session.close(None).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websockets_from_other_sites_are_refused() {
        use actix_web::test::TestRequest;
        let req = |origin: Option<&str>| {
            let r = TestRequest::get().insert_header(("host", "127.0.0.1:7500"));
            match origin {
                Some(o) => r.insert_header(("origin", o)),
                None => r,
            }
            .to_http_request()
        };
        assert!(same_origin(&req(Some("http://127.0.0.1:7500"))));
        assert!(same_origin(&req(None)), "not a browser");
        assert!(!same_origin(&req(Some("https://evil.example"))));
        assert!(!same_origin(&req(Some("http://127.0.0.1:7501"))));
        assert!(!same_origin(&req(Some("null"))));
    }

    #[test]
    fn names_are_escaped_for_html_and_urls() {
        assert_eq!(
            html_escape("<a href='x'>&"),
            "&lt;a href=&#39;x&#39;&gt;&amp;"
        );
        assert_eq!(percent_encode("cam 1/é"), "cam%201%2F%C3%A9");
    }

    #[test]
    fn a_browser_message_is_length_json_then_jpeg() {
        let result = DetectionsMessage {
            stream: "cam".into(),
            seq: 7,
            capture_ts_us: 1,
            done_ts_us: 2,
            model: "m".into(),
            width: 1280,
            height: 720,
            detections: vec![],
            queued_ms: None,
            detect_ms: None,
            epoch: 0,
        };
        let msg = encode_for_browser(&result, Counters::default(), None, b"\xFF\xD8jpeg");
        let len = u32::from_be_bytes(msg[..4].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&msg[4..4 + len]).unwrap();
        assert_eq!(header["seq"], 7);
        assert_eq!(header["counters"]["dropped"], 0);
        assert!(header.get("analytics").is_none(), "a stream without lines");
        assert_eq!(&msg[4 + len..], b"\xFF\xD8jpeg");
    }

    #[test]
    fn the_overlay_is_each_line_and_zone_with_its_saved_counts() {
        let cfg = crate::analytics::AnalyticsConfig::from_toml(
            "[[lines]]\nname = \"door\"\nfrom = [0, 10]\nto = [100, 10]\n\
             [[zones]]\nname = \"lot\"\npolygon = [[0, 0], [50, 0], [50, 50]]\n",
        )
        .unwrap();
        let none = overlay(&cfg, None);
        assert_eq!((none.lines[0].in_, none.zones[0].inside), (0, 0));
        let mut counts = Counts::default();
        counts.lines.insert(
            "door".into(),
            crate::analytics::LineCounts {
                in_: 4,
                out: 1,
                ..Default::default()
            },
        );
        let drawn = serde_json::to_value(overlay(&cfg, Some(&counts))).unwrap();
        assert_eq!(drawn["lines"][0]["in"], 4);
        assert_eq!(drawn["lines"][0]["to"], serde_json::json!([100.0, 10.0]));
        assert_eq!(
            drawn["zones"][0]["polygon"][2],
            serde_json::json!([50.0, 50.0])
        );
        assert_eq!(drawn["zones"][0]["entered"], 0);
    }
}

//! The admin HTTP API (actix-web): read the cluster's state, resize the local pool.
//!
//! | method | path       | what |
//! |--------|------------|------|
//! | GET    | `/health`  | this node is up: name, roles |
//! | GET    | `/cluster` | every node: roles, pool, in flight, last heartbeat |
//! | GET    | `/streams` | per stream (source nodes): frames in/out, fps, latency, drops, gaps, errors |
//! | GET    | `/metrics` | Prometheus text format |
//! | POST   | `/pool`    | `{"size": N}`: resize this node's detector pool (bearer token) |
//! | GET    | `/streams/{id}/analytics` | the stream's lines and zones: set here, or `cluster.toml`'s |
//! | PUT    | `/streams/{id}/analytics` | replace them (JSON, checked whole; bearer token); kept in Redis |
//! | DELETE | `/streams/{id}/analytics` | back to `cluster.toml`'s (bearer token) |
//! | GET    | `/`, `/view/{stream}` | the live viewer ([`crate::http::viewer`]) |
//!
//! It binds to `admin.listen` (loopback by default). Mutations need
//! `Authorization: Bearer <admin.token>`, compared in constant time; with no token configured
//! they are refused. Requests naming a host that is neither an IP address, `localhost` nor in
//! `admin.allowed_hosts` are refused, so a web page cannot reach a loopback server through a
//! DNS name it rebinds to 127.0.0.1.

use std::sync::Arc;

use actix_web::dev::{ServerHandle, Service as _, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use anyhow::Context;
use futures_util::future::{Either, FutureExt as _};
use ractor::ActorRef;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;
use tracing::info;

use crate::analytics::AnalyticsConfig;
use crate::cluster::membership::MembershipMsg;
use crate::config::{Config, Secret};
use crate::node_stats::Stats;
use crate::pipeline::analytics::{choose_geometry, Geometry};
use crate::pipeline::dispatch::DispatchMsg;
use crate::pipeline::pool::{PoolMsg, MAX_POOL_SIZE};
use crate::pipeline::sequencer::SequencerMsg;
use crate::stream_stats::StreamReport;
use crate::task::OwnedTask;

/// What the handlers talk to.
#[derive(Clone)]
pub(crate) struct AdminHandles {
    pub node: String,
    pub backend: Option<crate::model::Backend>,
    pub stats: Arc<Stats>,
    /// The membership actor as it is now (its supervisor may restart it).
    pub membership: tokio::sync::watch::Receiver<ActorRef<MembershipMsg>>,
    /// The node's actors as they are now.
    pub parts: crate::supervisor::Parts,
    /// With `cluster.stream_leases`: who reads each stream.
    pub stream_leases: Option<Arc<crate::pipeline::stream_leases::StreamLeases>>,
    /// The node's Redis connection (source nodes): where streams' lines and zones are kept.
    pub redis: Option<crate::redis_conn::RedisConn>,
}

struct AppState {
    handles: AdminHandles,
    token: Secret,
    roles: Vec<crate::config::Role>,
    channels: crate::protocol::Channels,
    /// `[streams."ID".analytics]`, by stream.
    configured_analytics: std::collections::HashMap<String, AnalyticsConfig>,
    /// `limits.max_stream_id_bytes`: a longer id names no stream a node takes.
    max_stream_id_bytes: usize,
}

pub(crate) struct Server {
    handle: ServerHandle,
    /// The server's accept loop and workers: they end with the node.
    _running: OwnedTask,
}

/// Largest request body accepted (a resize is a few bytes).
const MAX_BODY: usize = 4096;
/// Largest body of a stream's lines and zones (64 zones of 64 corners fit many times over).
const MAX_GEOMETRY_BODY: usize = 256 * 1024;
const CALL_TIMEOUT_MS: u64 = 2000;

/// Bind `admin.listen`, so a node fails on a taken port before it takes any work (the source
/// lease among it); [`Server::start`] serves on it.
pub(crate) fn bind(cfg: &Config) -> anyhow::Result<std::net::TcpListener> {
    std::net::TcpListener::bind(cfg.admin.listen)
        .with_context(|| format!("admin.listen {} cannot be used", cfg.admin.listen))
}

impl Server {
    pub(crate) async fn start(
        listener: std::net::TcpListener,
        cfg: &Config,
        handles: AdminHandles,
    ) -> anyhow::Result<Server> {
        let viewer = web::Data::new(crate::http::viewer::ViewerState::new(
            cfg,
            handles.parts.clone(),
        )?);
        let state = web::Data::new(AppState {
            handles,
            token: cfg.admin.token.clone(),
            roles: cfg.node.roles.clone(),
            channels: cfg.channels(),
            configured_analytics: cfg.analytics_by_stream(),
            max_stream_id_bytes: cfg.limits.max_stream_id_bytes,
        });
        let allowed_hosts: Arc<[String]> = cfg.admin.allowed_hosts.clone().into();
        let server = HttpServer::new(move || {
            let allowed_hosts = allowed_hosts.clone();
            App::new()
                .wrap_fn(move |request, service| {
                    let host = request.headers().get("host").map(|h| h.to_str());
                    let allowed = match host {
                        None => true, // HTTP/1.0 clients; browsers always send one
                        Some(Ok(host)) => host_allowed(host, &allowed_hosts),
                        Some(Err(_)) => false,
                    };
                    if allowed {
                        Either::Left(
                            service
                                .call(request)
                                .map(|r| r.map(ServiceResponse::map_into_left_body)),
                        )
                    } else {
                        let refusal = error(
                            StatusCode::FORBIDDEN,
                            "this Host is not served: use an IP address or localhost, or add \
                             the name to admin.allowed_hosts",
                        );
                        Either::Right(std::future::ready(Ok(request
                            .into_response(refusal)
                            .map_into_right_body())))
                    }
                })
                .app_data(state.clone())
                .app_data(web::JsonConfig::default().limit(MAX_BODY))
                .app_data(web::PayloadConfig::new(MAX_BODY))
                .route("/health", web::get().to(health))
                .route("/cluster", web::get().to(cluster))
                .route("/streams", web::get().to(streams))
                .route("/metrics", web::get().to(metrics))
                .service(
                    web::resource("/pool")
                        .post(resize_pool)
                        .default_service(web::to(method_not_allowed)),
                )
                .service(
                    web::resource("/streams/{stream}/analytics")
                        .app_data(web::PayloadConfig::new(MAX_GEOMETRY_BODY))
                        .get(get_analytics)
                        .put(put_analytics)
                        .delete(delete_analytics)
                        .default_service(web::to(method_not_allowed)),
                )
                .app_data(viewer.clone())
                .configure(crate::http::viewer::routes)
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .with_context(|| format!("admin.listen {} cannot be used", cfg.admin.listen))?
        .run();
        let handle = server.handle();
        let running = OwnedTask::spawn(async move {
            let _ = server.await;
        });
        info!(listen = %cfg.admin.listen, "admin API listening");
        Ok(Server {
            handle,
            _running: running,
        })
    }

    pub(crate) async fn stop(&self) {
        self.handle.stop(true).await;
    }
}

/// A `Host` a browser may have reached this server by: an IP address (DNS rebinding needs a
/// name), `localhost`, or a name the operator allowed (`"*"` allows any).
pub(crate) fn host_allowed(host: &str, allowed_hosts: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => {
            return v6
                .split_once(']')
                .is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok())
        }
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed_hosts
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(name))
}

async fn method_not_allowed() -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header(("Allow", "POST"))
        .json(json!({ "error": "this path takes POST" }))
}

fn error(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": message.into() }))
}

async fn health(state: web::Data<AppState>) -> HttpResponse {
    // A source node that cannot reach Redis takes no frames in and publishes nothing: not
    // healthy, though restarting it would not help (it reconnects by itself every second).
    let redis_down = state.handles.stats.redis_down.get() > 0;
    // A part being restarted (the ingress, the pool) takes no frames until it is back.
    let restarting = state.handles.stats.parts_down.get() > 0;
    let (code, status) = if restarting {
        (StatusCode::SERVICE_UNAVAILABLE, "restarting")
    } else if redis_down {
        (StatusCode::SERVICE_UNAVAILABLE, "redis_down")
    } else {
        (StatusCode::OK, "ok")
    };
    HttpResponse::build(code).json(json!({
        "status": status,
        "redis": if redis_down { "down" } else { "up" },
        "node": state.handles.node,
        "roles": state.roles,
        "backend": state.handles.backend,
        "detect_fps": state.handles.stats.detect_fps_tenths.get() as f64 / 10.0,
    }))
}

async fn cluster(state: web::Data<AppState>) -> HttpResponse {
    let membership = state.handles.membership.borrow().clone();
    let view = ractor::call_t!(membership, MembershipMsg::Snapshot, CALL_TIMEOUT_MS);
    let dispatch = match &state.handles.parts.dispatcher() {
        Some(d) => ractor::call_t!(d, DispatchMsg::Status, CALL_TIMEOUT_MS).ok(),
        None => None,
    };
    match view {
        Ok(view) => HttpResponse::Ok().json(json!({
            "node": view.node,
            "members": view.members,
            "dispatcher": dispatch,
        })),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("membership: {e}")),
    }
}

async fn stream_reports(state: &AppState) -> Result<Vec<StreamReport>, String> {
    match &state.handles.parts.sequencer() {
        Some(s) => ractor::call_t!(s, SequencerMsg::Streams, CALL_TIMEOUT_MS)
            .map_err(|e| format!("sequencer: {e}")),
        None => Ok(Vec::new()),
    }
}

async fn streams(state: web::Data<AppState>) -> HttpResponse {
    match stream_reports(&state).await {
        Ok(streams) => {
            let mut body = json!({
                "node": state.handles.node,
                "streams": streams,
            });
            // With a lease per stream: which node reads every stream this node has seen
            // (from the leases, as of its last look, every third of the lease's lifetime).
            if let Some(leases) = &state.handles.stream_leases {
                body["holders"] = json!(leases.holders());
            }
            HttpResponse::Ok().json(body)
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let streams = stream_reports(&state).await.unwrap_or_default();
    let body = super::metrics::prometheus_text(&state.handles.node, &state.handles.stats, &streams);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(body)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Resize {
    size: usize,
}

async fn resize_pool(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    if let Some(refusal) = refuse_unauthorized(&state.token, &request) {
        return refusal;
    }
    let resize: Resize = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("body must be {{\"size\": N}}: {e}"),
            )
        }
    };
    if resize.size > MAX_POOL_SIZE {
        return error(
            StatusCode::BAD_REQUEST,
            format!("size must be 0..={MAX_POOL_SIZE}"),
        );
    }
    let Some(pool) = &state.handles.parts.pool() else {
        return error(StatusCode::CONFLICT, "this node has no detector role");
    };
    match ractor::call_t!(pool, PoolMsg::Resize, CALL_TIMEOUT_MS, resize.size) {
        Ok(status) => HttpResponse::Ok().json(status),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("pool: {e}")),
    }
}

/// The stream's lines and zones: those set through this API (kept in Redis) if any, else
/// `cluster.toml`'s; `source` says which.
async fn get_analytics(state: web::Data<AppState>, stream: web::Path<String>) -> HttpResponse {
    let Some(mut conn) = state.handles.redis.clone() else {
        return no_redis();
    };
    let key = state.channels.geometry_key(&stream);
    let set: redis::RedisResult<Option<Vec<u8>>> =
        redis::cmd("GET").arg(&key).query_async(&mut conn).await;
    let set = match set {
        Ok(set) => set,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("Redis: {e}")),
    };
    let configured = state.configured_analytics.get(stream.as_str());
    match choose_geometry(set.as_deref(), configured) {
        Geometry::Admin(cfg) => HttpResponse::Ok()
            .json(json!({ "stream": *stream, "source": "admin", "analytics": cfg })),
        Geometry::Configured(cfg) => HttpResponse::Ok()
            .json(json!({ "stream": *stream, "source": "cluster.toml", "analytics": cfg })),
        Geometry::Nothing => error(StatusCode::NOT_FOUND, "the stream has no lines or zones"),
        Geometry::Unusable(e) => error(
            StatusCode::CONFLICT,
            format!("{key} in Redis is not usable (not written by this API): {e}"),
        ),
    }
}

/// Replace the stream's lines and zones: the whole body checked first (a problem is answered
/// with its key's path, nothing stored), then stored in Redis in one write, where the node
/// holding the stream finds it (within [`crate::pipeline::analytics::GEOMETRY_REFRESH`]).
async fn put_analytics(
    state: web::Data<AppState>,
    request: HttpRequest,
    stream: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    if let Some(refusal) = refuse_unauthorized(&state.token, &request) {
        return refusal;
    }
    if stream.is_empty() || stream.len() > state.max_stream_id_bytes {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "a stream id is 1..={} bytes (limits.max_stream_id_bytes)",
                state.max_stream_id_bytes
            ),
        );
    }
    let cfg: AnalyticsConfig = match serde_json::from_slice(&body) {
        Ok(cfg) => cfg,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("body must be the stream's analytics as JSON (docs/configuration.md): {e}"),
            )
        }
    };
    if let Err(e) = cfg.validate() {
        return HttpResponse::BadRequest().json(json!({ "error": e.to_string(), "key": e.key }));
    }
    let Some(mut conn) = state.handles.redis.clone() else {
        return no_redis();
    };
    let json = serde_json::to_vec(&cfg).expect("a config serializes");
    let stored: redis::RedisResult<()> = redis::cmd("SET")
        .arg(state.channels.geometry_key(&stream))
        .arg(json)
        .query_async(&mut conn)
        .await;
    match stored {
        Ok(()) => {
            info!(stream = %*stream, lines = cfg.lines.len(), zones = cfg.zones.len(), "the stream's lines and zones set through the admin API");
            HttpResponse::Ok().json(json!({
                "stream": *stream,
                "lines": cfg.lines.len(),
                "zones": cfg.zones.len(),
                "applies_within_ms": crate::pipeline::analytics::GEOMETRY_REFRESH.as_millis() as u64,
            }))
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("Redis: {e}")),
    }
}

/// Forget the lines and zones set through this API: the stream goes back to `cluster.toml`'s.
async fn delete_analytics(
    state: web::Data<AppState>,
    request: HttpRequest,
    stream: web::Path<String>,
) -> HttpResponse {
    if let Some(refusal) = refuse_unauthorized(&state.token, &request) {
        return refusal;
    }
    let Some(mut conn) = state.handles.redis.clone() else {
        return no_redis();
    };
    let deleted: redis::RedisResult<u64> = redis::cmd("DEL")
        .arg(state.channels.geometry_key(&stream))
        .query_async(&mut conn)
        .await;
    match deleted {
        Ok(n) => HttpResponse::Ok().json(json!({ "stream": *stream, "deleted": n == 1 })),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("Redis: {e}")),
    }
}

fn no_redis() -> HttpResponse {
    error(
        StatusCode::CONFLICT,
        "this node has no source role (no Redis connection): ask a source node's admin API",
    )
}

/// `Authorization: Bearer <token>`, compared in constant time; the refusal if it is not.
fn refuse_unauthorized(token: &Secret, request: &HttpRequest) -> Option<HttpResponse> {
    if token.is_empty() {
        return Some(error(
            StatusCode::FORBIDDEN,
            "mutations are disabled: set admin.token (or KADR_ADMIN_TOKEN)",
        ));
    }
    let presented = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        // The scheme is case-insensitive (RFC 9110).
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, token)| token.trim());
    if bool::from(presented.as_bytes().ct_eq(token.expose().as_bytes())) {
        None
    } else {
        Some(
            HttpResponse::Unauthorized()
                .insert_header(("WWW-Authenticate", "Bearer"))
                .json(json!({ "error": "a valid bearer token is required" })),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_addresses_localhost_and_allowed_names_are_served() {
        let none: &[String] = &[];
        for host in [
            "127.0.0.1:7500",
            "127.0.0.1",
            "10.1.2.3:80",
            "[::1]:7500",
            "localhost:7500",
            "LOCALHOST",
        ] {
            assert!(host_allowed(host, none), "{host}");
        }
        for host in [
            "evil.example:7500",
            "evil.example",
            "127.0.0.1.evil.example",
            "[::1",
            "",
            "localhost.evil:7500",
        ] {
            assert!(!host_allowed(host, none), "{host}");
        }
        let allowed = ["kadr.example.net".to_string()];
        assert!(host_allowed("Kadr.Example.Net:7500", &allowed));
        assert!(!host_allowed("evil.example", &allowed));
        assert!(host_allowed("anything.example", &["*".to_string()]));
    }
}

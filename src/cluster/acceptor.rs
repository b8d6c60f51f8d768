//! The cluster port's front door: accepts peers on `cluster.listen` and hands each connection to
//! ractor_cluster's `NodeServer`, which authenticates it (TLS where configured, then the cookie).
//!
//! ractor_cluster's own listener keeps every connection until the peer closes it and logs an
//! accept error as fast as the loop spins: 1,100 idle connections exhausted a node's file
//! descriptors and it then wrote 2.6 GB of log in 30 s. Here:
//!
//! - a connection that has not authenticated within `cluster.handshake_timeout_ms` is closed;
//! - at most `cluster.max_pending_handshakes` connections wait to authenticate at once; one more
//!   is closed at accept;
//! - accept errors (out of descriptors) pause accepting for a moment and are logged at most once
//!   every 10 s, with how many there were.
//!
//! The `NodeServer` still binds a listener of its own (it always does); it is put on an
//! ephemeral loopback port with the same authentication, and peers are never told of it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::ActorRef;
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{NetworkStream, NodeEventSubscription, NodeServerMessage};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tracing::warn;

use crate::log_budget::{LogBudget, Verdict};
use crate::node_stats::Stats;
use crate::task::TaskSet;

/// How long accepting pauses after an accept error (descriptors run out, memory pressure).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Accept errors are logged at most this often.
const ACCEPT_ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
pub(crate) struct AcceptorLimits {
    pub handshake_timeout: Duration,
    pub max_pending: usize,
}

/// Connections accepted and not yet authenticated, by peer address: a second handle on each
/// socket, so it can be shut down when its time is up whoever holds the stream by then.
#[derive(Default)]
pub(crate) struct Pending(Mutex<HashMap<String, std::net::TcpStream>>);

impl Pending {
    fn len(&self) -> usize {
        self.0.lock().map_or(0, |m| m.len())
    }

    fn insert(&self, peer: String, socket: std::net::TcpStream) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(peer, socket);
        }
    }

    /// Forget a connection (authenticated or gone); its watching handle if it was waiting.
    fn remove(&self, peer: &str) -> Option<std::net::TcpStream> {
        self.0.lock().ok().and_then(|mut m| m.remove(peer))
    }
}

/// Told by the `NodeServer` when a session authenticates or closes.
pub(crate) struct HandshakeWatch(pub Arc<Pending>);

impl NodeEventSubscription for HandshakeWatch {
    fn node_session_opened(&self, _ses: NodeServerSessionInformation) {}

    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        self.0.remove(&ses.peer_addr);
    }

    fn node_session_ready(&self, _ses: NodeServerSessionInformation) {}

    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        self.0.remove(&ses.peer_addr);
    }
}

/// Accept peers on `listener` until the task is aborted.
pub(crate) async fn run(
    listener: TcpListener,
    server: ActorRef<NodeServerMessage>,
    tls: Option<TlsAcceptor>,
    pending: Arc<Pending>,
    limits: AcceptorLimits,
    stats: Arc<Stats>,
) {
    // Each connection's handshake and deadline: owned here, so they end with the acceptor.
    let mut handshakes = TaskSet::default();
    // Junk connections are anyone's to make: a few lines per kind and window, then counts.
    let logs = Arc::new(LogBudget::new());
    let mut errors_since_log = 0u64;
    let mut last_error_log: Option<Instant> = None;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                stats.cluster_accept_errors.inc();
                errors_since_log += 1;
                if last_error_log.is_none_or(|t| t.elapsed() >= ACCEPT_ERROR_LOG_EVERY) {
                    warn!(error = %e, errors = errors_since_log, "cluster port: cannot accept connections (pausing {ACCEPT_ERROR_PAUSE:?} each time)");
                    errors_since_log = 0;
                    last_error_log = Some(Instant::now());
                }
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        if pending.len() >= limits.max_pending {
            // Dropping the stream closes it: a flood costs it nothing but this.
            stats.cluster_connections_refused.inc();
            continue;
        }
        match admit(
            stream,
            peer,
            &server,
            tls.clone(),
            &pending,
            limits,
            &stats,
            &logs,
        ) {
            Ok(handshake) => handshakes.spawn(handshake),
            Err(e) => {
                if let Verdict::Log { left_out } = logs.check(&"dropped") {
                    warn!(%peer, error = %e, left_out, "cluster port: connection dropped");
                }
            }
        }
    }
}

/// Register a new connection as pending; returns its handshake, to run under the acceptor: TLS
/// (if any) and the hand-over to the node server, beside the deadline that closes it if the
/// peer has not authenticated by then.
#[allow(clippy::too_many_arguments)] // each is one of the acceptor's own handles
fn admit(
    stream: TcpStream,
    peer: SocketAddr,
    server: &ActorRef<NodeServerMessage>,
    tls: Option<TlsAcceptor>,
    pending: &Arc<Pending>,
    limits: AcceptorLimits,
    stats: &Arc<Stats>,
    logs: &Arc<LogBudget<&'static str>>,
) -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    stream.set_nodelay(true)?;
    let local = stream.local_addr()?;
    let std_stream = stream.into_std()?;
    let watch = std_stream.try_clone()?;
    let stream = TcpStream::from_std(std_stream)?;
    let key = peer.to_string();
    pending.insert(key.clone(), watch);

    // The deadline covers TLS and the cookie exchange alike.
    let (pending_for_deadline, stats_for_deadline) = (pending.clone(), stats.clone());
    let deadline = async move {
        tokio::time::sleep(limits.handshake_timeout).await;
        if let Some(socket) = pending_for_deadline.remove(&key) {
            let _ = socket.shutdown(std::net::Shutdown::Both);
            stats_for_deadline.cluster_handshake_timeouts.inc();
        }
    };

    let (server, pending, logs) = (server.clone(), pending.clone(), logs.clone());
    let handshake = async move {
        let stream = match tls {
            None => NetworkStream::Raw {
                peer_addr: peer,
                local_addr: local,
                stream,
            },
            Some(acceptor) => match acceptor.accept(stream).await {
                Ok(stream) => NetworkStream::TlsServer {
                    peer_addr: peer,
                    local_addr: local,
                    stream,
                },
                Err(e) => {
                    if let Verdict::Log { left_out } = logs.check(&"tls") {
                        warn!(%peer, error = %e, left_out, "cluster port: TLS handshake failed");
                    }
                    pending.remove(&peer.to_string());
                    return;
                }
            },
        };
        let _ = server.cast(NodeServerMessage::ConnectionOpened {
            stream: Box::new(stream),
            is_server: true,
        });
    };
    Ok(async move {
        tokio::join!(deadline, handshake);
    })
}

//! Connecting to Redis: one place for the time-outs and the pace of reconnection.
//!
//! The redis crate's `ConnectionManager` reconnects by itself, but with its defaults the second
//! attempt comes 60 to 120 s after the first (backon's exponential backoff with the crate's
//! factor of 100, capped at 60 s, plus jitter): an outage of 3 s blacked a node out for two
//! minutes. Here every attempt is 1 to 2 s after the last, whatever the outage's length, and no
//! command waits longer than [`RESPONSE_TIMEOUT`] on a connection that went silent.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Value};

/// Longest wait for a TCP connection to Redis.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for a reply: kadr's commands are small (PUBLISH, SET, GET, a short script).
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for a reply on a connection of one's own ([`RedisClients::own_connection`]).
pub(crate) const OWN_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between reconnection attempts, before jitter (which adds up to as much again).
pub(crate) const RETRY_DELAY: Duration = Duration::from_secs(1);

/// The reconnection settings of every `ConnectionManager` kadr makes.
pub(crate) fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        // backon's delays start at 1 s and are multiplied by `factor` each time: 1 keeps them
        // at 1 s; the cap catches any later change of defaults.
        .set_factor(1)
        .set_max_delay(RETRY_DELAY.as_millis() as u64)
        .set_number_of_retries(5)
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_response_timeout(RESPONSE_TIMEOUT)
}

/// Open `url` and a reconnecting connection to it. Fails within a few seconds if Redis cannot
/// be used, with `unavailable` and then the cause: refused, not found (DNS), timed out, or
/// credentials refused. The URL is never shown with its password.
pub(crate) async fn connect(
    url: &str,
    tls: &TlsFiles<'_>,
    unavailable: impl FnOnce() -> String,
) -> anyhow::Result<(RedisClients, RedisConn)> {
    let client = client(url, tls)?;
    // One plain connection first: the manager retries quietly and would turn every cause
    // into "timed out".
    let probe = AsyncConnectionConfig::new()
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_response_timeout(RESPONSE_TIMEOUT);
    let first = tokio::time::timeout(
        CONNECT_TIMEOUT * 2,
        client.get_multiplexed_async_connection_with_config(&probe),
    )
    .await;
    match first {
        Err(_) => {
            return Err(anyhow!("timed out after {:?}", CONNECT_TIMEOUT * 2))
                .with_context(unavailable)
        }
        Ok(Err(e)) => return Err(anyhow!(describe(&e))).with_context(unavailable),
        Ok(Ok(_)) => {}
    }
    let conn = tokio::time::timeout(
        CONNECT_TIMEOUT * 3,
        client.get_connection_manager_with_config(manager_config()),
    )
    .await
    .map_err(|_| anyhow!("timed out"))
    .and_then(|r| r.map_err(|e| anyhow!(describe(&e))))
    .with_context(unavailable)?;
    Ok((
        RedisClients::new(vec![client], None),
        RedisConn::Single(conn),
    ))
}

/// A connection for commands: to one Redis server (reconnecting by itself), or to a Redis
/// Cluster (`redis.cluster`), which sends each command to the shard of its key's slot, follows
/// MOVED and ASK redirections and finds the new master after a failover.
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    /// A plain connection, not reconnecting (a reader that makes its own again).
    Plain(MultiplexedConnection),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
            Self::Plain(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
            Self::Plain(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
            Self::Plain(c) => c.get_db(),
        }
    }
}

/// The value of each key (None: no such key), in their order. On a Redis Cluster each key is
/// read on its own, all at once (their slots differ: a pipeline or an MGET across slots is
/// refused); elsewhere one MGET per 500 keys.
pub(crate) async fn get_each(
    conn: &RedisConn,
    keys: &[String],
) -> redis::RedisResult<Vec<Option<Vec<u8>>>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    if let RedisConn::Cluster(cluster) = conn {
        let reads = keys.iter().map(|key| {
            let mut c = cluster.clone();
            async move {
                redis::cmd("GET")
                    .arg(key)
                    .query_async::<Option<Vec<u8>>>(&mut c)
                    .await
            }
        });
        return futures_util::future::join_all(reads)
            .await
            .into_iter()
            .collect();
    }
    let mut conn = conn.clone();
    let mut values = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(500) {
        let got: Vec<Option<Vec<u8>>> =
            redis::cmd("MGET").arg(chunk).query_async(&mut conn).await?;
        values.extend(got);
    }
    Ok(values)
}

/// Where new connections come from. Pub/sub: the one Redis server, or any node of a Redis
/// Cluster (there a PUBLISH reaches every node, replicas included), tried in turn from the last
/// that answered, so that losing a node costs a resubscription, not the feed. Connections of
/// one's own (a reader that blocks): to the server, or to the cluster.
#[derive(Clone)]
pub struct RedisClients {
    clients: Arc<Vec<redis::Client>>,
    next: Arc<AtomicUsize>,
    /// On a Redis Cluster: the cluster, for connections of one's own.
    cluster: Option<redis::cluster::ClusterClient>,
}

impl RedisClients {
    fn new(clients: Vec<redis::Client>, cluster: Option<redis::cluster::ClusterClient>) -> Self {
        assert!(!clients.is_empty(), "a subscriber needs a Redis to ask");
        Self {
            clients: Arc::new(clients),
            next: Arc::default(),
            cluster,
        }
    }

    pub fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// A connection of one's own, whose replies may take up to [`OWN_RESPONSE_TIMEOUT`] (a
    /// blocking read), not shared with anything that must be quick.
    pub(crate) async fn own_connection(&self) -> redis::RedisResult<RedisConn> {
        match &self.cluster {
            Some(cluster) => Ok(RedisConn::Cluster(cluster.get_async_connection().await?)),
            None => {
                let config = AsyncConnectionConfig::new()
                    .set_response_timeout(OWN_RESPONSE_TIMEOUT)
                    .set_connection_timeout(CONNECT_TIMEOUT * 2);
                let conn = self
                    .client()
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                Ok(RedisConn::Plain(conn))
            }
        }
    }

    /// The client tried first (the one Redis, or the node that answered last).
    pub fn client(&self) -> &redis::Client {
        &self.clients[self.next.load(Ordering::Relaxed) % self.clients.len()]
    }

    /// A pub/sub connection, subscribed to `channels` and `patterns` (see [`subscribe`]), from
    /// the first node that gives one.
    pub async fn subscribe(
        &self,
        channels: &[&str],
        patterns: &[&str],
    ) -> anyhow::Result<redis::aio::PubSub> {
        let start = self.next.load(Ordering::Relaxed);
        let mut last_error = None;
        for i in 0..self.clients.len() {
            let at = (start + i) % self.clients.len();
            match subscribe(&self.clients[at], channels, patterns).await {
                Ok(pubsub) => {
                    self.next.store(at, Ordering::Relaxed);
                    return Ok(pubsub);
                }
                Err(e) => last_error = Some(e),
            }
        }
        // Next time, start from the one after: the first may stay down.
        self.next.store(start + 1, Ordering::Relaxed);
        Err(last_error.expect("at least one client"))
    }
}

/// Open a Redis Cluster through any of `urls` (its nodes; the rest are found from them), with
/// the same time-outs and TLS files as a single server. Fails within a few seconds, with
/// `unavailable` and the cause, if none answers.
pub(crate) async fn connect_cluster(
    urls: &[String],
    tls: &TlsFiles<'_>,
    unavailable: impl FnOnce() -> String,
) -> anyhow::Result<(RedisClients, RedisConn)> {
    // The files are read once, for every node's client and both cluster clients.
    let certs = tls_certificates(tls)?;
    let clients = urls
        .iter()
        .map(|u| client_with(u, certs.clone()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let build = |response_timeout| {
        let mut builder =
            redis::cluster::ClusterClientBuilder::new(urls.iter().map(String::as_str))
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(response_timeout)
                // A failover takes the cluster a few seconds (cluster-node-timeout and an
                // election): the client retries a command that long, 0.1 to 1.6 s apart.
                .retries(8)
                .min_retry_wait(100)
                .max_retry_wait(1600);
        if let Some(certs) = certs.clone() {
            builder = builder.certs(certs);
        }
        builder
            .build()
            .map_err(|e| anyhow!("{}", describe(&e)))
            .context("the Redis Cluster's node list is not valid")
    };
    let cluster = build(RESPONSE_TIMEOUT)?;
    let own = build(OWN_RESPONSE_TIMEOUT)?;
    let conn = tokio::time::timeout(CONNECT_TIMEOUT * 3, cluster.get_async_connection())
        .await
        .map_err(|_| anyhow!("timed out after {:?}", CONNECT_TIMEOUT * 3))
        .and_then(|r| r.map_err(|e| anyhow!(describe(&e))))
        .with_context(unavailable)?;
    Ok((
        RedisClients::new(clients, Some(own)),
        RedisConn::Cluster(conn),
    ))
}

/// For `rediss://`: the CA that signed Redis's certificate, and a client certificate and key
/// (PEM files; `[redis]` `tls_ca`, `tls_cert`, `tls_key`).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TlsFiles<'a> {
    pub ca: Option<&'a Path>,
    pub cert: Option<&'a Path>,
    pub key: Option<&'a Path>,
}

/// The TLS files a client of `rediss://` gives (`kadr publish --redis-ca ...`): Redis's CA
/// (default: the system's trusted roots), and a client certificate and key where Redis asks for
/// one.
#[derive(Debug, Clone, Default)]
pub struct RedisTls {
    pub ca: Option<std::path::PathBuf>,
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

impl RedisTls {
    pub(crate) fn files(&self) -> TlsFiles<'_> {
        TlsFiles {
            ca: self.ca.as_deref(),
            cert: self.cert.as_deref(),
            key: self.key.as_deref(),
        }
    }

    /// Connect to the Redis at `url`, or to the Redis Cluster it is a node of (`cluster`): a
    /// connection for commands and where pub/sub connections go.
    pub async fn connect(
        &self,
        url: &str,
        cluster: bool,
    ) -> anyhow::Result<(RedisClients, RedisConn)> {
        self.check_pairing()?;
        let unavailable = || format!("Redis at {} cannot be used", redact(url));
        if cluster {
            connect_cluster(&[url.to_string()], &self.files(), unavailable).await
        } else {
            connect(url, &self.files(), unavailable).await
        }
    }

    /// A client for `url` with these files (checked: a cert needs its key, and the reverse).
    pub fn client(&self, url: &str) -> anyhow::Result<redis::Client> {
        self.check_pairing()?;
        client(url, &self.files())
    }

    fn check_pairing(&self) -> anyhow::Result<()> {
        if self.cert.is_some() != self.key.is_some() {
            anyhow::bail!(
                "a client certificate and its key go together (--redis-cert and --redis-key)"
            );
        }
        Ok(())
    }
}

/// A client for `url`, with the TLS files given for `rediss://`.
pub(crate) fn client(url: &str, tls: &TlsFiles<'_>) -> anyhow::Result<redis::Client> {
    client_with(url, tls_certificates(tls)?)
}

/// A client for `url`, with TLS certificates already read.
fn client_with(url: &str, certs: Option<redis::TlsCertificates>) -> anyhow::Result<redis::Client> {
    let invalid = || anyhow!("{} is not a valid Redis URL", redact(url));
    match certs {
        None => redis::Client::open(url).map_err(|_| invalid()),
        Some(certs) => {
            redis::Client::build_with_tls(url, certs).map_err(|e| anyhow!("{}: {e}", redact(url)))
        }
    }
}

/// The TLS files read, or None if none are given (plain `redis://`, or the system's roots).
fn tls_certificates(tls: &TlsFiles<'_>) -> anyhow::Result<Option<redis::TlsCertificates>> {
    if tls.ca.is_none() && tls.cert.is_none() {
        return Ok(None);
    }
    let read = |path: &Path| {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let root_cert = tls.ca.map(read).transpose()?;
    let client_tls = match (tls.cert, tls.key) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read(cert)?,
            client_key: read(key)?,
        }),
        _ => None,
    };
    Ok(Some(redis::TlsCertificates {
        client_tls,
        root_cert,
    }))
}

/// Why a connection failed, in the operator's words.
pub(crate) fn describe(e: &RedisError) -> String {
    let detail = e.to_string();
    if detail.contains("NOPERM") {
        format!(
            "Redis's ACL does not let this user do that (grant what docs/configuration.md lists under redis.url; a channel pattern must be granted exactly): {detail}"
        )
    } else if e.kind() == ErrorKind::AuthenticationFailed
        || detail.contains("WRONGPASS")
        || detail.contains("NOAUTH")
    {
        format!(
            "Redis refused the credentials (check the user and password in redis.url): {detail}"
        )
    } else if e.is_connection_refusal() {
        format!("connection refused (is redis-server running on that port?): {detail}")
    } else if e.is_timeout() {
        format!("timed out: {detail}")
    } else if detail.contains("lookup")
        || detail.contains("resolve")
        || detail.contains("Name or service")
    {
        format!("host name not found (DNS): {detail}")
    } else {
        detail
    }
}

/// A pub/sub connection, subscribed to `channels` and the `patterns`, within the same
/// time-outs as every other Redis connection (a source node, a viewer, `kadr subscribe`).
pub async fn subscribe(
    client: &redis::Client,
    channels: &[&str],
    patterns: &[&str],
) -> anyhow::Result<redis::aio::PubSub> {
    let subscribed = async {
        let mut pubsub = client.get_async_pubsub().await?;
        for c in channels {
            pubsub.subscribe(*c).await?;
        }
        for p in patterns {
            pubsub.psubscribe(*p).await?;
        }
        // The pub/sub connection does not surface a refused (P)SUBSCRIBE (a Redis ACL without
        // the channel or the exact pattern): it would wait, subscribed to nothing, for ever.
        // Ask again on a throwaway connection, which reports it, and unsubscribe it at once
        // (after the real subscription, so that a count of subscribers never runs ahead of it).
        let mut probe = client.get_multiplexed_async_connection().await?;
        let asks = channels.iter().map(|c| ("SUBSCRIBE", "UNSUBSCRIBE", *c));
        let asks = asks.chain(patterns.iter().map(|p| ("PSUBSCRIBE", "PUNSUBSCRIBE", *p)));
        for (subscribe, unsubscribe, name) in asks {
            redis::cmd(subscribe)
                .arg(name)
                .query_async::<redis::Value>(&mut probe)
                .await?;
            redis::cmd(unsubscribe)
                .arg(name)
                .query_async::<redis::Value>(&mut probe)
                .await?;
        }
        Ok::<_, RedisError>(pubsub)
    };
    let limit = CONNECT_TIMEOUT + RESPONSE_TIMEOUT;
    tokio::time::timeout(limit, subscribed)
        .await
        .map_err(|_| anyhow!("no answer in {limit:?}"))?
        .map_err(|e| anyhow!(describe(&e)))
}

/// What a node that cannot use the Redis at `url` says (the password redacted).
pub(crate) fn unusable(url: &str) -> String {
    format!(
        "Redis at {} cannot be used; start redis-server or set redis.url",
        redact(url)
    )
}

/// `url` with any password replaced by `***`, for logs and errors.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    // Userinfo ends at the last '@': a password may itself hold '@' or '/', and what follows
    // (host, port, database number) never holds '@'.
    let Some(at) = rest.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &rest[..at];
    let user = userinfo.split_once(':').map_or("", |(user, _)| user);
    let shown = if userinfo.contains(':') {
        format!("{user}:***")
    } else {
        "***".to_string()
    };
    format!("{scheme}://{shown}@{}", &rest[at + 1..])
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_show() {
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact("redis://:s3cret@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(
            redact("redis://kadr:p@ss@h:6379"),
            "redis://kadr:***@h:6379"
        );
        assert_eq!(redact("redis://s3cret@h"), "redis://***@h");
        assert_eq!(
            redact("redis://kadr:p/ss@h:6379/0"),
            "redis://kadr:***@h:6379/0"
        );
        assert_eq!(redact("not a url"), "not a url");
    }
}

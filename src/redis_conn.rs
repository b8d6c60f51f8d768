//! Connecting to Redis: one place for the time-outs and the pace of reconnection.
//!
//! The redis crate's `ConnectionManager` reconnects by itself, but with its defaults the second
//! attempt comes 60 to 120 s after the first (backon's exponential backoff with the crate's
//! factor of 100, capped at 60 s, plus jitter): an outage of 3 s blacked a node out for two
//! minutes. Here every attempt is 1 to 2 s after the last, whatever the outage's length, and no
//! command waits longer than [`RESPONSE_TIMEOUT`] on a connection that went silent.

use std::time::Duration;

use anyhow::{anyhow, Context};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Longest wait for a TCP connection to Redis.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for a reply: kadr's commands are small (PUBLISH, SET, GET, a short script).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause between reconnection attempts, before jitter (which adds up to as much again).
pub const RETRY_DELAY: Duration = Duration::from_secs(1);

/// The reconnection settings of every `ConnectionManager` kadr makes.
pub fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        // backon's delays start at 1 s and are multiplied by `factor` each time: 1 keeps them
        // at 1 s; the cap catches any later change of defaults.
        .set_factor(1)
        .set_max_delay(RETRY_DELAY.as_millis() as u64)
        .set_number_of_retries(5)
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_response_timeout(RESPONSE_TIMEOUT)
}

/// Open `url` and a reconnecting connection to it; fails within a few seconds if Redis is not
/// there, with `unreachable` as the message.
pub async fn connect(
    url: &str,
    unreachable: impl FnOnce() -> String,
) -> anyhow::Result<(redis::Client, ConnectionManager)> {
    let client =
        redis::Client::open(url).with_context(|| format!("{url:?} is not a valid Redis URL"))?;
    let conn = tokio::time::timeout(
        CONNECT_TIMEOUT * 3,
        client.get_connection_manager_with_config(manager_config()),
    )
    .await
    .map_err(|_| anyhow!("timed out"))
    .and_then(|r| r.map_err(anyhow::Error::from))
    .with_context(unreachable)?;
    Ok((client, conn))
}

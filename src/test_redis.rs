//! Tests' own redis-server, for unit tests of the parts that talk to Redis.

use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;

use crate::redis_conn::RedisConn;

/// A redis-server of the test's own on a free loopback port, killed on drop.
pub(crate) struct TestRedis(std::process::Child, u16);

impl TestRedis {
    pub(crate) fn start() -> TestRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server not found; run scripts/setup.sh");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        TestRedis(child, port)
    }

    pub(crate) fn client(&self) -> redis::Client {
        redis::Client::open(format!("redis://127.0.0.1:{}", self.1)).unwrap()
    }

    pub(crate) async fn conn(&self) -> RedisConn {
        RedisConn::Single(ConnectionManager::new(self.client()).await.unwrap())
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

//! An HTTP MJPEG camera on loopback, as IP cameras serve them (`multipart/x-mixed-replace`),
//! that a test can unplug (connections closed, new ones refused with 503) or freeze (connection
//! kept open, nothing sent).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Up,
    /// Unplugged until then: open connections close, new ones get a 503.
    Down(Instant),
    /// Frozen until then: connections stay open and get nothing.
    Frozen(Instant),
}

struct State {
    mode: Mutex<Mode>,
    /// Bumped to end every open connection.
    generation: AtomicU64,
    pub served: AtomicU64,
}

pub struct MjpegCamera {
    pub url: String,
    state: Arc<State>,
}

impl MjpegCamera {
    /// Serve `frames` in a loop at `fps` to every client of `/video.mjpg`.
    pub fn start(frames: Vec<Vec<u8>>, fps: f64) -> MjpegCamera {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/video.mjpg", listener.local_addr().unwrap());
        let state = Arc::new(State {
            mode: Mutex::new(Mode::Up),
            generation: AtomicU64::new(0),
            served: AtomicU64::new(0),
        });
        let frames = Arc::new(frames);
        let s = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (s, frames) = (s.clone(), frames.clone());
                std::thread::spawn(move || serve(conn, &s, &frames, fps));
            }
        });
        MjpegCamera { url, state }
    }

    /// Unplug the camera for `d`.
    pub fn unplug_for(&self, d: Duration) {
        *self.state.mode.lock().unwrap() = Mode::Down(Instant::now() + d);
        self.state.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Keep connections open but send nothing for `d`, then go on.
    pub fn freeze_for(&self, d: Duration) {
        *self.state.mode.lock().unwrap() = Mode::Frozen(Instant::now() + d);
    }

    /// Frames sent so far, to every client.
    pub fn served(&self) -> u64 {
        self.state.served.load(Ordering::SeqCst)
    }
}

fn mode(state: &State) -> Mode {
    let mut m = state.mode.lock().unwrap();
    match *m {
        Mode::Down(t) | Mode::Frozen(t) if Instant::now() >= t => *m = Mode::Up,
        _ => {}
    }
    *m
}

fn serve(mut conn: TcpStream, state: &State, frames: &[Vec<u8>], fps: f64) {
    let mut request = [0u8; 4096];
    let n = conn.read(&mut request).unwrap_or(0);
    let request = String::from_utf8_lossy(&request[..n]);
    if !request.starts_with("GET /video.mjpg ") {
        let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        return;
    }
    if matches!(mode(state), Mode::Down(_)) {
        let _ = conn.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
        return;
    }
    let generation = state.generation.load(Ordering::SeqCst);
    let header = "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=kadrcam\r\n\
                  Cache-Control: no-cache\r\nConnection: close\r\n\r\n";
    if conn.write_all(header.as_bytes()).is_err() {
        return;
    }
    let period = Duration::from_secs_f64(1.0 / fps);
    let mut due = Instant::now();
    let mut i = 0u64;
    loop {
        if state.generation.load(Ordering::SeqCst) != generation {
            return; // unplugged: the connection closes
        }
        if let Mode::Frozen(_) = mode(state) {
            std::thread::sleep(Duration::from_millis(10));
            due = Instant::now(); // a camera that comes back does not send what it missed
            continue;
        }
        let frame = &frames[i as usize % frames.len()];
        let part = format!(
            "--kadrcam\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
            frame.len()
        );
        if conn.write_all(part.as_bytes()).is_err()
            || conn.write_all(frame).is_err()
            || conn.write_all(b"\r\n").is_err()
        {
            return;
        }
        state.served.fetch_add(1, Ordering::SeqCst);
        i += 1;
        due += period;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

/// Frames of a real clip as JPEGs of `size`, for the camera to serve.
pub async fn clip_frames(clip: &std::path::Path, size: (u32, u32), count: usize) -> Vec<Vec<u8>> {
    kadr::client::publish::video::load_frames(clip.to_str().unwrap(), Some(size), 5, count)
        .await
        .unwrap()
}

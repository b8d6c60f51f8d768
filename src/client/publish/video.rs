//! Video input for `kadr publish`: FFmpeg decodes, scales and encodes JPEG frames onto a pipe;
//! [`JpegSplitter`] cuts the pipe into frames by walking JPEG markers ([`crate::jpeg::end`]).

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

/// Incremental splitter over a byte stream of concatenated JPEGs.
#[derive(Default)]
pub struct JpegSplitter {
    buf: Vec<u8>,
}

impl JpegSplitter {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete JPEG, if one is buffered.
    pub fn next_frame(&mut self) -> Option<Vec<u8>> {
        // Skip anything before a start marker.
        let start = self.buf.windows(2).position(|w| w == crate::jpeg::SOI)?;
        if start > 0 {
            self.buf.drain(..start);
        }
        let end = crate::jpeg::end(&self.buf)?;
        let rest = self.buf.split_off(end);
        Some(std::mem::replace(&mut self.buf, rest))
    }
}

/// Frames per second of the first video stream, from ffprobe.
pub async fn frame_rate(input: &str) -> anyhow::Result<f64> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=avg_frame_rate,r_frame_rate",
            "-of",
            "csv=p=0",
            input,
        ])
        .output()
        .await
        .context("could not run ffprobe; run `scripts/setup.sh` (it installs ffmpeg)")?;
    if !out.status.success() {
        bail!(
            "ffprobe could not open {input}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    for field in text.split([',', '\n']) {
        if let Some((n, d)) = field.trim().split_once('/') {
            if let (Ok(n), Ok(d)) = (n.parse::<f64>(), d.parse::<f64>()) {
                if n > 0.0 && d > 0.0 {
                    return Ok(n / d);
                }
            }
        }
    }
    bail!("no frame rate found for {input}")
}

/// Where FFmpeg reads from, and how: the arguments before its `-i`, and the input itself.
#[derive(Debug, Clone)]
pub struct FfmpegInput {
    pub input: String,
    pub options: Vec<String>,
}

impl FfmpegInput {
    /// A file or URL FFmpeg opens by itself.
    pub fn plain(input: &str) -> Self {
        Self {
            input: input.into(),
            options: Vec::new(),
        }
    }
}

/// A running FFmpeg that turns a video into JPEG frames of `width`x`height` (letterboxed to
/// keep the aspect ratio), or of the source size when `size` is `None`.
pub struct JpegFrames {
    child: Child,
    stdout: ChildStdout,
    stderr_tail: Arc<Mutex<String>>,
    /// Reads FFmpeg's stderr into `stderr_tail` while the video is read.
    _stderr_reader: crate::task::OwnedTask,
    splitter: JpegSplitter,
    chunk: Vec<u8>,
    done: bool,
}

/// How much of FFmpeg's own error output is kept to explain a failure.
const STDERR_TAIL: usize = 2048;

impl JpegFrames {
    pub fn open(input: &str, size: Option<(u32, u32)>, quality: u8) -> anyhow::Result<Self> {
        Self::open_with(&FfmpegInput::plain(input), size, quality, false)
    }

    /// Start FFmpeg on `input`. `live` asks it to pass frames on as soon as they arrive
    /// (no buffering, no frame-rate conversion).
    pub fn open_with(
        input: &FfmpegInput,
        size: Option<(u32, u32)>,
        quality: u8,
        live: bool,
    ) -> anyhow::Result<Self> {
        if !input.input.contains("://")
            && !input.input.starts_with("/dev/")
            && !Path::new(&input.input).exists()
        {
            bail!("input {} does not exist", input.input);
        }
        let mut cmd = Command::new("ffmpeg");
        cmd.args(["-nostdin", "-hide_banner", "-v", "error"]);
        if live {
            cmd.args(["-fflags", "nobuffer", "-flags", "low_delay"]);
        }
        cmd.args(&input.options).arg("-i").arg(&input.input);
        if let Some((w, h)) = size {
            cmd.args(["-vf", &format!("scale={w}:{h}:force_original_aspect_ratio=decrease,pad={w}:{h}:(ow-iw)/2:(oh-ih)/2")]);
        }
        if live {
            cmd.args(["-fps_mode", "passthrough"]);
        }
        cmd.args([
            "-f",
            "image2pipe",
            "-c:v",
            "mjpeg",
            "-pix_fmt",
            "yuvj420p",
            "-q:v",
            &quality.to_string(),
            "-",
        ]);
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("could not run ffmpeg; run `scripts/setup.sh` (it installs ffmpeg)")?;
        let stdout = child.stdout.take().context("ffmpeg stdout")?;
        let stderr = child.stderr.take().context("ffmpeg stderr")?;
        let stderr_tail = Arc::new(Mutex::new(String::new()));
        let stderr_reader = crate::task::OwnedTask::spawn(keep_tail(stderr, stderr_tail.clone()));
        Ok(Self {
            child,
            stdout,
            stderr_tail,
            _stderr_reader: stderr_reader,
            splitter: JpegSplitter::default(),
            chunk: vec![0; 1 << 16],
            done: false,
        })
    }

    /// The next frame, or `None` at the end of the video.
    pub async fn next(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        loop {
            if let Some(frame) = self.splitter.next_frame() {
                return Ok(Some(frame));
            }
            if self.done {
                return Ok(None);
            }
            let n = self.stdout.read(&mut self.chunk).await?;
            if n == 0 {
                self.done = true;
                let status = self.child.wait().await?;
                if !status.success() {
                    // Let the stderr reader catch up with FFmpeg's last words.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    bail!("ffmpeg failed ({status}): {}", self.last_error());
                }
            } else {
                self.splitter.push(&self.chunk[..n]);
            }
        }
    }

    /// FFmpeg's last error lines, for messages.
    pub fn last_error(&self) -> String {
        let tail = self.stderr_tail.lock().expect("stderr tail lock");
        let text = tail.trim();
        if text.is_empty() {
            "no message".into()
        } else {
            text.lines()
                .rev()
                .take(3)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("; ")
        }
    }
}

/// Keep the last [`STDERR_TAIL`] bytes FFmpeg writes to stderr.
async fn keep_tail(mut stderr: ChildStderr, tail: Arc<Mutex<String>>) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = stderr.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let mut t = tail.lock().expect("stderr tail lock");
        t.push_str(&String::from_utf8_lossy(&buf[..n]));
        if t.len() > STDERR_TAIL {
            let cut = t.len() - STDERR_TAIL;
            let cut = (cut..t.len())
                .find(|&i| t.is_char_boundary(i))
                .unwrap_or(t.len());
            t.drain(..cut);
        }
    }
}

/// Every frame of a video as 1280x720-style JPEGs in memory (load generators loop over them).
pub async fn load_frames(
    input: &str,
    size: Option<(u32, u32)>,
    quality: u8,
    limit: usize,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut frames = JpegFrames::open(input, size, quality)?;
    let mut out = Vec::new();
    while out.len() < limit {
        match frames.next().await? {
            Some(f) => out.push(f),
            None => break,
        }
    }
    if out.is_empty() {
        bail!("{input} has no frames");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_jpeg(color: u8) -> Vec<u8> {
        let img = image::RgbImage::from_pixel(16, 8, image::Rgb([color, 255 - color, 0xD9]));
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(&img)
            .unwrap();
        out
    }

    #[test]
    fn splits_concatenated_jpegs_fed_in_small_pieces() {
        let frames: Vec<Vec<u8>> = (0..5).map(|i| tiny_jpeg(i * 40)).collect();
        let stream: Vec<u8> = frames.concat();
        let mut s = JpegSplitter::default();
        let mut got = Vec::new();
        for piece in stream.chunks(7) {
            s.push(piece);
            while let Some(f) = s.next_frame() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn incomplete_or_garbage_is_not_a_frame() {
        let j = tiny_jpeg(1);
        assert_eq!(crate::jpeg::end(&j[..j.len() - 1]), None);
        assert_eq!(crate::jpeg::end(b"garbage"), None);
        assert_eq!(crate::jpeg::end(&j), Some(j.len()));
    }
}

//! Video input for `kadr publish`: FFmpeg decodes, scales and encodes JPEG frames onto a pipe;
//! [`JpegSplitter`] cuts the pipe into frames by walking JPEG markers.

use std::path::Path;
use std::process::Stdio;

use anyhow::{bail, Context};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdout, Command};

/// Find the end of the first complete JPEG in `buf` (which must start at its SOI marker).
/// Walks the marker segments by their lengths, then the entropy-coded data, so bytes inside
/// tables can never be mistaken for the end marker.
pub fn jpeg_end(buf: &[u8]) -> Option<usize> {
    if buf.len() < 4 || buf[0] != 0xFF || buf[1] != 0xD8 {
        return None;
    }
    let mut i = 2;
    loop {
        // Marker: 0xFF (possibly padded with more 0xFF), then its code.
        while i < buf.len() && buf[i] == 0xFF && buf.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        if i + 1 >= buf.len() {
            return None;
        }
        if buf[i] != 0xFF {
            return None; // not where a marker must be: give up on this data
        }
        let code = buf[i + 1];
        match code {
            0xD9 => return Some(i + 2),
            0xD0..=0xD7 | 0x01 => i += 2,
            _ => {
                let len = u16::from_be_bytes([*buf.get(i + 2)?, *buf.get(i + 3)?]) as usize;
                i += 2 + len;
                if code == 0xDA {
                    // Entropy-coded data runs to the next marker that is not a stuffed 0xFF00
                    // or a restart marker.
                    loop {
                        if i + 1 >= buf.len() {
                            return None;
                        }
                        if buf[i] == 0xFF
                            && buf[i + 1] != 0x00
                            && !(0xD0..=0xD7).contains(&buf[i + 1])
                            && buf[i + 1] != 0xFF
                        {
                            break;
                        }
                        i += 1;
                    }
                }
            }
        }
    }
}

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
        let start = self.buf.windows(2).position(|w| w == [0xFF, 0xD8])?;
        if start > 0 {
            self.buf.drain(..start);
        }
        let end = jpeg_end(&self.buf)?;
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

/// A running FFmpeg that turns a video into JPEG frames of `width`x`height` (letterboxed to
/// keep the aspect ratio), or of the source size when `size` is `None`.
pub struct JpegFrames {
    child: Child,
    stdout: ChildStdout,
    splitter: JpegSplitter,
    chunk: Vec<u8>,
    done: bool,
}

impl JpegFrames {
    pub fn open(input: &str, size: Option<(u32, u32)>, quality: u8) -> anyhow::Result<Self> {
        if !input.contains("://") && !Path::new(input).exists() {
            bail!("input {input} does not exist");
        }
        let mut cmd = Command::new("ffmpeg");
        cmd.args(["-nostdin", "-v", "error", "-i", input]);
        if let Some((w, h)) = size {
            cmd.args(["-vf", &format!("scale={w}:{h}:force_original_aspect_ratio=decrease,pad={w}:{h}:(ow-iw)/2:(oh-ih)/2")]);
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
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("could not run ffmpeg; run `scripts/setup.sh` (it installs ffmpeg)")?;
        let stdout = child.stdout.take().context("ffmpeg stdout")?;
        Ok(Self {
            child,
            stdout,
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
                    bail!("ffmpeg failed ({status})");
                }
            } else {
                self.splitter.push(&self.chunk[..n]);
            }
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
        assert_eq!(jpeg_end(&j[..j.len() - 1]), None);
        assert_eq!(jpeg_end(b"garbage"), None);
        assert_eq!(jpeg_end(&j), Some(j.len()));
    }
}

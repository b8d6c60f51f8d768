//! What `kadr publish --input` names: a video file, a folder of images, a V4L2 webcam, an RTSP
//! camera or an HTTP MJPEG camera.

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::client::publish::video::FfmpegInput;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A video file (anything FFmpeg reads).
    File(PathBuf),
    /// A folder of JPEG and PNG images, published in file-name order.
    Folder(PathBuf),
    /// A V4L2 device such as `/dev/video0`.
    Webcam(PathBuf),
    /// `rtsp://` or `rtsps://`.
    Rtsp(String),
    /// `http://` or `https://` serving `multipart/x-mixed-replace` JPEGs (IP cameras' MJPEG).
    Mjpeg(String),
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum InputError {
    #[error("input {0} does not exist")]
    Missing(String),
    #[error("input {0}: unsupported URL scheme (use a file, a folder, /dev/videoN, rtsp:// or http:// MJPEG)")]
    Scheme(String),
}

impl Input {
    pub fn parse(input: &str) -> Result<Input, InputError> {
        let lower = input.to_ascii_lowercase();
        if lower.starts_with("rtsp://") || lower.starts_with("rtsps://") {
            return Ok(Input::Rtsp(input.into()));
        }
        if lower.starts_with("http://") || lower.starts_with("https://") {
            return Ok(Input::Mjpeg(input.into()));
        }
        if input.contains("://") {
            return Err(InputError::Scheme(input.into()));
        }
        let path = Path::new(input);
        if input.starts_with("/dev/video") {
            return Ok(Input::Webcam(path.into()));
        }
        if path.is_dir() {
            Ok(Input::Folder(path.into()))
        } else if path.exists() {
            Ok(Input::File(path.into()))
        } else {
            Err(InputError::Missing(input.into()))
        }
    }

    /// Live sources pace themselves and come back after a drop; files and folders end.
    pub fn is_live(&self) -> bool {
        matches!(self, Input::Webcam(_) | Input::Rtsp(_) | Input::Mjpeg(_))
    }

    /// How FFmpeg opens it (every kind but a folder, which kadr reads itself).
    pub fn ffmpeg(&self, loop_forever: bool) -> Option<FfmpegInput> {
        let (input, options): (String, &[&str]) = match self {
            Input::Folder(_) => return None,
            Input::File(p) if loop_forever => (p.display().to_string(), &["-stream_loop", "-1"]),
            Input::File(p) => (p.display().to_string(), &[]),
            Input::Webcam(p) => (p.display().to_string(), &["-f", "v4l2"]),
            // TCP: UDP loses packets, and a lost packet is a smeared frame. The socket timeout
            // (microseconds) turns a silent camera into an error FFmpeg reports.
            Input::Rtsp(url) => (
                url.clone(),
                &["-rtsp_transport", "tcp", "-timeout", "5000000"],
            ),
            Input::Mjpeg(url) => (url.clone(), &["-rw_timeout", "5000000"]),
        };
        Some(FfmpegInput {
            input,
            options: options.iter().map(|s| s.to_string()).collect(),
        })
    }
}

impl std::fmt::Display for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::File(p) => write!(f, "video file {}", p.display()),
            Input::Folder(p) => write!(f, "image folder {}", p.display()),
            Input::Webcam(p) => write!(f, "webcam {}", p.display()),
            Input::Rtsp(u) => write!(f, "RTSP camera {u}"),
            Input::Mjpeg(u) => write!(f, "MJPEG camera {u}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("clip.mp4");
        std::fs::write(&file, b"x").unwrap();
        let d = dir.path().to_str().unwrap();
        assert_eq!(Input::parse(d), Ok(Input::Folder(d.into())));
        assert_eq!(
            Input::parse(file.to_str().unwrap()),
            Ok(Input::File(file.clone()))
        );
        assert!(Input::parse("/dev/video0").unwrap().is_live());
        assert!(matches!(
            Input::parse("RTSP://cam/stream"),
            Ok(Input::Rtsp(_))
        ));
        assert!(matches!(
            Input::parse("http://cam/mjpg/video.mjpg"),
            Ok(Input::Mjpeg(_))
        ));
        assert_eq!(
            Input::parse("/no/such/clip.mp4"),
            Err(InputError::Missing("/no/such/clip.mp4".into()))
        );
        assert!(matches!(
            Input::parse("ftp://x/y"),
            Err(InputError::Scheme(_))
        ));
        assert!(!Input::parse(d).unwrap().is_live());
    }

    #[test]
    fn only_files_loop_in_ffmpeg_and_folders_skip_it() {
        let f = Input::File("a.mp4".into());
        assert_eq!(f.ffmpeg(true).unwrap().options, ["-stream_loop", "-1"]);
        assert!(f.ffmpeg(false).unwrap().options.is_empty());
        assert!(Input::Folder("d".into()).ffmpeg(true).is_none());
        assert_eq!(
            Input::Rtsp("rtsp://c/s".into())
                .ffmpeg(false)
                .unwrap()
                .options[..2],
            ["-rtsp_transport", "tcp"]
        );
    }
}

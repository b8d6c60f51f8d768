//! MOTChallenge text files, for `kadr track --mot`: the field's standard tools (py-motmetrics,
//! TrackEval) score what the tracker writes.
//!
//! A row is `frame,id,left,top,width,height,score[,x,y,z]`, frames counted from 1. Detections
//! files have id -1; a class may be given in the eighth column (a non-negative integer, as in
//! ground-truth files), else every box is class 0. Output rows are the detections that got a
//! track id, with it, in the same format (`x,y,z` written as -1).

use std::io::{BufRead, Write};

use thiserror::Error;

use super::{Observation, Tracker};
use crate::analytics::Tracked;

#[derive(Debug, Error)]
pub enum MotError {
    #[error("line {line}: {problem}")]
    Row { line: usize, problem: String },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The largest frame number taken: a typo of a few digits must not make a billion empty frames.
pub const MAX_FRAME: u64 = 10_000_000;

/// One frame's detections, by frame number.
pub type Frames = std::collections::BTreeMap<u64, Vec<Observation>>;

/// Read a detections file. Blank lines and lines starting with `#` are skipped.
pub fn read(input: impl BufRead) -> Result<Frames, MotError> {
    let mut frames = Frames::new();
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        let text = line.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let (frame, observation) = parse_row(text).map_err(|problem| MotError::Row {
            line: i + 1,
            problem,
        })?;
        frames.entry(frame).or_default().push(observation);
    }
    Ok(frames)
}

fn parse_row(text: &str) -> Result<(u64, Observation), String> {
    let fields: Vec<&str> = text.split(',').map(str::trim).collect();
    if fields.len() < 7 {
        return Err(format!("{} fields, want at least 7", fields.len()));
    }
    let number = |i: usize| -> Result<f64, String> {
        fields[i]
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("field {} ({:?}) is not a number", i + 1, fields[i]))
    };
    let frame = number(0)?;
    if frame < 1.0 || frame.fract() != 0.0 || frame > MAX_FRAME as f64 {
        return Err(format!(
            "frame {frame} is not a whole number in 1..={MAX_FRAME}"
        ));
    }
    let (left, top, width, height) = (number(2)?, number(3)?, number(4)?, number(5)?);
    if width < 0.0 || height < 0.0 {
        return Err("a box of negative size".into());
    }
    let class_id = match fields.get(7).map(|f| f.parse::<f64>()) {
        Some(Ok(c)) if c >= 0.0 && c.fract() == 0.0 && c <= f64::from(u32::MAX) => c as u32,
        _ => 0,
    };
    Ok((
        frame as u64,
        Observation {
            bbox: [
                left as f32,
                top as f32,
                (left + width) as f32,
                (top + height) as f32,
            ],
            score: number(6)? as f32,
            class_id,
        },
    ))
}

/// Track every frame from 1 to the last one in `frames` (a frame with no row has no
/// detections), writing the tracked rows. Returns the number of rows written.
pub fn track(frames: &Frames, tracker: &mut Tracker, out: &mut impl Write) -> std::io::Result<u64> {
    track_each(frames, tracker, out, |_, _| Ok(()))
}

/// [`track`], handing each frame's tracked objects to `each_frame` too (frame number,
/// objects), in frame order.
pub fn track_each(
    frames: &Frames,
    tracker: &mut Tracker,
    out: &mut impl Write,
    mut each_frame: impl FnMut(u64, &[Tracked]) -> std::io::Result<()>,
) -> std::io::Result<u64> {
    let last = frames.keys().next_back().copied().unwrap_or(0);
    let mut rows = 0;
    let mut tracked = Vec::new();
    for frame in 1..=last {
        let observations = frames.get(&frame).map_or(&[][..], Vec::as_slice);
        let ids = tracker.update(observations);
        tracked.clear();
        for (o, id) in observations.iter().zip(ids) {
            let Some(id) = id else { continue };
            tracked.push(Tracked {
                track_id: *id,
                class_id: o.class_id,
                bbox: o.bbox,
            });
            let [x1, y1, x2, y2] = o.bbox;
            writeln!(
                out,
                "{frame},{id},{:.2},{:.2},{:.2},{:.2},{:.4},-1,-1,-1",
                x1,
                y1,
                x2 - x1,
                y2 - y1,
                o.score
            )?;
            rows += 1;
        }
        each_frame(frame, &tracked)?;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TrackerConfig;

    #[test]
    fn detections_are_read_tracked_and_written_in_the_mot_format() {
        let text = "\
# frame,id,left,top,width,height,score
1,-1,10,20,40,80,0.9,-1,-1,-1
1,-1,300,20,40,80,0.8,-1,-1,-1
2,-1,12,20,40,80,0.9,-1,-1,-1
2,-1,298,20,40,80,0.85,-1,-1,-1

4,-1,16,20,40,80,0.9
";
        let frames = read(text.as_bytes()).expect("valid");
        assert_eq!(frames.len(), 3);
        let mut out = Vec::new();
        let mut tracker = Tracker::new(TrackerConfig::default());
        assert_eq!(track(&frames, &mut tracker, &mut out).unwrap(), 5);
        let out = String::from_utf8(out).unwrap();
        let rows: Vec<&str> = out.lines().collect();
        assert_eq!(rows[0], "1,1,10.00,20.00,40.00,80.00,0.9000,-1,-1,-1");
        assert!(rows[1].starts_with("1,2,300.00,"));
        assert!(rows[2].starts_with("2,1,12.00,"));
        assert!(rows[3].starts_with("2,2,298.00,"));
        // Frame 3 had no detections: frame 4's box is still object 1.
        assert!(rows[4].starts_with("4,1,16.00,"), "{out}");
    }

    #[test]
    fn a_bad_row_is_reported_with_its_line() {
        for (text, want) in [
            ("1,-1,10,20,40\n", "line 1: 5 fields"),
            (
                "1,-1,10,20,40,80,0.9\n0,-1,1,1,1,1,0.5\n",
                "line 2: frame 0",
            ),
            ("1,-1,x,20,40,80,0.9\n", "field 3"),
            ("1,-1,1,2,-4,8,0.9\n", "negative"),
            ("99999999999,-1,1,2,4,8,0.9\n", "whole number"),
        ] {
            let e = read(text.as_bytes()).expect_err(text).to_string();
            assert!(e.contains(want), "{e}");
        }
    }
}

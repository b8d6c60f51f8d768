//! `[tracker]`: following objects from frame to frame (see the `tracker` module). The defaults
//! are ByteTrack's, but for `new_track_score`: 0.3 instead of 0.6 (measured on the benchmark's
//! sequences, BENCHMARKS.md: an object that enters partly hidden gets a track).

use std::path::Path;

use serde::Deserialize;

use super::{ConfigError, Problems};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrackerConfig {
    /// Give each detection of a followed object a `track_id`.
    pub enabled: bool,
    /// Detections scoring at least this are matched first, and may start tracks.
    pub high_score: f32,
    /// Detections scoring below this are ignored; between it and `high_score` they only keep
    /// existing tracks alive (ByteTrack's second association: an occluded object scores low).
    pub low_score: f32,
    /// A detection left unmatched starts a new (tentative) track from this score (two frames in
    /// a row, see `confirm_frames`, before it has an id).
    pub new_track_score: f32,
    /// The least overlap (IoU times the detection's score) that matches a detection scoring at
    /// least `high_score` to a track.
    pub match_iou: f32,
    /// Consecutive frames a new track must be seen in before it gets an id.
    pub confirm_frames: u32,
    /// Frames a track that lost its object is kept, to be found again with the same id.
    pub lost_frames: u32,
    /// Match only detections and tracks of the same class.
    pub class_aware: bool,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            high_score: 0.5,
            low_score: 0.1,
            new_track_score: 0.3,
            match_iou: 0.2,
            confirm_frames: 2,
            lost_frames: 30,
            class_aware: true,
        }
    }
}

impl TrackerConfig {
    /// `[tracker]` for `kadr track`: from a config file's section if given (else the
    /// defaults), with `key=value` overrides applied as `kadr node --set` applies them, checked
    /// as a node checks it.
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Self, ConfigError> {
        let shown = path.unwrap_or(Path::new("--set"));
        let parse_error = |message: String| ConfigError::Parse {
            path: shown.to_path_buf(),
            message,
        };
        let mut table = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                let mut file: toml::Table =
                    toml::from_str(&text).map_err(|e| parse_error(e.to_string()))?;
                match file.remove("tracker") {
                    Some(toml::Value::Table(t)) => t,
                    Some(_) => return Err(parse_error("[tracker] is not a table".into())),
                    None => toml::Table::new(),
                }
            }
            None => toml::Table::new(),
        };
        for item in overrides {
            super::apply_override(&mut table, item).map_err(parse_error)?;
        }
        let cfg: Self = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| parse_error(format!("[tracker]: {e}")))?;
        let mut p = Problems::default();
        cfg.check(&mut p);
        ConfigError::from_problems(shown, p.0)?;
        Ok(cfg)
    }

    pub(super) fn check(&self, p: &mut Problems) {
        for (key, value) in [
            ("tracker.high_score", self.high_score),
            ("tracker.low_score", self.low_score),
            ("tracker.new_track_score", self.new_track_score),
            ("tracker.match_iou", self.match_iou),
        ] {
            if !(0.0..=1.0).contains(&value) {
                p.add(key, format!("is {value}, must be 0..=1"));
            }
        }
        if self.low_score > self.high_score {
            p.add(
                "tracker.low_score",
                format!(
                    "is {}, over tracker.high_score ({})",
                    self.low_score, self.high_score
                ),
            );
        }
        p.range(
            "tracker.confirm_frames",
            u64::from(self.confirm_frames),
            1,
            100,
        );
        p.range(
            "tracker.lost_frames",
            u64::from(self.lost_frames),
            0,
            10_000,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_value_is_reported_with_its_key() {
        let cfg: TrackerConfig = toml::from_str(
            "high_score = 0.3\nlow_score = 0.4\nmatch_iou = 1.5\nconfirm_frames = 0\n",
        )
        .expect("valid toml");
        let mut p = Problems::default();
        cfg.check(&mut p);
        let keys: Vec<&str> = p.0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "tracker.match_iou",
                "tracker.low_score",
                "tracker.confirm_frames"
            ]
        );
        let mut p = Problems::default();
        TrackerConfig::default().check(&mut p);
        assert!(p.0.is_empty(), "{:?}", p.0);
        assert!(toml::from_str::<TrackerConfig>("buffer = 3").is_err());
    }

    #[test]
    fn kadr_track_takes_overrides_as_a_node_does_and_checks_them() {
        let set = |items: &[&str]| {
            let items: Vec<String> = items.iter().map(|s| s.to_string()).collect();
            TrackerConfig::load(None, &items)
        };
        assert_eq!(set(&["lost_frames=60"]).unwrap().lost_frames, 60);
        let bad = set(&["high_score=0.2", "low_score=0.3"])
            .unwrap_err()
            .to_string();
        assert!(bad.contains("tracker.low_score"), "{bad}");
        assert!(set(&["nope=1"]).is_err());
        assert!(set(&["lost_frames=-1"]).is_err());
        assert!(set(&["lost_frames"]).is_err());
    }
}

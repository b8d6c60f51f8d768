//! What to count on a stream: its lines and zones (`kadr track --analytics FILE.toml`), checked
//! whole before any of it is used.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::geometry::{self, Point};

/// The largest coordinate taken, pixels: wider than any frame (8K is 7680 x 4320). A point past
/// it is a mistake (a typo, a unit confusion), never a real place in a picture.
pub const MAX_COORDINATE: f32 = 8192.0;
/// Lines and zones of one stream at most, and corners of one zone.
pub const MAX_LINES: usize = 64;
pub const MAX_ZONES: usize = 64;
pub const MAX_CORNERS: usize = 64;

/// Which point of a box stands for the object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Anchor {
    /// Where it touches the ground: right for people and vehicles seen from above the scene.
    #[default]
    BottomCenter,
    Center,
    TopCenter,
}

impl Anchor {
    pub fn of(self, bbox: &[f32; 4]) -> Point {
        let x = (bbox[0] + bbox[2]) / 2.0;
        match self {
            Anchor::BottomCenter => [x, bbox[3]],
            Anchor::Center => [x, (bbox[1] + bbox[3]) / 2.0],
            Anchor::TopCenter => [x, bbox[1]],
        }
    }
}

/// A directed counting line: an object crossing from its negative side to its positive side
/// goes `in` (see [`geometry::signed_distance`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineConfig {
    pub name: String,
    pub from: Point,
    pub to: Point,
    /// Only these class ids count (all when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<u32>>,
}

/// A zone: objects entering, leaving, and staying `dwell_s` seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    pub name: String,
    pub polygon: Vec<Point>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<u32>>,
    /// Say `dwell` once an object has been inside this long (capture time); none when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dwell_s: Option<f64>,
}

/// A stream's analytics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsConfig {
    #[serde(default)]
    pub anchor: Anchor,
    /// The debounce band, as a share of the box's height: an anchor closer than this to a line
    /// (or a zone's edge) is on neither side; an object changes side only once it is past the
    /// band. Detection jitter grows with the box, so the band does too.
    #[serde(default = "default_band")]
    pub band: f32,
    /// The band is never narrower than this, pixels.
    #[serde(default = "default_min_band_px")]
    pub min_band_px: f32,
    /// A track not seen for this many frames is gone: it leaves the zones it was in.
    #[serde(default = "default_gone_after_frames")]
    pub gone_after_frames: u64,
    /// A new track id that appears where a track of the same class vanished at most this many
    /// frames before (near the path its motion would have taken) is that object found again:
    /// it keeps the track's side of every line, and its zone stays if not yet gone. The
    /// tracker gives an object hidden longer than its `lost_frames` a new id; without this its
    /// crossing behind a pillar would not count. 0: never.
    #[serde(default = "default_rejoin_frames")]
    pub rejoin_frames: u64,
    #[serde(default)]
    pub lines: Vec<LineConfig>,
    #[serde(default)]
    pub zones: Vec<ZoneConfig>,
}

fn default_band() -> f32 {
    0.1
}
fn default_min_band_px() -> f32 {
    2.0
}
fn default_gone_after_frames() -> u64 {
    30
}
fn default_rejoin_frames() -> u64 {
    90
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            anchor: Anchor::default(),
            band: default_band(),
            min_band_px: default_min_band_px(),
            gone_after_frames: default_gone_after_frames(),
            rejoin_frames: default_rejoin_frames(),
            lines: Vec::new(),
            zones: Vec::new(),
        }
    }
}

/// A geometry or setting that cannot be used, with the key it is at (`lines[2].to`).
#[derive(Debug, Error, PartialEq)]
#[error("{key}: {problem}")]
pub struct AnalyticsError {
    pub key: String,
    pub problem: String,
}

impl AnalyticsConfig {
    /// Read and check a `[[lines]]` / `[[zones]]` TOML document.
    pub fn from_toml(text: &str) -> Result<Self, AnalyticsError> {
        let cfg: AnalyticsConfig = toml::from_str(text).map_err(|e| AnalyticsError {
            key: "analytics".into(),
            problem: e.message().to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Everything checked, the first problem returned with its key's path.
    pub fn validate(&self) -> Result<(), AnalyticsError> {
        let fail = |key: String, problem: String| Err(AnalyticsError { key, problem });
        if !(self.band.is_finite() && (0.0..=2.0).contains(&self.band)) {
            return fail("band".into(), format!("{} is not in 0..=2", self.band));
        }
        if !(self.min_band_px.is_finite() && (0.0..=1000.0).contains(&self.min_band_px)) {
            return fail(
                "min_band_px".into(),
                format!("{} is not in 0..=1000", self.min_band_px),
            );
        }
        if !(1..=100_000).contains(&self.gone_after_frames) {
            return fail(
                "gone_after_frames".into(),
                format!("{} is not in 1..=100000", self.gone_after_frames),
            );
        }
        if self.rejoin_frames > 100_000 {
            return fail(
                "rejoin_frames".into(),
                format!("{} is not in 0..=100000", self.rejoin_frames),
            );
        }
        if self.lines.len() > MAX_LINES {
            return fail("lines".into(), format!("more than {MAX_LINES}"));
        }
        if self.zones.len() > MAX_ZONES {
            return fail("zones".into(), format!("more than {MAX_ZONES}"));
        }
        let mut names = std::collections::HashSet::new();
        for (i, line) in self.lines.iter().enumerate() {
            let at = |k: &str| format!("lines[{i}].{k}");
            check_name(&line.name, &mut names).or_else(|p| fail(at("name"), p))?;
            check_point(line.from).or_else(|p| fail(at("from"), p))?;
            check_point(line.to).or_else(|p| fail(at("to"), p))?;
            if line.from == line.to {
                return fail(
                    at("to"),
                    "the same point as `from`: a line of no length".into(),
                );
            }
        }
        for (i, zone) in self.zones.iter().enumerate() {
            let at = |k: &str| format!("zones[{i}].{k}");
            check_name(&zone.name, &mut names).or_else(|p| fail(at("name"), p))?;
            let corners = zone.polygon.len();
            if !(3..=MAX_CORNERS).contains(&corners) {
                return fail(
                    at("polygon"),
                    format!("{corners} points, want 3..={MAX_CORNERS}"),
                );
            }
            for (j, p) in zone.polygon.iter().enumerate() {
                check_point(*p).or_else(|e| fail(format!("zones[{i}].polygon[{j}]"), e))?;
            }
            if geometry::self_crossing(&zone.polygon) {
                return fail(at("polygon"), "its edges cross each other".into());
            }
            if area(&zone.polygon) == 0.0 {
                return fail(at("polygon"), "it has no area".into());
            }
            if let Some(d) = zone.dwell_s {
                if !(d.is_finite() && d > 0.0 && d <= 86_400.0) {
                    return fail(at("dwell_s"), format!("{d} is not in (0, 86400]"));
                }
            }
        }
        Ok(())
    }
}

fn check_name(name: &str, names: &mut std::collections::HashSet<String>) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("{} bytes, want 1..=64", name.len()));
    }
    if !names.insert(name.to_string()) {
        return Err(format!("{name:?} names another line or zone already"));
    }
    Ok(())
}

fn check_point(p: Point) -> Result<(), String> {
    if p.iter()
        .all(|v| v.is_finite() && (0.0..=MAX_COORDINATE).contains(v))
    {
        Ok(())
    } else {
        Err(format!(
            "{p:?} is not a point in a frame (0..={MAX_COORDINATE} pixels)"
        ))
    }
}

fn area(polygon: &[Point]) -> f32 {
    let n = polygon.len();
    (0..n)
        .map(|i| {
            let (a, b) = (polygon[i], polygon[(i + 1) % n]);
            a[0] * b[1] - b[0] * a[1]
        })
        .sum::<f32>()
        .abs()
        / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lines_and_zones_file_is_read() {
        let cfg = AnalyticsConfig::from_toml(
            r#"
            [[lines]]
            name = "gate"
            from = [100, 400]
            to = [1100, 400]
            classes = [2]

            [[zones]]
            name = "lot"
            polygon = [[0, 0], [300, 0], [300, 300], [0, 300]]
            dwell_s = 5
            "#,
        )
        .expect("valid");
        assert_eq!(cfg.lines[0].to, [1100.0, 400.0]);
        assert_eq!(cfg.zones[0].dwell_s, Some(5.0));
        assert_eq!(cfg.anchor, Anchor::BottomCenter);
    }

    #[test]
    fn bad_geometry_is_refused_with_its_key() {
        let square = "[[0, 0], [10, 0], [10, 10], [0, 10]]";
        for (text, key, problem) in [
            (
                "[[lines]]\nname = \"a\"\nfrom = [1, 1]\nto = [1, 1]",
                "lines[0].to",
                "no length",
            ),
            (
                "[[lines]]\nname = \"a\"\nfrom = [1, 1]\nto = [1, 99999]",
                "lines[0].to",
                "not a point",
            ),
            (
                "[[lines]]\nname = \"a\"\nfrom = [1, -5]\nto = [1, 9]",
                "lines[0].from",
                "not a point",
            ),
            (
                "[[zones]]\nname = \"z\"\npolygon = [[0, 0], [10, 0]]",
                "zones[0].polygon",
                "2 points",
            ),
            (
                "[[zones]]\nname = \"z\"\npolygon = [[0, 0], [10, 10], [10, 0], [0, 10]]",
                "zones[0].polygon",
                "cross",
            ),
            (
                "[[zones]]\nname = \"z\"\npolygon = [[0, 0], [5, 5], [10, 10]]",
                "zones[0].polygon",
                "",
            ),
            (
                &format!("[[zones]]\nname = \"z\"\npolygon = {square}\ndwell_s = -1"),
                "zones[0].dwell_s",
                "not in",
            ),
            (
                &format!("[[zones]]\nname = \"z\"\npolygon = {square}\n[[zones]]\nname = \"z\"\npolygon = {square}"),
                "zones[1].name",
                "another",
            ),
            ("band = nan", "band", "not in"),
        ] {
            let e = AnalyticsConfig::from_toml(text).expect_err(text);
            assert_eq!(e.key, key, "{text}: {e}");
            assert!(e.problem.contains(problem), "{text}: {e}");
        }
        // Not TOML of this shape at all: the whole section.
        let e = AnalyticsConfig::from_toml("[[lines]]\nnme = 1").unwrap_err();
        assert_eq!(e.key, "analytics");
    }

    #[test]
    fn the_anchor_is_the_chosen_point_of_the_box() {
        let b = [10.0, 20.0, 30.0, 60.0];
        assert_eq!(Anchor::BottomCenter.of(&b), [20.0, 60.0]);
        assert_eq!(Anchor::Center.of(&b), [20.0, 40.0]);
        assert_eq!(Anchor::TopCenter.of(&b), [20.0, 20.0]);
    }
}

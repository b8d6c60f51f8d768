//! The motion model: ByteTrack's constant-velocity Kalman filter on a box's centre, aspect
//! ratio and height (`x, y, a, h`), with its noise levels (a twentieth of the height for
//! positions, a hundred-and-sixtieth for velocities).
//!
//! ByteTrack writes it as one 8-dimensional filter, but every matrix in it (motion, measurement,
//! both noises, the first covariance) is block-diagonal per coordinate, so the covariance stays
//! so: it is exactly four independent filters of two states (position, velocity) each. That is
//! what this computes, with 2x2 covariances instead of 8x8 matrix products.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const POSITION_NOISE: f64 = 1.0 / 20.0;
const VELOCITY_NOISE: f64 = 1.0 / 160.0;

/// One coordinate: position, velocity, and their covariance `[pp, pv, vv]`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Axis {
    pos: f64,
    vel: f64,
    cov: [f64; 3],
}

impl Axis {
    fn new(pos: f64, pos_std: f64, vel_std: f64) -> Self {
        Self {
            pos,
            vel: 0.0,
            cov: [pos_std * pos_std, 0.0, vel_std * vel_std],
        }
    }

    /// One frame on: `pos += vel`, the covariance grows by the process noise.
    fn predict(&mut self, pos_std: f64, vel_std: f64) {
        let [pp, pv, vv] = self.cov;
        self.pos += self.vel;
        self.cov = [
            pp + 2.0 * pv + vv + pos_std * pos_std,
            pv + vv,
            vv + vel_std * vel_std,
        ];
    }

    /// Take a measurement of the position with noise `std`.
    fn update(&mut self, measured: f64, std: f64) {
        let [pp, pv, vv] = self.cov;
        let s = pp + std * std;
        let (k_pos, k_vel) = (pp / s, pv / s);
        let innovation = measured - self.pos;
        self.pos += k_pos * innovation;
        self.vel += k_vel * innovation;
        self.cov = [pp - pp * pp / s, pv - pp * pv / s, vv - pv * pv / s];
    }

    fn is_finite(&self) -> bool {
        self.pos.is_finite() && self.vel.is_finite() && self.cov.iter().all(|c| c.is_finite())
    }
}

/// A box's motion state. Boxes in and out are corners `[x1, y1, x2, y2]`. Saved (for another
/// node to carry on) as 20 numbers in single precision: it is written with every result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Motion {
    x: Axis,
    y: Axis,
    aspect: Axis,
    height: Axis,
}

impl Motion {
    pub(crate) fn new(bbox: [f32; 4]) -> Self {
        let [x, y, a, h] = xyah(bbox);
        let (p, v) = (2.0 * POSITION_NOISE * h, 10.0 * VELOCITY_NOISE * h);
        Self {
            x: Axis::new(x, p, v),
            y: Axis::new(y, p, v),
            aspect: Axis::new(a, 1e-2, 1e-5),
            height: Axis::new(h, p, v),
        }
    }

    /// One frame on. A track that is not being followed (lost) keeps its height: ByteTrack
    /// zeroes its height velocity so a lost box does not shrink or swell away.
    pub(crate) fn predict(&mut self, followed: bool) {
        if !followed {
            self.height.vel = 0.0;
        }
        let h = self.height.pos;
        let (p, v) = (POSITION_NOISE * h, VELOCITY_NOISE * h);
        self.x.predict(p, v);
        self.y.predict(p, v);
        self.aspect.predict(1e-2, 1e-5);
        self.height.predict(p, v);
    }

    pub(crate) fn update(&mut self, bbox: [f32; 4]) {
        let [x, y, a, h] = xyah(bbox);
        let p = POSITION_NOISE * self.height.pos;
        self.x.update(x, p);
        self.y.update(y, p);
        self.aspect.update(a, 1e-1);
        self.height.update(h, p);
    }

    /// The box it expects now, as corners.
    pub(crate) fn bbox(&self) -> [f32; 4] {
        let h = self.height.pos;
        let w = self.aspect.pos * h;
        let (x, y) = (self.x.pos, self.y.pos);
        [
            (x - w / 2.0) as f32,
            (y - h / 2.0) as f32,
            (x + w / 2.0) as f32,
            (y + h / 2.0) as f32,
        ]
    }

    /// Velocity of the centre, pixels per frame.
    #[cfg(test)]
    pub(crate) fn velocity(&self) -> (f64, f64) {
        (self.x.vel, self.y.vel)
    }

    /// Whether every number is finite (a state read back from Redis is checked).
    pub(crate) fn is_finite(&self) -> bool {
        [self.x, self.y, self.aspect, self.height]
            .iter()
            .all(Axis::is_finite)
    }
}

impl Serialize for Motion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut out = [0f32; 20];
        for (i, a) in [self.x, self.y, self.aspect, self.height]
            .iter()
            .enumerate()
        {
            let [pp, pv, vv] = a.cov;
            for (j, v) in [a.pos, a.vel, pp, pv, vv].into_iter().enumerate() {
                out[5 * i + j] = v as f32;
            }
        }
        out.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Motion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = <[f32; 20]>::deserialize(d)?;
        let axis = |i: usize| {
            let f = |j: usize| f64::from(v[5 * i + j]);
            Axis {
                pos: f(0),
                vel: f(1),
                cov: [f(2), f(3), f(4)],
            }
        };
        Ok(Self {
            x: axis(0),
            y: axis(1),
            aspect: axis(2),
            height: axis(3),
        })
    }
}

/// Corners to centre, aspect ratio (width / height) and height. A box of no height counts as
/// one pixel high so the ratio stays finite.
fn xyah([x1, y1, x2, y2]: [f32; 4]) -> [f64; 4] {
    let (w, h) = (f64::from(x2 - x1).max(0.0), f64::from(y2 - y1).max(1.0));
    [f64::from(x1) + w / 2.0, f64::from(y1) + h / 2.0, w / h, h]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_box_moving_steadily_is_predicted_where_it_goes() {
        let mut m = Motion::new([100.0, 100.0, 140.0, 200.0]);
        for step in 1..=20 {
            m.predict(true);
            let dx = 5.0 * step as f32;
            m.update([100.0 + dx, 100.0, 140.0 + dx, 200.0]);
        }
        let (vx, vy) = m.velocity();
        assert!((vx - 5.0).abs() < 0.3, "vx {vx}");
        assert!(vy.abs() < 0.1, "vy {vy}");
        // Ten frames unseen: it keeps going.
        for _ in 0..10 {
            m.predict(false);
        }
        let b = m.bbox();
        assert!((b[0] - 250.0).abs() < 5.0, "{b:?}");
        assert!((b[3] - b[1] - 100.0).abs() < 1.0, "height kept: {b:?}");
    }

    #[test]
    fn a_still_box_stays_put_and_its_uncertainty_shrinks() {
        let bbox = [10.0, 20.0, 50.0, 120.0];
        let mut m = Motion::new(bbox);
        let first = m.x.cov[0];
        for _ in 0..10 {
            m.predict(true);
            m.update(bbox);
        }
        let b = m.bbox();
        for (got, want) in b.iter().zip(bbox) {
            assert!((got - want).abs() < 0.01, "{b:?}");
        }
        assert!(m.x.cov[0] < first);
        assert!(m.is_finite());
    }
}

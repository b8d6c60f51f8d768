//! Plane geometry for lines and zones, in frame pixels: which side of a line a point is on, how
//! far, whether a path crosses a segment, whether a point is inside a polygon and how deep.

/// A point `[x, y]`, pixels.
pub type Point = [f32; 2];

/// Signed distance of `p` from the infinite line through `from` -> `to`: positive on the side
/// the line's `in` direction points to. The sign is the issue's convention,
/// `(tx-fx)*(py-fy) - (ty-fy)*(px-fx)`, scaled to pixels. `from != to` (checked by the config).
pub fn signed_distance(from: Point, to: Point, p: Point) -> f32 {
    let (dx, dy) = (to[0] - from[0], to[1] - from[1]);
    (dx * (p[1] - from[1]) - dy * (p[0] - from[0])) / (dx * dx + dy * dy).sqrt()
}

/// Whether the path `a` -> `b` passes through the segment `from` -> `to` (its ends included).
pub fn passes_through(from: Point, to: Point, a: Point, b: Point) -> bool {
    let (da, db) = (signed_distance(from, to, a), signed_distance(from, to, b));
    if da * db > 0.0 || da == db {
        return false;
    }
    // Where the path meets the line, as a share of the segment's length from `from`.
    let t = da / (da - db);
    let hit = [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t];
    let (dx, dy) = (to[0] - from[0], to[1] - from[1]);
    let along = ((hit[0] - from[0]) * dx + (hit[1] - from[1]) * dy) / (dx * dx + dy * dy);
    (0.0..=1.0).contains(&along)
}

/// Whether `p` is inside `polygon` (even-odd rule; a point on an edge may go either way).
pub fn inside(polygon: &[Point], p: Point) -> bool {
    let mut inside = false;
    let mut j = polygon.len() - 1;
    for i in 0..polygon.len() {
        let (a, b) = (polygon[i], polygon[j]);
        if (a[1] > p[1]) != (b[1] > p[1]) {
            let x = a[0] + (p[1] - a[1]) / (b[1] - a[1]) * (b[0] - a[0]);
            if p[0] < x {
                inside = !inside;
            }
        }
        j = i;
    }
    inside
}

/// Distance from `p` to the nearest edge of `polygon`.
pub fn distance_to_edge(polygon: &[Point], p: Point) -> f32 {
    let mut best = f32::INFINITY;
    let mut j = polygon.len() - 1;
    for i in 0..polygon.len() {
        best = best.min(distance_to_segment(polygon[j], polygon[i], p));
        j = i;
    }
    best
}

/// Distance from `p` to the segment `a` -> `b` (a point when `a == b`).
pub fn distance_to_segment(a: Point, b: Point, p: Point) -> f32 {
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    let len2 = dx * dx + dy * dy;
    let t = if len2 == 0.0 {
        0.0
    } else {
        (((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / len2).clamp(0.0, 1.0)
    };
    let (x, y) = (a[0] + dx * t - p[0], a[1] + dy * t - p[1]);
    (x * x + y * y).sqrt()
}

/// Whether the segments `a1`-`a2` and `b1`-`b2` cross or touch.
pub fn segments_meet(a1: Point, a2: Point, b1: Point, b2: Point) -> bool {
    fn orient(p: Point, q: Point, r: Point) -> f32 {
        (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])
    }
    fn on(p: Point, q: Point, r: Point) -> bool {
        // r on the segment p-q, given the three are collinear.
        r[0] >= p[0].min(q[0])
            && r[0] <= p[0].max(q[0])
            && r[1] >= p[1].min(q[1])
            && r[1] <= p[1].max(q[1])
    }
    let (o1, o2) = (orient(a1, a2, b1), orient(a1, a2, b2));
    let (o3, o4) = (orient(b1, b2, a1), orient(b1, b2, a2));
    if (o1 > 0.0) != (o2 > 0.0) && (o3 > 0.0) != (o4 > 0.0) && o1 != 0.0 && o2 != 0.0 {
        return true;
    }
    (o1 == 0.0 && on(a1, a2, b1))
        || (o2 == 0.0 && on(a1, a2, b2))
        || (o3 == 0.0 && on(b1, b2, a1))
        || (o4 == 0.0 && on(b1, b2, a2))
}

/// Whether two edges of `polygon` that are not neighbours meet (a bow tie, a figure eight).
pub fn self_crossing(polygon: &[Point]) -> bool {
    let n = polygon.len();
    for i in 0..n {
        for j in i + 1..n {
            // Neighbours share a corner; the first and last edges are neighbours too.
            if j == i + 1 || (i == 0 && j == n - 1) {
                continue;
            }
            let (a1, a2) = (polygon[i], polygon[(i + 1) % n]);
            let (b1, b2) = (polygon[j], polygon[(j + 1) % n]);
            if segments_meet(a1, a2, b1, b2) {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_side_of_a_line_follows_the_issue_s_convention() {
        // A line from left to right: `in` is where y grows (down the image).
        let (f, t) = ([0.0, 100.0], [200.0, 100.0]);
        assert_eq!(signed_distance(f, t, [50.0, 130.0]), 30.0);
        assert_eq!(signed_distance(f, t, [50.0, 90.0]), -10.0);
    }

    #[test]
    fn a_path_passes_through_a_segment_only_between_its_ends() {
        let (f, t) = ([100.0, 0.0], [100.0, 100.0]);
        assert!(passes_through(f, t, [90.0, 50.0], [110.0, 50.0]));
        assert!(passes_through(f, t, [90.0, 0.0], [110.0, 0.0]), "at an end");
        assert!(
            !passes_through(f, t, [90.0, 150.0], [110.0, 150.0]),
            "past the end"
        );
        assert!(
            !passes_through(f, t, [90.0, 50.0], [95.0, 50.0]),
            "same side"
        );
    }

    #[test]
    fn inside_and_depth_of_a_polygon() {
        let square = [[0.0, 0.0], [100.0, 0.0], [100.0, 100.0], [0.0, 100.0]];
        assert!(inside(&square, [50.0, 50.0]));
        assert!(!inside(&square, [150.0, 50.0]));
        assert_eq!(distance_to_edge(&square, [50.0, 10.0]), 10.0);
        assert_eq!(distance_to_edge(&square, [130.0, 50.0]), 30.0);
        // A concave one: an L.
        let l = [
            [0.0, 0.0],
            [100.0, 0.0],
            [100.0, 40.0],
            [40.0, 40.0],
            [40.0, 100.0],
            [0.0, 100.0],
        ];
        assert!(inside(&l, [20.0, 80.0]));
        assert!(!inside(&l, [80.0, 80.0]));
    }

    #[test]
    fn a_bow_tie_crosses_itself_and_a_square_does_not() {
        let square = [[0.0, 0.0], [100.0, 0.0], [100.0, 100.0], [0.0, 100.0]];
        let bow_tie = [[0.0, 0.0], [100.0, 100.0], [100.0, 0.0], [0.0, 100.0]];
        assert!(!self_crossing(&square));
        assert!(self_crossing(&bow_tie));
        assert!(!self_crossing(&[[0.0, 0.0], [10.0, 0.0], [5.0, 5.0]]));
    }
}

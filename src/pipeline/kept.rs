//! Places for `KEEP` frames in a source node: at most `limits.max_kept_frames` in all, shared
//! fairly between the streams that keep frames.
//!
//! A stream may hold at most its fair share, `max / n` places (at least one) where `n` is the
//! number of streams keeping frames: holding places, or asking for one in the last
//! [`ACTIVE_WINDOW`]. Alone, a stream may take every place; when a second stream starts keeping
//! frames (even if its first frame found the node full), the first is refused new places until
//! it is back under half, so a flood of `KEEP` frames sheds its own frames, not other streams'.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A stream that asked for a place this recently counts as keeping frames.
pub(crate) const ACTIVE_WINDOW: Duration = Duration::from_secs(5);

/// The places, shared by the source (which takes them) and the frames (which give them back
/// when dropped, wherever they are by then).
#[derive(Debug)]
pub(crate) struct KeptFrames {
    max: usize,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    by_stream: HashMap<Arc<str>, usize>,
    /// When each stream last asked for a place (pruned to [`ACTIVE_WINDOW`]).
    asked: HashMap<Arc<str>, Instant>,
}

/// Why a kept frame got no place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoPlace {
    /// Every place is taken.
    Full { max: usize },
    /// The stream holds its fair share already.
    OverShare { share: usize, streams: usize },
}

impl std::fmt::Display for NoPlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoPlace::Full { max } => write!(
                f,
                "the node holds limits.max_kept_frames = {max} kept frames already"
            ),
            NoPlace::OverShare { share, streams } => write!(
                f,
                "this stream holds its share of limits.max_kept_frames already ({share} of them, shared by {streams} streams)"
            ),
        }
    }
}

/// One kept frame's place; given back when dropped.
#[derive(Debug)]
pub(crate) struct KeptPlace {
    places: Arc<KeptFrames>,
    stream: Arc<str>,
}

impl KeptFrames {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            held: Mutex::new(Held::default()),
        })
    }

    /// Take a place for a kept frame of `stream`, if there is one and the stream is within its
    /// fair share.
    pub(crate) fn take(
        self: &Arc<Self>,
        stream: &Arc<str>,
        now: Instant,
    ) -> Result<KeptPlace, NoPlace> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let Held {
            by_stream, asked, ..
        } = &mut *held;
        asked.insert(stream.clone(), now);
        if asked.len() > 2 * by_stream.len() + 16 {
            asked.retain(|_, at| now.duration_since(*at) < ACTIVE_WINDOW);
        }
        // Streams holding places, and those that asked lately without holding any.
        let streams = by_stream.len()
            + asked
                .iter()
                .filter(|(s, at)| {
                    now.duration_since(**at) < ACTIVE_WINDOW && !by_stream.contains_key(*s)
                })
                .count();
        // Its own share first: a stream at its share (beside others) is told so, even when that
        // fills the node.
        let mine = held.by_stream.get(stream).copied().unwrap_or(0);
        let share = (self.max / streams).max(1);
        if mine >= share && streams > 1 {
            return Err(NoPlace::OverShare { share, streams });
        }
        if held.total >= self.max {
            return Err(NoPlace::Full { max: self.max });
        }
        held.total += 1;
        *held.by_stream.entry(stream.clone()).or_insert(0) += 1;
        Ok(KeptPlace {
            places: self.clone(),
            stream: stream.clone(),
        })
    }

    /// Kept frames `stream` could take now: free places, within its fair share. A reader
    /// that can wait (frames in a Redis Stream) asks first, and reads no more than this.
    pub(crate) fn room(&self, stream: &str, now: Instant) -> usize {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let active = |s: &Arc<str>| {
            held.asked
                .get(s)
                .is_some_and(|at| now.duration_since(*at) < ACTIVE_WINDOW)
        };
        let others_asking = held
            .asked
            .keys()
            .filter(|s| active(s) && !held.by_stream.contains_key(*s) && &***s != stream)
            .count();
        let mine = held.by_stream.get(stream).copied().unwrap_or(0);
        let streams = held.by_stream.len() + others_asking + usize::from(mine == 0);
        let share = (self.max / streams.max(1)).max(1);
        (self.max.saturating_sub(held.total)).min(share.saturating_sub(mine))
    }

    /// Places taken now, in all and by `stream`.
    #[cfg(test)]
    pub(crate) fn held(&self, stream: &str) -> (usize, usize) {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        (held.total, held.by_stream.get(stream).copied().unwrap_or(0))
    }
}

impl Drop for KeptPlace {
    fn drop(&mut self) {
        let mut held = self.places.held.lock().unwrap_or_else(|e| e.into_inner());
        held.total = held.total.saturating_sub(1);
        if let Some(n) = held.by_stream.get_mut(&self.stream) {
            *n -= 1;
            if *n == 0 {
                held.by_stream.remove(&self.stream);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_stream_may_take_every_place_and_gives_them_back() {
        let now = Instant::now();
        let places = KeptFrames::new(4);
        let a: Arc<str> = Arc::from("a");
        let taken: Vec<_> = (0..4).map(|_| places.take(&a, now).unwrap()).collect();
        assert_eq!(places.take(&a, now).unwrap_err(), NoPlace::Full { max: 4 });
        drop(taken);
        assert_eq!(places.held("a"), (0, 0));
        assert!(places.take(&a, now).is_ok());
    }

    #[test]
    fn a_flooding_stream_is_held_to_its_share_once_another_keeps_frames() {
        let now = Instant::now();
        let places = KeptFrames::new(10);
        let (flood, camera): (Arc<str>, Arc<str>) = (Arc::from("flood"), Arc::from("camera"));
        let mut flood_places: Vec<_> = (0..9).map(|_| places.take(&flood, now).unwrap()).collect();
        // The camera gets the last place; then the node is full.
        let mut camera_places = vec![places.take(&camera, now).unwrap()];
        assert_eq!(
            places.take(&camera, now).unwrap_err(),
            NoPlace::Full { max: 10 }
        );
        // As the flood's frames finish, the places go to the camera, never back to the flood
        // while it holds more than half.
        for _ in 0..4 {
            flood_places.pop();
            assert!(matches!(
                places.take(&flood, now),
                Err(NoPlace::OverShare {
                    share: 5,
                    streams: 2
                })
            ));
            camera_places.push(places.take(&camera, now).unwrap());
        }
        assert_eq!(places.held("flood"), (10, 5));
        assert_eq!(places.held("camera"), (10, 5));
        // At its share, the camera is refused too: fair both ways.
        flood_places.pop();
        assert!(matches!(
            places.take(&camera, now),
            Err(NoPlace::OverShare { .. })
        ));
        assert!(places.take(&flood, now).is_ok());
    }

    #[test]
    fn a_stream_refused_because_the_node_is_full_still_claims_its_share() {
        let now = Instant::now();
        let places = KeptFrames::new(4);
        let (flood, camera): (Arc<str>, Arc<str>) = (Arc::from("flood"), Arc::from("camera"));
        let mut flood_places: Vec<_> = (0..4).map(|_| places.take(&flood, now).unwrap()).collect();
        assert_eq!(
            places.take(&camera, now).unwrap_err(),
            NoPlace::Full { max: 4 }
        );
        // A place frees: the flood, over its share of 2 now, may not take it back.
        flood_places.pop();
        assert!(matches!(
            places.take(&flood, now),
            Err(NoPlace::OverShare { share: 2, .. })
        ));
        assert!(places.take(&camera, now).is_ok());
        // A camera silent for longer than the window no longer holds a share open.
        flood_places.clear();
        let later = now + ACTIVE_WINDOW + Duration::from_secs(1);
        let all: Vec<_> = (0..3)
            .map(|_| places.take(&flood, later).unwrap())
            .collect();
        assert_eq!(all.len(), 3);
    }

    #[test]
    fn a_single_place_is_not_divided_to_nothing() {
        let now = Instant::now();
        let places = KeptFrames::new(1);
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let held = places.take(&a, now).unwrap();
        assert!(places.take(&b, now).is_err());
        drop(held);
        assert!(places.take(&b, now).is_ok());
    }

    #[test]
    fn room_says_what_take_would_give() {
        let now = Instant::now();
        let places = KeptFrames::new(4);
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        assert_eq!(places.room("a", now), 4);
        let held: Vec<_> = (0..3).map(|_| places.take(&a, now).unwrap()).collect();
        assert_eq!(places.room("a", now), 1);
        // A second stream's share is half; the first is over its share until it gives back.
        assert_eq!(places.room("b", now), 1);
        let _b = places.take(&b, now).unwrap();
        assert_eq!(places.room("a", now), 0);
        assert_eq!(places.room("b", now), 0);
        drop(held);
        assert_eq!(places.room("a", now), 2);
        assert_eq!(places.room("b", now), 1);
    }
}

//! How kadr's own messages cross nodes. ractor_cluster carries each remote message as a
//! variant name and a byte string; these helpers fill and read the bytes. Frames are a compact
//! binary record (they carry the JPEG); the small control messages are JSON.
//!
//! Decoding never panics and never fails silently: a message a peer garbled becomes the
//! receiving actor's `Malformed` variant, which logs and counts it.

use bytes::Bytes;
use ractor::message::{BoxedDowncastErr, SerializedMessage};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Build a cast (fire-and-forget) message.
pub(crate) fn cast(variant: &str, args: Vec<u8>) -> SerializedMessage {
    SerializedMessage::Cast {
        variant: variant.to_string(),
        args,
        metadata: None,
    }
}

/// A cast as JSON.
pub(crate) fn cast_json<T: Serialize>(
    variant: &str,
    value: &T,
) -> Result<SerializedMessage, BoxedDowncastErr> {
    serde_json::to_vec(value)
        .map(|args| cast(variant, args))
        .map_err(|_| BoxedDowncastErr)
}

/// The variant and payload of a cast; calls are not part of kadr's protocol.
pub(crate) fn open_cast(msg: SerializedMessage) -> Result<(String, Vec<u8>), String> {
    match msg {
        SerializedMessage::Cast { variant, args, .. } => Ok((variant, args)),
        SerializedMessage::Call { variant, .. } => Err(format!("unexpected call {variant:?}")),
        SerializedMessage::CallReply(..) => Err("unexpected call reply".into()),
    }
}

pub(crate) fn from_json<T: DeserializeOwned>(variant: &str, args: &[u8]) -> Result<T, String> {
    serde_json::from_slice(args).map_err(|e| format!("bad {variant} message: {e}"))
}

/// Appends fixed-width big-endian fields and length-prefixed byte strings.
#[derive(Default)]
pub(crate) struct Writer(Vec<u8>);

impl Writer {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }
    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// A string of at most 65535 bytes (names and stream ids, validated long before).
    pub(crate) fn short_str(&mut self, s: &str) -> &mut Self {
        let n = s.len().min(u16::MAX as usize);
        self.0.extend_from_slice(&(n as u16).to_be_bytes());
        self.0.extend_from_slice(&s.as_bytes()[..n]);
        self
    }
    /// The rest of the message.
    pub(crate) fn tail(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    pub(crate) fn finish(self) -> Vec<u8> {
        self.0
    }
}

/// Reads what [`Writer`] wrote, checking every length against what is there.
pub(crate) struct Reader {
    buf: Bytes,
    at: usize,
}

impl Reader {
    pub(crate) fn new(buf: Vec<u8>) -> Self {
        Self {
            buf: Bytes::from(buf),
            at: 0,
        }
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| format!("message ends inside {what}"))?;
        let slice = &self.buf[self.at..end];
        self.at = end;
        Ok(slice)
    }
    pub(crate) fn u64(&mut self, what: &str) -> Result<u64, String> {
        let b = self.take(8, what)?;
        Ok(u64::from_be_bytes(b.try_into().expect("8 bytes")))
    }
    pub(crate) fn short_str(&mut self, what: &str) -> Result<String, String> {
        let len = self.take(2, what)?;
        let n = u16::from_be_bytes([len[0], len[1]]) as usize;
        let b = self.take(n, what)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| format!("{what} is not UTF-8"))
    }
    /// The rest of the message, without copying.
    pub(crate) fn tail(self) -> Bytes {
        self.buf.slice(self.at..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation_is_an_error() {
        let mut w = Writer::default();
        w.short_str("node-1").u64(42).u64(7).tail(b"jpeg");
        let bytes = w.finish();
        let mut r = Reader::new(bytes.clone());
        assert_eq!(r.short_str("origin").unwrap(), "node-1");
        assert_eq!(r.u64("seq").unwrap(), 42);
        assert_eq!(r.u64("ts").unwrap(), 7);
        assert_eq!(&r.tail()[..], b"jpeg");
        for cut in 0..bytes.len() - 4 {
            let mut r = Reader::new(bytes[..cut].to_vec());
            let ok = r
                .short_str("origin")
                .and_then(|_| r.u64("seq"))
                .and_then(|_| r.u64("ts"));
            assert!(ok.is_err(), "cut at {cut}");
        }
        let mut r = Reader::new(vec![0, 2, 0xff, 0xfe]);
        assert!(r.short_str("name").unwrap_err().contains("UTF-8"));
    }
}

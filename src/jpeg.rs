//! Reading JPEG structure without decoding: the one walker over marker segments that the source
//! (a frame's declared size, checked before any pixel is decoded), the video reader (where one
//! JPEG ends in FFmpeg's output) and the folder publisher use.

/// Every JPEG starts with this (start of image).
pub const SOI: [u8; 2] = [0xFF, 0xD8];

/// Whether `bytes` start like a JPEG.
pub fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&SOI)
}

/// What a JPEG's frame header (SOFn) declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub width: u32,
    pub height: u32,
    /// Bits per sample: 8 for nearly every JPEG; 12 (or 16, lossless) for medical and some
    /// industrial cameras.
    pub precision: u8,
    /// The SOF marker's code: 0xC0 baseline, 0xC1 extended sequential, 0xC2 progressive,
    /// 0xC3 lossless, 0xC5..=0xC7 hierarchical, 0xC9..=0xCF arithmetic-coded.
    pub sof: u8,
}

impl FrameHeader {
    /// Why the node will not decode it, if it will not: only 8-bit Huffman-coded sequential
    /// (baseline or extended) and progressive JPEGs are served (docs/protocol.md). The others
    /// would pass a size check and then fail, or decode slowly, at a detector.
    pub fn unsupported(&self) -> Option<String> {
        let process = match self.sof {
            0xC0..=0xC2 => None,
            0xC3 => Some("lossless"),
            0xC5..=0xC7 => Some("hierarchical"),
            _ => Some("arithmetic-coded"),
        };
        match (process, self.precision) {
            (Some(p), _) => Some(format!(
                "a {p} JPEG (SOF{}): only 8-bit baseline or progressive JPEG is served",
                self.sof - 0xC0
            )),
            (None, 8) => None,
            (None, bits) => Some(format!(
                "a JPEG of {bits}-bit samples: only 8-bit baseline or progressive JPEG is served"
            )),
        }
    }
}

/// The frame header of a JPEG, read without decoding. `None` when no frame header comes
/// before the scan.
pub fn frame_header(jpeg: &[u8]) -> Option<FrameHeader> {
    if !is_jpeg(jpeg) {
        return None;
    }
    let mut i = SOI.len();
    loop {
        let (code, body) = marker_at(jpeg, i)?;
        let len = segment_len(jpeg, body)?;
        // SOF0..SOF15, except DHT (C4), JPG (C8) and DAC (CC), which share the range.
        if matches!(code, 0xC0..=0xCF) && !matches!(code, 0xC4 | 0xC8 | 0xCC) {
            // Length (2), precision (1), height (2), width (2).
            let precision = *jpeg.get(body + 2)?;
            let h = u16::from_be_bytes([*jpeg.get(body + 3)?, *jpeg.get(body + 4)?]);
            let w = u16::from_be_bytes([*jpeg.get(body + 5)?, *jpeg.get(body + 6)?]);
            return Some(FrameHeader {
                width: w.into(),
                height: h.into(),
                precision,
                sof: code,
            });
        }
        if code == 0xDA || len < 2 {
            return None;
        }
        i = body + len;
    }
}

/// The width and height a JPEG declares in its frame header (SOFn), read without decoding.
pub fn dimensions(jpeg: &[u8]) -> Option<(u32, u32)> {
    frame_header(jpeg).map(|h| (h.width, h.height))
}

/// The end of the first complete JPEG in `buf` (which must start at its SOI marker). Walks the
/// marker segments by their lengths, then the entropy-coded data, so bytes inside tables can
/// never be mistaken for the end marker. `None` while it is incomplete (or not a JPEG).
pub fn end(buf: &[u8]) -> Option<usize> {
    if buf.len() < 4 || !is_jpeg(buf) {
        return None;
    }
    let mut i = SOI.len();
    loop {
        let (code, body) = marker_at(buf, i)?;
        match code {
            0xD9 => return Some(body),
            // Restart markers and TEM have no length.
            0xD0..=0xD7 | 0x01 => i = body,
            _ => {
                i = body + segment_len(buf, body)?;
                if code == 0xDA {
                    i = entropy_coded_end(buf, i)?;
                }
            }
        }
    }
}

/// The marker at `i` (after any 0xFF fill bytes): its code and where its segment starts.
fn marker_at(buf: &[u8], mut i: usize) -> Option<(u8, usize)> {
    while buf.get(i) == Some(&0xFF) && buf.get(i + 1) == Some(&0xFF) {
        i += 1;
    }
    if *buf.get(i)? != 0xFF {
        return None; // not where a marker must be: give up on this data
    }
    Some((*buf.get(i + 1)?, i + 2))
}

/// A segment's length field (which counts itself).
fn segment_len(buf: &[u8], at: usize) -> Option<usize> {
    Some(u16::from_be_bytes([*buf.get(at)?, *buf.get(at + 1)?]) as usize)
}

/// Entropy-coded data runs to the next marker that is not a stuffed 0xFF00, a restart marker
/// or fill.
fn entropy_coded_end(buf: &[u8], mut i: usize) -> Option<usize> {
    loop {
        if i + 1 >= buf.len() {
            return None;
        }
        if buf[i] == 0xFF
            && buf[i + 1] != 0x00
            && !(0xD0..=0xD7).contains(&buf[i + 1])
            && buf[i + 1] != 0xFF
        {
            return Some(i);
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real JPEG of 48x16 (encoded by the image crate).
    fn sample() -> Vec<u8> {
        let img = image::RgbImage::from_pixel(48, 16, image::Rgb([200, 30, 30]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
        out.into_inner()
    }

    #[test]
    fn only_8_bit_huffman_sequential_and_progressive_jpegs_are_served() {
        let mut jpeg = sample();
        let header = frame_header(&jpeg).expect("a frame header");
        assert_eq!((header.precision, header.sof), (8, 0xC0));
        assert_eq!(header.unsupported(), None);
        // The same headers as a 12-bit, a lossless and an arithmetic-coded JPEG would have.
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        jpeg[sof + 4] = 12;
        let twelve = frame_header(&jpeg).unwrap().unsupported().expect("refused");
        assert!(twelve.contains("12-bit"), "{twelve}");
        jpeg[sof + 4] = 8;
        for (code, what) in [
            (0xC3, "lossless"),
            (0xC9, "arithmetic"),
            (0xC5, "hierarchical"),
        ] {
            jpeg[sof + 1] = code;
            let why = frame_header(&jpeg).unwrap().unsupported().expect("refused");
            assert!(why.contains(what), "{why}");
        }
        jpeg[sof + 1] = 0xC2;
        assert_eq!(frame_header(&jpeg).unwrap().unsupported(), None);
    }

    #[test]
    fn dimensions_come_from_the_frame_header() {
        let jpeg = sample();
        assert_eq!(dimensions(&jpeg), Some((48, 16)));
        assert_eq!(dimensions(&jpeg[..20]), None);
        assert_eq!(dimensions(b"\xff\xd8\xff"), None);
        assert_eq!(dimensions(b"nope"), None);
    }

    #[test]
    fn the_end_is_found_only_when_complete() {
        let mut two = sample();
        let one = two.len();
        two.extend_from_slice(&sample());
        assert_eq!(end(&two), Some(one));
        assert_eq!(end(&two[..one - 1]), None);
        assert_eq!(end(b"garbage"), None);
    }
}

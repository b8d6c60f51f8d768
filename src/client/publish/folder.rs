//! A folder of images as a frame source: JPEG and PNG files in file-name order, each made a
//! JPEG of the publishing size (letterboxed), or passed through untouched when it already is one.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use image::{ImageFormat, RgbImage};
use thiserror::Error;
use tracing::warn;

#[derive(Debug, Error)]
pub enum FolderError {
    #[error("cannot read folder {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("folder {0} has no .jpg, .jpeg or .png images")]
    Empty(PathBuf),
    #[error("no image in folder {0} could be read (every one failed)")]
    NothingReadable(PathBuf),
}

#[derive(Debug, Error)]
pub enum ImageError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Image(#[from] image::ImageError),
    #[error("truncated JPEG: no end-of-image marker")]
    Truncated,
}

pub struct ImageFolder {
    dir: PathBuf,
    files: Vec<PathBuf>,
    next: usize,
    size: Option<(u32, u32)>,
    quality: u8,
    loop_forever: bool,
    /// Files that could not be read or decoded (each skipped with a warning).
    pub skipped: u64,
    good_this_pass: bool,
}

impl ImageFolder {
    pub fn open(
        dir: &Path,
        size: Option<(u32, u32)>,
        quality: u8,
        loop_forever: bool,
    ) -> Result<Self, FolderError> {
        let entries = std::fs::read_dir(dir).map_err(|e| FolderError::Read(dir.into(), e))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_image_name(p))
            .collect();
        if files.is_empty() {
            return Err(FolderError::Empty(dir.into()));
        }
        files.sort();
        Ok(Self {
            dir: dir.into(),
            files,
            next: 0,
            size,
            quality,
            loop_forever,
            skipped: 0,
            good_this_pass: false,
        })
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The next image as a JPEG frame; `None` at the end (never, with `loop_forever`).
    /// Unreadable images are skipped with a warning; a whole pass of them is an error.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FolderError> {
        loop {
            if self.next == self.files.len() {
                if !self.good_this_pass {
                    return Err(FolderError::NothingReadable(self.dir.clone()));
                }
                if !self.loop_forever {
                    return Ok(None);
                }
                self.next = 0;
                self.good_this_pass = false;
            }
            let path = &self.files[self.next];
            self.next += 1;
            match std::fs::read(path)
                .map_err(ImageError::from)
                .and_then(|bytes| to_frame(bytes, self.size, self.quality))
            {
                Ok(frame) => {
                    self.good_this_pass = true;
                    return Ok(Some(frame));
                }
                Err(e) => {
                    self.skipped += 1;
                    warn!(image = %path.display(), error = %e, "skipping an image that cannot be read");
                }
            }
        }
    }
}

fn is_image_name(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
        .unwrap_or(false)
}

/// JPEG quality (1-100) for FFmpeg's `-q:v` scale (2 best .. 31 worst), so both sources look
/// alike at the same `--quality`.
pub fn jpeg_quality(q: u8) -> u8 {
    (100i32 - 3 * q as i32).clamp(10, 98) as u8
}

/// Make one image file's bytes a frame: a JPEG already of `size` (or any JPEG when `size` is
/// `None`) goes out as it is; anything else is decoded, scaled to fit `size` keeping its aspect
/// ratio, centred on black, and encoded.
pub fn to_frame(
    bytes: Vec<u8>,
    size: Option<(u32, u32)>,
    quality: u8,
) -> Result<Vec<u8>, ImageError> {
    let format = image::guess_format(&bytes)?;
    if format == ImageFormat::Jpeg && crate::jpeg::end(&bytes).is_none() {
        // The decoder would fill in the missing part; a node would refuse it (`bad_image`).
        return Err(ImageError::Truncated);
    }
    if format == ImageFormat::Jpeg {
        let (w, h) = image::ImageReader::with_format(Cursor::new(&bytes), ImageFormat::Jpeg)
            .into_dimensions()?;
        if size.is_none_or(|s| s == (w, h)) {
            // Check it decodes, so a corrupt file is skipped here and not refused by a node.
            image::load_from_memory_with_format(&bytes, format)?;
            return Ok(bytes);
        }
    }
    let img = image::load_from_memory_with_format(&bytes, format)?.to_rgb8();
    let out = match size {
        Some((w, h)) => letterbox(&img, w, h),
        None => img,
    };
    let mut jpeg = Vec::with_capacity(out.len() / 8);
    JpegEncoder::new_with_quality(&mut jpeg, jpeg_quality(quality)).encode_image(&out)?;
    Ok(jpeg)
}

/// `img` scaled to fit `w`x`h` and centred on black.
fn letterbox(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    let scale = (w as f64 / img.width() as f64).min(h as f64 / img.height() as f64);
    let nw = ((img.width() as f64 * scale).round() as u32).clamp(1, w);
    let nh = ((img.height() as f64 * scale).round() as u32).clamp(1, h);
    let scaled = image::imageops::resize(img, nw, nh, FilterType::Triangle);
    let mut canvas = RgbImage::new(w, h);
    image::imageops::replace(
        &mut canvas,
        &scaled,
        ((w - nw) / 2) as i64,
        ((h - nh) / 2) as i64,
    );
    canvas
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(img: &RgbImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    fn dims(jpeg: &[u8]) -> (u32, u32) {
        let img = image::load_from_memory_with_format(jpeg, ImageFormat::Jpeg).unwrap();
        (img.width(), img.height())
    }

    #[test]
    fn a_jpeg_of_the_right_size_passes_through_untouched() {
        let jpeg = encode(&RgbImage::new(64, 36), ImageFormat::Jpeg);
        assert_eq!(to_frame(jpeg.clone(), Some((64, 36)), 3).unwrap(), jpeg);
        assert_eq!(to_frame(jpeg.clone(), None, 3).unwrap(), jpeg);
    }

    #[test]
    fn other_sizes_and_pngs_are_letterboxed_into_the_size() {
        // A white 40x40 square into 64x36: scaled to 36x36, black bars left and right.
        let png = encode(
            &RgbImage::from_pixel(40, 40, image::Rgb([255; 3])),
            ImageFormat::Png,
        );
        let frame = to_frame(png, Some((64, 36)), 3).unwrap();
        assert_eq!(dims(&frame), (64, 36));
        let img = image::load_from_memory(&frame).unwrap().to_rgb8();
        assert!(img.get_pixel(2, 18).0.iter().all(|&c| c < 30), "left bar");
        assert!(img.get_pixel(32, 18).0.iter().all(|&c| c > 225), "picture");
        // --source-size: a PNG keeps its own size.
        let png = encode(&RgbImage::new(30, 20), ImageFormat::Png);
        assert_eq!(dims(&to_frame(png, None, 3).unwrap()), (30, 20));
    }

    #[test]
    fn garbage_and_truncated_images_are_errors() {
        assert!(to_frame(b"not an image".to_vec(), Some((64, 36)), 3).is_err());
        let jpeg = encode(&RgbImage::new(64, 36), ImageFormat::Jpeg);
        assert!(to_frame(jpeg[..jpeg.len() / 2].to_vec(), Some((64, 36)), 3).is_err());
    }

    #[test]
    fn a_folder_goes_in_name_order_skips_bad_files_and_loops() {
        let dir = tempfile::tempdir().unwrap();
        let jpeg = |v| {
            encode(
                &RgbImage::from_pixel(64, 36, image::Rgb([v; 3])),
                ImageFormat::Jpeg,
            )
        };
        std::fs::write(dir.path().join("b.jpg"), jpeg(200)).unwrap();
        std::fs::write(dir.path().join("a.JPEG"), jpeg(10)).unwrap();
        std::fs::write(dir.path().join("c.png"), b"corrupt").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();
        let mut folder = ImageFolder::open(dir.path(), Some((64, 36)), 3, true).unwrap();
        assert_eq!(folder.len(), 3);
        let got: Vec<Vec<u8>> = (0..4)
            .map(|_| folder.next_frame().unwrap().unwrap())
            .collect();
        assert_eq!(got, [jpeg(10), jpeg(200), jpeg(10), jpeg(200)]);
        assert_eq!(folder.skipped, 1);

        let mut once = ImageFolder::open(dir.path(), Some((64, 36)), 3, false).unwrap();
        assert_eq!(once.next_frame().unwrap().unwrap(), jpeg(10));
        assert_eq!(once.next_frame().unwrap().unwrap(), jpeg(200));
        assert!(once.next_frame().unwrap().is_none());
    }

    #[test]
    fn empty_and_unreadable_folders_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            ImageFolder::open(dir.path(), None, 3, false),
            Err(FolderError::Empty(_))
        ));
        std::fs::write(dir.path().join("x.jpg"), b"nope").unwrap();
        let mut f = ImageFolder::open(dir.path(), None, 3, true).unwrap();
        assert!(matches!(
            f.next_frame(),
            Err(FolderError::NothingReadable(_))
        ));
    }
}

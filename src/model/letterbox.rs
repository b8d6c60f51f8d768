//! Letterbox: fit an RGB image into the model's HxW input without distortion, as the reference
//! YOLOv7 `letterbox()` does, and write the normalized CHW float tensor in one pass.
//!
//! The resize reproduces OpenCV's `INTER_LINEAR` on 8-bit images (half-pixel centres, no
//! antialiasing, 11-bit fixed-point weights), which is what the reference feeds the model; a
//! filter with antialiasing gives visibly different inputs and, with a chaotic model, other boxes.

/// Where the image landed inside the model input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    /// Source image size.
    pub src_w: u32,
    pub src_h: u32,
    /// Scale from source to model pixels.
    pub ratio: f32,
    /// Resized (unpadded) size.
    pub new_w: u32,
    pub new_h: u32,
    /// Padding actually applied (integer pixels, top-left).
    pub left: u32,
    pub top: u32,
    /// Padding as the reference uses it to map boxes back: half the spare width and height
    /// (so 12.5 where one side gets 12 pixels and the other 13).
    pub pad_x: f32,
    pub pad_y: f32,
}

/// Compute the reference letterbox geometry for a `src_w`x`src_h` image into `dst_w`x`dst_h`.
pub fn placement(src_w: u32, src_h: u32, dst_w: u32, dst_h: u32) -> Placement {
    // The reference computes in Python floats (f64) and rounds half to even.
    let r = (dst_h as f64 / src_h as f64).min(dst_w as f64 / src_w as f64);
    let new_w = ((src_w as f64 * r).round_ties_even() as u32).clamp(1, dst_w);
    let new_h = ((src_h as f64 * r).round_ties_even() as u32).clamp(1, dst_h);
    let dw = (dst_w - new_w) as f64 / 2.0;
    let dh = (dst_h - new_h) as f64 / 2.0;
    Placement {
        src_w,
        src_h,
        ratio: r as f32,
        new_w,
        new_h,
        left: (dw - 0.1).round_ties_even().max(0.0) as u32,
        top: (dh - 0.1).round_ties_even().max(0.0) as u32,
        pad_x: dw as f32,
        pad_y: dh as f32,
    }
}

const COEF_BITS: u32 = 11;
const COEF_SCALE: i32 = 1 << COEF_BITS;
const PAD_VALUE: u8 = 114;

/// One axis of the bilinear resize: for each destination index, the two source indices and
/// their fixed-point weights, computed as OpenCV's `resize` does.
#[derive(Debug, Default)]
struct AxisTable {
    src0: Vec<u32>,
    src1: Vec<u32>,
    w0: Vec<i32>,
    w1: Vec<i32>,
}

impl AxisTable {
    fn build(&mut self, src: u32, dst: u32) {
        self.src0.clear();
        self.src1.clear();
        self.w0.clear();
        self.w1.clear();
        // OpenCV stores the inverse scale and divides, which can differ in the last bit.
        let scale = 1.0 / (dst as f64 / src as f64);
        for d in 0..dst {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut s = f.floor() as i64;
            let mut frac = f - s as f32;
            if s < 0 {
                s = 0;
                frac = 0.0;
            }
            if s >= src as i64 - 1 {
                s = src as i64 - 1;
                frac = 0.0;
            }
            let w1 = (frac * COEF_SCALE as f32).round_ties_even() as i32;
            let w0 = ((1.0 - frac) * COEF_SCALE as f32).round_ties_even() as i32;
            self.src0.push(s as u32);
            self.src1.push((s as u32 + 1).min(src - 1));
            self.w0.push(w0);
            self.w1.push(w1);
        }
    }
}

/// Reusable letterbox state: the resize tables, kept between frames of the same size.
#[derive(Debug, Default)]
pub struct Letterboxer {
    key: Option<(u32, u32, u32, u32)>,
    xs: AxisTable,
    ys: AxisTable,
    /// One resized RGB row, in fixed point after the horizontal pass, per source row in use.
    row0: Vec<i32>,
    row1: Vec<i32>,
}

/// `v / 255` as the reference computes it (float32 division of a byte value).
fn normalized(v: u8) -> f32 {
    v as f32 / 255.0
}

impl Letterboxer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Letterbox `rgb` (packed RGB8, `src_w`x`src_h`) into `tensor`, laid out as [3, dst_h, dst_w]
    /// with values in [0, 1]. `tensor` must hold exactly `3 * dst_w * dst_h` floats.
    pub fn run(
        &mut self,
        rgb: &[u8],
        src_w: u32,
        src_h: u32,
        dst_w: u32,
        dst_h: u32,
        tensor: &mut [f32],
    ) -> Placement {
        assert_eq!(rgb.len(), (src_w * src_h * 3) as usize, "rgb buffer size");
        assert_eq!(tensor.len(), (3 * dst_w * dst_h) as usize, "tensor size");
        let p = placement(src_w, src_h, dst_w, dst_h);
        let plane = (dst_w * dst_h) as usize;
        let pad = normalized(PAD_VALUE);
        // Padding: the reference pads the resized uint8 image with 114 on every side.
        for c in 0..3 {
            let t = &mut tensor[c * plane..(c + 1) * plane];
            for y in 0..dst_h {
                let row = &mut t[(y * dst_w) as usize..((y + 1) * dst_w) as usize];
                if y < p.top || y >= p.top + p.new_h {
                    row.fill(pad);
                } else {
                    row[..p.left as usize].fill(pad);
                    row[(p.left + p.new_w) as usize..].fill(pad);
                }
            }
        }
        if p.new_w == src_w && p.new_h == src_h {
            self.copy_unscaled(rgb, &p, dst_w, plane, tensor);
        } else {
            self.resize_bilinear(rgb, &p, dst_w, plane, tensor);
        }
        p
    }

    fn copy_unscaled(&self, rgb: &[u8], p: &Placement, dst_w: u32, plane: usize, out: &mut [f32]) {
        let w = p.src_w as usize;
        for y in 0..p.src_h as usize {
            let src = &rgb[y * w * 3..(y + 1) * w * 3];
            let base = (y + p.top as usize) * dst_w as usize + p.left as usize;
            for (x, px) in src.chunks_exact(3).enumerate() {
                out[base + x] = normalized(px[0]);
                out[plane + base + x] = normalized(px[1]);
                out[2 * plane + base + x] = normalized(px[2]);
            }
        }
    }

    fn resize_bilinear(
        &mut self,
        rgb: &[u8],
        p: &Placement,
        dst_w: u32,
        plane: usize,
        out: &mut [f32],
    ) {
        let key = (p.src_w, p.src_h, p.new_w, p.new_h);
        if self.key != Some(key) {
            self.xs.build(p.src_w, p.new_w);
            self.ys.build(p.src_h, p.new_h);
            self.key = Some(key);
        }
        let nw = p.new_w as usize;
        let sw = p.src_w as usize;
        self.row0.resize(nw * 3, 0);
        self.row1.resize(nw * 3, 0);
        let mut cached: [Option<u32>; 2] = [None, None];
        for dy in 0..p.new_h as usize {
            let (sy0, sy1) = (self.ys.src0[dy], self.ys.src1[dy]);
            // Horizontal pass for the two source rows, reusing rows already computed.
            if cached[0] != Some(sy0) {
                if cached[1] == Some(sy0) {
                    std::mem::swap(&mut self.row0, &mut self.row1);
                    cached[0] = cached[1];
                    cached[1] = None;
                } else {
                    hpass(&rgb[sy0 as usize * sw * 3..], &self.xs, &mut self.row0);
                    cached[0] = Some(sy0);
                }
            }
            if cached[1] != Some(sy1) {
                hpass(&rgb[sy1 as usize * sw * 3..], &self.xs, &mut self.row1);
                cached[1] = Some(sy1);
            }
            let (b0, b1) = (self.ys.w0[dy], self.ys.w1[dy]);
            let base = (dy + p.top as usize) * dst_w as usize + p.left as usize;
            for x in 0..nw {
                for c in 0..3 {
                    // OpenCV's VResizeLinear for uchar: (b0*r0 >> 4) + (b1*r1 >> 4), then +2 >> 2.
                    let v = ((b0 * (self.row0[x * 3 + c] >> 4)) >> 16)
                        + ((b1 * (self.row1[x * 3 + c] >> 4)) >> 16);
                    let v = ((v + 2) >> 2).clamp(0, 255) as u8;
                    out[c * plane + base + x] = normalized(v);
                }
            }
        }
    }
}

/// Horizontal pass of one source row: fixed-point weighted sums, scaled by `COEF_SCALE`.
fn hpass(row: &[u8], xs: &AxisTable, out: &mut [i32]) {
    for (x, o) in out.chunks_exact_mut(3).enumerate() {
        let (s0, s1) = (xs.src0[x] as usize * 3, xs.src1[x] as usize * 3);
        let (w0, w1) = (xs.w0[x], xs.w1[x]);
        for c in 0..3 {
            o[c] = row[s0 + c] as i32 * w0 + row[s1 + c] as i32 * w1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_for_720p_into_384x640_has_no_waste_but_rounding() {
        let p = placement(1280, 720, 640, 384);
        assert_eq!((p.new_w, p.new_h, p.left, p.top), (640, 360, 0, 12));
        assert_eq!((p.pad_x, p.pad_y, p.ratio), (0.0, 12.0, 0.5));
    }

    #[test]
    fn placement_rounds_like_python() {
        // 810x1080 into 640x640: r = 0.5926, new 480x640, pad 80 left/right.
        let p = placement(810, 1080, 640, 640);
        assert_eq!((p.new_w, p.new_h, p.left, p.top), (480, 640, 80, 0));
        // An odd padding puts the extra pixel at the bottom/right, as the reference does.
        let p = placement(100, 99, 100, 100);
        assert_eq!((p.new_h, p.top), (99, 0));
    }

    #[test]
    fn unscaled_copy_and_padding() {
        let rgb: Vec<u8> = (0..4 * 2 * 3).map(|i| i as u8).collect();
        let mut t = vec![0.0; 3 * 4 * 4];
        let p = Letterboxer::new().run(&rgb, 4, 2, 4, 4, &mut t);
        assert_eq!((p.top, p.left), (1, 0));
        assert_eq!(t[0], 114.0 / 255.0); // top padding row
        assert_eq!(t[4], 0.0); // R of pixel (0,0) at row 1
        assert_eq!(t[16 + 4], 1.0 / 255.0); // G of pixel (0,0)
        assert_eq!(t[2 * 16 + 4 + 3], 11.0 / 255.0); // B of pixel (3,0)
        assert_eq!(t[12], 114.0 / 255.0); // bottom padding row
    }

    #[test]
    fn halving_averages_two_by_two_blocks() {
        // 4x2 -> 2x1: each output pixel is the mean of a 2x2 block.
        let mut rgb = vec![0u8; 4 * 2 * 3];
        for (i, v) in [10u8, 20, 30, 40, 50, 60, 70, 80].iter().enumerate() {
            rgb[i * 3] = *v;
        }
        let mut t = vec![0.0; 3 * 2 * 2];
        Letterboxer::new().run(&rgb, 4, 2, 2, 2, &mut t);
        // (10+20+50+60)/4 = 35 and (30+40+70+80)/4 = 55; the 2x1 content sits in the top row
        // and the spare row below it is padding.
        assert_eq!(t[0], 35.0 / 255.0);
        assert_eq!(t[1], 55.0 / 255.0);
    }
}

//! Bicubic resize of RGB8 images, reproducing Pillow's `Image.resize` (default
//! `BICUBIC` filter, `a = -0.5`) to the bit.
//!
//! Pillow resamples separably — one axis, then the other, rounding to 8 bits in
//! between — with coefficients normalised to sum to one and quantised to 22-bit fixed
//! point. Which axis goes first changes the rounding, so it follows Pillow too (see
//! [`vertical_first`]).
//! Doing exactly the same here makes our tensors identical to the classic
//! `PIL.Image.resize` + Keras pipeline for the same decoded pixels, which is what the
//! parity with existing features rests on. (SIMD resizers such as `fast_image_resize`
//! use other fixed-point rounding and differ by ±1 on some pixels.)
//!
//! Both passes run one kernel over whole lines (the horizontal pass on the transposed
//! image), so the compiler vectorises the same integer arithmetic; it is built for
//! AVX2 too and picked at run time.

use image::metadata::Orientation;
use image::RgbImage;

const PRECISION_BITS: u32 = 32 - 8 - 2;
const FILTER_SUPPORT: f64 = 2.0;

/// Pillow's bicubic kernel with `a = -0.5` (Catmull-Rom).
#[inline]
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Fixed-point filter taps for one axis: for each output index, the first input
/// index and the taps (`ksize` per output, unused ones zero).
struct Coeffs {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    taps: Vec<i32>,
}

fn precompute(in_size: usize, out_size: usize) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = FILTER_SUPPORT * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut taps = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C casts truncate toward zero; the clamp to 0 follows.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = bicubic(((x + xmin) as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        let row = &mut taps[xx * ksize..xx * ksize + ksize];
        for (t, &w) in row.iter_mut().zip(&k[..n]) {
            let w = if ww != 0.0 { w / ww } else { w };
            let scaled = w * f64::from(1u32 << PRECISION_BITS);
            *t = if w < 0.0 {
                (scaled - 0.5) as i32
            } else {
                (scaled + 0.5) as i32
            };
        }
        bounds.push((xmin, n));
    }
    Coeffs {
        ksize,
        bounds,
        taps,
    }
}

#[inline(always)]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// The one resampling kernel: output line `j` is `Σ taps[j][i] · line[first_j + i]`
/// over whole lines of `len` bytes, with Pillow's 32-bit fixed point (`1 << 21`
/// rounding offset, arithmetic shift, clip to 0..=255). Pillow sizes its taps
/// (22 bits) so that the sums fit in an `i32`; wrapping arithmetic is what its C
/// `int` does anyway. Runs over whole lines, so it vectorises.
#[inline(always)]
fn resample_lines_impl(
    src: &[u8],
    len: usize,
    c: &Coeffs,
    first_line: usize,
    out: &mut [u8],
    acc: &mut [i32],
) {
    let half = 1i32 << (PRECISION_BITS - 1);
    for (j, dst) in out.chunks_exact_mut(len).enumerate() {
        let (start, n) = c.bounds[j];
        let k = &c.taps[j * c.ksize..j * c.ksize + n];
        acc.fill(half);
        for (i, &w) in k.iter().enumerate() {
            let line = start + i - first_line;
            let line = &src[line * len..(line + 1) * len];
            for (a, &p) in acc.iter_mut().zip(line) {
                *a = a.wrapping_add(i32::from(p).wrapping_mul(w));
            }
        }
        for (d, &a) in dst.iter_mut().zip(acc.iter()) {
            *d = clip8(a);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn resample_lines_avx2(
    src: &[u8],
    len: usize,
    c: &Coeffs,
    first_line: usize,
    out: &mut [u8],
    acc: &mut [i32],
) {
    resample_lines_impl(src, len, c, first_line, out, acc)
}

/// [`resample_lines_impl`] compiled for AVX2 when the CPU has it (the wheel targets
/// baseline x86-64), else as is. Same integer arithmetic either way.
fn resample_lines(
    src: &[u8],
    len: usize,
    c: &Coeffs,
    first_line: usize,
    out_lines: usize,
) -> Vec<u8> {
    let mut out = vec![0u8; len * out_lines];
    let mut acc = vec![0i32; len];
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            unsafe { resample_lines_avx2(src, len, c, first_line, &mut out, &mut acc) };
            return out;
        }
    }
    resample_lines_impl(src, len, c, first_line, &mut out, &mut acc);
    out
}

/// Swap the axes of a `w × h` image of 3-byte pixels (row-major in, row-major out).
fn transpose3(src: &[u8], w: usize, h: usize) -> Vec<u8> {
    let mut out = vec![0u8; src.len()];
    const TILE: usize = 16;
    for y0 in (0..h).step_by(TILE) {
        for x0 in (0..w).step_by(TILE) {
            for y in y0..(y0 + TILE).min(h) {
                for x in x0..(x0 + TILE).min(w) {
                    let s = (y * w + x) * 3;
                    let d = (x * h + y) * 3;
                    out[d..d + 3].copy_from_slice(&src[s..s + 3]);
                }
            }
        }
    }
    out
}

/// Rows per strip of the horizontal pass: bounds its scratch memory (two transposed
/// copies of a strip) whatever the image height.
const STRIP_ROWS: usize = 32;

/// Horizontal pass: the columns of a strip of rows become lines of its transposed
/// copy, resampled like rows, then transposed back. Every output byte is the same
/// sum as Pillow's.
fn horizontal(src: &[u8], in_w: usize, rows: usize, out_w: usize, c: &Coeffs) -> Vec<u8> {
    let mut out = vec![0u8; out_w * rows * 3];
    for (strip, dst) in src
        .chunks(STRIP_ROWS * in_w * 3)
        .zip(out.chunks_mut(STRIP_ROWS * out_w * 3))
    {
        let h = strip.len() / (in_w * 3);
        let t = transpose3(strip, in_w, h);
        let resampled = resample_lines(&t, h * 3, c, 0, out_w);
        dst.copy_from_slice(&transpose3(&resampled, h, out_w));
    }
    out
}

fn vertical(src: &[u8], width: usize, out_h: usize, c: &Coeffs, first_row: usize) -> Vec<u8> {
    resample_lines(src, width * 3, c, first_row, out_h)
}

/// Whether Pillow (13) runs the vertical pass before the horizontal one for an
/// `in_w × in_h → out_w × out_h` resize: when the height shrinks by more rows than
/// twice the columns the width loses (an enlarged width counts as losing none), i.e.
/// `in_h − out_h > max(0, 2·(in_w − out_w))`. Measured against Pillow 13.0.0 bit for bit
/// (exact at the boundary from 5×10 → 2×3 up to 4000×7777 → 224×224); the rounding
/// between the passes differs by 1–3 levels otherwise. Only matters when both axes
/// change size.
fn vertical_first(in_w: usize, in_h: usize, out_w: usize, out_h: usize) -> bool {
    in_h > out_h && in_h - out_h > 2 * in_w.saturating_sub(out_w)
}

/// Resize an RGB8 image to `out_w × out_h` exactly as Pillow's
/// `Image.resize((out_w, out_h))` (BICUBIC) does.
pub fn resize_rgb8(img: &RgbImage, out_w: u32, out_h: u32) -> RgbImage {
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    let (ow, oh) = (out_w as usize, out_h as usize);
    if (in_w, in_h) == (ow, oh) {
        return img.clone();
    }
    let data = resize_raw(
        img.as_raw(),
        in_w,
        in_h,
        ow,
        oh,
        vertical_first(in_w, in_h, ow, oh),
    );
    RgbImage::from_raw(out_w, out_h, data).expect("buffer size matches dimensions")
}

/// The two passes over a `in_w × in_h` RGB8 buffer to `ow × oh`, vertical first when
/// `vert_first` (and both axes change size), with Pillow's arithmetic.
fn resize_raw(
    src: &[u8],
    in_w: usize,
    in_h: usize,
    ow: usize,
    oh: usize,
    vert_first: bool,
) -> Vec<u8> {
    let need_h = in_w != ow;
    let need_v = in_h != oh;
    let vert = precompute(in_h, oh);
    if need_h && need_v && vert_first {
        let rows = vertical(src, in_w, oh, &vert, 0);
        return horizontal(&rows, in_w, oh, ow, &precompute(in_w, ow));
    }
    // Rows of the source the vertical pass will read.
    let first_row = vert.bounds.first().map_or(0, |b| b.0);
    let last_row = vert.bounds.last().map_or(0, |b| b.0 + b.1);
    let mut data: Vec<u8>;
    let mut width = in_w;
    let mut row_offset = 0;
    if need_h {
        let horiz = precompute(in_w, ow);
        let src = &src[first_row * in_w * 3..last_row * in_w * 3];
        data = horizontal(src, in_w, last_row - first_row, ow, &horiz);
        width = ow;
        row_offset = first_row;
    } else {
        data = src.to_vec();
    }
    if need_v {
        data = vertical(&data, width, oh, &vert, row_offset);
    }
    data
}

/// How an EXIF orientation is applied here: flips of the stored image (in place),
/// then optionally a transpose (swap of the axes).
fn flips_then_transpose(o: Orientation) -> (bool, bool, bool) {
    // (flip horizontally, flip vertically, transpose)
    match o {
        Orientation::NoTransforms => (false, false, false),
        Orientation::FlipHorizontal => (true, false, false),
        Orientation::FlipVertical => (false, true, false),
        Orientation::Rotate180 => (true, true, false),
        // (x, y) → (h−1−y, x): flip vertically, then transpose.
        Orientation::Rotate90 => (false, true, true),
        // (x, y) → (y, w−1−x): flip horizontally, then transpose.
        Orientation::Rotate270 => (true, false, true),
        Orientation::Rotate90FlipH => (false, false, true),
        Orientation::Rotate270FlipH => (true, true, true),
    }
}

/// Mirror every row of a `w`-pixel-wide RGB8 buffer in place.
fn flip_h_in_place(buf: &mut [u8], w: usize) {
    for row in buf.chunks_exact_mut(w * 3) {
        let (mut i, mut j) = (0, w.saturating_sub(1));
        while i < j {
            for c in 0..3 {
                row.swap(i * 3 + c, j * 3 + c);
            }
            i += 1;
            j -= 1;
        }
    }
}

/// Reverse the order of the rows of a `w`-pixel-wide RGB8 buffer in place.
fn flip_v_in_place(buf: &mut [u8], w: usize) {
    let len = w * 3;
    let h = buf.len().checked_div(len).unwrap_or(0);
    for y in 0..h / 2 {
        let (top, bottom) = buf.split_at_mut((h - 1 - y) * len);
        top[y * len..(y + 1) * len].swap_with_slice(&mut bottom[..len]);
    }
}

/// Apply the flips of `o` to `img` in place; returns whether a transpose remains.
fn apply_flips(img: &mut RgbImage, o: Orientation) -> bool {
    let (fh, fv, transpose) = flips_then_transpose(o);
    let w = img.width() as usize;
    let buf: &mut [u8] = img;
    if fh {
        flip_h_in_place(buf, w);
    }
    if fv {
        flip_v_in_place(buf, w);
    }
    transpose
}

/// `img` turned upright by the EXIF orientation `o` (the same pixels as
/// `DynamicImage::apply_orientation`, without its pixel-by-pixel rotations).
pub fn orient(mut img: RgbImage, o: Orientation) -> RgbImage {
    if !apply_flips(&mut img, o) {
        return img;
    }
    let (w, h) = img.dimensions();
    let t = transpose3(img.as_raw(), w as usize, h as usize);
    RgbImage::from_raw(h, w, t).expect("transposed buffer matches dimensions")
}

/// `resize_rgb8(&orient(img, o), out_w, out_h)`, bit for bit, without building the
/// upright full-size image: flips are done in place, and a transpose is folded into
/// the resize (each pass of Pillow's on the upright image is the other pass on the
/// stored one, same taps, same rounding), leaving only the small output to transpose.
pub fn resize_oriented(mut img: RgbImage, o: Orientation, out_w: u32, out_h: u32) -> RgbImage {
    if !apply_flips(&mut img, o) {
        return resize_rgb8(&img, out_w, out_h);
    }
    // The upright image is `h × w`; Pillow resizes that to `out_w × out_h`.
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (ow, oh) = (out_w as usize, out_h as usize);
    if (h, w) == (ow, oh) {
        return orient(img, Orientation::Rotate90FlipH);
    }
    // Upright vertical first = stored horizontal first.
    let upright_vert_first = vertical_first(h, w, ow, oh);
    let stored = resize_raw(img.as_raw(), w, h, oh, ow, !upright_vert_first);
    drop(img);
    let data = transpose3(&stored, oh, ow);
    RgbImage::from_raw(out_w, out_h, data).expect("buffer size matches dimensions")
}

/// Integer box reduction by `fx × fy` (Pillow's `Image.reduce` semantics): each output
/// pixel is the rounded mean of its `fx × fy` block, the blocks of the last column/row
/// being cut at the border (mean of the pixels present); the output is
/// `ceil(w / fx) × ceil(h / fy)`. Not bit-identical to Pillow's (which rounds through
/// a fixed-point reciprocal); used by the `fast` resize only.
pub fn box_reduce(img: &RgbImage, fx: u32, fy: u32) -> RgbImage {
    let (fx, fy) = (fx.max(1) as usize, fy.max(1) as usize);
    let (w, h) = (img.width() as usize, img.height() as usize);
    if fx == 1 && fy == 1 {
        return img.clone();
    }
    let (ow, oh) = (w.div_ceil(fx), h.div_ceil(fy));
    let src = img.as_raw();
    let mut out = vec![0u8; ow * oh * 3];
    let mut col = vec![0u32; w * 3];
    for (oy, dst) in out.chunks_exact_mut(ow * 3).enumerate() {
        col.fill(0);
        let rows = (oy * fy..((oy + 1) * fy).min(h)).len();
        for y in oy * fy..oy * fy + rows {
            for (a, &p) in col.iter_mut().zip(&src[y * w * 3..(y + 1) * w * 3]) {
                *a += u32::from(p);
            }
        }
        for (ox, px) in dst.chunks_exact_mut(3).enumerate() {
            let (x0, x1) = (ox * fx, ((ox + 1) * fx).min(w));
            let mut sum = [0u32; 3];
            for a in col[x0 * 3..x1 * 3].chunks_exact(3) {
                sum[0] += a[0];
                sum[1] += a[1];
                sum[2] += a[2];
            }
            let n = (rows * (x1 - x0)) as u32;
            for (v, s) in px.iter_mut().zip(sum) {
                *v = ((s + n / 2) / n) as u8;
            }
        }
    }
    RgbImage::from_raw(ow as u32, oh as u32, out).expect("buffer size matches dimensions")
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn kernel_is_catmull_rom() {
        assert_eq!(bicubic(0.0), 1.0);
        assert_eq!(bicubic(1.0), 0.0);
        assert_eq!(bicubic(2.0), 0.0);
        assert!((bicubic(0.5) - 0.5625).abs() < 1e-12);
        assert!((bicubic(1.5) + 0.0625).abs() < 1e-12);
    }

    #[test]
    fn taps_sum_to_one_in_fixed_point() {
        for (i, o) in [(100, 224), (224, 100), (640, 224), (7, 3), (1, 5)] {
            let c = precompute(i, o);
            for xx in 0..o {
                let (_, n) = c.bounds[xx];
                let s: i64 = c.taps[xx * c.ksize..xx * c.ksize + n]
                    .iter()
                    .map(|&t| i64::from(t))
                    .sum();
                assert!(
                    (s - (1 << PRECISION_BITS)).abs() <= n as i64,
                    "{i}->{o} at {xx}: {s}"
                );
            }
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::from_pixel(100, 100, Rgb([10, 200, 255]));
        for (w, h) in [(224, 224), (37, 51), (1, 1), (100, 300)] {
            let out = resize_rgb8(&img, w, h);
            assert_eq!(out.dimensions(), (w, h));
            assert!(out.pixels().all(|p| p.0 == [10, 200, 255]));
        }
    }

    #[test]
    fn same_size_is_a_copy() {
        let img = RgbImage::from_fn(5, 4, |x, y| Rgb([x as u8 * 40, y as u8 * 50, 7]));
        assert_eq!(resize_rgb8(&img, 5, 4), img);
    }

    /// Pillow's loops as written in its C source (i64 accumulators, pixel by pixel,
    /// one axis then the other): the reference the vectorised passes must equal bit
    /// for bit.
    fn reference_resize(img: &RgbImage, ow: usize, oh: usize) -> Vec<u8> {
        let (iw, ih) = (img.width() as usize, img.height() as usize);
        let half = 1i64 << (PRECISION_BITS - 1);
        let clip = |a: i64| (a >> PRECISION_BITS).clamp(0, 255) as u8;
        // One pass along x (`horizontal`) or y of a `w × h` image to `n` samples.
        let pass = |src: &[u8], w: usize, h: usize, n: usize, horizontal: bool| {
            let (len, new) = if horizontal { (w, n) } else { (h, n) };
            if len == new {
                return src.to_vec();
            }
            let c = precompute(len, new);
            let (ow, oh) = if horizontal { (n, h) } else { (w, n) };
            let mut out = vec![0u8; ow * oh * 3];
            for y in 0..oh {
                for x in 0..ow {
                    let o = if horizontal { x } else { y };
                    let (min, k) = c.bounds[o];
                    for ch in 0..3 {
                        let mut a = half;
                        for i in 0..k {
                            let w_ = i64::from(c.taps[o * c.ksize + i]);
                            let (sx, sy) = if horizontal {
                                (min + i, y)
                            } else {
                                (x, min + i)
                            };
                            a += i64::from(src[(sy * w + sx) * 3 + ch]) * w_;
                        }
                        out[(y * ow + x) * 3 + ch] = clip(a);
                    }
                }
            }
            out
        };
        let src = img.as_raw();
        if vertical_first(iw, ih, ow, oh) {
            let tmp = pass(src, iw, ih, oh, false);
            pass(&tmp, iw, oh, ow, true)
        } else {
            let tmp = pass(src, iw, ih, ow, true);
            pass(&tmp, ow, ih, oh, false)
        }
    }

    #[test]
    fn pass_order_follows_pillow() {
        // (in_w, in_h, out_w, out_h, vertical first) measured with Pillow 13.0.0:
        // vertical first iff in_h − out_h > max(0, 2·(in_w − out_w)).
        for (iw, ih, ow, oh, v) in [
            (164, 168, 160, 160, false),
            (164, 169, 160, 160, true),
            (1000, 1776, 224, 224, false),
            (1000, 1777, 224, 224, true),
            (1200, 1030, 700, 30, false),
            (1200, 1031, 700, 30, true),
            (100, 161, 160, 160, true), // width enlarged: any shrinking height
            (100, 160, 224, 224, false),
            (640, 480, 224, 224, false), // landscape
            (480, 640, 224, 224, false), // portrait, height loses 416 < 2·256
            (300, 640, 224, 224, true),  // portrait, height loses 416 > 2·76
            (300, 300, 200, 100, false),
            (300, 301, 200, 100, true),
        ] {
            assert_eq!(vertical_first(iw, ih, ow, oh), v, "{iw}x{ih} -> {ow}x{oh}");
        }
    }

    #[test]
    fn vectorised_passes_equal_the_reference_loops() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for (iw, ih, ow, oh) in [
            (100, 100, 224, 224),
            (640, 480, 224, 224),
            (37, 301, 160, 160),
            (224, 50, 224, 224),
            (50, 224, 224, 224),
            (3, 2, 128, 192),
            (1000, 7, 96, 96),
            (300, 640, 224, 224),
            (164, 169, 160, 160),
            (7, 1000, 96, 96),
            (300, 302, 200, 100),
        ] {
            // noise with hard edges: exercises the clipping of over/undershoot
            let img = RgbImage::from_fn(iw, ih, |_, _| {
                let v = next();
                let edge = if v & 1 == 0 { 0 } else { 255 };
                Rgb([edge, (v >> 8) as u8, (v >> 16) as u8])
            });
            let got = resize_rgb8(&img, ow, oh);
            let want = reference_resize(&img, ow as usize, oh as usize);
            assert!(got.as_raw() == &want, "{iw}x{ih} -> {ow}x{oh}");
        }
    }

    #[test]
    fn transpose_round_trips() {
        let img = RgbImage::from_fn(37, 19, |x, y| Rgb([x as u8, y as u8, (x * y) as u8]));
        let t = transpose3(img.as_raw(), 37, 19);
        assert_eq!(&t[(5 * 19 + 3) * 3..(5 * 19 + 3) * 3 + 3], &[5, 3, 15]);
        assert_eq!(transpose3(&t, 19, 37), img.as_raw().clone());
    }

    #[test]
    fn extreme_aspect_ratios_resize() {
        let wide = RgbImage::from_fn(1000, 1, |x, _| Rgb([(x % 256) as u8, 0, 0]));
        let out = resize_rgb8(&wide, 16, 16);
        assert_eq!(out.dimensions(), (16, 16));
        // Every output row is the same (the source has a single row).
        let first: Vec<u8> = out.as_raw()[..48].to_vec();
        assert!(out.as_raw().chunks(48).all(|r| r == first.as_slice()));
    }

    fn noise(w: u32, h: u32, seed: u64) -> RgbImage {
        let mut state = seed | 1;
        RgbImage::from_fn(w, h, |_, _| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            Rgb([state as u8, (state >> 8) as u8, (state >> 16) as u8])
        })
    }

    const ORIENTATIONS: [Orientation; 8] = [
        Orientation::NoTransforms,
        Orientation::Rotate90,
        Orientation::Rotate180,
        Orientation::Rotate270,
        Orientation::FlipHorizontal,
        Orientation::FlipVertical,
        Orientation::Rotate90FlipH,
        Orientation::Rotate270FlipH,
    ];

    #[test]
    fn orient_equals_the_image_crate() {
        for (w, h) in [(1, 1), (2, 1), (7, 5), (33, 18), (16, 16)] {
            let img = noise(w, h, u64::from(w * 31 + h));
            for o in ORIENTATIONS {
                let mut want = image::DynamicImage::ImageRgb8(img.clone());
                want.apply_orientation(o);
                assert_eq!(orient(img.clone(), o), want.into_rgb8(), "{w}x{h} {o:?}");
            }
        }
    }

    #[test]
    fn resize_oriented_equals_orient_then_resize() {
        for (w, h, ow, oh) in [
            (640, 480, 224, 224),
            (480, 640, 224, 224),
            (1000, 301, 96, 96),
            (301, 1000, 96, 96),
            (300, 169, 160, 160),
            (169, 300, 160, 160),
            (224, 50, 224, 224),
            (50, 224, 224, 224),
            (224, 224, 224, 224),
            (30, 20, 64, 48),
            (300, 302, 200, 100),
            (302, 300, 200, 100),
            (5, 10, 10, 5),
        ] {
            let img = noise(w, h, u64::from(w * 7 + h));
            for o in ORIENTATIONS {
                let want = resize_rgb8(&orient(img.clone(), o), ow, oh);
                let got = resize_oriented(img.clone(), o, ow, oh);
                assert!(got == want, "{w}x{h} -> {ow}x{oh} {o:?}");
            }
        }
    }

    #[test]
    fn box_reduce_averages_blocks_cut_at_the_border() {
        let img = RgbImage::from_fn(5, 3, |x, y| Rgb([(x * 10) as u8, (y * 100) as u8, 7]));
        let out = box_reduce(&img, 2, 2);
        assert_eq!(out.dimensions(), (3, 2));
        assert_eq!(out.get_pixel(0, 0).0, [5, 50, 7]);
        assert_eq!(out.get_pixel(2, 0).0, [40, 50, 7]); // one column left
        assert_eq!(out.get_pixel(1, 1).0, [25, 200, 7]); // one row left
        assert_eq!(out.get_pixel(2, 1).0, [40, 200, 7]);
        assert_eq!(box_reduce(&img, 1, 1), img);
        let flat = RgbImage::from_pixel(9, 9, Rgb([3, 200, 255]));
        assert!(box_reduce(&flat, 4, 3)
            .pixels()
            .all(|p| p.0 == [3, 200, 255]));
    }
}

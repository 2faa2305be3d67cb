//! Bicubic resize of RGB8 images, reproducing Pillow's `Image.resize` (default
//! `BICUBIC` filter, `a = -0.5`) to the bit.
//!
//! Pillow resamples separably — horizontal pass first, rounding to 8 bits in between —
//! with coefficients normalised to sum to one and quantised to 22-bit fixed point.
//! Doing exactly the same here makes our tensors identical to the classic
//! `PIL.Image.resize` + Keras pipeline for the same decoded pixels, which is what the
//! parity with existing features rests on. (SIMD resizers such as `fast_image_resize`
//! use other fixed-point rounding and differ by ±1 on some pixels.)

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

#[inline]
fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

fn horizontal(src: &[u8], in_w: usize, rows: usize, out_w: usize, c: &Coeffs) -> Vec<u8> {
    let mut out = vec![0u8; out_w * rows * 3];
    let half = 1i64 << (PRECISION_BITS - 1);
    for y in 0..rows {
        let line = &src[y * in_w * 3..(y + 1) * in_w * 3];
        let dst = &mut out[y * out_w * 3..(y + 1) * out_w * 3];
        for (xx, px) in dst.chunks_exact_mut(3).enumerate() {
            let (xmin, n) = c.bounds[xx];
            let k = &c.taps[xx * c.ksize..xx * c.ksize + n];
            let mut acc = [half; 3];
            for (i, &w) in k.iter().enumerate() {
                let p = &line[(xmin + i) * 3..(xmin + i) * 3 + 3];
                let w = i64::from(w);
                acc[0] += i64::from(p[0]) * w;
                acc[1] += i64::from(p[1]) * w;
                acc[2] += i64::from(p[2]) * w;
            }
            px[0] = clip8(acc[0]);
            px[1] = clip8(acc[1]);
            px[2] = clip8(acc[2]);
        }
    }
    out
}

fn vertical(src: &[u8], width: usize, out_h: usize, c: &Coeffs, first_row: usize) -> Vec<u8> {
    let stride = width * 3;
    let mut out = vec![0u8; stride * out_h];
    let half = 1i64 << (PRECISION_BITS - 1);
    let mut acc = vec![0i64; stride];
    for (yy, dst) in out.chunks_exact_mut(stride).enumerate() {
        let (ymin, n) = c.bounds[yy];
        let k = &c.taps[yy * c.ksize..yy * c.ksize + n];
        acc.fill(half);
        for (i, &w) in k.iter().enumerate() {
            let row = ymin + i - first_row;
            let line = &src[row * stride..(row + 1) * stride];
            let w = i64::from(w);
            for (a, &p) in acc.iter_mut().zip(line) {
                *a += i64::from(p) * w;
            }
        }
        for (d, &a) in dst.iter_mut().zip(&acc) {
            *d = clip8(a);
        }
    }
    out
}

/// Resize an RGB8 image to `out_w × out_h` exactly as Pillow's
/// `Image.resize((out_w, out_h))` (BICUBIC) does.
pub fn resize_rgb8(img: &RgbImage, out_w: u32, out_h: u32) -> RgbImage {
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    let (ow, oh) = (out_w as usize, out_h as usize);
    if (in_w, in_h) == (ow, oh) {
        return img.clone();
    }
    let need_h = in_w != ow;
    let need_v = in_h != oh;
    let vert = precompute(in_h, oh);
    // Rows of the source the vertical pass will read.
    let first_row = vert.bounds.first().map_or(0, |b| b.0);
    let last_row = vert.bounds.last().map_or(0, |b| b.0 + b.1);
    let mut data: Vec<u8>;
    let mut width = in_w;
    let mut row_offset = 0;
    if need_h {
        let horiz = precompute(in_w, ow);
        let src = &img.as_raw()[first_row * in_w * 3..last_row * in_w * 3];
        data = horizontal(src, in_w, last_row - first_row, ow, &horiz);
        width = ow;
        row_offset = first_row;
    } else {
        data = img.as_raw().clone();
    }
    if need_v {
        data = vertical(&data, width, oh, &vert, row_offset);
    }
    RgbImage::from_raw(out_w, out_h, data).expect("buffer size matches dimensions")
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

    #[test]
    fn extreme_aspect_ratios_resize() {
        let wide = RgbImage::from_fn(1000, 1, |x, _| Rgb([(x % 256) as u8, 0, 0]));
        let out = resize_rgb8(&wide, 16, 16);
        assert_eq!(out.dimensions(), (16, 16));
        // Every output row is the same (the source has a single row).
        let first: Vec<u8> = out.as_raw()[..48].to_vec();
        assert!(out.as_raw().chunks(48).all(|r| r == first.as_slice()));
    }
}

//! Decoding an image someone uploaded: any format the `image` crate reads, with
//! limits against decompression bombs, EXIF orientation applied, transparency laid on
//! white, then converted to the model's input like the image-folder reader does.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageReader, Limits};

use super::folder::{channels_first, fit};
use crate::error::Error;

/// Why an upload could not become a model input.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Not an image format we read (HTTP 415).
    #[error("unsupported image format: {0}")]
    Unsupported(String),
    /// A known format that does not decode, or is too large once decoded (HTTP 422).
    #[error("cannot decode the image: {0}")]
    Corrupt(String),
}

impl From<UploadError> for Error {
    fn from(e: UploadError) -> Self {
        Error::Invalid(e.to_string())
    }
}

/// Largest decoded side in pixels (default of [`UploadLimits::max_side`]).
pub const MAX_SIDE: u32 = 8192;
/// Largest decoded size in bytes (default of [`UploadLimits::max_decoded`]).
pub const MAX_DECODED: u64 = 64 << 20;

/// What one upload may cost once decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadLimits {
    /// Largest side in pixels.
    pub max_side: u32,
    /// Largest decoded pixel buffer in bytes, as the decoder declares it from the header:
    /// a larger image is refused before anything is allocated (a 500 KB PNG can declare
    /// 512 MiB).
    pub max_decoded: u64,
}

impl Default for UploadLimits {
    fn default() -> Self {
        Self {
            max_side: MAX_SIDE,
            max_decoded: MAX_DECODED,
        }
    }
}

/// Decodes `bytes` to `[C, H, W]` pixels (0..=255) for a model taking `input`;
/// `invert` turns dark-on-light photos into Fashion-MNIST's light-on-black.
///
/// Memory: one decoded buffer (at most `limits.max_decoded`) and buffers of the output's
/// size. Transparency is laid on white in place, and the EXIF orientation is applied
/// to the small fitted image (fitting a rotated image equals rotating the image fitted
/// with width and height swapped), so no full-size copy is made.
pub fn decode_upload(
    bytes: &[u8],
    input: [usize; 3],
    invert: bool,
    limits: &UploadLimits,
) -> Result<Vec<u8>, UploadError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| UploadError::Corrupt(e.to_string()))?;
    if reader.format().is_none() {
        return Err(UploadError::Unsupported(
            "not PNG, JPEG, WebP, GIF or BMP data".into(),
        ));
    }
    let mut decoder_limits = Limits::default();
    decoder_limits.max_image_width = Some(limits.max_side);
    decoder_limits.max_image_height = Some(limits.max_side);
    decoder_limits.max_alloc = Some(limits.max_decoded);
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| UploadError::Corrupt(e.to_string()))?;
    decoder
        .set_limits(decoder_limits)
        .map_err(|e| UploadError::Corrupt(e.to_string()))?;
    let declared = decoder.total_bytes();
    if declared > limits.max_decoded {
        let (w, h) = decoder.dimensions();
        return Err(UploadError::Corrupt(format!(
            "a {w}×{h} {:?} image decodes to {} MiB, above the limit of {} MiB",
            decoder.color_type(),
            declared.div_ceil(1 << 20),
            limits.max_decoded >> 20
        )));
    }
    let orientation = decoder.orientation().ok();
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| match e {
        image::ImageError::Unsupported(u) => UploadError::Unsupported(u.to_string()),
        other => UploadError::Corrupt(other.to_string()),
    })?;
    flatten_on_white(&mut img);
    let [c, h, w] = input;
    let turned = orientation.is_some_and(swaps_axes);
    let (fw, fh) = if turned { (h, w) } else { (w, h) };
    let mut small = fit(&img, fw, fh).map_err(|e| UploadError::Corrupt(e.to_string()))?;
    drop(img);
    if let Some(o) = orientation {
        small.apply_orientation(o);
    }
    let mut px = channels_first(&small, c).map_err(|e| UploadError::Corrupt(e.to_string()))?;
    if invert {
        px.iter_mut().for_each(|p| *p = 255 - *p);
    }
    Ok(px)
}

/// Whether applying `o` exchanges width and height.
fn swaps_axes(o: Orientation) -> bool {
    matches!(
        o,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

/// Composites a transparent image over white, in place (alpha becomes opaque).
fn flatten_on_white(img: &mut DynamicImage) {
    fn mix8(c: &mut u8, a: u8) {
        let a = a as u32;
        *c = ((*c as u32 * a + 255 * (255 - a) + 127) / 255) as u8;
    }
    fn mix16(c: &mut u16, a: u16) {
        let a = a as u64;
        *c = ((*c as u64 * a + 65535 * (65535 - a) + 32767) / 65535) as u16;
    }
    match img {
        DynamicImage::ImageLumaA8(b) => b.pixels_mut().for_each(|p| {
            let [l, a] = &mut p.0;
            mix8(l, *a);
            *a = u8::MAX;
        }),
        DynamicImage::ImageRgba8(b) => b.pixels_mut().for_each(|p| {
            let a = p.0[3];
            p.0[..3].iter_mut().for_each(|c| mix8(c, a));
            p.0[3] = u8::MAX;
        }),
        DynamicImage::ImageLumaA16(b) => b.pixels_mut().for_each(|p| {
            let [l, a] = &mut p.0;
            mix16(l, *a);
            *a = u16::MAX;
        }),
        DynamicImage::ImageRgba16(b) => b.pixels_mut().for_each(|p| {
            let a = p.0[3];
            p.0[..3].iter_mut().for_each(|c| mix16(c, a));
            p.0[3] = u16::MAX;
        }),
        DynamicImage::ImageRgba32F(b) => b.pixels_mut().for_each(|p| {
            let a = p.0[3].clamp(0.0, 1.0);
            p.0[..3].iter_mut().for_each(|c| *c = *c * a + (1.0 - a));
            p.0[3] = 1.0;
        }),
        _ => {}
    }
}

/// `[C, H, W]` pixels in [0,1] as a PNG `data:` URL (what an `<img>` shows directly).
pub fn png_data_url(pixels: &[f32], shape: [usize; 3]) -> crate::error::Result<String> {
    use base64::Engine;
    let png = encode_png(pixels, shape)?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(png);
    Ok(format!("data:image/png;base64,{b64}"))
}

/// PNG bytes of `[C, H, W]` pixels in [0,1] (grey for one channel, RGB for three).
pub fn encode_png(pixels: &[f32], [c, h, w]: [usize; 3]) -> crate::error::Result<Vec<u8>> {
    let q = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    let img = match c {
        1 => DynamicImage::ImageLuma8(
            image::GrayImage::from_raw(w as u32, h as u32, pixels.iter().map(|&v| q(v)).collect())
                .ok_or_else(|| Error::Invalid("pixel count does not match the shape".into()))?,
        ),
        3 => {
            let n = h * w;
            if pixels.len() != 3 * n {
                return Err(Error::Invalid(
                    "pixel count does not match the shape".into(),
                ));
            }
            let raw = (0..n)
                .flat_map(|i| [q(pixels[i]), q(pixels[n + i]), q(pixels[2 * n + i])])
                .collect();
            DynamicImage::ImageRgb8(
                image::RgbImage::from_raw(w as u32, h as u32, raw).expect("sized"),
            )
        }
        other => return Err(Error::Invalid(format!("cannot draw {other} channels"))),
    };
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| Error::Invalid(format!("PNG encoding failed: {e}")))?;
    Ok(out.into_inner())
}

/// Whether a decoded image (`C·H·W` bytes, as [`decode_upload`] returns) has a light
/// border (mean above mid-grey): a photo of a dark object on a light background, which a
/// model trained on light-on-black images such as Fashion-MNIST must see inverted.
pub fn light_border(px: &[u8], shape: [usize; 3]) -> bool {
    let [c, h, w] = shape;
    let (mut sum, mut n) = (0u64, 0u64);
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                if y == 0 || x == 0 || y + 1 == h || x + 1 == w {
                    sum += px[(ch * h + y) * w + x] as u64;
                    n += 1;
                }
            }
        }
    }
    n > 0 && sum > 127 * n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(img: DynamicImage) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn decodes_resizes_and_inverts() {
        let img =
            DynamicImage::ImageLuma8(image::GrayImage::from_pixel(56, 56, image::Luma([200])));
        let px = decode_upload(
            &png(img.clone()),
            [1, 28, 28],
            false,
            &UploadLimits::default(),
        )
        .unwrap();
        assert_eq!(px.len(), 784);
        assert!(px.iter().all(|&p| p == 200));
        let inv = decode_upload(&png(img), [1, 28, 28], true, &UploadLimits::default()).unwrap();
        assert!(inv.iter().all(|&p| p == 55));
        let rgb = decode_upload(
            &png(DynamicImage::ImageRgb8(image::RgbImage::new(10, 20))),
            [3, 8, 8],
            false,
            &UploadLimits::default(),
        )
        .unwrap();
        assert_eq!(rgb.len(), 3 * 64);
    }

    #[test]
    fn a_light_border_asks_for_inversion() {
        // A dark square on white (a photo of a dark object) and its inverse.
        let mut px = vec![255u8; 28 * 28];
        for y in 4..24 {
            for x in 4..24 {
                px[y * 28 + x] = 10;
            }
        }
        assert!(light_border(&px, [1, 28, 28]));
        // Its inverse, a light object on black (Fashion-MNIST's look): the middle, light
        // as it is, does not count.
        let inverse: Vec<u8> = px.iter().map(|p| 255 - p).collect();
        assert!(!light_border(&inverse, [1, 28, 28]));
        assert!(!light_border(&[], [1, 0, 0]));
    }

    #[test]
    fn transparency_becomes_white() {
        let img = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
            4,
            4,
            image::Rgba([0, 0, 0, 0]),
        ));
        let px = decode_upload(&png(img), [1, 4, 4], false, &UploadLimits::default()).unwrap();
        assert!(px.iter().all(|&p| p == 255));
    }

    #[test]
    fn refuses_non_images_truncated_data_and_bombs() {
        assert!(matches!(
            decode_upload(
                b"hello, this is text",
                [1, 28, 28],
                false,
                &UploadLimits::default()
            ),
            Err(UploadError::Unsupported(_))
        ));
        let full = png(DynamicImage::ImageLuma8(image::GrayImage::new(64, 64)));
        assert!(matches!(
            decode_upload(
                &full[..full.len() / 2],
                [1, 28, 28],
                false,
                &UploadLimits::default()
            ),
            Err(UploadError::Corrupt(_))
        ));
        // A valid header claiming 100000 x 100000 pixels.
        let mut bomb = full.clone();
        bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        assert!(decode_upload(&bomb, [1, 28, 28], false, &UploadLimits::default()).is_err());
    }

    #[test]
    fn refuses_above_the_decoded_size_limit() {
        // 600 × 600 RGB decodes to 1.03 MiB: refused under a 1 MiB budget, read under 2.
        let img = DynamicImage::ImageRgb8(image::RgbImage::new(600, 600));
        let tight = |mib: u64| UploadLimits {
            max_decoded: mib << 20,
            ..UploadLimits::default()
        };
        let err = decode_upload(&png(img.clone()), [1, 28, 28], false, &tight(1)).unwrap_err();
        assert!(
            err.to_string().contains("2 MiB, above the limit of 1 MiB"),
            "{err}"
        );
        assert!(decode_upload(&png(img), [1, 28, 28], false, &tight(2)).is_ok());
    }

    #[test]
    fn exif_orientation_is_applied_as_if_to_the_full_image() {
        // 60 × 30, a horizontal ramp with a bright square near the left edge.
        let img = image::GrayImage::from_fn(60, 30, |x, y| {
            let square = (4..14).contains(&x) && (10..20).contains(&y);
            image::Luma([if square { 255 } else { (x * 3) as u8 }])
        });
        // EXIF orientation 6: shown rotated 90° clockwise.
        let exif = [
            b'I', b'I', 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0,
            0,
        ];
        let mut bytes = Cursor::new(Vec::new());
        let mut enc = image::codecs::png::PngEncoder::new(&mut bytes);
        image::ImageEncoder::set_exif_metadata(&mut enc, exif.to_vec()).unwrap();
        image::ImageEncoder::write_image(enc, img.as_raw(), 60, 30, image::ExtendedColorType::L8)
            .unwrap();
        let got = decode_upload(
            bytes.get_ref(),
            [1, 20, 10],
            false,
            &UploadLimits::default(),
        )
        .unwrap();
        let turned = DynamicImage::ImageLuma8(image::imageops::rotate90(&img));
        let want = super::super::folder::to_input(&turned, [1, 20, 10]).unwrap();
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert!(worst <= 1, "largest difference {worst}");
    }

    /// Fuzzing, bounded: 3000 mutations (flipped bytes, cut tails, spliced chunks) of
    /// valid PNG, JPEG, GIF, BMP and WebP files never panic and always answer `Ok`,
    /// `Unsupported` or `Corrupt`.
    #[test]
    fn mutated_images_never_panic() {
        use crate::rng::Rng;
        let seeds: Vec<Vec<u8>> = [
            image::ImageFormat::Png,
            image::ImageFormat::Jpeg,
            image::ImageFormat::Gif,
            image::ImageFormat::Bmp,
            image::ImageFormat::WebP,
        ]
        .into_iter()
        .map(|f| {
            let img = DynamicImage::ImageRgb8(image::RgbImage::from_fn(19, 13, |x, y| {
                image::Rgb([(x * 13) as u8, (y * 19) as u8, ((x ^ y) * 7) as u8])
            }));
            let mut out = Cursor::new(Vec::new());
            img.write_to(&mut out, f).unwrap();
            out.into_inner()
        })
        .collect();
        let mut rng = Rng::new(7);
        let limits = UploadLimits {
            max_decoded: 1 << 20,
            ..UploadLimits::default()
        };
        for case in 0..3000 {
            let mut bytes = seeds[case % seeds.len()].clone();
            for _ in 0..1 + rng.below(8) {
                let n = bytes.len();
                match rng.below(4) {
                    0 => bytes[rng.below(n)] ^= 1 << rng.below(8),
                    1 => bytes[rng.below(n)] = rng.below(256) as u8,
                    2 => bytes.truncate(1 + rng.below(n)),
                    _ => {
                        let (a, b) = (rng.below(n), rng.below(n));
                        let piece = bytes[a.min(b)..a.max(b)].to_vec();
                        let at = rng.below(n);
                        bytes.splice(at..at, piece);
                    }
                }
            }
            let shape = [1 + 2 * rng.below(2), 1 + rng.below(40), 1 + rng.below(40)];
            let outcome =
                std::panic::catch_unwind(|| decode_upload(&bytes, shape, case % 3 == 0, &limits));
            match outcome {
                Ok(Ok(px)) => assert_eq!(px.len(), shape.iter().product::<usize>()),
                Ok(Err(UploadError::Unsupported(_) | UploadError::Corrupt(_))) => {}
                Err(_) => panic!("case {case} panicked on {} bytes", bytes.len()),
            }
        }
    }

    #[test]
    fn png_round_trip() {
        let px: Vec<f32> = (0..12).map(|i| i as f32 / 11.0).collect();
        let bytes = encode_png(&px, [3, 2, 2]).unwrap();
        let back = decode_upload(&bytes, [3, 2, 2], false, &UploadLimits::default()).unwrap();
        for (a, b) in px.iter().zip(back) {
            assert!((a * 255.0 - b as f32).abs() <= 1.0);
        }
    }
}

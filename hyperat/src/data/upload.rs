//! Decoding an image someone uploaded: any format the `image` crate reads, with
//! limits against decompression bombs, EXIF orientation applied, transparency laid on
//! white, then converted to the model's input like the image-folder reader does.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageReader, Limits, Rgba, RgbaImage};

use super::folder::to_input;
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

/// Largest decoded side in pixels.
pub const MAX_SIDE: u32 = 8192;
/// Largest decoder allocation in bytes.
pub const MAX_ALLOC: u64 = 256 << 20;

/// Decodes `bytes` to `[C, H, W]` pixels (0..=255) for a model taking `input`;
/// `invert` turns dark-on-light photos into Fashion-MNIST's light-on-black.
pub fn decode_upload(
    bytes: &[u8],
    input: [usize; 3],
    invert: bool,
) -> Result<Vec<u8>, UploadError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| UploadError::Corrupt(e.to_string()))?;
    if reader.format().is_none() {
        return Err(UploadError::Unsupported(
            "not PNG, JPEG, WebP, GIF or BMP data".into(),
        ));
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| UploadError::Corrupt(e.to_string()))?;
    decoder
        .set_limits(limits)
        .map_err(|e| UploadError::Corrupt(e.to_string()))?;
    let orientation = decoder.orientation().ok();
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| match e {
        image::ImageError::Unsupported(u) => UploadError::Unsupported(u.to_string()),
        other => UploadError::Corrupt(other.to_string()),
    })?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    if img.color().has_alpha() {
        img = on_white(&img.to_rgba8());
    }
    let mut px = to_input(&img, input).map_err(|e| UploadError::Corrupt(e.to_string()))?;
    if invert {
        px.iter_mut().for_each(|p| *p = 255 - *p);
    }
    Ok(px)
}

/// Composites a transparent image over white.
fn on_white(rgba: &RgbaImage) -> DynamicImage {
    let mut out = rgba.clone();
    for p in out.pixels_mut() {
        let a = p.0[3] as u32;
        let mix = |c: u8| ((c as u32 * a + 255 * (255 - a) + 127) / 255) as u8;
        *p = Rgba([mix(p.0[0]), mix(p.0[1]), mix(p.0[2]), 255]);
    }
    DynamicImage::ImageRgb8(DynamicImage::ImageRgba8(out).to_rgb8())
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
        let px = decode_upload(&png(img.clone()), [1, 28, 28], false).unwrap();
        assert_eq!(px.len(), 784);
        assert!(px.iter().all(|&p| p == 200));
        let inv = decode_upload(&png(img), [1, 28, 28], true).unwrap();
        assert!(inv.iter().all(|&p| p == 55));
        let rgb = decode_upload(
            &png(DynamicImage::ImageRgb8(image::RgbImage::new(10, 20))),
            [3, 8, 8],
            false,
        )
        .unwrap();
        assert_eq!(rgb.len(), 3 * 64);
    }

    #[test]
    fn transparency_becomes_white() {
        let img = DynamicImage::ImageRgba8(RgbaImage::from_pixel(4, 4, Rgba([0, 0, 0, 0])));
        let px = decode_upload(&png(img), [1, 4, 4], false).unwrap();
        assert!(px.iter().all(|&p| p == 255));
    }

    #[test]
    fn refuses_non_images_truncated_data_and_bombs() {
        assert!(matches!(
            decode_upload(b"hello, this is text", [1, 28, 28], false),
            Err(UploadError::Unsupported(_))
        ));
        let full = png(DynamicImage::ImageLuma8(image::GrayImage::new(64, 64)));
        assert!(matches!(
            decode_upload(&full[..full.len() / 2], [1, 28, 28], false),
            Err(UploadError::Corrupt(_))
        ));
        // A valid header claiming 100000 x 100000 pixels.
        let mut bomb = full.clone();
        bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        assert!(decode_upload(&bomb, [1, 28, 28], false).is_err());
    }

    #[test]
    fn png_round_trip() {
        let px: Vec<f32> = (0..12).map(|i| i as f32 / 11.0).collect();
        let bytes = encode_png(&px, [3, 2, 2]).unwrap();
        let back = decode_upload(&bytes, [3, 2, 2], false).unwrap();
        for (a, b) in px.iter().zip(back) {
            assert!((a * 255.0 - b as f32).abs() <= 1.0);
        }
    }
}

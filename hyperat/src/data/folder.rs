//! Image folders: `ROOT/<class>/<image>` (or `ROOT/{train,test}/<class>/<image>`).
//!
//! Classes are the sorted sub-folder names. Each image is decoded by the `image` crate,
//! converted to the model's channels, resized so its shorter side fits and centre-
//! cropped to the model's input.

use std::path::Path;

use image::{DynamicImage, imageops::FilterType};

use super::{Dataset, Split};
use crate::error::{Error, Result};

/// Converts a decoded image to `[C, H, W]` bytes: grey or RGB, resized (shorter side to
/// the target, Catmull–Rom) and centre-cropped.
pub fn to_input(img: &DynamicImage, [c, h, w]: [usize; 3]) -> Result<Vec<u8>> {
    channels_first(&fit(img, w, h)?, c)
}

/// Scales `img` to cover `w × h` and crops the centre (the shorter side fits).
pub(crate) fn fit(img: &DynamicImage, w: usize, h: usize) -> Result<DynamicImage> {
    let (iw, ih) = (img.width() as f64, img.height() as f64);
    if iw == 0.0 || ih == 0.0 {
        return Err(Error::Invalid("empty image".into()));
    }
    let s = (w as f64 / iw).max(h as f64 / ih);
    let (rw, rh) = (
        ((iw * s).round() as u32).max(w as u32),
        ((ih * s).round() as u32).max(h as u32),
    );
    let resized = img.resize_exact(rw, rh, FilterType::CatmullRom);
    let (x0, y0) = ((rw - w as u32) / 2, (rh - h as u32) / 2);
    Ok(resized.crop_imm(x0, y0, w as u32, h as u32))
}

/// `c` channels (grey or RGB) of `img`, channel-major.
pub(crate) fn channels_first(img: &DynamicImage, c: usize) -> Result<Vec<u8>> {
    let (h, w) = (img.height() as usize, img.width() as usize);
    match c {
        1 => Ok(img.to_luma8().into_raw()),
        3 => {
            let rgb = img.to_rgb8();
            let mut out = vec![0u8; 3 * h * w];
            for (i, p) in rgb.pixels().enumerate() {
                for ch in 0..3 {
                    out[ch * h * w + i] = p.0[ch];
                }
            }
            Ok(out)
        }
        other => Err(Error::Invalid(format!(
            "{other} input channels are not supported for images"
        ))),
    }
}

/// Loads an image folder for a model taking `input` (`[C, H, W]`).
pub fn load_folder(root: &Path, split: Split, input: [usize; 3]) -> Result<Dataset> {
    let split_dir = root.join(split.name());
    let dir = if split_dir.is_dir() {
        split_dir
    } else {
        root.to_path_buf()
    };
    let mut classes: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| Error::io(&dir, e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    classes.sort();
    if classes.is_empty() {
        return Err(Error::Data(format!(
            "{}: no class sub-folders",
            dir.display()
        )));
    }
    let mut ds = Dataset {
        name: format!("folder:{}", root.display()),
        shape: input,
        pixels: vec![],
        labels: vec![],
        classes: classes.clone(),
    };
    for (label, class) in classes.iter().enumerate() {
        let cdir = dir.join(class);
        let mut files: Vec<_> = std::fs::read_dir(&cdir)
            .map_err(|e| Error::io(&cdir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for f in files {
            let img = image::open(&f)
                .map_err(|e| Error::Data(format!("{}: cannot decode image: {e}", f.display())))?;
            ds.pixels.extend(to_input(&img, input)?);
            ds.labels.push(label as u32);
        }
    }
    Ok(ds)
}

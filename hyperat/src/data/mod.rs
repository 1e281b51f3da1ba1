//! Datasets as 8-bit images in memory, converted to [0,1] f32 batches on demand.
//!
//! Sources: Fashion-MNIST (idx-ubyte, optionally gzipped) under
//! `/usr/share/datasets/fashion-mnist` (Debian's `dataset-fashion-mnist`), CIFAR-10/100
//! in their binary formats, and image folders (one sub-folder per class). The
//! `HYPERAT_DATA` environment variable replaces `/usr/share/datasets` as the root.
//! The test split is read in file order; training batches are shuffled from a seed.

mod augment;
mod cifar;
mod folder;
mod idx;
mod upload;

use std::path::{Path, PathBuf};

use burn::prelude::*;

use crate::error::{Error, Result};
use crate::rng::Rng;

pub use augment::Augment;
pub use cifar::{load_cifar10, load_cifar100};
pub use folder::{load_folder, to_input};
pub use idx::{load_fashion_mnist, read_idx};
pub use upload::{
    MAX_DECODED, MAX_SIDE, UploadError, UploadLimits, decode_upload, encode_png, light_border,
    png_data_url,
};

/// Fashion-MNIST's class names, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Which part of a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// Training images.
    Train,
    /// Test images.
    Test,
}

impl std::str::FromStr for Split {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "train" => Ok(Split::Train),
            "test" => Ok(Split::Test),
            other => Err(Error::Invalid(format!(
                "unknown split `{other}` (train, test)"
            ))),
        }
    }
}

impl Split {
    /// `train` or `test`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// Labelled 8-bit images, `[N, C, H, W]` in C order.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Where it came from (`fashion-mnist`, `cifar10`, `folder:...`).
    pub name: String,
    /// `[C, H, W]`.
    pub shape: [usize; 3],
    /// Pixels, `N·C·H·W` bytes.
    pub pixels: Vec<u8>,
    /// Labels, one per image.
    pub labels: Vec<u32>,
    /// Class names, indexed by label.
    pub classes: Vec<String>,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per image.
    pub fn image_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Keeps the first `n` images (file order).
    pub fn truncate(&mut self, n: usize) {
        if n < self.len() {
            self.labels.truncate(n);
            self.pixels.truncate(n * self.image_len());
        }
    }

    /// Splits off the last `n` images (e.g. a held-out validation part).
    pub fn split_off(&mut self, n: usize) -> Dataset {
        let n = n.min(self.len());
        let at = self.len() - n;
        Dataset {
            name: format!("{}[{at}..]", self.name),
            shape: self.shape,
            pixels: self.pixels.split_off(at * self.image_len()),
            labels: self.labels.split_off(at),
            classes: self.classes.clone(),
        }
    }

    /// Splits off the hold-out: the last `n` training images, which `hyperat tune --holdout`
    /// keeps out of training (the adaptive merge and `eval --split holdout` use them).
    pub fn split_holdout(&mut self, n: usize) -> Result<Dataset> {
        if n >= self.len() {
            return Err(Error::Invalid(format!(
                "hold-out of {n} leaves none of the {} training images",
                self.len()
            )));
        }
        Ok(self.split_off(n))
    }

    /// Image `i` as [0,1] floats.
    pub fn image(&self, i: usize) -> Vec<f32> {
        let n = self.image_len();
        self.pixels[i * n..(i + 1) * n]
            .iter()
            .map(|&p| p as f32 / 255.0)
            .collect()
    }

    /// A batch of the given indices on `device`: images `[b, C, H, W]` in [0,1], labels `[b]`.
    pub fn batch<B: Backend>(
        &self,
        idx: &[usize],
        device: &B::Device,
    ) -> (Tensor<B, 4>, Tensor<B, 1, Int>) {
        let n = self.image_len();
        let mut x = Vec::with_capacity(idx.len() * n);
        for &i in idx {
            x.extend(
                self.pixels[i * n..(i + 1) * n]
                    .iter()
                    .map(|&p| p as f32 / 255.0),
            );
        }
        let [c, h, w] = self.shape;
        let labels: Vec<i64> = idx.iter().map(|&i| self.labels[i] as i64).collect();
        (
            Tensor::from_data(TensorData::new(x, [idx.len(), c, h, w]), device),
            Tensor::from_data(TensorData::new(labels, [idx.len()]), device),
        )
    }

    /// Index batches in file order (the last one may be short).
    pub fn ordered_batches(&self, batch: usize) -> Vec<Vec<usize>> {
        (0..self.len())
            .collect::<Vec<_>>()
            .chunks(batch.max(1))
            .map(<[usize]>::to_vec)
            .collect()
    }

    /// Index batches of one epoch, shuffled by `rng`; the short remainder is dropped.
    pub fn shuffled_batches(&self, batch: usize, rng: &mut Rng) -> Vec<Vec<usize>> {
        let mut idx: Vec<usize> = (0..self.len()).collect();
        rng.shuffle(&mut idx);
        idx.chunks_exact(batch.max(1))
            .map(<[usize]>::to_vec)
            .collect()
    }

    /// Per-channel mean and std of the pixels in [0,1].
    pub fn mean_std(&self) -> (Vec<f32>, Vec<f32>) {
        let [c, h, w] = self.shape;
        let plane = h * w;
        let mut sum = vec![0f64; c];
        let mut sq = vec![0f64; c];
        for img in self.pixels.chunks_exact(c * plane) {
            for ch in 0..c {
                for &p in &img[ch * plane..(ch + 1) * plane] {
                    let v = p as f64 / 255.0;
                    sum[ch] += v;
                    sq[ch] += v * v;
                }
            }
        }
        let n = (self.len() * plane).max(1) as f64;
        let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
        let std = sq
            .iter()
            .zip(&sum)
            .map(|(q, s)| ((q / n - (s / n).powi(2)).max(0.0).sqrt()) as f32)
            .collect();
        (mean, std)
    }
}

/// The data root: `$HYPERAT_DATA` or `/usr/share/datasets`.
pub fn data_root() -> PathBuf {
    std::env::var_os("HYPERAT_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/datasets"))
}

/// The L-inf radius a dataset's robustness is usually reported at, in [0,1] pixels:
/// 0.1 for Fashion-MNIST (TRADES, and the shipped models), 8/255 for anything else
/// (CIFAR, ImageNet). Evaluations default to it, so a number is comparable as given.
pub fn standard_eps(spec: &str) -> f32 {
    match spec {
        "fashion-mnist" | "fmnist" => 0.1,
        _ => 8.0 / 255.0,
    }
}

/// Loads a dataset by spec: `fashion-mnist`, `cifar10`, `cifar100` or `folder:PATH`.
/// `input` (`[C, H, W]`) is the model's input: folder images are converted to it;
/// fixed-size datasets must match it.
pub fn load(spec: &str, split: Split, input: Option<[usize; 3]>) -> Result<Dataset> {
    let root = data_root();
    let ds = match spec {
        "fashion-mnist" | "fmnist" => {
            let dir = root.join("fashion-mnist");
            // Also accept HYPERAT_DATA pointing straight at the idx files.
            let dir = if dir.is_dir() { dir } else { root.clone() };
            load_fashion_mnist(&dir, split)?
        }
        "cifar10" => load_cifar10(
            &find(&root, &["cifar-10-batches-bin", "cifar10", "cifar-10"]),
            split,
        )?,
        "cifar100" => load_cifar100(
            &find(&root, &["cifar-100-binary", "cifar100", "cifar-100"]),
            split,
        )?,
        s if s.starts_with("folder:") => {
            let path = Path::new(&s["folder:".len()..]);
            let input = input.ok_or_else(|| {
                Error::Invalid("an image folder needs the model's input size".into())
            })?;
            load_folder(path, split, input)?
        }
        other => {
            return Err(Error::Invalid(format!(
                "unknown dataset `{other}` (fashion-mnist, cifar10, cifar100, folder:PATH)"
            )));
        }
    };
    if let Some(want) = input
        && want != ds.shape
    {
        return Err(Error::Invalid(format!(
            "dataset `{}` has images of shape {:?} but the model takes {:?}",
            ds.name, ds.shape, want
        )));
    }
    if ds.is_empty() {
        return Err(Error::Data(format!(
            "dataset `{}` ({}) is empty",
            ds.name,
            split.name()
        )));
    }
    Ok(ds)
}

fn find(root: &Path, names: &[&str]) -> PathBuf {
    names
        .iter()
        .map(|n| root.join(n))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| root.join(names[0]))
}

#[cfg(test)]
mod tests;

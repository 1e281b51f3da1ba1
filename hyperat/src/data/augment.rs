//! Training-time augmentation on the 8-bit images: random crop from a zero-padded image
//! and horizontal flip, as torchvision's `RandomCrop(size, padding=p)` and
//! `RandomHorizontalFlip()` do for Fashion-MNIST and CIFAR backbones.

use std::ops::Range;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::Dataset;
use crate::rng::Rng;

/// What [`Dataset::augmented_batch`] does to each image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Augment {
    /// Pad every side with this many zero pixels, then crop back at a random offset
    /// (0 = no crop).
    pub crop_pad: usize,
    /// Mirror left-right with probability 1/2.
    pub hflip: bool,
}

impl Default for Augment {
    /// Fashion-MNIST's usual pair: 2-px padding crop and horizontal flip.
    fn default() -> Self {
        Self {
            crop_pad: 2,
            hflip: true,
        }
    }
}

impl Augment {
    /// No augmentation.
    pub const NONE: Augment = Augment {
        crop_pad: 0,
        hflip: false,
    };

    /// Whether it changes anything.
    pub fn is_none(&self) -> bool {
        self.crop_pad == 0 && !self.hflip
    }
}

impl Dataset {
    /// Like [`Dataset::batch`], each image shifted and flipped as `aug` says, with the
    /// random choices drawn from `rng` (two draws per image, whatever `aug` is, so a
    /// seed gives the same batch whether or not an earlier image was flipped).
    pub fn augmented_batch<B: Backend>(
        &self,
        idx: &[usize],
        aug: &Augment,
        rng: &mut Rng,
        device: &B::Device,
    ) -> (Tensor<B, 4>, Tensor<B, 1, Int>) {
        self.augmented_rows(idx, 0..idx.len(), aug, rng, device)
    }

    /// Rows `rows` of [`Dataset::augmented_batch`] (a data-parallel peer's share): every
    /// image's random choices are drawn, only the kept rows are built.
    pub fn augmented_rows<B: Backend>(
        &self,
        idx: &[usize],
        rows: Range<usize>,
        aug: &Augment,
        rng: &mut Rng,
        device: &B::Device,
    ) -> (Tensor<B, 4>, Tensor<B, 1, Int>) {
        let [c, h, w] = self.shape;
        let n = self.image_len();
        let pad = aug.crop_pad as i64;
        let mut x = vec![0f32; rows.len() * n];
        for (k, &i) in idx.iter().enumerate() {
            let span = (2 * pad + 1) as usize;
            let dy = rng.below(span) as i64 - pad;
            let dx = rng.below(span) as i64 - pad;
            let flip = rng.below(2) == 1 && aug.hflip;
            if !rows.contains(&k) {
                continue;
            }
            let src = &self.pixels[i * n..(i + 1) * n];
            let at = k - rows.start;
            let dst = &mut x[at * n..(at + 1) * n];
            for ch in 0..c {
                for row in 0..h {
                    let sy = row as i64 + dy;
                    if sy < 0 || sy >= h as i64 {
                        continue;
                    }
                    for col in 0..w {
                        let cc = if flip { w - 1 - col } else { col };
                        let sx = cc as i64 + dx;
                        if sx < 0 || sx >= w as i64 {
                            continue;
                        }
                        dst[(ch * h + row) * w + col] =
                            src[(ch * h + sy as usize) * w + sx as usize] as f32 / 255.0;
                    }
                }
            }
        }
        let labels: Vec<i64> = idx[rows.clone()]
            .iter()
            .map(|&i| self.labels[i] as i64)
            .collect();
        (
            Tensor::from_data(TensorData::new(x, [rows.len(), c, h, w]), device),
            Tensor::from_data(TensorData::new(labels, [rows.len()]), device),
        )
    }
}

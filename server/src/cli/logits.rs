//! `hyperat logits --model DIR --inputs FILE --out FILE`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use hyperat::backend::{BackendTask, DeviceKind, dispatch};
use hyperat::checkpoint::{Adapt, load_vit};
use hyperat::host_tensor::{f32_from_le, f32_to_le};
use hyperat::prelude::*;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model folder (timm `config.json` + `model.safetensors`).
    #[arg(long)]
    model: PathBuf,
    /// Raw little-endian f32 pixels in [0,1], `[N, C, H, W]` (C/H/W from the config).
    #[arg(long)]
    inputs: PathBuf,
    /// Where to write raw little-endian f32 logits `[N, classes]`.
    #[arg(long)]
    out: PathBuf,
    /// Images per forward pass.
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
}

struct Logits(Args);

impl BackendTask for Logits {
    type Output = Result<usize>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<usize> {
        let a = self.0;
        let (cfg, vit) = load_vit::<B::InnerBackend>(&a.model, &Adapt::default(), &device)?;
        let bytes =
            std::fs::read(&a.inputs).with_context(|| format!("reading {}", a.inputs.display()))?;
        let x = f32_from_le(&bytes)?;
        let [c, h, w] = cfg.input_shape();
        let per = c * h * w;
        if x.is_empty() || x.len() % per != 0 {
            bail!(
                "{}: {} values is not a whole number of [{c}, {h}, {w}] images",
                a.inputs.display(),
                x.len()
            );
        }
        let n = x.len() / per;
        let mut out = Vec::with_capacity(n * cfg.num_classes);
        for chunk in x.chunks(per * a.batch_size.max(1)) {
            let b = chunk.len() / per;
            let t = Tensor::<B::InnerBackend, 4>::from_data(
                TensorData::new(chunk.to_vec(), [b, c, h, w]),
                &device,
            );
            out.extend(
                vit.forward(t)
                    .into_data()
                    .convert::<f32>()
                    .to_vec::<f32>()
                    .expect("f32"),
            );
        }
        hyperat::io::write_atomic(&a.out, &f32_to_le(&out))?;
        Ok(n)
    }
}

pub fn execute(a: Args, device: DeviceKind) -> Result<()> {
    let n = dispatch(device, Logits(a))??;
    eprintln!("wrote logits for {n} images");
    Ok(())
}

//! `hyperat interpolate --from BACKBONE --to MODEL --weight T --out DIR`: WiSE-FT's
//! weight-space ensemble of two models ([`hyperat::interpolate`]), as a timm folder.

use std::path::PathBuf;

use anyhow::Result;
use hyperat::backend::{BackendTask, DeviceKind, dispatch};
use hyperat::interpolate::interpolate;
use hyperat::prelude::*;
use hyperat::variant::{export, load_spec};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model at weight 0, e.g. the clean backbone: a timm folder or RUN_DIR[#VARIANT].
    #[arg(long)]
    from: String,
    /// The model at weight 1, e.g. a robust fine-tune of it (same forms).
    #[arg(long)]
    to: String,
    /// Weight `t` in [0, 1]: the weights are `from + t·(to − from)`.
    #[arg(long)]
    weight: f32,
    /// Output folder (timm `config.json` + `model.safetensors`).
    #[arg(long)]
    out: PathBuf,
}

struct Interpolation(Args);

impl BackendTask for Interpolation {
    type Output = Result<()>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        let a = self.0;
        let from = export(&load_spec::<B>(&a.from, &device)?)?;
        let to = export(&load_spec::<B>(&a.to, &device)?)?;
        interpolate(&from, &to, a.weight)?.save(&a.out)?;
        Ok(())
    }
}

pub fn execute(a: Args, device: DeviceKind) -> Result<()> {
    let (t, out) = (a.weight, a.out.clone());
    dispatch(device, Interpolation(a))??;
    eprintln!(
        "interpolate: weight {t} written to {} (timm format)",
        out.display()
    );
    Ok(())
}

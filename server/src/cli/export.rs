//! `hyperat export --run RUN_DIR --variant merged:uniform --out DIR`: a plain timm ViT.

use std::path::PathBuf;

use anyhow::Result;
use hyperat::backend::{BackendTask, DeviceKind, dispatch};
use hyperat::prelude::*;
use hyperat::tune::RunDir;
use hyperat::variant::{Variant, build, export};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run folder.
    #[arg(long)]
    run: PathBuf,
    /// base, tuned, method:NAME or merged:STRATEGY.
    #[arg(long, default_value = "merged:uniform")]
    variant: String,
    /// Output folder (timm `config.json` + `model.safetensors`).
    #[arg(long)]
    out: PathBuf,
}

struct Export(Args);

impl BackendTask for Export {
    type Output = Result<()>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        let a = self.0;
        let variant: Variant = a.variant.parse()?;
        let model = build::<B>(&RunDir::open(&a.run)?, &variant, &device)?;
        export(&model)?.save(&a.out)?;
        Ok(())
    }
}

pub fn execute(a: Args, device: DeviceKind) -> Result<()> {
    let (v, out) = (a.variant.clone(), a.out.clone());
    dispatch(device, Export(a))??;
    eprintln!("export: {v} written to {} (timm format)", out.display());
    Ok(())
}

//! Subcommands. Each parses its flags, then hands a [`BackendTask`] to the backend the
//! user picked with `--device`; the ML work itself lives in the `hyperat` library.

mod bench;
mod eval;
mod export;
mod interpolate;
mod logits;
mod merge;
mod nodes;
mod pretrain;
mod progress;
mod report;
mod tune;

use anyhow::Result;
use clap::{Parser, Subcommand};
use hyperat::backend::DeviceKind;

/// HyperAT Studio: robust fine-tuning of Vision Transformers.
#[derive(Debug, Parser)]
#[command(name = "hyperat", version, about)]
pub struct Cli {
    /// Backend: cpu (flex), flex, ndarray, cuda or wgpu (the last three need their
    /// cargo feature).
    #[arg(long, global = true, default_value = "cpu", env = "HYPERAT_DEVICE")]
    device: String,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest subcommand's flags costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Raw logits of a model for raw f32 inputs.
    Logits(logits::Args),
    /// Clean and adversarial accuracy on a dataset.
    Eval(eval::Args),
    /// Standard training of a backbone (AdamW, warm-up + cosine).
    Pretrain(pretrain::Args),
    /// Adversarial tuning: HyperAT or a baseline (resumable).
    Tune(tune::Args),
    /// Merge a HyperAT run's per-method LoRAs.
    Merge(merge::Args),
    /// Write a run's variant as a plain timm checkpoint.
    Export(export::Args),
    /// Interpolate two models' weights (WiSE-FT): trade robustness for clean accuracy.
    Interpolate(interpolate::Args),
    /// Clean / PGD / CW table of several models.
    Report(report::Args),
    /// Time the reference workloads.
    Bench(bench::Args),
    /// The HTTP API and web UI.
    Serve(crate::serve::Args),
}

impl Cli {
    /// Whether the command is the long-lived server (it hands freed memory back to the OS
    /// and uses no transparent huge pages; the others keep freed memory for their next
    /// step).
    pub fn serves(&self) -> bool {
        matches!(self.command, Command::Serve(_))
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let device: DeviceKind = cli.device.parse()?;
    match cli.command {
        Command::Logits(a) => logits::execute(a, device),
        Command::Eval(a) => eval::execute(a, device),
        Command::Pretrain(a) => pretrain::execute(a, device),
        Command::Tune(a) => tune::execute(a, device),
        Command::Merge(a) => merge::execute(a, device),
        Command::Export(a) => export::execute(a, device),
        Command::Interpolate(a) => interpolate::execute(a, device),
        Command::Report(a) => report::execute(a, device),
        Command::Bench(a) => bench::execute(a, device),
        Command::Serve(a) => crate::serve::execute(a, device),
    }
}

/// clap value parser for [`hyperat::attack::parse_fraction`].
fn fraction(s: &str) -> std::result::Result<f32, String> {
    hyperat::attack::parse_fraction(s)
        .map_err(|e| format!("expected a number like 0.03 or 8/255: {e}"))
}

#[cfg(test)]
mod tests {
    use hyperat::attack::parse_fraction;

    #[test]
    fn fractions() {
        assert!((parse_fraction("8/255").unwrap() - 8.0 / 255.0).abs() < 1e-9);
        assert_eq!(parse_fraction("0.1").unwrap(), 0.1);
        assert!(parse_fraction("1/0").is_err());
        assert!(parse_fraction("x").is_err());
    }
}

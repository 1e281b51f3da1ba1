//! `hyperat bench [--device ...] [--json OUT]`: times the reference workloads.

use std::path::PathBuf;

use anyhow::Result;
use hyperat::backend::{BackendTask, DeviceKind, dispatch};
use hyperat::bench::BenchReport;
use hyperat::prelude::*;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Timed repetitions per workload (the median is reported).
    #[arg(long, default_value_t = 7)]
    reps: usize,
    /// Skip the ViT-S/16 workloads.
    #[arg(long)]
    skip_small: bool,
    /// Write the figures as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

struct Benchmarks(Args, &'static str);

impl BackendTask for Benchmarks {
    type Output = BenchReport;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> BenchReport {
        hyperat::bench::run::<B>(&device, self.1, self.0.reps, !self.0.skip_small)
    }
}

pub fn execute(a: Args, device: DeviceKind) -> Result<()> {
    let out = a.json.clone();
    let r = dispatch(device, Benchmarks(a, device.name()))?;
    let t = &r.tiny_vit_28;
    println!("device: {}", r.device);
    println!("tiny ViT 28px, batch 128:");
    println!("  forward          {:9.1} ms", t.forward_ms);
    println!("  train step       {:9.1} ms", t.train_step_ms);
    println!("  PGD-10 AT step   {:9.1} ms", t.pgd10_at_step_ms);
    println!("  PGD-20 attack    {:9.1} ms", t.pgd20_attack_ms);
    let h = &r.hyperat_28;
    println!("HyperAT on the tiny ViT, batch 128:");
    println!(
        "  generate all LoRA factors {:9.2} ms ({:.2}% of a PGD-10 step)",
        h.generate_ms,
        100.0 * h.generate_fraction
    );
    println!(
        "  HyperAT PGD-10 step       {:9.1} ms ({:.2}x the plain PGD-10 AT step)",
        h.pgd10_step_ms,
        h.pgd10_step_ms / t.pgd10_at_step_ms
    );
    println!(
        "  merged export forward     {:9.1} ms ({:+.1}% vs the plain ViT's {:.1} ms)",
        h.merged_forward_ms,
        100.0 * (h.merged_forward_ms / h.plain_forward_ms - 1.0),
        h.plain_forward_ms
    );
    if let Some(s) = &r.vit_s16_224 {
        println!("ViT-S/16 224px, batch 8:");
        println!("  forward          {:9.1} ms", s.forward_ms);
        println!("  train step       {:9.1} ms", s.train_step_ms);
        for p in &s.matmul {
            let [m, k, n] = p.shape;
            println!(
                "  matmul {:<16} [{m}, {k}] x [{k}, {n}] {:7.2} ms ({:.0} GFLOP/s)",
                p.product, p.ms, p.gflops
            );
        }
    }
    if !r.allocations.is_empty() {
        println!("heap allocations and page faults, one run of each workload:");
        for w in &r.allocations {
            let a = &w.allocations;
            let mib = a.bytes as f64 / (1024.0 * 1024.0);
            let faults = a.page_faults.map_or("-".into(), |n| n.to_string());
            println!(
                "  {:<42} {:>7} ({mib:.1} MiB), {faults} faults",
                w.workload, a.count
            );
        }
    }
    if let Some(p) = out {
        hyperat::io::write_atomic(&p, serde_json::to_string_pretty(&r)?.as_bytes())?;
    }
    Ok(())
}

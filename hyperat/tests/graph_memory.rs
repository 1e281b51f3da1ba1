//! Forward-only work on the autodiff backend must not grow memory (burn-autodiff 0.21
//! keeps untracked operations in its graph until a backward; see `inner_logits`).
//! Alone in its own test binary: it reads this process's resident memory.

use hyperat::attack::inner_logits;
use hyperat::backend::{Cpu, CpuAutodiff};
use hyperat::prelude::*;
use hyperat::{Vit, VitConfig};

fn rss_mb() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: f64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096.0 / 1e6
}

#[test]
fn many_forward_only_passes_keep_memory_flat() {
    let mut cfg = VitConfig::vit_tiny_fmnist();
    cfg.embed_dim = 16;
    cfg.depth = 2;
    cfg.num_heads = 2;
    cfg.patch_size = 7;
    let dev = Default::default();
    let vit = Vit::<CpuAutodiff>::init(&cfg, &dev).no_grad();
    let x = Tensor::<Cpu, 4>::zeros([2, 1, 28, 28], &dev);
    let run = |n: usize| {
        for _ in 0..n {
            let _ = inner_logits(&vit, x.clone()).into_data();
        }
    };
    run(200); // allocator and thread pools settle
    let before = rss_mb();
    run(4000);
    let grown = rss_mb() - before;
    // Without the release each pass kept ~60 graph entries of ~1 KB: ~250 MB here.
    assert!(
        grown < 40.0,
        "4000 forward-only passes grew memory by {grown:.0} MB"
    );
}

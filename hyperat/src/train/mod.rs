//! Training loops and their shared pieces (learning-rate schedule, resumable snapshots),
//! and pretraining as a caller asks for it ([`PretrainRequest`]).

mod pretrain;
mod request;
mod snapshot;

pub use pretrain::{PretrainConfig, PretrainSummary, pretrain, pretrain_parallel};
pub use request::PretrainRequest;
pub use snapshot::TrainSnapshot;

use serde::{Deserialize, Serialize};

/// Linear warm-up to `lr`, then cosine decay to `min_lr` at `total` steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WarmupCosine {
    /// Peak learning rate.
    pub lr: f64,
    /// Final learning rate.
    pub min_lr: f64,
    /// Warm-up steps.
    pub warmup: usize,
    /// Total steps.
    pub total: usize,
}

impl WarmupCosine {
    /// Learning rate for step `t` (0-based).
    pub fn at(&self, t: usize) -> f64 {
        if t < self.warmup {
            return self.lr * (t + 1) as f64 / self.warmup as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1) as f64;
        let p = ((t - self.warmup) as f64 / span).min(1.0);
        self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + (std::f64::consts::PI * p).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_then_decays() {
        let s = WarmupCosine {
            lr: 1.0,
            min_lr: 0.1,
            warmup: 4,
            total: 14,
        };
        assert!((s.at(0) - 0.25).abs() < 1e-12);
        assert!((s.at(3) - 1.0).abs() < 1e-12);
        assert!((s.at(4) - 1.0).abs() < 1e-12);
        assert!((s.at(9) - 0.55).abs() < 1e-12);
        assert!((s.at(14) - 0.1).abs() < 1e-12);
        assert!((4..14).all(|t| s.at(t + 1) <= s.at(t)));
    }
}

//! Stopping interactive work early. A [`CancelToken`] is shared between whoever may give
//! up on the work (a request timing out, a client going away) and the work itself;
//! [`Cancellable`] makes any attack honour it without the attack knowing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::prelude::*;

use crate::attack::Classifier;

/// A flag set once to ask running work to stop.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token nobody has cancelled yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the work to stop (idempotent).
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether someone asked the work to stop.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A classifier that stops costing anything once its token is cancelled: attacks see
/// [`Classifier::stopped`] at their next step and return, and any call still made
/// answers constant logits (connected to the input, so gradient code runs on as a
/// no-op). An attack of any number of steps and restarts then ends within one step; the
/// caller that cancelled throws its result away.
pub struct Cancellable<'a, B: Backend> {
    model: &'a dyn Classifier<B>,
    token: &'a CancelToken,
    classes: usize,
}

impl<'a, B: Backend> Cancellable<'a, B> {
    /// Wraps `model` (with `classes` outputs) under `token`.
    pub fn new(model: &'a dyn Classifier<B>, classes: usize, token: &'a CancelToken) -> Self {
        Self {
            model,
            token,
            classes,
        }
    }
}

impl<B: Backend> Classifier<B> for Cancellable<'_, B> {
    fn logits(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        if self.token.is_cancelled() {
            let b = x.dims()[0];
            return x
                .reshape([b as i32, -1])
                .narrow(1, 0, 1)
                .mul_scalar(0.0)
                .repeat_dim(1, self.classes);
        }
        self.model.logits(x)
    }
    fn stopped(&self) -> bool {
        self.token.is_cancelled() || self.model.stopped()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attack::{AttackParams, by_name};
    use crate::backend::{Cpu, CpuAutodiff};
    use crate::rng::Rng;
    use crate::{Vit, VitConfig};

    /// Counts the model calls that reach it; cancels the token at call `cancel_after`.
    struct Counting<'a> {
        model: &'a dyn Classifier<CpuAutodiff>,
        calls: std::cell::Cell<usize>,
        cancel_after: usize,
        token: &'a CancelToken,
    }

    impl Classifier<CpuAutodiff> for Counting<'_> {
        fn logits(&self, x: Tensor<CpuAutodiff, 4>) -> Tensor<CpuAutodiff, 2> {
            self.calls.set(self.calls.get() + 1);
            if self.calls.get() == self.cancel_after {
                self.token.cancel();
            }
            self.model.logits(x)
        }
        fn stopped(&self) -> bool {
            self.model.stopped()
        }
    }

    /// A model with a margin of 100 for `class`: no attack within eps fools it, so every
    /// attack runs until it is cancelled (a random tiny ViT alone is sometimes fooled
    /// within a few calls, and then an attack ends before the cancel is reached).
    struct Confident<'a> {
        model: &'a dyn Classifier<CpuAutodiff>,
        class: usize,
    }

    impl Classifier<CpuAutodiff> for Confident<'_> {
        fn logits(&self, x: Tensor<CpuAutodiff, 4>) -> Tensor<CpuAutodiff, 2> {
            let logits = self.model.logits(x);
            let [n, k] = logits.dims();
            let boost: Vec<f32> = (0..k)
                .map(|c| 100.0 * (c == self.class) as u8 as f32)
                .collect();
            let boost =
                Tensor::<CpuAutodiff, 1>::from_data(TensorData::new(boost, [k]), &logits.device());
            logits + boost.reshape([1, k]).expand([n, k])
        }
    }

    #[test]
    fn every_attack_stops_calling_the_model_once_cancelled() {
        let mut cfg = VitConfig::vit_tiny_fmnist();
        (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.patch_size) = (16, 1, 2, 7);
        let vit = Vit::<CpuAutodiff>::init(&cfg, &Default::default());
        let device = Default::default();
        let x = Tensor::<Cpu, 4>::full([2, 1, 28, 28], 0.5, &device);
        // Labels the model gets right with a margin no attack overcomes, so that every
        // attack has work to do until the cancel.
        let vit = Confident {
            model: &vit,
            class: crate::attack::inner_predict::<CpuAutodiff>(&vit, x.clone().narrow(0, 0, 1))
                .into_scalar() as usize,
        };
        let y = crate::attack::inner_predict::<CpuAutodiff>(&vit, x.clone());
        // Budgets that would take minutes if nothing stopped them.
        let params = AttackParams {
            eps: 0.1,
            steps: 10_000,
            restarts: 10,
            queries: 10_000,
            ..Default::default()
        };
        for name in [
            "pgd",
            "cw",
            "apgd-ce",
            "apgd-t",
            "fab-t",
            "square",
            "autoattack",
        ] {
            let token = CancelToken::new();
            let counting = Counting {
                model: &vit as &dyn Classifier<CpuAutodiff>,
                calls: Default::default(),
                cancel_after: 5,
                token: &token,
            };
            let model = Cancellable::new(&counting, cfg.num_classes, &token);
            // Every call the attack makes, the no-op ones after the cancel included.
            let never = CancelToken::new();
            let outer = Counting {
                model: &model,
                calls: Default::default(),
                cancel_after: usize::MAX,
                token: &never,
            };
            let attack = by_name::<CpuAutodiff>(name, &params).unwrap();
            let adv = attack.perturb(&outer, x.clone(), y.clone(), &mut Rng::new(0));
            assert!(token.is_cancelled(), "{name}");
            assert_eq!(
                counting.calls.get(),
                5,
                "{name}: no model call after the cancel"
            );
            // Restarts and target classes may each still make a call or two, not steps.
            assert!(
                outer.calls.get() < 60,
                "{name}: {} calls in all",
                outer.calls.get()
            );
            let worst: f32 = (adv - x.clone()).abs().max().into_scalar();
            assert!(worst <= 0.1 + 1e-6, "{name}: {worst}");
        }
    }

    /// Progress whose caller hands out a token (the server's job reporter does).
    struct WithToken(CancelToken);

    impl crate::progress::Progress for WithToken {
        fn update(&mut self, _: usize, _: usize, _: &str) {}
        fn cancel_token(&self) -> Option<CancelToken> {
            Some(self.0.clone())
        }
    }

    #[test]
    fn an_evaluation_stops_within_an_attack_step_when_its_token_is_cancelled() {
        let mut cfg = VitConfig::vit_tiny_fmnist();
        (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.patch_size) = (16, 1, 2, 7);
        let vit = Vit::<CpuAutodiff>::init(&cfg, &Default::default());
        let token = CancelToken::new();
        let counting = Counting {
            model: &vit as &dyn Classifier<CpuAutodiff>,
            calls: Default::default(),
            cancel_after: 6,
            token: &token,
        };
        let ds = crate::data::Dataset {
            name: "synthetic".into(),
            shape: [1, 28, 28],
            pixels: (0..4 * 784).map(|i| (i % 251) as u8).collect(),
            labels: vec![0, 1, 2, 3],
            classes: (0..10).map(|c| c.to_string()).collect(),
        };
        let eval = crate::eval::EvalConfig {
            attack: "pgd".into(),
            params: AttackParams {
                eps: 0.1,
                steps: 10_000,
                ..Default::default()
            },
            batch_size: 4,
            ..Default::default()
        };
        let mut progress = WithToken(token.clone());
        let out = crate::eval::evaluate::<CpuAutodiff>(
            &counting,
            &ds,
            &eval,
            &Default::default(),
            &mut progress,
        );
        assert!(
            matches!(out, Err(crate::error::Error::Cancelled)),
            "{out:?}"
        );
        assert_eq!(counting.calls.get(), 6, "no model call after the cancel");
    }
}

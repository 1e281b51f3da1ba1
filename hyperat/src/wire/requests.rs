//! What a client asks a job to do, where the app builds it too: a tuning run and a
//! merge, with their defaults. The core's `tune` and `variant` modules validate and run
//! them (`TuneRequest::create_run`, `MergeRequest::run`); the CLI's flags default to
//! these values.

use serde::{Deserialize, Serialize};

/// What a new tuning run needs; every field but the backbone has a default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default, deny_unknown_fields)]
pub struct TuneRequest {
    /// `hyperat`, `lora-at`, `full-lora-at`, `full-at` or `linear-probe`.
    pub kind: String,
    /// Defense methods, comma-separated (HyperAT samples one per step; baselines take
    /// one; the linear probe none). Default `pgd-at,trades,mart`.
    pub methods: String,
    /// `fashion-mnist`, `cifar10`, `cifar100` or `folder:PATH`.
    pub dataset: String,
    /// Optimiser steps (default 1000); ignored when `epochs` is given.
    pub steps: usize,
    /// Passes over the training images instead of `steps` (each epoch is
    /// `train images / batch_size` steps, the short remainder dropped).
    pub epochs: Option<f64>,
    /// Images per step (default 64).
    pub batch_size: usize,
    /// Peak learning rate (default 1e-3).
    pub lr: f64,
    /// Warm-up steps (default `warmup_fraction` of the steps).
    pub warmup: Option<usize>,
    /// Warm-up as a fraction of the steps when `warmup` is not given (default 0.05).
    pub warmup_fraction: f64,
    /// Global gradient-norm clip (default 1.0; 0 turns it off).
    pub grad_clip: f64,
    /// HyperAT: steps that train the first method alone before sampling starts
    /// (default 0).
    pub method_warmup: usize,
    /// HyperAT: the method warm-up as a fraction of the steps (overrides
    /// `method_warmup`; for budgets given in epochs).
    pub method_warmup_fraction: Option<f64>,
    /// AdamW weight decay (default 0).
    pub weight_decay: f64,
    /// Learning-rate multipliers per parameter group, `method-embed=10,heads=0.5`
    /// (groups: method-embed, embed, generator, heads, classifier; default none).
    pub lr_scales: String,
    /// Weight decay per parameter group, `heads=0.01` (default: `weight_decay`).
    pub group_decays: String,
    /// HyperAT's method sampling: `random` (default, the paper) or `balanced`.
    pub sampling: String,
    /// HyperAT: standard deviation of the method embeddings at the start (default 1).
    pub method_embed_std: f32,
    /// HyperAT: the factor heads also read the method embedding (default off; ours).
    pub method_to_heads: bool,
    /// LoRA kinds and HyperAT: also train the patch embedding (default off; ours).
    pub train_patch_embed: bool,
    /// HyperAT: weight of a penalty on the squared cosine between the methods' generated
    /// deltas, keeping the defenses' LoRAs apart (default 0 = off; ours).
    pub method_diversity: f64,
    /// HyperAT: the penalty counts only squared cosines above this margin's square, so it
    /// stops the deltas converging without pushing them apart (default 0; ours).
    pub method_diversity_margin: f64,
    /// Inner attack radius in [0,1] pixels (default: the dataset's standard budget, the
    /// one evaluations default to: 0.1 for Fashion-MNIST, 8/255 otherwise).
    pub eps: Option<f32>,
    /// Inner attack step (default eps/4).
    pub alpha: Option<f32>,
    /// Inner attack iterations (default 10).
    pub attack_steps: usize,
    /// TRADES / MART beta (default 6).
    pub beta: f32,
    /// LoRA rank (default 8).
    pub rank: usize,
    /// LoRA alpha; scaling = alpha / rank (default 16).
    pub lora_alpha: f32,
    /// LoRA targets: `all`, `qv`, or a list of `qkv,proj,fc1,fc2`.
    pub targets: String,
    /// Training images held out at the end of the train split for the adaptive merge
    /// (default 5000).
    pub holdout: usize,
    /// Train on the first N remaining images only.
    pub train_limit: Option<usize>,
    /// Seed (default 0).
    pub seed: u64,
    /// Checkpoint interval in steps (default 100).
    pub checkpoint_every: usize,
    /// Hold-out evaluation of every model of the run every N steps (default: about
    /// every half epoch; 0 = never).
    pub eval_every: Option<usize>,
    /// Hold-out images each of those evaluations uses (default 512).
    pub eval_images: usize,
}

impl Default for TuneRequest {
    fn default() -> Self {
        Self {
            kind: "hyperat".into(),
            methods: "pgd-at,trades,mart".into(),
            dataset: "fashion-mnist".into(),
            steps: 1000,
            epochs: None,
            batch_size: 64,
            lr: 1e-3,
            warmup: None,
            warmup_fraction: 0.05,
            grad_clip: 1.0,
            method_warmup: 0,
            method_warmup_fraction: None,
            weight_decay: 0.0,
            lr_scales: String::new(),
            group_decays: String::new(),
            sampling: "random".into(),
            method_embed_std: 1.0,
            method_to_heads: false,
            train_patch_embed: false,
            method_diversity: 0.0,
            method_diversity_margin: 0.0,
            eps: None,
            alpha: None,
            attack_steps: 10,
            beta: 6.0,
            rank: 8,
            lora_alpha: 16.0,
            targets: "all".into(),
            holdout: 5000,
            train_limit: None,
            seed: 0,
            checkpoint_every: 100,
            eval_every: None,
            eval_images: 512,
        }
    }
}

/// A merge; every field has a default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default, deny_unknown_fields)]
pub struct MergeRequest {
    /// `uniform` (default, the paper's HyperAT+), `weighted`, `adaptive`, `factor-avg`,
    /// `ties` or `dare`.
    pub strategy: String,
    /// `weighted`: one weight per method, in the run's method order.
    pub weights: Option<Vec<f32>>,
    /// TIES: kept fraction (default 0.2); DARE: survival probability (default 0.5).
    pub density: Option<f32>,
    /// Adaptive: one weight vector per block instead of one for the model.
    pub per_layer: bool,
    /// Adaptive: Adam steps on the weights (default 50).
    pub merge_steps: usize,
    /// Adaptive: learning rate (default 0.05).
    pub merge_lr: f64,
    /// Adaptive: held-out images per step (default 64).
    pub batch_size: usize,
    /// Adaptive: attack radius (default: the run's).
    pub eps: Option<f32>,
    /// Adaptive: attack iterations (default: the run's).
    pub attack_steps: Option<usize>,
    /// Adaptive: held-out images on which the learned weights are scored against the
    /// uniform start after the search (default 512; 0 skips it).
    pub check_images: usize,
    /// Name of the saved merge (default: the strategy).
    pub name: Option<String>,
    /// Seed of DARE's masks and the adaptive search's batches (default 0).
    pub seed: u64,
}

impl Default for MergeRequest {
    fn default() -> Self {
        Self {
            strategy: "uniform".into(),
            weights: None,
            density: None,
            per_layer: false,
            merge_steps: 50,
            merge_lr: 0.05,
            batch_size: 64,
            eps: None,
            attack_steps: None,
            check_images: 512,
            name: None,
            seed: 0,
        }
    }
}

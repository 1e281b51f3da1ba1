//! HyperAT core: a timm-exact ViT on burn, datasets, adversarial attacks, hyper
//! adversarial tuning with its baselines and merges, and their evaluation.
//!
//! Model code is generic over `B: Backend` and builds for `wasm32-unknown-unknown` with
//! default features off; file-system and dataset code sits behind the `native` feature.

#[cfg(feature = "native")]
pub mod alloc_count;
pub mod archive;
pub mod attack;
#[cfg(feature = "native")]
pub mod bench;
pub mod cancel;
pub mod checkpoint;
pub mod config;
pub mod defense;
pub mod error;
pub mod host_tensor;
pub mod hypernet;
pub mod init;
pub mod inspect;
pub mod interpolate;
pub mod lora;
pub mod loss;
pub mod named_params;
pub mod optim;
pub mod resample;
pub mod rng;
pub mod vit;
pub mod wire;

#[cfg(feature = "native")]
pub mod backend;
#[cfg(feature = "image")]
pub mod data;
#[cfg(feature = "native")]
pub mod eval;
pub mod io;
#[cfg(feature = "native")]
pub mod merge;
#[cfg(feature = "native")]
pub mod parallel;
pub mod progress;
#[cfg(feature = "native")]
pub mod report;
#[cfg(feature = "native")]
pub mod train;
#[cfg(feature = "native")]
pub mod tune;
#[cfg(feature = "native")]
pub mod variant;

pub use config::{GlobalPool, VitConfig};
pub use error::{Error, Result};
pub use vit::Vit;

/// The burn types most code needs.
pub mod prelude {
    pub use burn::module::AutodiffModule;
    pub use burn::prelude::*;
    pub use burn::tensor::backend::AutodiffBackend;
}

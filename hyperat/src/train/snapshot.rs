//! The resumable state of a training loop in one safetensors file: the trainable
//! tensors (`model.*`), the AdamW moments (`opt.*`) and, in the metadata, the step, the
//! optimiser's update count and the wall time so far. Pretraining and tuning both
//! checkpoint through it; it is written atomically.

use std::collections::HashMap;
use std::path::Path;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;

use crate::error::{Error, Result};
use crate::host_tensor::{
    TensorMap, read_safetensors, read_safetensors_metadata, write_safetensors_with,
};
use crate::io::{read, write_atomic};
use crate::named_params::{load_named, trainable_tensors};
use crate::optim::AdamW;

/// A training checkpoint as read from or written to disk.
#[derive(Clone, Debug)]
pub struct TrainSnapshot {
    /// Trainable tensors by parameter path.
    pub model: TensorMap,
    /// AdamW moments (`m.<path>`, `v.<path>`).
    pub moments: TensorMap,
    /// Steps taken.
    pub step: usize,
    /// AdamW updates taken (equals `step` unless steps were skipped).
    pub optimizer_t: usize,
    /// Training wall time so far, summed over resumptions.
    pub seconds: f64,
}

impl TrainSnapshot {
    /// The state of `model` and `opt` after `step` steps.
    pub fn capture<B: AutodiffBackend, M: AutodiffModule<B>>(
        model: &M,
        opt: &AdamW<B>,
        step: usize,
        seconds: f64,
    ) -> Self {
        Self {
            model: trainable_tensors(model),
            moments: opt.state(),
            step,
            optimizer_t: opt.t,
            seconds,
        }
    }

    /// Writes it atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut all = TensorMap::new();
        for (k, v) in &self.model {
            all.insert(format!("model.{k}"), v.clone());
        }
        for (k, v) in &self.moments {
            all.insert(format!("opt.{k}"), v.clone());
        }
        let meta = HashMap::from([
            ("step".to_string(), self.step.to_string()),
            ("optimizer_t".to_string(), self.optimizer_t.to_string()),
            ("seconds".to_string(), format!("{}", self.seconds)),
        ]);
        write_atomic(path, &write_safetensors_with(&all, Some(meta))?)
    }

    /// Reads one written by [`TrainSnapshot::write`].
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = read(path)?;
        let meta = read_safetensors_metadata(&bytes)?;
        let (mut model, mut moments) = (TensorMap::new(), TensorMap::new());
        for (k, v) in read_safetensors(&bytes)? {
            if let Some(rest) = k.strip_prefix("model.") {
                model.insert(rest.to_string(), v);
            } else if let Some(rest) = k.strip_prefix("opt.") {
                moments.insert(rest.to_string(), v);
            }
        }
        let step = step_in(&meta, path)?;
        let number = |k: &str| meta.get(k).and_then(|s| s.parse::<f64>().ok());
        Ok(Self {
            model,
            moments,
            step,
            optimizer_t: number("optimizer_t").map_or(step, |t| t as usize),
            seconds: number("seconds").unwrap_or(0.0),
        })
    }

    /// The step of the snapshot at `path`, 0 when there is none (reads the header only).
    pub fn step_of(path: &Path) -> Result<usize> {
        if !path.exists() {
            return Ok(0);
        }
        step_in(&read_safetensors_metadata(&read(path)?)?, path)
    }

    /// Puts the tensors into `model` and the moments into `opt`.
    pub fn restore<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
        model: M,
        opt: &mut AdamW<B>,
        device: &B::Device,
    ) -> Result<M> {
        opt.load_state(self.optimizer_t, &self.moments, device)?;
        load_named(model, &self.model, device)
    }
}

fn step_in(meta: &HashMap<String, String>, path: &Path) -> Result<usize> {
    meta.get("step")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Checkpoint(format!("{}: no step in its metadata", path.display())))
}

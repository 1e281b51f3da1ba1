//! The models the server serves, by id, on its device: what handlers read and the job
//! worker adds to (a finished tuning run) or removes from (a deleted job).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use hyperat::prelude::*;

use super::error::{ApiError, ApiResult};
use super::models::ModelEntry;

/// Datasets the API may read, by name (never a path from a client).
pub const DATASETS: &[&str] = &["fashion-mnist", "cifar10", "cifar100"];

/// Models by id, in id order; the first is the default.
pub struct ModelRegistry<B: AutodiffBackend> {
    /// The device every model lives on.
    pub device: B::Device,
    models: RwLock<BTreeMap<String, Arc<ModelEntry<B>>>>,
}

impl<B: AutodiffBackend> ModelRegistry<B> {
    /// A registry holding `models`.
    pub fn new(device: B::Device, models: impl IntoIterator<Item = ModelEntry<B>>) -> Self {
        let models = models
            .into_iter()
            .map(|e| (e.id.clone(), Arc::new(e)))
            .collect();
        Self {
            device,
            models: RwLock::new(models),
        }
    }

    /// A model by id, or 404.
    pub fn get(&self, id: &str) -> ApiResult<Arc<ModelEntry<B>>> {
        self.models
            .read()
            .expect("models lock")
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("unknown model `{id}`")))
    }

    /// The model named, or the first one (the shipped model) when none is named.
    pub fn get_or_default(&self, id: Option<&str>) -> ApiResult<Arc<ModelEntry<B>>> {
        match id.filter(|s| !s.is_empty()) {
            Some(id) => self.get(id),
            None => self
                .models
                .read()
                .expect("models lock")
                .values()
                .next()
                .cloned()
                .ok_or_else(|| ApiError::not_found("no models are loaded")),
        }
    }

    /// Every model, in id order.
    pub fn all(&self) -> Vec<Arc<ModelEntry<B>>> {
        self.models
            .read()
            .expect("models lock")
            .values()
            .cloned()
            .collect()
    }

    /// How many models there are.
    pub fn len(&self) -> usize {
        self.models.read().expect("models lock").len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds (or replaces) a model.
    pub fn add(&self, entry: ModelEntry<B>) {
        self.models
            .write()
            .expect("models lock")
            .insert(entry.id.clone(), Arc::new(entry));
    }

    /// Removes a model (a deleted job's); unknown ids are ignored.
    pub fn remove(&self, id: &str) {
        self.models.write().expect("models lock").remove(id);
    }

    /// Renames a model (a finished job's); nothing where there is no such model.
    pub fn rename(&self, id: &str, name: Option<String>) {
        if let Some(e) = self.models.read().expect("models lock").get(id) {
            *e.name.write().expect("name lock") = name;
        }
    }
}

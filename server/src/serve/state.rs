//! Shared server state: models, cached datasets, limits, the job runner.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hyperat::data::{self, Dataset, Split, UploadLimits};
use hyperat::prelude::*;
use tokio::sync::Semaphore;

use super::error::{ApiError, ApiResult};
use super::jobs::Jobs;
use super::models::ModelEntry;

/// Limits on heavy requests.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Request bodies above this are refused with 413 (default 10 MB).
    pub max_body: usize,
    /// Attacks and comparisons running at once (default: the CPU count).
    pub heavy_concurrency: usize,
    /// Predictions running at once (default: twice the CPU count).
    pub predict_concurrency: usize,
    /// How long a heavy request waits for a free slot before a 503 (default 30 s).
    pub queue_timeout: Duration,
    /// How long an attack or comparison may run before a 504 (default 120 s).
    pub work_timeout: Duration,
    /// Largest `steps` an interactive attack accepts (default 1000).
    pub max_steps: usize,
    /// Model calls one attack or comparison may cost ([`AttackParams::work`] × the
    /// variants attacked) for an anonymous caller (default 20,000: about a minute of one
    /// core on the tiny ViT).
    ///
    /// [`AttackParams::work`]: hyperat::attack::AttackParams::work
    pub anonymous_work: usize,
    /// The same with the admin token (default 1,000,000).
    pub admin_work: usize,
    /// What one uploaded image may cost decoded (default 8192 px a side, 64 MiB).
    pub upload: UploadLimits,
    /// Uploads decoding at once (default: the CPU count): with `upload.max_decoded`,
    /// bounds the memory decoding can take.
    pub decode_concurrency: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Self {
            max_body: 10 * 1024 * 1024,
            heavy_concurrency: cpus,
            predict_concurrency: 2 * cpus,
            queue_timeout: Duration::from_secs(30),
            work_timeout: Duration::from_secs(120),
            max_steps: 1000,
            anonymous_work: 20_000,
            admin_work: 1_000_000,
            upload: UploadLimits::default(),
            decode_concurrency: cpus,
        }
    }
}

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Model folders loaded at start.
    pub models_dir: PathBuf,
    /// Where jobs write (`runs/{id}/`).
    pub data_dir: PathBuf,
    /// The built UI (`index.html` and assets).
    pub dist_dir: PathBuf,
    /// Bearer token the job endpoints require, if set.
    pub admin_token: Option<String>,
    /// Limits.
    pub limits: Limits,
    /// Which other hosts and origins the API answers.
    pub site: super::site::SiteRules,
}

/// Everything handlers share.
pub struct AppState<B: AutodiffBackend> {
    /// Settings.
    pub config: ServeConfig,
    /// The device models live on.
    pub device: B::Device,
    /// Models by id.
    pub models: RwLock<BTreeMap<String, Arc<ModelEntry<B>>>>,
    /// Test splits loaded so far, by dataset name.
    datasets: Mutex<HashMap<String, Arc<Dataset>>>,
    /// Held while a dataset loads, so that requests arriving together load it once
    /// (the soak's 50 clients each read the whole test split at start-up otherwise).
    dataset_load: Mutex<()>,
    /// Slots for attacks and comparisons.
    pub heavy: Arc<Semaphore>,
    /// Slots for predictions.
    pub light: Arc<Semaphore>,
    /// Slots for decoding uploads.
    pub decode: Arc<Semaphore>,
    /// The job queue and its worker.
    pub jobs: Jobs<B>,
    /// Set when the server stops: event streams end so that shutdown does not wait on them.
    closing: tokio::sync::watch::Sender<bool>,
    /// Showcases computed so far, by model, variant and eps (a classroom loading the page
    /// at once asks for the same one thirty times).
    pub showcases: Mutex<HashMap<String, Arc<serde_json::Value>>>,
}

impl<B: AutodiffBackend> std::fmt::Debug for AppState<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Datasets the API may read (never a path from a client).
pub const DATASETS: &[&str] = &["fashion-mnist", "cifar10", "cifar100"];

impl<B: AutodiffBackend> AppState<B> {
    /// Ends every event stream (the server is stopping).
    pub fn close_streams(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves once [`AppState::close_streams`] was called.
    pub fn streams_closed(&self) -> impl Future<Output = ()> + Send + use<B> {
        let mut rx = self.closing.subscribe();
        async move {
            let _ = rx.wait_for(|closed| *closed).await;
        }
    }

    /// Loads every model and starts the job runner (which resumes unfinished jobs).
    pub fn new(config: ServeConfig, device: B::Device) -> hyperat::Result<Arc<Self>> {
        std::fs::create_dir_all(config.data_dir.join("runs"))
            .map_err(|e| hyperat::Error::io(&config.data_dir, e))?;
        let mut models: BTreeMap<String, Arc<ModelEntry<B>>> =
            super::models::load_dir::<B>(&config.models_dir, &device)
                .into_iter()
                .map(|(k, v)| (k, Arc::new(v)))
                .collect();
        let jobs = Jobs::<B>::open(&config.data_dir)?;
        for e in jobs.finished_models(&device) {
            models.insert(e.id.clone(), Arc::new(e));
        }
        let limits = &config.limits;
        let state = Arc::new(Self {
            heavy: Arc::new(Semaphore::new(limits.heavy_concurrency.max(1))),
            light: Arc::new(Semaphore::new(limits.predict_concurrency.max(1))),
            decode: Arc::new(Semaphore::new(limits.decode_concurrency.max(1))),
            config,
            device,
            models: RwLock::new(models),
            datasets: Mutex::new(HashMap::new()),
            dataset_load: Mutex::new(()),
            jobs,
            closing: tokio::sync::watch::channel(false).0,
            showcases: Mutex::new(HashMap::new()),
        });
        Jobs::start(&state);
        Ok(state)
    }

    /// A model by id, or 404.
    pub fn model(&self, id: &str) -> ApiResult<Arc<ModelEntry<B>>> {
        self.models
            .read()
            .expect("models lock")
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("unknown model `{id}`")))
    }

    /// The model named, or the first one (the shipped model) when none is named.
    pub fn model_or_default(&self, id: Option<&str>) -> ApiResult<Arc<ModelEntry<B>>> {
        match id.filter(|s| !s.is_empty()) {
            Some(id) => self.model(id),
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

    /// Removes a model (a deleted job's); unknown ids are ignored.
    pub fn remove_model(&self, id: &str) {
        self.models.write().expect("models lock").remove(id);
    }

    /// Renames a model (a finished job's); nothing where there is no such model.
    pub fn rename_model(&self, id: &str, name: Option<String>) {
        if let Some(e) = self.models.read().expect("models lock").get(id) {
            *e.name.write().expect("name lock") = name;
        }
    }

    /// Adds (or replaces) a model.
    pub fn add_model(&self, entry: ModelEntry<B>) {
        self.models
            .write()
            .expect("models lock")
            .insert(entry.id.clone(), Arc::new(entry));
    }

    /// [`AppState::test_set`] from a handler: the first load reads the dataset from disk,
    /// so it runs on the blocking pool, not on the executor.
    pub async fn load_test_set(self: &Arc<Self>, name: &str) -> ApiResult<Arc<Dataset>> {
        // Loaded already (nearly every call): answered here, without a trip to the
        // blocking pool.
        if let Some(d) = self.cached_test_set(name) {
            return Ok(d);
        }
        let (s, name) = (self.clone(), name.to_string());
        tokio::task::spawn_blocking(move || s.test_set(&name))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
    }

    /// A dataset's name as the cache knows it (`fmnist` is `fashion-mnist`).
    fn canonical(name: &str) -> &str {
        if name == "fmnist" {
            "fashion-mnist"
        } else {
            name
        }
    }

    /// The test split of `name` if it is loaded.
    fn cached_test_set(&self, name: &str) -> Option<Arc<Dataset>> {
        let datasets = self.datasets.lock().expect("datasets lock");
        datasets.get(Self::canonical(name)).cloned()
    }

    /// A dataset's test split (loaded once).
    pub fn test_set(&self, name: &str) -> ApiResult<Arc<Dataset>> {
        let name = Self::canonical(name);
        if !DATASETS.contains(&name) {
            return Err(ApiError::not_found(format!(
                "unknown dataset `{name}` (known: {})",
                DATASETS.join(", ")
            )));
        }
        if let Some(d) = self.cached_test_set(name) {
            return Ok(d);
        }
        let _loading = self.dataset_load.lock().expect("dataset load lock");
        if let Some(d) = self.cached_test_set(name) {
            return Ok(d);
        }
        let ds = Arc::new(data::load(name, Split::Test, None).map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "dataset_unavailable",
                e.to_string(),
            )
        })?);
        self.datasets
            .lock()
            .expect("datasets lock")
            .insert(name.to_string(), ds.clone());
        Ok(ds)
    }
}

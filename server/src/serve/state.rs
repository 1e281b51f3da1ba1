//! Shared server state: models, cached datasets, limits, the job runner.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyperat::data::{self, Dataset, Split, UploadLimits};
use hyperat::prelude::*;
use tokio::sync::Semaphore;

use super::error::{ApiError, ApiResult};
use super::jobs::{JobDevices, Jobs};
use super::registry::{DATASETS, ModelRegistry};

/// Limits on expensive requests.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Request bodies above this are refused with 413 (default 10 MB).
    pub max_body: usize,
    /// Attacks and comparisons running at once (default: the CPU count).
    pub attack_concurrency: usize,
    /// Predictions running at once (default: twice the CPU count).
    pub predict_concurrency: usize,
    /// How long an expensive request waits for a free slot before a 503 (default 30 s).
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
            attack_concurrency: cpus,
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
    /// The models served, and their device.
    pub models: Arc<ModelRegistry<B>>,
    /// Test splits loaded so far, by dataset name.
    datasets: Mutex<HashMap<String, Arc<Dataset>>>,
    /// Held while a dataset loads, so that requests arriving together load it once
    /// (the soak's 50 clients each read the whole test split at start-up otherwise).
    dataset_load: Mutex<()>,
    /// Slots for attacks, comparisons and showcases (the expensive requests).
    pub attack_slots: Arc<Semaphore>,
    /// Slots for predictions and exports.
    pub predict_slots: Arc<Semaphore>,
    /// Slots for decoding uploads.
    pub decode_slots: Arc<Semaphore>,
    /// The job queue and its worker.
    pub jobs: Arc<Jobs<B>>,
    /// Devices a tuning or pretraining job splits each batch over (its batch size must
    /// divide).
    pub train_peers: usize,
    /// Set when the server stops: event streams end so that shutdown does not wait on them.
    closing: tokio::sync::watch::Sender<bool>,
    /// Showcases computed so far, by model, variant and eps (a classroom loading the page
    /// at once asks for the same one thirty times).
    pub showcases: Mutex<HashMap<String, Arc<hyperat::wire::Showcase>>>,
}

impl<B: AutodiffBackend> std::fmt::Debug for AppState<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

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

    /// Loads every model and starts the job runner (which resumes unfinished jobs), all
    /// on `device`.
    pub fn new(config: ServeConfig, device: B::Device) -> hyperat::Result<Arc<Self>> {
        let name = format!("{device:?}");
        Self::on_devices(config, JobDevices::one(device, &name))
    }

    /// [`AppState::new`] with models and jobs on the first of `devices`, training jobs
    /// data-parallel over all of them.
    pub fn on_devices(config: ServeConfig, devices: JobDevices<B>) -> hyperat::Result<Arc<Self>> {
        if devices.devices.is_empty() || devices.names.len() != devices.devices.len() {
            return Err(hyperat::Error::Invalid(
                "the server needs at least one device, each with a name".into(),
            ));
        }
        let device = devices.devices[0].clone();
        std::fs::create_dir_all(config.data_dir.join("runs"))
            .map_err(|e| hyperat::Error::io(&config.data_dir, e))?;
        let jobs = Arc::new(Jobs::<B>::open(&config.data_dir)?);
        let shipped = super::models::load_dir::<B>(&config.models_dir, &device).into_values();
        let made_by_jobs = jobs.finished_models(&device);
        let models = Arc::new(ModelRegistry::new(device, shipped.chain(made_by_jobs)));
        let limits = &config.limits;
        let state = Arc::new(Self {
            attack_slots: Arc::new(Semaphore::new(limits.attack_concurrency.max(1))),
            predict_slots: Arc::new(Semaphore::new(limits.predict_concurrency.max(1))),
            decode_slots: Arc::new(Semaphore::new(limits.decode_concurrency.max(1))),
            config,
            models,
            datasets: Mutex::new(HashMap::new()),
            dataset_load: Mutex::new(()),
            jobs: jobs.clone(),
            train_peers: devices.devices.len(),
            closing: tokio::sync::watch::channel(false).0,
            showcases: Mutex::new(HashMap::new()),
        });
        Jobs::start(&jobs, state.models.clone(), devices);
        Ok(state)
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

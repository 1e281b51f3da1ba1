//! `hyperat serve`: the HTTP API and the built UI.

pub mod api;
pub mod auth;
pub mod blocking;
pub mod error;
pub mod form;
pub mod jobs;
pub mod jobs_api;
pub mod listen;
pub mod models;
pub mod openapi;
pub mod registry;
pub mod showcase;
pub mod site;
pub mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::Html;
use axum::routing::{any, get, patch, post};
use hyperat::backend::{DeviceKind, DeviceList, DevicesTask, dispatch_devices};
use hyperat::prelude::*;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::services::{ServeDir, ServeFile};

pub use jobs::JobDevices;
pub use state::{AppState, Limits, ServeConfig};

/// The whole application: API routes, then the UI with an `index.html` fallback.
pub fn app<B: AutodiffBackend>(state: Arc<AppState<B>>) -> Router {
    let max_body = state.config.limits.max_body;
    let dist = state.config.dist_dir.clone();
    let api = Router::new()
        .route("/api/health", get(api::health::<B>))
        .route("/api/models", get(api::models::<B>))
        .route("/api/models/{id}", get(api::model::<B>))
        .route("/api/models/{id}/export", get(api::export::<B>))
        .route("/api/models/{id}/showcase", get(showcase::showcase::<B>))
        .route("/api/predict", post(api::predict::<B>))
        .route("/api/attack", post(api::attack::<B>))
        .route("/api/compare", post(api::compare::<B>))
        .route("/api/samples", get(api::samples::<B>))
        .route(
            "/api/jobs",
            post(jobs_api::submit::<B>).get(jobs_api::list::<B>),
        )
        .route(
            "/api/jobs/{id}",
            get(jobs_api::get::<B>)
                .delete(jobs_api::cancel::<B>)
                .merge(patch(jobs_api::rename::<B>)),
        )
        .route("/api/jobs/{id}/events", get(jobs_api::events::<B>))
        .route(
            "/api/openapi.json",
            get(|| async { axum::Json(openapi::document()) }),
        )
        .route("/api", any(api::no_route))
        .route("/api/{*rest}", any(api::no_route))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(state.config.site.clone()),
            site::same_site,
        ))
        .with_state(state);
    let api = with_error_contract(api);
    if dist.join("index.html").is_file() {
        // build-ui.sh writes `.gz` copies beside the wasm and js: 13 MB of wasm is ~4 MB
        // over a classroom network.
        let ui = ServeDir::new(&dist)
            .precompressed_gzip()
            .fallback(ServeFile::new(dist.join("index.html")));
        api.fallback_service(ui)
    } else {
        api.fallback(|| async {
            Html(
                "<!doctype html><title>HyperAT Studio</title><h1>HyperAT Studio</h1>\
                 <p>The API is running (<a href=\"/api/openapi.json\">/api/openapi.json</a>). \
                 The web UI is not built: run <code>scripts/start.sh</code> or <code>trunk build --release</code>.</p>",
            )
        })
    }
}

/// The API's error contract on a router: every framework rejection answered as JSON
/// `{error, detail}`, and a handler panic as a JSON 500 that leaves the server serving.
pub fn with_error_contract(router: Router) -> Router {
    router
        .layer(axum::middleware::map_response(error::json_errors))
        .layer(CatchPanicLayer::custom(error::panic_response))
}

/// Flags of `hyperat serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
    /// Devices for the jobs, e.g. cuda:0,cuda:1 (overrides --device): models and every
    /// job on the first, tuning and pretraining jobs data-parallel over all.
    #[arg(long)]
    devices: Option<DeviceList>,
    /// Folder of model folders (the shipped Fashion-MNIST model by default).
    #[arg(long, default_value = "public/models")]
    models: PathBuf,
    /// Where jobs write their runs.
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// The built UI.
    #[arg(long, default_value = "dist")]
    dist: PathBuf,
    /// Bearer token the job endpoints require (without one they answer loopback only).
    #[arg(long, env = "HYPERAT_ADMIN_TOKEN")]
    admin_token: Option<String>,
    /// Attacks and comparisons at once (default: the CPU count).
    #[arg(long)]
    max_concurrent_attacks: Option<usize>,
    /// Seconds an attack or comparison may run.
    #[arg(long, default_value_t = 120)]
    attack_timeout: u64,
    /// Seconds a client may take to send a request's head; also how long an idle
    /// kept-alive connection stays open.
    #[arg(long, default_value_t = 10)]
    header_timeout: u64,
    /// Seconds a client may take to send a whole request body.
    #[arg(long, default_value_t = 30)]
    body_timeout: u64,
    /// A host name the API answers to besides IP addresses and `localhost` (repeatable;
    /// requests naming any other `Host` are refused against DNS rebinding).
    #[arg(long = "allowed-host")]
    allowed_hosts: Vec<String>,
    /// An origin whose pages may post to the API besides the server's own (repeatable).
    #[arg(long = "allowed-origin")]
    allowed_origins: Vec<String>,
    /// Connections open at once (more wait in the listen backlog).
    #[arg(long, default_value_t = 512)]
    max_connections: usize,
    /// Largest decoded size of an uploaded image in MiB (refused from its header, before
    /// decoding).
    #[arg(long, default_value_t = 64)]
    max_decoded_mib: u64,
}

struct Serving(Args, DeviceList);

impl DevicesTask for Serving {
    type Output = anyhow::Result<()>;
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> anyhow::Result<()> {
        let (a, list) = (self.0, self.1);
        let names = list.names();
        let mut limits = Limits::default();
        if let Some(n) = a.max_concurrent_attacks {
            limits.attack_concurrency = n.max(1);
        }
        limits.work_timeout = Duration::from_secs(a.attack_timeout.max(1));
        limits.upload.max_decoded = a.max_decoded_mib.max(1) << 20;
        let config = ServeConfig {
            models_dir: a.models.clone(),
            data_dir: a.data_dir.clone(),
            dist_dir: a.dist.clone(),
            admin_token: a.admin_token.clone().filter(|t| !t.is_empty()),
            limits,
            site: site::SiteRules {
                allowed_hosts: a.allowed_hosts.clone(),
                allowed_origins: a.allowed_origins.clone(),
            },
        };
        let state = AppState::<B>::on_devices(config, JobDevices { devices, names })?;
        let ids: Vec<String> = state.models.all().iter().map(|e| e.id.clone()).collect();
        if ids.is_empty() {
            eprintln!(
                "serve: warning: no models under {} (run scripts/results-fashion-mnist.sh, or point --models elsewhere)",
                a.models.display()
            );
        } else {
            eprintln!("serve: models: {}", ids.join(", "));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let router = app::<B>(state.clone());
        let streams = state.clone();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(a.addr).await?;
            eprintln!("serve: open http://{}/", listener.local_addr()?);
            let conn = listen::ConnLimits {
                header_timeout: Duration::from_secs(a.header_timeout.max(1)),
                body_timeout: Duration::from_secs(a.body_timeout.max(1)),
                max_connections: a.max_connections.max(1),
                ..Default::default()
            };
            let stop = async {
                let _ = tokio::signal::ctrl_c().await;
                eprintln!("serve: stopping (a running job resumes at the next start)");
                streams.close_streams();
            };
            listen::serve(listener, router, conn, stop).await?;
            anyhow::Ok(())
        })?;
        state.jobs.stop();
        Ok(())
    }
}

/// Runs `hyperat serve`.
pub fn execute(a: Args, device: DeviceKind) -> anyhow::Result<()> {
    let devices = a.devices.clone().unwrap_or(DeviceList::single(device));
    dispatch_devices(&devices.clone(), Serving(a, devices))?
}

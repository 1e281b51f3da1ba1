//! In-browser inference: the variant's weights come from the server's timm export, the
//! ViT runs in WebAssembly on burn — WebGPU where `navigator.gpu` gives an adapter, else
//! burn's CPU backend (flex). Attacks run on the CPU backend with autodiff, the same code
//! the server runs.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use burn::backend::{Autodiff, Flex};
use hyperat::attack::{AttackParams, by_name};
use hyperat::inspect::{self, AttackOutcome, Prediction};
use hyperat::vit::Vit;

use crate::api;

type Cpu = Autodiff<Flex>;
#[cfg(feature = "webgpu")]
type Gpu = burn::backend::WebGpu;

/// The ViT on one backend.
enum Engine {
    /// Runs on [`Loaded::cpu`].
    Cpu,
    /// Boxed: one per loaded variant, and the CPU variant needs no room for it.
    #[cfg(feature = "webgpu")]
    Gpu(Box<Vit<Gpu>>),
}

/// A variant loaded in this browser.
struct Loaded {
    engine: Engine,
    /// The CPU copy attacks use (the same weights).
    cpu: Rc<Vit<Cpu>>,
    shape: [usize; 3],
}

thread_local! {
    static MODELS: RefCell<HashMap<String, Rc<Loaded>>> = RefCell::new(HashMap::new());
    static GPU: RefCell<Option<Result<String, String>>> = const { RefCell::new(None) };
}

/// What ran and how long it took.
#[derive(Clone, Debug)]
pub struct Ran {
    /// "WebGPU (adapter)" or "CPU (WebAssembly)".
    pub backend: String,
    /// Milliseconds for the forward pass (or the attack), weights already loaded.
    pub ms: f64,
    /// Milliseconds spent fetching and building the weights (0 when cached).
    pub load_ms: f64,
    /// The model's input `[C, H, W]`.
    pub shape: [usize; 3],
}

/// Why predictions run on the CPU backend, where WebGPU was tried and is not there.
pub fn why_no_gpu() -> Option<String> {
    GPU.with(|g| g.borrow().clone().and_then(|r| r.err()))
}

/// Sets up WebGPU once; the adapter's name, or why there is none.
async fn gpu() -> Result<String, String> {
    if let Some(r) = GPU.with(|g| g.borrow().clone()) {
        return r;
    }
    let r = gpu_init().await;
    GPU.with(|g| *g.borrow_mut() = Some(r.clone()));
    r
}

#[cfg(feature = "webgpu")]
async fn gpu_init() -> Result<String, String> {
    use burn::backend::wgpu::{RuntimeOptions, WgpuDevice, graphics::WebGpu, init_setup_async};
    use wasm_bindgen::JsCast;
    // `navigator.gpu` is missing or gives no adapter without WebGPU: fall back quietly.
    let nav = web_sys::window().ok_or("no window")?.navigator();
    let gpu = js_sys::Reflect::get(&nav, &"gpu".into()).map_err(|_| "no navigator.gpu")?;
    if gpu.is_undefined() || gpu.is_null() {
        return Err("this browser has no WebGPU (navigator.gpu)".into());
    }
    // Asked through Reflect: web-sys's WebGPU bindings need an unstable cfg flag.
    let request = js_sys::Reflect::get(&gpu, &"requestAdapter".into())
        .ok()
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
        .ok_or("WebGPU: no requestAdapter")?;
    let promise: js_sys::Promise = request
        .call0(&gpu)
        .map_err(|_| "WebGPU: requestAdapter failed")?
        .unchecked_into();
    let adapter = wasm_bindgen_futures::JsFuture::from(promise)
        .await
        .map_err(|_| "WebGPU: requestAdapter failed")?;
    if adapter.is_null() || adapter.is_undefined() {
        return Err("WebGPU gives no adapter here".into());
    }
    let setup = init_setup_async::<WebGpu>(&WgpuDevice::default(), RuntimeOptions::default()).await;
    let info = setup.adapter.get_info();
    let name = if info.name.is_empty() {
        info.driver.clone()
    } else {
        info.name.clone()
    };
    Ok(if name.is_empty() {
        "WebGPU".into()
    } else {
        format!("WebGPU ({name})")
    })
}

#[cfg(not(feature = "webgpu"))]
async fn gpu_init() -> Result<String, String> {
    Err("this build has no WebGPU backend".into())
}

async fn load(
    model: &str,
    variant: &str,
    use_gpu: bool,
) -> Result<(Rc<Loaded>, String, f64), String> {
    let gpu_name = if use_gpu { gpu().await.ok() } else { None };
    let key = format!("{model}\u{0}{variant}\u{0}{}", gpu_name.is_some());
    let backend = gpu_name
        .clone()
        .unwrap_or_else(|| "CPU (WebAssembly)".into());
    if let Some(l) = MODELS.with(|m| m.borrow().get(&key).cloned()) {
        return Ok((l, backend, 0.0));
    }
    let t0 = api::now_ms();
    let url = format!(
        "/api/models/{}/export?variant={}",
        js_sys::encode_uri_component(model),
        js_sys::encode_uri_component(variant)
    );
    let tar = api::get_bytes(&url).await?;
    let ck = hyperat::archive::from_tar(&tar).map_err(|e| e.to_string())?;
    let shape = ck.config.input_shape();
    let cpu = Rc::new(
        ck.build::<Cpu>(&Default::default())
            .map_err(|e| e.to_string())?,
    );
    let engine = match gpu_name {
        #[cfg(feature = "webgpu")]
        Some(_) => Engine::Gpu(Box::new(
            ck.build::<Gpu>(&Default::default())
                .map_err(|e| e.to_string())?,
        )),
        _ => Engine::Cpu,
    };
    let l = Rc::new(Loaded { engine, cpu, shape });
    MODELS.with(|m| m.borrow_mut().insert(key, l.clone()));
    Ok((l, backend, api::now_ms() - t0))
}

/// The model input for an image, decoded exactly as the server decodes uploads.
fn pixels(img: &crate::Picked, shape: [usize; 3]) -> Result<Vec<f32>, String> {
    let (bytes, invert) = match img {
        crate::Picked::Sample { png, .. } => (crate::data_url_bytes(png)?, false),
        crate::Picked::Upload { bytes, invert, .. } => (bytes.clone(), *invert),
    };
    let px = hyperat::data::decode_upload(&bytes, shape, invert, &Default::default())
        .map_err(|e| e.to_string())?;
    Ok(px.iter().map(|&p| p as f32 / 255.0).collect())
}

/// Class probabilities of `img` under `model`/`variant`, computed in this browser.
pub async fn predict(
    model: &str,
    variant: &str,
    img: &crate::Picked,
    use_gpu: bool,
) -> Result<(Prediction, Ran), String> {
    let (l, backend, load_ms) = load(model, variant, use_gpu).await?;
    let px = pixels(img, l.shape)?;
    let t0 = api::now_ms();
    let logits: Vec<f32> = match &l.engine {
        Engine::Cpu => {
            let vit = &l.cpu;
            let x = inspect::images::<Cpu>(&px, l.shape, &Default::default())
                .map_err(|e| e.to_string())?;
            vit.forward(x)
                .into_data()
                .convert::<f32>()
                .to_vec()
                .map_err(|e| format!("{e:?}"))?
        }
        #[cfg(feature = "webgpu")]
        Engine::Gpu(vit) => {
            let x = inspect::images::<Gpu>(&px, l.shape, &Default::default())
                .map_err(|e| e.to_string())?;
            // WebGPU reads back asynchronously; a blocking read would stall the page.
            vit.forward(x)
                .into_data_async()
                .await
                .map_err(|e| format!("{e:?}"))?
                .convert::<f32>()
                .to_vec()
                .map_err(|e| format!("{e:?}"))?
        }
    };
    let ms = api::now_ms() - t0;
    Ok((
        Prediction::from_logits(&logits),
        Ran {
            backend,
            ms,
            load_ms,
            shape: l.shape,
        },
    ))
}

/// FGSM or PGD on `img`, run in this browser on the CPU backend.
pub async fn attack(
    model: &str,
    variant: &str,
    img: &crate::Picked,
    name: &str,
    params: &AttackParams,
    label: Option<usize>,
) -> Result<(AttackOutcome, Ran), String> {
    let (l, _, load_ms) = load(model, variant, false).await?;
    let px = pixels(img, l.shape)?;
    let t0 = api::now_ms();
    let attack = by_name::<Cpu>(name, params).map_err(|e| e.to_string())?;
    let x =
        inspect::images::<Flex>(&px, l.shape, &Default::default()).map_err(|e| e.to_string())?;
    let labels = label.map(|l| vec![l]);
    let mut o =
        inspect::attack_images::<Cpu>(l.cpu.as_ref(), attack.as_ref(), x, labels.as_deref(), 0)
            .map_err(|e| e.to_string())?;
    let ms = api::now_ms() - t0;
    Ok((
        o.remove(0),
        Ran {
            backend: "CPU (WebAssembly)".into(),
            ms,
            load_ms,
            shape: l.shape,
        },
    ))
}

//! HyperAT Studio's web UI: playground, LoRA comparison, training dashboard, models and a
//! classroom page, over `hyperat serve`'s API, with optional in-browser inference.
//! Pages are chosen by the URL's hash (`#/compare`), so any page can be bookmarked; the
//! attack pages keep their state in it too (`link`).

mod api;
mod components;
mod infer;
mod link;
mod pages;

use base64::Engine;
use hyperat::wire::{ModelInfo, ModelList};
use leptos::prelude::*;

/// The image the pages work on: a test-set sample or an uploaded file.
#[derive(Clone, Debug, PartialEq)]
pub enum Picked {
    /// A test image of `dataset` (`png`: its data URL).
    Sample {
        id: usize,
        dataset: String,
        png: String,
        label: usize,
        name: String,
    },
    /// An uploaded file (sent as is; the server and the in-browser path decode it alike).
    Upload {
        bytes: Vec<u8>,
        name: String,
        url: String,
        invert: bool,
        /// What the model sees (decoded to its input as the server decodes it, as a PNG
        /// data URL); `None` where the file does not decode.
        preview: Option<String>,
        /// Its true class, where the user named one.
        label: Option<usize>,
    },
}

impl Picked {
    /// What to show for it.
    pub fn url(&self) -> String {
        match self {
            Picked::Sample { png, .. } => png.clone(),
            Picked::Upload { url, .. } => url.clone(),
        }
    }

    /// Its true class where known.
    pub fn label(&self) -> Option<usize> {
        match self {
            Picked::Sample { label, .. } => Some(*label),
            Picked::Upload { label, .. } => *label,
        }
    }

    /// A short description.
    pub fn describe(&self) -> String {
        match self {
            Picked::Sample {
                id, dataset, name, ..
            } => format!("{dataset} test image #{id} ({name})"),
            Picked::Upload { name, bytes, .. } => {
                format!("upload {name} ({} KB)", bytes.len().div_ceil(1024))
            }
        }
    }
}

/// The bytes of a `data:…;base64,` URL.
pub fn data_url_bytes(url: &str) -> Result<Vec<u8>, String> {
    let b64 = url
        .split_once(";base64,")
        .map(|(_, b)| b)
        .ok_or("not a base64 data URL")?;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| e.to_string())
}

/// State every page shares.
#[derive(Clone, Copy)]
pub struct Ctx {
    /// `/api/models`' list.
    pub models: RwSignal<Vec<ModelInfo>>,
    /// Why the model list could not be read.
    pub models_error: RwSignal<Option<String>>,
    /// The chosen model id.
    pub model: RwSignal<String>,
    /// The chosen variant.
    pub variant: RwSignal<String>,
    /// The chosen image.
    pub picked: RwSignal<Option<Picked>>,
    /// A test image a shared link asked for, until the image picker has loaded it.
    pub wanted_sample: RwSignal<Option<usize>>,
    /// Run predictions and light attacks in this browser instead of on the server.
    pub in_browser: RwSignal<bool>,
}

impl Ctx {
    /// The chosen model's entry.
    pub fn model_info(&self) -> Option<ModelInfo> {
        let id = self.model.get();
        self.models.get().into_iter().find(|m| m.id == id)
    }

    /// Class names of the chosen model.
    pub fn classes(&self) -> Vec<String> {
        self.model_info().map(|m| m.classes).unwrap_or_default()
    }

    /// Sets the model's default variant where none is chosen or the model lacks it.
    pub fn fill_default_variant(&self) {
        let Some(m) = self.model_info() else { return };
        let v = self.variant.get_untracked();
        if v.is_empty() || !m.variants.contains(&v) {
            self.variant.set(m.default_variant);
        }
    }

    /// Reads the model list again (after a tuning run finishes).
    pub fn refresh_models(self) {
        leptos::task::spawn_local(async move {
            match api::get::<ModelList>("/api/models").await {
                Ok(ModelList { models, default }) => {
                    let chosen = self.model.get_untracked();
                    if !models.iter().any(|m| m.id == chosen) {
                        // The server's default (the shipped model).
                        let pick = default.or_else(|| models.first().map(|m| m.id.clone()));
                        if let Some(id) = pick {
                            self.model.set(id);
                            self.variant.set(String::new());
                        }
                    }
                    self.models.set(models);
                    self.fill_default_variant();
                    self.models_error.set(None);
                }
                Err(e) => self
                    .models_error
                    .set(Some(format!("cannot list the models: {e}"))),
            }
        });
    }
}

const PAGES: [(&str, &str); 5] = [
    ("playground", "Playground"),
    ("compare", "Compare"),
    ("train", "Train"),
    ("models", "Models"),
    ("learn", "Learn"),
];

fn current_page() -> String {
    let hash = web_sys::window()
        .and_then(|w| w.location().hash().ok())
        .unwrap_or_default();
    // `#/playground?model=…`: the page, then its state (see `link`).
    let p = hash
        .trim_start_matches('#')
        .trim_start_matches('/')
        .split('?')
        .next()
        .unwrap_or_default()
        .to_string();
    if PAGES.iter().any(|(k, _)| *k == p) {
        p
    } else {
        "playground".into()
    }
}

#[component]
fn App() -> impl IntoView {
    let ctx = Ctx {
        models: RwSignal::new(vec![]),
        models_error: RwSignal::new(None),
        model: RwSignal::new(String::new()),
        variant: RwSignal::new(String::new()),
        picked: RwSignal::new(None),
        wanted_sample: RwSignal::new(None),
        in_browser: RwSignal::new(false),
    };
    provide_context(ctx);
    ctx.refresh_models();
    let page = RwSignal::new(current_page());
    let _ = window_event_listener(leptos::ev::hashchange, move |_| page.set(current_page()));
    view! {
        <header class="top">
            <h1><a href="#/playground">"HyperAT Studio"</a></h1>
            <nav aria-label="Pages">
                {PAGES.iter().map(|(k, label)| {
                    let k = *k;
                    view! {
                        <a href=format!("#/{k}") id=format!("nav-{k}")
                           class:active=move || page.get() == k
                           aria-current=move || (page.get() == k).then_some("page")>{*label}</a>
                    }
                }).collect_view()}
            </nav>
        </header>
        <main>
            <components::ErrorBox msg=ctx.models_error.into() />
            {move || match page.get().as_str() {
                "compare" => pages::compare::Compare().into_any(),
                "train" => pages::train::Train().into_any(),
                "models" => pages::models::Models().into_any(),
                "learn" => pages::learn::Learn().into_any(),
                _ => pages::playground::Playground().into_any(),
            }}
        </main>
        <footer>"HyperAT: hyper adversarial tuning of Vision Transformers · "
            <a href="/api/openapi.json">"API"</a></footer>
    }
}

fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(App);
}

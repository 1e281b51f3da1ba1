//! Pieces the pages share: error and busy indicators, the model / variant picker, the
//! image picker (gallery, file, drag and drop, paste) and probability bars.

use base64::Engine;
use hyperat::wire::{
    DefenseSimilarity, Distinctness, Evaluation, PredictionView, Sample, SampleList, Showcase,
};
use leptos::prelude::*;
use wasm_bindgen::JsCast;

use crate::{Ctx, Picked, api};

/// A readable error, announced to screen readers; nothing when `msg` is `None`.
#[component]
pub fn ErrorBox(msg: Signal<Option<String>>) -> impl IntoView {
    move || {
        msg.get()
            .map(|m| view! { <p class="error" role="alert">{m}</p> })
    }
}

/// A visible "working" indicator while `busy` holds.
#[component]
pub fn Busy(busy: Signal<bool>, #[prop(into)] label: String) -> impl IntoView {
    move || {
        busy.get().then(|| view! {
            <p class="busy" role="status" aria-live="polite"><span class="spinner" aria-hidden="true"></span>{label.clone()}</p>
        })
    }
}

/// Model and variant selects.
#[component]
pub fn ModelPicker(#[prop(optional)] no_variant: bool) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let variants = move || ctx.model_info().map(|m| m.variants).unwrap_or_default();
    view! {
        <label>"Model "
            <select id="model-select" prop:value=move || ctx.model.get()
                on:change=move |ev| {
                    let id = event_target_value(&ev);
                    ctx.model.set(id.clone());
                    if let Some(m) = ctx.models.get_untracked().iter().find(|m| m.id == id) {
                        ctx.variant.set(m.default_variant.clone());
                    }
                }>
                {move || ctx.models.get().into_iter().map(|m| {
                    let id = m.id.clone();
                    let label = m.name.as_ref().map_or(id.clone(), |n| format!("{n} ({id})"));
                    view! { <option value=id.clone() selected=move || ctx.model.get() == id>{label}</option> }
                }).collect_view()}
            </select>
        </label>
        {(!no_variant).then(|| view! {
            <label>"Variant "
                <select id="variant-select" prop:value=move || ctx.variant.get()
                    on:change=move |ev| ctx.variant.set(event_target_value(&ev))>
                    {move || variants().into_iter().map(|v| {
                        let v2 = v.clone();
                        view! { <option value=v.clone() selected=move || ctx.variant.get() == v2>{variant_label(&v)}</option> }
                    }).collect_view()}
                </select>
            </label>
        })}
    }
}

/// A variant's name for people: `method:trades` → "TRADES LoRA".
pub fn variant_label(v: &str) -> String {
    match v.split_once(':') {
        Some(("method", m)) => format!("{} LoRA", m.to_uppercase()),
        Some(("merged", "uniform")) => "HyperAT+ (uniform merge)".into(),
        Some(("merged", s)) => format!("merged: {s}"),
        _ if v == "base" => "base (undefended)".into(),
        _ => v.to_string(),
    }
}

fn mime_of(bytes: &[u8]) -> &'static str {
    match bytes {
        [0x89, b'P', b'N', b'G', ..] => "image/png",
        [0xFF, 0xD8, ..] => "image/jpeg",
        [b'G', b'I', b'F', ..] => "image/gif",
        [b'B', b'M', ..] => "image/bmp",
        [
            b'R',
            b'I',
            b'F',
            b'F',
            _,
            _,
            _,
            _,
            b'W',
            b'E',
            b'B',
            b'P',
            ..,
        ] => "image/webp",
        _ => "application/octet-stream",
    }
}

/// An upload decoded to a model input of `shape` as the server decodes it, before any
/// inversion (which `decode_upload` applies last, to each pixel); `None` if it does not decode.
fn decode_plain(bytes: &[u8], shape: [usize; 3]) -> Option<Vec<u8>> {
    hyperat::data::decode_upload(bytes, shape, false, &Default::default()).ok()
}

/// What the model sees of an upload's [`decode_plain`] pixels, inverted or not, as a PNG
/// data URL.
fn preview(plain: &[u8], shape: [usize; 3], invert: bool) -> Option<String> {
    let f: Vec<f32> = plain
        .iter()
        .map(|&p| if invert { 255 - p } else { p } as f32 / 255.0)
        .collect();
    hyperat::data::png_data_url(&f, shape).ok()
}

/// The chosen model's input `[C, H, W]` (Fashion-MNIST's until the list has loaded).
fn input_shape(ctx: &Ctx) -> [usize; 3] {
    ctx.model_info().map_or([1, 28, 28], |m| m.input)
}

/// Reads a browser `File` and makes it the picked image. "invert" is switched on when
/// the image's border is light (a dark object on a light background); the user may
/// switch it back.
fn take_file(
    file: web_sys::File,
    picked: RwSignal<Option<Picked>>,
    invert: RwSignal<bool>,
    err: RwSignal<Option<String>>,
    shape: [usize; 3],
) {
    leptos::task::spawn_local(async move {
        match wasm_bindgen_futures::JsFuture::from(file.array_buffer()).await {
            Ok(buf) => {
                let bytes = js_sys::Uint8Array::new(&buf).to_vec();
                if bytes.len() > 10 << 20 {
                    err.set(Some(format!(
                        "{} is {} MB: the server takes at most 10 MB",
                        file.name(),
                        bytes.len() >> 20
                    )));
                    return;
                }
                let url = format!(
                    "data:{};base64,{}",
                    mime_of(&bytes),
                    base64::engine::general_purpose::STANDARD.encode(&bytes)
                );
                err.set(None);
                // Decoded once: for the border test and the preview.
                let plain = decode_plain(&bytes, shape);
                let inv = plain.as_ref().map_or(invert.get_untracked(), |px| {
                    hyperat::data::light_border(px, shape)
                });
                invert.set(inv);
                picked.set(Some(Picked::Upload {
                    preview: plain.and_then(|px| preview(&px, shape, inv)),
                    bytes,
                    name: file.name(),
                    url,
                    invert: inv,
                    label: None,
                }));
            }
            Err(_) => err.set(Some(format!("cannot read {}", file.name()))),
        }
    });
}

/// The image picker: a gallery of test images per class, a file picker, drag and drop
/// and paste.
#[component]
pub fn ImagePicker() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let class = RwSignal::new(String::new());
    let samples = RwSignal::new(Vec::<Sample>::new());
    let dataset = RwSignal::new(String::from("fashion-mnist"));
    let err = RwSignal::new(None::<String>);
    let loading = RwSignal::new(false);
    let invert = RwSignal::new(false);
    let load = move || {
        let ds = ctx
            .model_info()
            .and_then(|m| m.dataset)
            .unwrap_or_else(|| "fashion-mnist".into());
        let c = class.get_untracked();
        loading.set(true);
        leptos::task::spawn_local(async move {
            let mut url = format!(
                "/api/samples?dataset={}&n=12",
                js_sys::encode_uri_component(&ds)
            );
            if !c.is_empty() {
                url.push_str(&format!("&class={c}"));
            }
            match api::get::<SampleList>(&url).await {
                Ok(v) => {
                    let list = v.samples;
                    if ctx.picked.get_untracked().is_none() {
                        // The image a shared link names; else one the lesson can use
                        // (both models right), not whichever comes first; the gallery's
                        // first where there is none.
                        let linked = match ctx.wanted_sample.get_untracked() {
                            Some(id) => test_image(&ds, id).await,
                            None => None,
                        };
                        let model = ctx.model.get_untracked();
                        // Ranked at the attack's default ε, the one the page opens with.
                        let eps = Some(DEFAULT_EPS255 / 255.0);
                        let first = match linked {
                            Some(p) => Some(p),
                            None => lesson_image(&model, None, eps).await,
                        }
                        .or_else(|| list.first().map(|s| sample_of(s, &ds)));
                        if ctx.picked.get_untracked().is_none() {
                            ctx.picked.set(first);
                        }
                        ctx.wanted_sample.set(None);
                    }
                    samples.set(list);
                    dataset.set(ds);
                    err.set(None);
                }
                Err(e) => err.set(Some(format!("cannot load the gallery: {e}"))),
            }
            loading.set(false);
        });
    };
    Effect::new(move |_| {
        let _ = ctx.model.get();
        let _ = class.get();
        load();
    });
    let paste = window_event_listener(leptos::ev::paste, move |ev: web_sys::ClipboardEvent| {
        if let Some(f) = ev
            .clipboard_data()
            .and_then(|d| d.files())
            .and_then(|f| f.get(0))
        {
            take_file(f, ctx.picked, invert, err, input_shape(&ctx));
        }
    });
    on_cleanup(move || paste.remove());
    let dragging = RwSignal::new(false);
    view! {
        <section class="picker" aria-label="Choose an image">
            <div class="picker-head">
                <label>"Class "
                    <select id="class-select" on:change=move |ev| class.set(event_target_value(&ev))>
                        <option value="">"all"</option>
                        {move || ctx.classes().into_iter().enumerate().map(|(i, c)| view! {
                            <option value=i.to_string()>{c}</option>
                        }).collect_view()}
                    </select>
                </label>
                <Busy busy=loading.into() label="loading images…" />
                {move || ctx.picked.get().map(|p| {
                    let sample = match &p { Picked::Sample { id, .. } => id.to_string(), Picked::Upload { .. } => String::new() };
                    view! { <span id="picked-desc" class="meta" data-sample=sample>{format!("Chosen: {}", p.describe())}</span> }
                })}
            </div>
            <div class="gallery" role="list">
                {move || samples.get().into_iter().map(|s| {
                    let ds = dataset.get_untracked();
                    let p = sample_of(&s, &ds);
                    let id = s.id;
                    let p2 = p.clone();
                    let chosen = move || ctx.picked.get().as_ref() == Some(&p2);
                    let chosen2 = chosen.clone();
                    view! {
                        <div role="listitem" class="thumb-item">
                            <button class="thumb" class:chosen=chosen
                                aria-pressed=move || chosen2().to_string()
                                id=format!("sample-{id}")
                                title=p.describe() aria-label=p.describe()
                                on:click={ let p = p.clone(); move |_| ctx.picked.set(Some(p.clone())) }>
                                <img src=p.url() alt="" width="56" height="56" />
                                <span>{s.name.clone()}</span>
                            </button>
                        </div>
                    }
                }).collect_view()}
            </div>
            <div class="drop" class:dragging=move || dragging.get()
                on:dragover=move |ev: web_sys::DragEvent| { ev.prevent_default(); dragging.set(true); }
                on:dragleave=move |_| dragging.set(false)
                on:drop=move |ev: web_sys::DragEvent| {
                    ev.prevent_default();
                    dragging.set(false);
                    if let Some(f) = ev.data_transfer().and_then(|d| d.files()).and_then(|f| f.get(0)) {
                        take_file(f, ctx.picked, invert, err, input_shape(&ctx));
                    }
                }>
                <label>"Upload an image (or drop / paste one here) "
                    <input type="file" id="upload" accept="image/*"
                        on:change=move |ev| {
                            let input: web_sys::HtmlInputElement = ev.target().unwrap().unchecked_into();
                            if let Some(f) = input.files().and_then(|f| f.get(0)) {
                                take_file(f, ctx.picked, invert, err, input_shape(&ctx));
                            }
                        } />
                </label>
                <label title="Fashion-MNIST shows light clothes on black: invert a photo of dark clothes on white">
                    <input type="checkbox" id="invert" prop:checked=move || invert.get()
                        on:change=move |ev| {
                            let on = event_target_checked(&ev);
                            invert.set(on);
                            let shape = input_shape(&ctx);
                            ctx.picked.update(|p| if let Some(Picked::Upload { invert, preview: shown, bytes, .. }) = p {
                                *invert = on;
                                *shown = decode_plain(bytes, shape).and_then(|px| preview(&px, shape, on));
                            });
                        } />
                    " invert (dark object on light background)"
                </label>
                <label title="Without it the page cannot say right or wrong, only whether the attack changed the answer">"True class (optional) "
                    <select id="upload-label" disabled=move || !matches!(ctx.picked.get(), Some(Picked::Upload { .. }))
                        prop:value=move || match ctx.picked.get() { Some(Picked::Upload { label: Some(l), .. }) => l.to_string(), _ => String::new() }
                        on:change=move |ev| {
                            let l = event_target_value(&ev).parse::<usize>().ok();
                            ctx.picked.update(|p| if let Some(Picked::Upload { label, .. }) = p { *label = l; });
                        }>
                        <option value="">"not known"</option>
                        {move || ctx.classes().into_iter().enumerate().map(|(i, c)| view! { <option value=i.to_string()>{c}</option> }).collect_view()}
                    </select>
                </label>
            </div>
            {move || ctx.picked.get().and_then(|p| match p { Picked::Upload { preview, .. } => preview, _ => None }).map(|src| view! {
                <figure id="upload-preview" class="preview">
                    <img src=src class="pixelated" width="112" height="112" alt="the upload as the model sees it" />
                    <figcaption>"What the model sees: the upload shrunk to the model's input, in grey"</figcaption>
                </figure>
            })}
            <ErrorBox msg=err.into() />
        </section>
    }
}

/// The test image a lesson opens on: the first one the server's showcase ranks (the
/// undefended base and `variant` — default: the model's default — both right, those an
/// attack of `eps` fools only on the base first). `None` where the model has none.
pub async fn lesson_image(model: &str, variant: Option<&str>, eps: Option<f64>) -> Option<Picked> {
    let enc = |s: &str| String::from(js_sys::encode_uri_component(s));
    let mut url = format!("/api/models/{}/showcase?n=1", enc(model));
    if let Some(v) = variant {
        url.push_str(&format!("&variant={}", enc(v)));
    }
    if let Some(e) = eps {
        url.push_str(&format!("&eps={e}"));
    }
    let v = api::get::<Showcase>(&url).await.ok()?;
    let s = v.images.into_iter().next()?;
    Some(Picked::Sample {
        id: s.sample,
        dataset: v.dataset,
        png: s.png,
        label: s.label,
        name: s.label_name.unwrap_or_default(),
    })
}

/// Test image `id` of `dataset`; `None` where there is no such image.
async fn test_image(dataset: &str, id: usize) -> Option<Picked> {
    let url = format!(
        "/api/samples?dataset={}&offset={id}&n=1",
        js_sys::encode_uri_component(dataset)
    );
    let v = api::get::<SampleList>(&url).await.ok()?;
    let s = v.samples.first()?;
    (s.id == id).then(|| sample_of(s, dataset))
}

/// A gallery entry as a [`Picked`].
pub fn sample_of(s: &Sample, dataset: &str) -> Picked {
    Picked::Sample {
        id: s.id,
        dataset: dataset.to_string(),
        png: s.png.clone(),
        label: s.label as usize,
        name: s.name.clone(),
    }
}

/// Probability bars of a prediction; the true class is marked.
#[component]
pub fn ProbBars(
    pred: PredictionView,
    classes: Vec<String>,
    label: Option<usize>,
    #[prop(into)] id: String,
) -> impl IntoView {
    let top = pred.class;
    let name = |i: usize| {
        classes
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("class {i}"))
    };
    let verdict = match label {
        Some(l) if l == top => "right",
        Some(_) => "wrong",
        None => "",
    };
    let probs: Vec<f64> = pred.probs.iter().map(|&p| f64::from(p)).collect();
    view! {
        <div class="probs" id=id>
            <p class=format!("top1 {verdict}")>
                <strong class="top1-name">{name(top)}</strong>
                {format!(" {:.1}%", probs.get(top).copied().unwrap_or(0.0) * 100.0)}
                {match verdict { "right" => " ✓ right", "wrong" => " ✗ wrong", _ => "" }}
            </p>
            <ul aria-label="class probabilities">
                {probs.iter().enumerate().map(|(i, p)| {
                    let pct = p * 100.0;
                    view! {
                        <li class:top=i == top class:truth=label == Some(i)>
                            <span class="cls">{name(i)}</span>
                            <span class="bar"><span style:width=format!("{pct:.1}%")></span></span>
                            <span class="pct">{format!("{pct:.1}%")}</span>
                        </li>
                    }
                }).collect_view()}
            </ul>
        </div>
    }
}

/// eps as a slider in /255 with the raw value beside it.
#[component]
pub fn EpsInput(eps255: RwSignal<f64>) -> impl IntoView {
    view! {
        <label>"ε "
            <input type="range" id="eps" min="1" max="64" step="0.5" prop:value=move || eps255.get().to_string()
                aria-valuetext=move || format!("{}/255", eps255.get())
                on:input=move |ev| eps255.set(event_target_value(&ev).parse().unwrap_or(DEFAULT_EPS255)) />
            <output>{move || format!("{}/255 = {:.4}", eps255.get(), eps255.get() / 255.0)}</output>
        </label>
    }
}

/// Attacks the attack controls offer (the server knows more; these answer quickly).
pub const ATTACKS: [(&str, &str); 4] = [
    ("fgsm", "FGSM"),
    ("pgd", "PGD"),
    ("cw", "CW (L∞ margin)"),
    ("apgd-ce", "APGD-CE"),
];

/// The attack's ε (in /255) a page opens with: 25.5/255 = 0.1, the budget the shipped
/// Fashion-MNIST models were trained and evaluated at (at 8/255, CIFAR's usual, the
/// undefended base already resists PGD-10 on most test images: no lesson to show).
pub const DEFAULT_EPS255: f64 = 25.5;

/// The attack, ε and step count a page attacks with (Playground and Compare share them).
#[derive(Clone, Copy)]
pub struct AttackSettings {
    /// Attack name, one of [`ATTACKS`].
    pub attack: RwSignal<String>,
    /// ε in /255.
    pub eps255: RwSignal<f64>,
    /// Iterations.
    pub steps: RwSignal<usize>,
}

impl AttackSettings {
    /// PGD-10 at ε = [`DEFAULT_EPS255`].
    pub fn new() -> Self {
        Self {
            attack: RwSignal::new(String::from("pgd")),
            eps255: RwSignal::new(DEFAULT_EPS255),
            steps: RwSignal::new(10),
        }
    }

    /// ε in [0,1] pixels.
    pub fn eps(&self) -> f64 {
        self.eps255.get_untracked() / 255.0
    }
}

/// Attack select, ε slider and steps box.
#[component]
pub fn AttackControls(
    s: AttackSettings,
    /// The select's element id.
    select_id: &'static str,
    /// The steps box's element id, if it needs one.
    #[prop(optional)]
    steps_id: Option<&'static str>,
) -> impl IntoView {
    view! {
        <label>"Attack "
            <select id=select_id prop:value=move || s.attack.get() on:change=move |ev| s.attack.set(event_target_value(&ev))>
                {ATTACKS.iter().map(|(k, l)| view! { <option value=*k selected=move || s.attack.get() == *k>{*l}</option> }).collect_view()}
            </select>
        </label>
        <EpsInput eps255=s.eps255 />
        <label>"Steps "
            <input type="number" id=steps_id min="1" max="200" prop:value=move || s.steps.get().to_string()
                on:input=move |ev| s.steps.set(event_target_value(&ev).parse().unwrap_or(10).clamp(1, 200)) />
        </label>
    }
}

/// The picked image, or `None` after asking the user (in `err`) to pick one.
pub fn picked_or_ask(ctx: &Ctx, err: RwSignal<Option<String>>) -> Option<Picked> {
    let p = ctx.picked.get_untracked();
    if p.is_none() {
        err.set(Some("pick or upload an image first".into()));
    }
    p
}

/// What robustness costs, in one sentence a student can read aloud, from the model's
/// evaluation (`/api/models`' `evaluation`): `robust` against the undefended base on
/// clean and attacked test images. `None` where either was not evaluated.
pub fn tradeoff_sentence(evaluation: &Evaluation, robust: &str) -> Option<String> {
    let figures = |v: &str| {
        evaluation
            .variants
            .iter()
            .find(|x| x.variant == v)
            .map(|x| (x.clean_acc, x.robust_acc))
    };
    let ((bc, br), (rc, rr)) = (figures("base")?, figures(robust)?);
    let pct = |x: f64| format!("{:.0}%", 100.0 * x);
    let cost = 100.0 * (bc - rc);
    let verdict = if cost >= 0.5 {
        format!("robustness costs {cost:.0} points of clean accuracy here")
    } else {
        "robustness costs no clean accuracy here".into()
    };
    Some(format!(
        "On the first {n} test images, {who} is right on {rc} of clean images (base: {bc}) and on {rr} under {attack} at ε = {eps} (base: {br}): {verdict}.",
        n = evaluation.n,
        who = variant_label(robust),
        rc = pct(rc),
        bc = pct(bc),
        rr = pct(rr),
        br = pct(br),
        attack = evaluation.attack,
        eps = eps_text(evaluation.eps),
    ))
}

/// An evaluation's ε as people write it: the server's f32 0.1 arrives as
/// 0.10000000149, shown as "0.1".
pub fn eps_text(eps: f32) -> String {
    format!("{}", (f64::from(eps) * 1e4).round() / 1e4)
}

/// How distinct a model's defenses are, in words a teacher can read out: each pair's
/// cosine and what the mean says (one LoRA under several names merges to a rescaling).
pub fn defenses_note(d: &DefenseSimilarity) -> impl IntoView + use<> {
    let pairs: Vec<String> = d
        .pairs
        .iter()
        .map(|p| {
            format!(
                "{} / {} {:.2}",
                p.a.to_uppercase(),
                p.b.to_uppercase(),
                p.cosine
            )
        })
        .collect();
    let (reading, meaning) = match d.reading() {
        Distinctness::Distinct => (
            "distinct",
            "Distinct: each defense changed the weights its own way, so a merge combines different changes.",
        ),
        Distinctness::PartlyAlike => (
            "partly-alike",
            "Partly alike: the defenses share much of their change.",
        ),
        Distinctness::OneLora => (
            "one-lora",
            "Nearly one LoRA under several names: merging them only rescales it.",
        ),
    };
    view! {
        <p class="defenses" data-reading=reading>
            <strong>"How different are its defenses? "</strong>
            {format!(
                "Cosine between the weight changes each defense made (1: the same change): {} (mean {:.2}, step {}). {meaning}",
                pairs.join(" · "),
                d.mean,
                d.step
            )}
        </p>
    }
}

/// [`defenses_note`] of the chosen model, where it has one.
#[component]
pub fn Defenses() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    move || ctx.model_info()?.defenses.as_ref().map(defenses_note)
}

/// [`tradeoff_sentence`] of the chosen model for `robust` (default: the chosen variant),
/// where the model was evaluated.
#[component]
pub fn TradeOff(#[prop(optional, into)] robust: Option<String>) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    move || {
        let m = ctx.model_info()?;
        let v = robust.clone().unwrap_or_else(|| ctx.variant.get());
        let v = if v == "base" { m.default_variant } else { v };
        tradeoff_sentence(m.evaluation.as_ref()?, &v)
            .map(|s| view! { <p class="tradeoff" data-variant=v>{s}</p> })
    }
}

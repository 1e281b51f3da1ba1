//! Playground: pick an image, predict, attack, see the perturbation and how the true
//! class's confidence falls as eps grows.

use hyperat::attack::AttackParams;
use leptos::prelude::*;
use serde_json::{Value, json};

use crate::components::{
    AttackControls, AttackSettings, Busy, ErrorBox, ImagePicker, ModelPicker, ProbBars,
    picked_or_ask,
};
use crate::{Ctx, api, infer};

/// eps values (in /255) of the confidence curve.
const CURVE: [f64; 7] = [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0];

#[component]
pub fn Playground() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let settings = AttackSettings::new();
    let busy = RwSignal::new(false);
    let err = RwSignal::new(None::<String>);
    let result = RwSignal::new(None::<Value>);
    let predicted = RwSignal::new(None::<Value>);
    let curve = RwSignal::new(Vec::<(f64, f64)>::new());
    let curve_busy = RwSignal::new(false);
    // Results belong to one image: a new image clears them.
    Effect::new(move |_| {
        let _ = ctx.picked.get();
        predicted.set(None);
        result.set(None);
        curve.set(vec![]);
    });

    let predict = move |_| {
        let Some(img) = picked_or_ask(&ctx, err) else {
            return;
        };
        let (model, variant) = (ctx.model.get_untracked(), ctx.variant.get_untracked());
        let local = ctx.in_browser.get_untracked();
        busy.set(true);
        err.set(None);
        leptos::task::spawn_local(async move {
            let r = if local {
                infer::predict(&model, &variant, &img, true).await.map(|(p, ran)| {
                    json!({"prediction": {"class": p.class, "probs": p.probs},
                           "where": format!("in this browser on {}", ran.backend), "backend": ran.backend,
                           "latency_ms": ran.ms, "load_ms": ran.load_ms})
                })
            } else {
                api::Form::default()
                    .field("model", &model)
                    .field("variant", &variant)
                    .input(&img)
                    .post("/api/predict")
                    .await
                    .map(|mut v| {
                        v["where"] = json!("on the server");
                        v["backend"] = json!("server");
                        v
                    })
            };
            match r {
                Ok(v) => predicted.set(Some(v)),
                Err(e) => err.set(Some(e)),
            }
            busy.set(false);
        });
    };

    let run_attack = move |_| {
        let Some(img) = picked_or_ask(&ctx, err) else {
            return;
        };
        let (model, variant) = (ctx.model.get_untracked(), ctx.variant.get_untracked());
        let (name, eps, n) = (
            settings.attack.get_untracked(),
            settings.eps(),
            settings.steps.get_untracked(),
        );
        let local = ctx.in_browser.get_untracked() && matches!(name.as_str(), "fgsm" | "pgd");
        busy.set(true);
        err.set(None);
        curve.set(vec![]);
        leptos::task::spawn_local(async move {
            let r = if local {
                let p = AttackParams {
                    eps: eps as f32,
                    steps: n,
                    ..Default::default()
                };
                infer::attack(&model, &variant, &img, &name, &p, img.label())
                    .await
                    .map(|(o, ran)| local_outcome(&o, &img, eps, ran))
            } else {
                attack_form(&model, &variant, &img, &name, eps, n)
                    .post("/api/attack")
                    .await
                    .map(|mut v| {
                        v["where"] = json!("on the server");
                        v
                    })
            };
            match r {
                Ok(v) => {
                    let label = v["label"].as_u64().unwrap_or(0) as usize;
                    // At eps = 0 the curve is the clean confidence the answer already holds.
                    let clean_conf = v["clean"]["probs"][label].as_f64().unwrap_or(0.0);
                    result.set(Some(v));
                    busy.set(false);
                    // This image's true-class confidence against eps, on the server.
                    curve_busy.set(true);
                    let mut pts = vec![];
                    for e in CURVE {
                        let conf = if e == 0.0 {
                            Ok(clean_conf)
                        } else {
                            attack_form(&model, &variant, &img, &name, e / 255.0, n)
                                .field("label", label)
                                .post("/api/attack")
                                .await
                                .map(|v| v["adversarial"]["probs"][label].as_f64().unwrap_or(0.0))
                        };
                        match conf {
                            Ok(c) => {
                                pts.push((e, c));
                                curve.set(pts.clone());
                            }
                            Err(e) => {
                                err.set(Some(format!("confidence curve: {e}")));
                                break;
                            }
                        }
                    }
                    curve_busy.set(false);
                }
                Err(e) => {
                    err.set(Some(e));
                    busy.set(false);
                }
            }
        });
    };

    view! {
        <h2>"Playground"</h2>
        <p class="lead">"Pick a test image or upload your own, then attack it: a small, carefully chosen change to the pixels (at most ε per pixel) can flip the model's answer. Compare the undefended base model with the HyperAT variants."</p>
        <div class="controls">
            <ModelPicker />
            <label class="switch" title="Load the variant's weights into this page and run the ViT in WebAssembly">
                <input type="checkbox" id="in-browser" prop:checked=move || ctx.in_browser.get()
                    on:change=move |ev| ctx.in_browser.set(event_target_checked(&ev)) />
                " run in this browser"
            </label>
        </div>
        <ImagePicker />
        <div class="controls">
            <AttackControls s=settings select_id="attack-select" steps_id="steps" />
            <button id="predict-btn" on:click=predict disabled=move || busy.get()>"Predict"</button>
            <button id="attack-btn" class="primary" on:click=run_attack disabled=move || busy.get()>"Attack"</button>
        </div>
        <p class="hint">{move || if ctx.in_browser.get() {
            "In-browser mode: predictions run here (WebGPU when available, else the CPU); FGSM and PGD run here on the CPU; other attacks on the server."
        } else { "Everything runs on the server." }}</p>
        <Busy busy=busy.into() label="working…" />
        <ErrorBox msg=err.into() />
        {move || predicted.get().map(|v| {
            let classes = ctx.classes();
            let label = ctx.picked.get().and_then(|p| p.label());
            view! {
                <section class="card" id="predict-result" aria-label="Prediction">
                    <h3>"Prediction"</h3>
                    <ProbBars pred=v["prediction"].clone() classes=classes label=label id="predict-probs" />
                    <p class="meta" id="predict-where" data-backend=v["backend"].as_str().unwrap_or_default().to_string()>
                        {format!("Ran {} in {:.1} ms", v["where"].as_str().unwrap_or_default(), v["latency_ms"].as_f64().unwrap_or(0.0))}
                        {v["load_ms"].as_f64().filter(|m| *m > 0.0).map(|m| format!(" (weights loaded in {m:.0} ms)"))}
                    </p>
                </section>
            }
        })}
        {move || result.get().map(|v| {
            let classes = ctx.classes();
            let label = v["label"].as_u64().map(|l| l as usize);
            view! {
                <section class="card" id="attack-result" aria-label="Attack result">
                    <h3 id="attack-verdict" data-verdict=v["verdict"].as_str().unwrap_or_default().to_string()>
                        {v["headline"].as_str().unwrap_or_default().to_string()}</h3>
                    <div class="triptych">
                        <figure><img src=v["clean_png"].as_str().unwrap_or_default().to_string() alt="clean image" /><figcaption>"clean"</figcaption></figure>
                        <figure><img id="adv-img" src=v["adversarial_png"].as_str().unwrap_or_default().to_string() alt="adversarial image" /><figcaption>"adversarial"</figcaption></figure>
                        <figure><img id="perturbation" src=v["perturbation_png"].as_str().unwrap_or_default().to_string() alt="perturbation, amplified around grey" /><figcaption>"perturbation (grey = 0, black/white = ∓ε)"</figcaption></figure>
                    </div>
                    <div class="side-by-side">
                        <div><h4>"Clean"</h4><ProbBars pred=v["clean"].clone() classes=classes.clone() label=label id="clean-pred" /></div>
                        <div><h4>"Adversarial"</h4><ProbBars pred=v["adversarial"].clone() classes=classes label=label id="adv-pred" /></div>
                    </div>
                    <p class="meta">{format!("‖δ‖∞ = {:.4}, ‖δ‖₂ = {:.3}; ran {} in {:.0} ms",
                        v["linf"].as_f64().unwrap_or(0.0), v["l2"].as_f64().unwrap_or(0.0),
                        v["where"].as_str().unwrap_or_default(), v["ms"].as_f64().unwrap_or(0.0))}</p>
                </section>
            }
        })}
        <Busy busy=curve_busy.into() label="measuring confidence against ε…" />
        {move || (!curve.get().is_empty()).then(|| view! { <Curve pts=curve.get() /> })}
    }
}

fn attack_form(
    model: &str,
    variant: &str,
    img: &crate::Picked,
    name: &str,
    eps: f64,
    steps: usize,
) -> api::Form {
    api::Form::default()
        .field("model", model)
        .field("variant", variant)
        .field("attack", name)
        .field("eps", eps)
        .field("steps", steps)
        .input(img)
}

/// An in-browser attack outcome in the server's JSON shape.
fn local_outcome(
    o: &hyperat::playground::AttackOutcome,
    img: &crate::Picked,
    eps: f64,
    ran: infer::Ran,
) -> Value {
    let png = |px: &[f32]| {
        hyperat::data::encode_png(px, ran.shape)
            .map(|b| {
                format!(
                    "data:image/png;base64,{}",
                    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b)
                )
            })
            .unwrap_or_default()
    };
    let clean: Vec<f32> = o
        .adv_pixels
        .iter()
        .zip(&o.delta)
        .map(|(a, d)| a - d)
        .collect();
    json!({
        "label": o.label, "fooled": o.fooled(), "clean_correct": o.clean.class == o.label, "linf": o.linf, "l2": o.l2,
        "verdict": o.verdict(), "headline": o.verdict().headline(),
        "clean": {"class": o.clean.class, "probs": o.clean.probs},
        "adversarial": {"class": o.adversarial.class, "probs": o.adversarial.probs},
        "clean_png": if matches!(img, crate::Picked::Sample{..}) { img.url() } else { png(&clean) },
        "adversarial_png": png(&o.adv_pixels),
        "perturbation_png": png(&hyperat::playground::amplify(&o.delta, eps as f32)),
        "where": format!("in this browser on {}", ran.backend), "ms": ran.ms,
    })
}

/// The true class's confidence against eps, as an SVG line.
#[component]
fn Curve(pts: Vec<(f64, f64)>) -> impl IntoView {
    let xmax = CURVE.len() as f64 - 1.0;
    let xy = |i: usize, c: f64| (20.0 + 270.0 * i as f64 / xmax, 130.0 - 110.0 * c);
    let line = pts
        .iter()
        .enumerate()
        .map(|(i, (_, c))| {
            let (x, y) = xy(i, *c);
            format!("{x:.1},{y:.1}")
        })
        .collect::<Vec<_>>()
        .join(" ");
    view! {
        <section class="card" id="eps-curve" aria-label="Confidence against epsilon">
            <h3>"True-class confidence against ε"</h3>
            <svg viewBox="0 0 300 160" class="chart" role="img" aria-label="confidence falls as epsilon grows">
                <line x1="20" y1="130" x2="290" y2="130" class="axis" />
                <line x1="20" y1="20" x2="20" y2="130" class="axis" />
                <text x="2" y="24" class="tick">"1"</text><text x="2" y="134" class="tick">"0"</text>
                {CURVE.iter().enumerate().map(|(i, e)| { let (x, _) = xy(i, 0.0); view! { <text x=x - 4.0 y="148" class="tick">{format!("{e}")}</text> } }).collect_view()}
                <text x="200" y="158" class="tick">"ε (/255)"</text>
                <polyline points=line class="series s0" fill="none" />
                {pts.iter().enumerate().map(|(i, (e, c))| { let (x, y) = xy(i, *c); view! { <circle cx=x cy=y r="3" class="dot"><title>{format!("ε {e}/255: {:.1}%", c * 100.0)}</title></circle> } }).collect_view()}
            </svg>
        </section>
    }
}

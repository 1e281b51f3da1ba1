//! Playground: pick an image, predict, attack, see the perturbation and how the true
//! class's confidence falls as eps grows. One click attacks the undefended base and the
//! chosen robust variant side by side, the lesson's point in one line.

use hyperat::attack::AttackParams;
use leptos::prelude::*;
use serde_json::{Value, json};

use crate::components::{
    AttackControls, AttackSettings, Busy, ErrorBox, ImagePicker, ModelPicker, ProbBars, TradeOff,
    picked_or_ask, png_data_url, variant_label,
};
use crate::{Ctx, api, infer};

/// eps values (in /255) of the confidence curve.
const CURVE: [f64; 7] = [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0];

#[component]
pub fn Playground() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let settings = AttackSettings::new();
    crate::link::sync_attack_page("playground", ctx, settings, true);
    let busy = RwSignal::new(false);
    let err = RwSignal::new(None::<String>);
    let result = RwSignal::new(None::<Value>);
    let predicted = RwSignal::new(None::<Value>);
    // Per variant (the base first), the true-class confidence at each ε of CURVE so far.
    let curve = RwSignal::new(Vec::<(String, Vec<f64>)>::new());
    let curve_busy = RwSignal::new(false);
    // The base's and the chosen variant's outcomes of the last attack, base first.
    let duel = RwSignal::new(Vec::<(String, Value)>::new());
    // Each request carries the generation it was made in; an answer from an older one
    // (the image, model, variant or attack changed meanwhile) is dropped.
    let generation = StoredValue::new(0u64);
    let next = move || {
        generation.update_value(|g| *g += 1);
        generation.get_value()
    };
    let stale = move |g: u64| generation.get_value() != g;
    // Results belong to one image, model, variant and attack: a change clears them.
    Effect::new(move |_| {
        let _ = (ctx.picked.get(), ctx.model.get(), ctx.variant.get());
        let _ = (
            settings.attack.get(),
            settings.eps255.get(),
            settings.steps.get(),
        );
        next();
        predicted.set(None);
        result.set(None);
        duel.set(vec![]);
        curve.set(vec![]);
        busy.set(false);
        curve_busy.set(false);
    });

    let predict = move |_| {
        let Some(img) = picked_or_ask(&ctx, err) else {
            return;
        };
        let (model, variant) = (ctx.model.get_untracked(), ctx.variant.get_untracked());
        let local = ctx.in_browser.get_untracked();
        busy.set(true);
        err.set(None);
        let g = next();
        leptos::task::spawn_local(async move {
            let r = if local {
                infer::predict(&model, &variant, &img, true).await.map(|(p, ran)| {
                    // Where WebGPU was not there, say why the CPU ran it.
                    let why = infer::why_no_gpu().map(|w| format!(" (no WebGPU: {w})")).unwrap_or_default();
                    json!({"prediction": {"class": p.class, "probs": p.probs},
                           "where": format!("in this browser on {}{why}", ran.backend), "backend": ran.backend,
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
            if stale(g) {
                return;
            }
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
        duel.set(vec![]);
        let g = next();
        leptos::task::spawn_local(async move {
            let one = |v: String| {
                let (model, img, name) = (model.clone(), img.clone(), name.clone());
                async move { attack_variant(local, &model, &v, &img, &name, eps, n).await }
            };
            let r = one(variant.clone()).await;
            if stale(g) {
                return;
            }
            let v = match r {
                Ok(v) => v,
                Err(e) => {
                    err.set(Some(e));
                    busy.set(false);
                    return;
                }
            };
            result.set(Some(v.clone()));
            // The undefended base on the same image and ε, beside the chosen variant.
            let mut outcomes = vec![];
            if variant != "base" {
                match one("base".into()).await {
                    _ if stale(g) => return,
                    Ok(b) => {
                        duel.set(vec![
                            ("base".into(), b.clone()),
                            (variant.clone(), v.clone()),
                        ]);
                        outcomes.push(("base".to_string(), b));
                    }
                    Err(e) => err.set(Some(format!("the base model's attack: {e}"))),
                }
            }
            outcomes.push((variant.clone(), v.clone()));
            busy.set(false);
            // Both models followed for the same class (the true one where known).
            let label = v["label"].as_u64().unwrap_or(0) as usize;
            // This image's true-class confidence against eps, on the server; at eps = 0
            // it is the clean confidence each answer already holds.
            curve_busy.set(true);
            let mut series: Vec<(String, Vec<f64>)> = outcomes
                .iter()
                .map(|(name, _)| (name.clone(), vec![]))
                .collect();
            'eps: for e in CURVE {
                for (k, (which, outcome)) in outcomes.iter().enumerate() {
                    let conf = if e == 0.0 {
                        Ok(outcome["clean"]["probs"][label].as_f64().unwrap_or(0.0))
                    } else {
                        attack_form(&model, which, &img, &name, e / 255.0, n)
                            .field("label", label)
                            .post("/api/attack")
                            .await
                            .map(|v| v["adversarial"]["probs"][label].as_f64().unwrap_or(0.0))
                    };
                    if stale(g) {
                        return;
                    }
                    match conf {
                        Ok(c) => series[k].1.push(c),
                        Err(e) => {
                            err.set(Some(format!("confidence curve: {e}")));
                            break 'eps;
                        }
                    }
                }
                curve.set(series.clone());
            }
            curve_busy.set(false);
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
        <div aria-live="polite">{move || (!duel.get().is_empty()).then(|| {
            let classes = ctx.classes();
            let rows = duel.get();
            let line = rows.iter().map(|(v, x)| verdict_line(v, x, &classes)).collect::<Vec<_>>().join("; ");
            view! {
                <section class="card" id="duel" aria-label="Base and robust side by side">
                    <h3>"Side by side: the same attack on both models"</h3>
                    <p id="verdict-line" class="verdict-line">{line}</p>
                    <div class="side-by-side">
                        {rows.into_iter().map(|(v, x)| view! {
                            <figure class="duel-card" data-variant=v.clone() data-verdict=x["verdict"].as_str().unwrap_or_default().to_string()>
                                <figcaption><strong>{variant_label(&v)}</strong></figcaption>
                                <img src=x["adversarial_png"].as_str().unwrap_or_default().to_string() alt=format!("the attacked image, as shown to {}", variant_label(&v)) width="112" height="112" />
                                <p>{x["headline"].as_str().unwrap_or_default().to_string()}</p>
                            </figure>
                        }).collect_view()}
                    </div>
                    <TradeOff />
                </section>
            }
        })}</div>
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
            // Marked "(true)" only where the true class is known (not for an upload).
            let label = v["label"].as_u64().map(|l| l as usize).filter(|_| v["label_known"].as_bool().unwrap_or(true));
            view! {
                <section class="card" id="attack-result" aria-label="Attack result" data-variant=ctx.variant.get_untracked()>
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
        {move || (!curve.get().is_empty()).then(|| view! { <Curve series=curve.get() /> })}
    }
}

/// Attacks `img` on `variant`: in this browser (`local`, FGSM and PGD) or on the server.
async fn attack_variant(
    local: bool,
    model: &str,
    variant: &str,
    img: &crate::Picked,
    name: &str,
    eps: f64,
    steps: usize,
) -> Result<Value, String> {
    if local {
        let p = AttackParams {
            eps: eps as f32,
            steps,
            ..Default::default()
        };
        infer::attack(model, variant, img, name, &p, img.label())
            .await
            .map(|(o, ran)| local_outcome(&o, img, eps, ran))
    } else {
        attack_form(model, variant, img, name, eps, steps)
            .post("/api/attack")
            .await
            .map(|mut v| {
                v["where"] = json!("on the server");
                v
            })
    }
}

/// "base (undefended) fooled: Sneaker → Sandal 99%": one model's outcome in a line.
fn verdict_line(variant: &str, v: &Value, classes: &[String]) -> String {
    let name = |k: &str| {
        let c = v[k]["class"].as_u64().unwrap_or(0) as usize;
        let p = v[k]["probs"][c].as_f64().unwrap_or(0.0);
        (classes.get(c).cloned().unwrap_or_else(|| c.to_string()), p)
    };
    let ((clean, _), (adv, p)) = (name("clean"), name("adversarial"));
    let who = variant_label(variant);
    match v["verdict"].as_str().unwrap_or_default() {
        "fooled" => format!("{who} fooled: {clean} → {adv} {:.0}%", 100.0 * p),
        "already_wrong" => format!("{who} already wrong before the attack: {clean}"),
        "nothing_found" => format!(
            "{who} held (no adversarial example found): {adv} {:.0}%",
            100.0 * p
        ),
        _ => format!("{who} held: {adv} {:.0}%", 100.0 * p),
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
    let png = |px: &[f32]| png_data_url(px, ran.shape).unwrap_or_default();
    let clean: Vec<f32> = o
        .adv_pixels
        .iter()
        .zip(&o.delta)
        .map(|(a, d)| a - d)
        .collect();
    json!({
        "label": o.label, "fooled": o.fooled(), "clean_correct": o.clean.class == o.label, "linf": o.linf, "l2": o.l2,
        "verdict": o.verdict(), "headline": o.verdict().headline(img.label().is_some()), "label_known": img.label().is_some(),
        "clean": {"class": o.clean.class, "probs": o.clean.probs},
        "adversarial": {"class": o.adversarial.class, "probs": o.adversarial.probs},
        "clean_png": if matches!(img, crate::Picked::Sample{..}) { img.url() } else { png(&clean) },
        "adversarial_png": png(&o.adv_pixels),
        "perturbation_png": png(&hyperat::playground::amplify(&o.delta, eps as f32)),
        "where": format!("in this browser on {}", ran.backend), "ms": ran.ms,
    })
}

/// The true class's confidence against eps, one line per model (the base first).
#[component]
fn Curve(series: Vec<(String, Vec<f64>)>) -> impl IntoView {
    let xmax = CURVE.len() as f64 - 1.0;
    let xy = |i: usize, c: f64| (40.0 + 250.0 * i as f64 / xmax, 130.0 - 110.0 * c);
    let lines = series
        .iter()
        .enumerate()
        .map(|(k, (variant, pts))| {
            let line = pts
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let (x, y) = xy(i, *c);
                    format!("{x:.1},{y:.1}")
                })
                .collect::<Vec<_>>()
                .join(" ");
            let who = variant_label(variant);
            view! {
                <polyline points=line class=format!("series s{k}") fill="none" data-variant=variant.clone() />
                {pts.iter().enumerate().map(|(i, c)| { let (x, y) = xy(i, *c); view! {
                    <circle cx=x cy=y r="3" class=format!("dot d{k}")><title>{format!("{who}, ε {}/255: {:.1}%", CURVE[i], c * 100.0)}</title></circle>
                } }).collect_view()}
            }
        })
        .collect_view();
    view! {
        <section class="card" id="eps-curve" aria-label="Confidence against epsilon">
            <h3>"How sure each model stays of the true class as ε grows"</h3>
            <p class="legend">{series.iter().enumerate().map(|(k, (v, _))| view! {
                <span class=format!("key s{k}")>"━ "</span>{variant_label(v)}" "
            }).collect_view()}</p>
            <svg viewBox="0 0 300 175" class="chart" role="img" aria-label="true-class probability against epsilon, one line per model">
                <line x1="40" y1="130" x2="290" y2="130" class="axis" />
                <line x1="40" y1="20" x2="40" y2="130" class="axis" />
                <text x="22" y="24" class="tick">"1"</text><text x="22" y="134" class="tick">"0"</text>
                <text x="10" y="80" class="tick" transform="rotate(-90 10 80)" text-anchor="middle">"true-class prob."</text>
                {CURVE.iter().enumerate().map(|(i, e)| { let (x, _) = xy(i, 0.0); view! { <text x=x - 4.0 y="146" class="tick">{format!("{e}")}</text> } }).collect_view()}
                <text x="165" y="164" class="tick" text-anchor="middle">"ε: the most each pixel may change (/255)"</text>
                {lines}
            </svg>
            <p class="meta">"Each point is a fresh attack of that size on that model. A line that stays high belongs to a model the attack cannot talk out of the true class; a line that drops to 0 has been fooled."</p>
        </section>
    }
}

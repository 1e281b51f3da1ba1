//! Playground: pick an image, predict, attack, see the perturbation and how the true
//! class's confidence falls as eps grows. One click attacks the undefended base and the
//! chosen robust variant side by side, the lesson's point in one line.

use hyperat::attack::AttackParams;
use hyperat::inspect::Verdict;
use hyperat::wire::{AttackResponse, AttackView, PredictResponse, PredictionView};
use leptos::prelude::*;

use crate::components::{
    AttackControls, AttackSettings, Busy, ErrorBox, ImagePicker, ModelPicker, ProbBars, TradeOff,
    picked_or_ask, variant_label,
};
use crate::{Ctx, api, infer};

/// A prediction, and where it ran.
#[derive(Clone)]
struct Predicted {
    prediction: PredictionView,
    /// "on the server", "in this browser on WebGPU (…)".
    place: String,
    /// `server` or the browser backend's name.
    backend: String,
    latency_ms: f64,
    /// Time spent fetching the weights into the browser (0: cached or on the server).
    load_ms: f64,
}

/// An attack's outcome, and where it ran.
#[derive(Clone)]
struct Attacked {
    outcome: AttackView,
    clean_png: String,
    place: String,
    ms: f64,
}

/// eps values (in /255) of the confidence curve.
const CURVE: [f64; 7] = [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0];

#[component]
pub fn Playground() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let settings = AttackSettings::new();
    crate::link::sync_attack_page("playground", ctx, settings, true);
    let busy = RwSignal::new(false);
    let err = RwSignal::new(None::<String>);
    let result = RwSignal::new(None::<Attacked>);
    let predicted = RwSignal::new(None::<Predicted>);
    // Per variant (the base first), the true-class confidence at each ε of CURVE so far.
    let curve = RwSignal::new(Vec::<(String, Vec<f64>)>::new());
    let curve_busy = RwSignal::new(false);
    // The base's and the chosen variant's outcomes of the last attack, base first.
    let duel = RwSignal::new(Vec::<(String, Attacked)>::new());
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
        let classes = ctx.classes();
        busy.set(true);
        err.set(None);
        let g = next();
        leptos::task::spawn_local(async move {
            let r = if local {
                infer::predict(&model, &variant, &img, true)
                    .await
                    .map(|(p, ran)| {
                        // Where WebGPU was not there, say why the CPU ran it.
                        let why = infer::why_no_gpu()
                            .map(|w| format!(" (no WebGPU: {w})"))
                            .unwrap_or_default();
                        Predicted {
                            prediction: PredictionView::of(&p, &classes),
                            place: format!("in this browser on {}{why}", ran.backend),
                            backend: ran.backend,
                            latency_ms: ran.ms,
                            load_ms: ran.load_ms,
                        }
                    })
            } else {
                api::Form::default()
                    .field("model", &model)
                    .field("variant", &variant)
                    .input(&img)
                    .post::<PredictResponse>("/api/predict")
                    .await
                    .map(|r| Predicted {
                        prediction: r.prediction,
                        place: "on the server".into(),
                        backend: "server".into(),
                        latency_ms: r.latency_ms,
                        load_ms: 0.0,
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
        let classes = ctx.classes();
        busy.set(true);
        err.set(None);
        curve.set(vec![]);
        duel.set(vec![]);
        let g = next();
        leptos::task::spawn_local(async move {
            let one = |v: String| {
                let (model, img, name, classes) =
                    (model.clone(), img.clone(), name.clone(), classes.clone());
                async move { attack_variant(local, &model, &v, &img, &name, eps, n, &classes).await }
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
            let label = v.outcome.label;
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
                        Ok(f64::from(outcome.outcome.clean.prob(label)))
                    } else {
                        attack_form(&model, which, &img, &name, e / 255.0, n)
                            .field("label", label)
                            .post::<AttackResponse>("/api/attack")
                            .await
                            .map(|v| f64::from(v.outcome.adversarial.prob(label)))
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
            let rows = duel.get();
            let line = rows.iter().map(|(v, x)| verdict_line(v, x)).collect::<Vec<_>>().join("; ");
            view! {
                <section class="card" id="duel" aria-label="Base and robust side by side">
                    <h3>"Side by side: the same attack on both models"</h3>
                    <p id="verdict-line" class="verdict-line">{line}</p>
                    <div class="side-by-side">
                        {rows.into_iter().map(|(v, x)| view! {
                            <figure class="duel-card" data-variant=v.clone() data-verdict=x.outcome.verdict.name()>
                                <figcaption><strong>{variant_label(&v)}</strong></figcaption>
                                <img src=x.outcome.adversarial_png.clone() alt=format!("the attacked image, as shown to {}", variant_label(&v)) width="112" height="112" />
                                <p>{x.outcome.headline.clone()}</p>
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
                    <ProbBars pred=v.prediction.clone() classes=classes label=label id="predict-probs" />
                    <p class="meta" id="predict-where" data-backend=v.backend.clone()>
                        {format!("Ran {} in {:.1} ms", v.place, v.latency_ms)}
                        {(v.load_ms > 0.0).then(|| format!(" (weights loaded in {:.0} ms)", v.load_ms))}
                    </p>
                </section>
            }
        })}
        {move || result.get().map(|v| {
            let classes = ctx.classes();
            // Marked "(true)" only where the true class is known (not for an upload).
            let o = &v.outcome;
            let label = Some(o.label).filter(|_| o.label_known);
            view! {
                <section class="card" id="attack-result" aria-label="Attack result" data-variant=ctx.variant.get_untracked()>
                    <h3 id="attack-verdict" data-verdict=o.verdict.name()>
                        {o.headline.clone()}</h3>
                    <div class="triptych">
                        <figure><img src=v.clean_png.clone() alt="clean image" /><figcaption>"clean"</figcaption></figure>
                        <figure><img id="adv-img" src=o.adversarial_png.clone() alt="adversarial image" /><figcaption>"adversarial"</figcaption></figure>
                        <figure><img id="perturbation" src=o.perturbation_png.clone() alt="perturbation, amplified around grey" /><figcaption>"perturbation (grey = 0, black/white = ∓ε)"</figcaption></figure>
                    </div>
                    <div class="side-by-side">
                        <div><h4>"Clean"</h4><ProbBars pred=o.clean.clone() classes=classes.clone() label=label id="clean-pred" /></div>
                        <div><h4>"Adversarial"</h4><ProbBars pred=o.adversarial.clone() classes=classes label=label id="adv-pred" /></div>
                    </div>
                    <p class="meta">{format!("‖δ‖∞ = {:.4}, ‖δ‖₂ = {:.3}; ran {} in {:.0} ms",
                        o.linf, o.l2, v.place, v.ms)}</p>
                </section>
            }
        })}
        <Busy busy=curve_busy.into() label="measuring confidence against ε…" />
        {move || (!curve.get().is_empty()).then(|| view! { <Curve series=curve.get() /> })}
    }
}

/// Attacks `img` on `variant`: in this browser (`local`, FGSM and PGD) or on the server.
#[allow(clippy::too_many_arguments)]
async fn attack_variant(
    local: bool,
    model: &str,
    variant: &str,
    img: &crate::Picked,
    name: &str,
    eps: f64,
    steps: usize,
    classes: &[String],
) -> Result<Attacked, String> {
    if local {
        let p = AttackParams {
            eps: eps as f32,
            steps,
            ..Default::default()
        };
        let (o, ran) = infer::attack(model, variant, img, name, &p, img.label()).await?;
        local_outcome(&o, img, eps, ran, classes)
    } else {
        attack_form(model, variant, img, name, eps, steps)
            .post::<AttackResponse>("/api/attack")
            .await
            .map(|r| Attacked {
                outcome: r.outcome,
                clean_png: r.clean_png,
                place: "on the server".into(),
                ms: r.ms,
            })
    }
}

/// "base (undefended) fooled: Sneaker → Sandal 99%": one model's outcome in a line.
fn verdict_line(variant: &str, v: &Attacked) -> String {
    let o = &v.outcome;
    let (clean, adv) = (&o.clean.name, &o.adversarial.name);
    let p = o.adversarial.confidence;
    let who = variant_label(variant);
    match o.verdict {
        Verdict::Fooled => format!("{who} fooled: {clean} → {adv} {:.0}%", 100.0 * p),
        Verdict::AlreadyWrong => format!("{who} already wrong before the attack: {clean}"),
        Verdict::NothingFound => format!(
            "{who} held (no adversarial example found): {adv} {:.0}%",
            100.0 * p
        ),
        Verdict::Held => format!("{who} held: {adv} {:.0}%", 100.0 * p),
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

/// An in-browser attack outcome as the server would answer it.
fn local_outcome(
    o: &hyperat::inspect::AttackOutcome,
    img: &crate::Picked,
    eps: f64,
    ran: infer::Ran,
    classes: &[String],
) -> Result<Attacked, String> {
    let outcome = AttackView::of(o, img.label().is_some(), classes, ran.shape, eps as f32)
        .map_err(|e| e.to_string())?;
    let clean_png = match img {
        crate::Picked::Sample { .. } => img.url(),
        crate::Picked::Upload { .. } => {
            let clean: Vec<f32> = o
                .adv_pixels
                .iter()
                .zip(&o.delta)
                .map(|(a, d)| a - d)
                .collect();
            hyperat::data::png_data_url(&clean, ran.shape).map_err(|e| e.to_string())?
        }
    };
    Ok(Attacked {
        outcome,
        clean_png,
        place: format!("in this browser on {}", ran.backend),
        ms: ran.ms,
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

//! Learn: a short classroom page on adversarial examples, adversarial training, LoRA and
//! HyperAT's merge, with a live example from the default model.

use hyperat::wire::AttackResponse;
use leptos::prelude::*;

use crate::components::{Busy, ErrorBox, TradeOff, lesson_image, variant_label};
use crate::{Ctx, Picked, api};

/// The demo's attack radius: the page's default ε (0.1, Fashion-MNIST's usual budget).
const EPS: f64 = crate::components::DEFAULT_EPS255 / 255.0;

/// The lesson's steps (title, text); the live example follows them.
const STEPS: [(&str, &str); 4] = [
    (
        "1. Adversarial examples",
        "A classifier can be fooled by changes to an image that people hardly see. An attack such as PGD nudges every pixel by at most ε (here 0.1, a tenth of the range from black to white: the usual budget on Fashion-MNIST) in the direction that most increases the model's loss, several times over. The result looks the same to us; the model's answer flips.",
    ),
    (
        "2. Adversarial training",
        "The best-known defense trains on those attacked images: each training step first attacks the batch, then learns from the attacked copy. PGD-AT learns to classify the attacked image correctly; TRADES balances clean accuracy against a stable prediction; MART puts extra weight on the images the model gets wrong.",
    ),
    (
        "3. LoRA: tuning a few parameters",
        "Retraining all of a Vision Transformer is expensive. LoRA keeps the pretrained weights W₀ frozen and adds a low-rank change: W = W₀ + scaling · B·A, where A and B are thin matrices (rank r). Only A and B learn: a small fraction of the parameters.",
    ),
    (
        "4. HyperAT: one hypernetwork, many defenses, one merged model",
        "Each defense has strengths. HyperAT does not train one LoRA per defense separately: a small shared hypernetwork generates the LoRA factors for every layer from learned embeddings of the method, the layer and the module. Each training step samples one defense. Afterwards the per-method LoRAs are merged (HyperAT+ averages them) and folded into the weights, leaving a plain ViT that costs nothing extra at inference. Does it pay? On our Fashion-MNIST runs, not yet: a single LoRA trained with PGD-AT alone ended more robust than HyperAT+ after the same training, and the three defenses' LoRAs grew almost identical, leaving the merge little to combine (docs/results-fashion-mnist.md in the repository). Whether a defense helps is measured, never assumed.",
    ),
];

/// The live example's title (the last step of Present mode).
const LIVE: &str = "5. Try it: the same attack on the undefended and the HyperAT+ model";

#[component]
pub fn Learn() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let busy = RwSignal::new(false);
    let err = RwSignal::new(None::<String>);
    let shown = RwSignal::new(Vec::<(String, AttackResponse)>::new());
    let demo = move || {
        let model = ctx.model.get_untracked();
        let variants: Vec<String> = ctx
            .model_info()
            .map(|m| m.variants)
            .unwrap_or_default()
            .into_iter()
            .filter(|v| v == "base" || v == "merged:uniform")
            .collect();
        busy.set(true);
        err.set(None);
        shown.set(vec![]);
        leptos::task::spawn_local(async move {
            // An image both models get right, chosen by the server from data.
            let robust = variants.iter().find(|v| *v != "base").cloned();
            let Some(Picked::Sample { id, dataset, .. }) =
                lesson_image(&model, robust.as_deref(), Some(EPS)).await
            else {
                err.set(Some("no test image that both models classify right".into()));
                busy.set(false);
                return;
            };
            for v in variants {
                let r = api::Form::default()
                    .field("model", &model)
                    .field("variant", &v)
                    .field("attack", "pgd")
                    .field("eps", EPS)
                    .field("steps", 10)
                    .field("sample", id)
                    .field("dataset", &dataset)
                    .post::<AttackResponse>("/api/attack")
                    .await;
                match r {
                    Ok(x) => shown.update(|s| s.push((v, x))),
                    Err(e) => {
                        err.set(Some(e));
                        break;
                    }
                }
            }
            busy.set(false);
        });
    };
    // Present mode: step 1..=STEPS.len() + 1 (the live example), in the URL as
    // `#/learn?present=N` so a reload or a shared link opens on the same step.
    let present = RwSignal::new(
        crate::link::Link::current()
            .parse::<usize>("present")
            .filter(|n| (1..=STEPS.len() + 1).contains(n)),
    );
    // Clamped to the steps there are (n ≥ 1, so "previous" of step 1 stays on it).
    let go = move |step: Option<usize>| {
        let step = step.map(|n| n.clamp(1, STEPS.len() + 1));
        present.set(step);
        let q = step.map(|n| n.to_string()).unwrap_or_default();
        crate::link::replace("learn", &[("present", q)]);
    };
    // Reaching the live step runs the example (once the model list is there; once: the
    // button runs it again).
    Effect::new(move |_| {
        if present.get() == Some(STEPS.len() + 1)
            && !ctx.models.get().is_empty()
            && shown.get_untracked().is_empty()
            && !busy.get_untracked()
        {
            demo();
        }
    });
    let keys = window_event_listener(leptos::ev::keydown, move |ev| {
        let Some(n) = present.get_untracked() else {
            return;
        };
        match ev.key().as_str() {
            "ArrowRight" | "PageDown" | " " => go(Some(n + 1)),
            "ArrowLeft" | "PageUp" => go(Some(n - 1)),
            "Home" => go(Some(1)),
            "End" => go(Some(STEPS.len() + 1)),
            "Escape" => go(None),
            _ => return,
        }
        ev.prevent_default();
    });
    on_cleanup(move || keys.remove());
    let live = move || {
        view! {
            <Busy busy=busy.into() label="attacking…" />
            <ErrorBox msg=err.into() />
            <TradeOff robust="merged:uniform" />
            <div class="side-by-side">
                {move || shown.get().into_iter().map(|(v, x)| view! {
                    <figure>
                        <img src=x.outcome.adversarial_png.clone() alt="adversarial image" width="112" height="112" />
                        <figcaption data-verdict=x.outcome.verdict.name()>{format!("{}: {} (true class {}): clean → {}, attacked → {}", variant_label(&v),
                            x.outcome.headline, x.outcome.label_name.as_deref().unwrap_or("?"),
                            x.outcome.clean.name, x.outcome.adversarial.name)}</figcaption>
                    </figure>
                }).collect_view()}
            </div>
        }
    };
    view! {
        <h2>"Learn"</h2>
        <p><button id="present-btn" on:click=move |_| go(Some(1))>"Present"</button>
            <span class="hint">" Large type, one step at a time; ← and → move, Esc leaves."</span></p>
        <article class="card prose">
            {STEPS.iter().map(|(t, p)| view! { <h3>{*t}</h3><p>{*p}</p> }).collect_view()}
        </article>
        <section class="card" aria-label="Live example">
            <h3>{LIVE}</h3>
            <button id="learn-demo" class="primary" on:click=move |_| demo() disabled=move || busy.get()>"Attack an image both models get right (PGD, ε = 0.1)"</button>
            {move || present.get().is_none().then(live)}
        </section>
        {move || present.get().map(|n| {
            let total = STEPS.len() + 1;
            view! {
                <section id="present" class="present" role="dialog" aria-modal="true" aria-label="Presentation" data-step=n.to_string()>
                    <p class="present-count" aria-live="polite">{format!("{n} / {total}")}</p>
                    {match STEPS.get(n - 1) {
                        Some((t, p)) => view! { <h3>{*t}</h3><p>{*p}</p> }.into_any(),
                        None => view! {
                            <h3>{LIVE}</h3>
                            <button id="present-demo" class="primary" on:click=move |_| demo() disabled=move || busy.get()>"Run it again"</button>
                            {live()}
                        }.into_any(),
                    }}
                    <nav class="present-nav" aria-label="Presentation steps">
                        <button id="present-prev" on:click=move |_| go(Some(n - 1)) disabled=n == 1>"← previous"</button>
                        <button id="present-exit" on:click=move |_| go(None)>"leave (Esc)"</button>
                        <button id="present-next" class="primary" on:click=move |_| go(Some(n + 1)) disabled=n == total>"next →"</button>
                    </nav>
                </section>
            }
        })}
    }
}

//! Compare: one image, every variant (base, each defense's LoRA, each merge) attacked
//! side by side, and the transfer matrix as a heat map.

use hyperat::wire::CompareResponse;
use leptos::prelude::*;

use crate::components::{
    AttackControls, AttackSettings, Busy, Defenses, ErrorBox, ImagePicker, ModelPicker,
    picked_or_ask, variant_label,
};
use crate::{Ctx, api};

#[component]
pub fn Compare() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let s = AttackSettings::new();
    crate::link::sync_attack_page("compare", ctx, s, false);
    let busy = RwSignal::new(false);
    let err = RwSignal::new(None::<String>);
    let result = RwSignal::new(None::<CompareResponse>);
    let run = move |_| {
        let Some(img) = picked_or_ask(&ctx, err) else {
            return;
        };
        let form = api::Form::default()
            .field("model", ctx.model.get_untracked())
            .field("attack", s.attack.get_untracked())
            .field("eps", s.eps())
            .field("steps", s.steps.get_untracked())
            .input(&img);
        busy.set(true);
        err.set(None);
        leptos::task::spawn_local(async move {
            match form.post::<CompareResponse>("/api/compare").await {
                Ok(v) => result.set(Some(v)),
                Err(e) => err.set(Some(e)),
            }
            busy.set(false);
        });
    };
    view! {
        <h2>"Compare variants"</h2>
        <p class="lead">"The same attack, made against each variant in turn. The heat map shows transfer: an attack made on the row's variant, shown to the column's variant (green ✓: still right, red ✗: fooled)."</p>
        <div class="controls"><ModelPicker no_variant=true /></div>
        <Defenses />
        <ImagePicker />
        <div class="controls">
            <AttackControls s=s select_id="compare-attack" />
            <button id="compare-btn" class="primary" on:click=run disabled=move || busy.get()>"Compare every variant"</button>
        </div>
        <Busy busy=busy.into() label="attacking every variant…" />
        <ErrorBox msg=err.into() />
        {move || result.get().map(|v| view! { <Results v=v /> })}
    }
}

#[component]
fn Results(v: CompareResponse) -> impl IntoView {
    let variants = v.variants.clone();
    let mark = |ok: bool| if ok { "✓" } else { "✗" };
    view! {
        <section class="card" aria-label="Every variant">
            <h3>{format!("True class: {}", v.label_name.as_deref().unwrap_or("?"))}</h3>
            <div class="table-wrap" tabindex="0" role="region" aria-label="every variant attacked"><table id="compare-table">
                <thead><tr><th scope="col">"Variant"</th><th scope="col">"Clean"</th><th scope="col">"Adversarial"</th><th scope="col">"Perturbation"</th></tr></thead>
                <tbody>
                    {v.rows.iter().map(|r| {
                        let o = &r.outcome;
                        view! {
                            <tr class="variant-row">
                                <th scope="row">{variant_label(&r.variant)}</th>
                                <td class:right=o.clean_correct class:wrong=!o.clean_correct>
                                    {format!("{} {:.0}% {}", o.clean.name, o.clean.confidence * 100.0, mark(o.clean_correct))}</td>
                                <td class:right=o.adversarial_correct class:wrong=!o.adversarial_correct>
                                    <img src=o.adversarial_png.clone() alt="adversarial image" width="28" height="28" />
                                    {format!(" {} {:.0}% {}", o.adversarial.name, o.adversarial.confidence * 100.0, mark(o.adversarial_correct))}</td>
                                <td><img src=o.perturbation_png.clone() alt="perturbation" width="28" height="28" /></td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table></div>
            <h3>"Transfer: does an attack made on one model fool another?"</h3>
            <p class="legend" id="heat-legend">
                <span class="swatch right" aria-hidden="true"></span>" ✓ still right (darker: surer of the true class) "
                <span class="swatch wrong" aria-hidden="true"></span>" ✗ fooled (darker: further from the true class)"
            </p>
            <div class="table-wrap" tabindex="0" role="region" aria-label="transfer matrix"><table class="heat" id="transfer-table">
                <caption>"Each cell: the image attacked on the row's model, shown to the column's model. The % is the probability the column's model gives the true class."</caption>
                <thead><tr><th scope="col" class="axis-title">"made on ↓ · shown to →"</th>{variants.iter().map(|c| view! { <th scope="col">{variant_label(c)}</th> }).collect_view()}</tr></thead>
                <tbody>
                    {v.transfer.iter().zip(&variants).map(|(row, rv)| view! {
                        <tr><th scope="row">{variant_label(rv)}</th>
                            {row.iter().zip(&variants).map(|(c, cv)| {
                                let p = f64::from(c.label_prob.unwrap_or(0.0));
                                let ok = c.correct;
                                let title = format!("made on {}, shown to {}: {} {}, true class {:.1}%", variant_label(rv), variant_label(cv),
                                    if ok { "still right" } else { "fooled" }, c.name, p * 100.0);
                                view! { <td style:background=heat_colour(ok, p) data-correct=ok.to_string() title=title>{mark(ok)}{format!(" {:.0}%", p * 100.0)}</td> }
                            }).collect_view()}
                        </tr>
                    }).collect_view()}
                </tbody>
            </table></div>
            <p class="meta">{format!("{} in {:.0} ms", v.attack.name, v.ms)}</p>
        </section>
    }
}

/// A transfer cell's colour: green when the column's model is still right, red when it
/// is fooled (the sign never rests on the shade alone: ✓/✗ are written too); darker
/// the surer it is of the true class (right) or the further from it (fooled). The darkest
/// shades keep dark text at a 4.5:1 contrast (WCAG AA; axe-core checks it).
fn heat_colour(right: bool, true_prob: f64) -> String {
    let p = true_prob.clamp(0.0, 1.0);
    if right {
        format!("hsl(130, 50%, {:.0}%)", 86.0 - 28.0 * p)
    } else {
        format!("hsl(5, 70%, {:.0}%)", 88.0 - 20.0 * (1.0 - p))
    }
}

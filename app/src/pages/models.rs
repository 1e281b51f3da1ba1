//! Models: every model the server holds, its variants (each exportable as a timm
//! checkpoint) and, where evaluated, its results table.

use hyperat::wire::{Evaluation, ModelDetail, Report};
use leptos::prelude::*;

use crate::components::{
    Busy, ErrorBox, defenses_note, eps_text, tradeoff_sentence, variant_label,
};
use crate::{Ctx, api};

#[component]
pub fn Models() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    ctx.refresh_models();
    let detail = RwSignal::new(None::<ModelDetail>);
    let busy = RwSignal::new(false);
    let err = RwSignal::new(None::<String>);
    let open = move |id: String| {
        busy.set(true);
        leptos::task::spawn_local(async move {
            match api::get::<ModelDetail>(&format!(
                "/api/models/{}",
                js_sys::encode_uri_component(&id)
            ))
            .await
            {
                Ok(v) => {
                    detail.set(Some(v));
                    err.set(None);
                }
                Err(e) => err.set(Some(e)),
            }
            busy.set(false);
        });
    };
    view! {
        <h2>"Models"</h2>
        <p class="lead">"Each model is a frozen ViT with its variants: the undefended base, one LoRA per defense method, and the merges folded into plain ViT weights. Any variant downloads as a timm checkpoint (config.json + model.safetensors)."</p>
        <ErrorBox msg=err.into() />
        <div class="model-list" id="model-list">
            {move || ctx.models.get().into_iter().map(|m| {
                let id = m.id.clone();
                let id2 = id.clone();
                let a = &m.architecture;
                view! {
                    <article class="card model" data-model=id.clone()>
                        <h3>{m.name.clone().unwrap_or_else(|| id.clone())}</h3>
                        {m.name.is_some().then(|| view! { <p class="meta">{format!("id {id}")}</p> })}
                        <p class="meta">{format!("{} · {} classes · input {:?} · ViT {}×{} (dim {}, patch {})",
                            m.kind, m.classes.len(), m.input, a.depth, a.num_heads, a.embed_dim, a.patch_size)}</p>
                        <ul class="variants">
                            {m.variants.iter().map(|v| {
                                let href = format!("/api/models/{}/export?variant={}", id, js_sys::encode_uri_component(v));
                                view! { <li>{variant_label(v)}" · "<a href=href download>"export"</a></li> }
                            }).collect_view()}
                        </ul>
                        {m.evaluation.as_ref().map(|e| figures_table(&m.id, e))}
                        {m.evaluation.as_ref().and_then(|e| tradeoff_sentence(e, &m.default_variant)).map(|t| view! { <p class="tradeoff">{t}</p> })}
                        {m.defenses.as_ref().map(defenses_note)}
                        <button on:click=move |_| open(id2.clone())>"details"</button>
                    </article>
                }
            }).collect_view()}
        </div>
        <Busy busy=busy.into() label="loading…" />
        {move || detail.get().map(|d| view! {
            <section class="card" id="model-detail">
                <h3>{d.info.id.clone()}</h3>
                {d.info.summary.as_ref().map(|s| view! { <pre class="json">{serde_json::to_string_pretty(s).unwrap_or_default()}</pre> })}
                {d.results.as_ref().or(d.report.as_ref()).map(report_table)}
            </section>
        })}
    }
}

/// A report's rows as a table.
fn report_table(r: &Report) -> impl IntoView + use<> {
    let pct = |x: f64| format!("{:.2}%", 100.0 * x);
    let opt = |x: Option<f64>, f: &dyn Fn(f64) -> String| x.map_or("—".into(), f);
    let steps = r.config.steps;
    let aa = r.rows.iter().any(|row| row.aa_acc.is_some());
    view! {
        <div class="table-wrap" tabindex="0" role="region" aria-label="results table"><table class="report">
            <caption>{format!("First {} test images, ε = {}", r.rows.first().map_or(0, |row| row.n), eps_text(r.config.eps))}</caption>
            <thead><tr>
                <th scope="col">"model"</th><th scope="col">"clean"</th><th scope="col">"mean confidence"</th>
                <th scope="col">{format!("PGD-{steps}")}</th><th scope="col">{format!("CW-{steps}")}</th>
                {aa.then(|| view! { <th scope="col">"AutoAttack"</th> })}
                <th scope="col">"trainable parameters"</th><th scope="col">"training time"</th>
            </tr></thead>
            <tbody>{r.rows.iter().map(|row| view! {
                <tr>
                    <th scope="row">{row.name.clone()}</th>
                    <td>{pct(row.clean_acc)}</td><td>{format!("{:.3}", row.mean_confidence)}</td>
                    <td>{pct(row.pgd_acc)}</td><td>{pct(row.cw_acc)}</td>
                    {aa.then(|| view! { <td>{opt(row.aa_acc, &pct)}{row.aa_n.map(|n| format!(" (n={n})"))}</td> })}
                    <td>{row.trainable_params.map_or("—".into(), |p| p.to_string())}</td>
                    <td>{opt(row.train_seconds, &|s| format!("{:.0} s", s))}</td>
                </tr>
            }).collect_view()}</tbody>
        </table></div>
    }
}

/// Each evaluated variant's clean and robust accuracy (a model's `evaluation`).
fn figures_table(model: &str, e: &Evaluation) -> impl IntoView + use<> {
    let pct = |x: Option<f64>| x.map_or("—".into(), |x| format!("{:.1}%", 100.0 * x));
    let aa = e.autoattack_n;
    let caption = format!(
        "On the first {} test images; robust: still right under {} at ε = {} (an image counts only when the clean and the attacked copy are both right){}.",
        e.n,
        e.attack,
        eps_text(e.eps),
        aa.map_or(String::new(), |n| format!("; AutoAttack on the first {n}"))
    );
    view! {
        <div class="table-wrap" tabindex="0" role="region" aria-label="variant figures"><table class="figures" data-model=model.to_string()>
            <caption>{caption}</caption>
            <thead><tr><th scope="col">"variant"</th><th scope="col">"clean"</th><th scope="col">"robust"</th><th scope="col">"mean confidence"</th>
                {aa.map(|_| view! { <th scope="col">"AutoAttack"</th> })}</tr></thead>
            <tbody>{e.variants.iter().map(|r| view! {
                <tr data-variant=r.variant.clone()>
                    <th scope="row">{variant_label(&r.variant)}</th>
                    <td>{pct(Some(r.clean_acc))}</td><td>{pct(Some(r.robust_acc))}</td><td>{pct(Some(r.mean_confidence))}</td>
                    {aa.map(|_| view! { <td>{pct(r.autoattack_acc)}</td> })}
                </tr>
            }).collect_view()}</tbody>
        </table></div>
    }
}

//! Models: every model the server holds, its variants (each exportable as a timm
//! checkpoint) and, where evaluated, its results table.

use leptos::prelude::*;
use serde_json::Value;

use crate::components::{Busy, ErrorBox, eps_text, tradeoff_sentence, variant_label};
use crate::{Ctx, api};

#[component]
pub fn Models() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    ctx.refresh_models();
    let detail = RwSignal::new(None::<Value>);
    let busy = RwSignal::new(false);
    let err = RwSignal::new(None::<String>);
    let open = move |id: String| {
        busy.set(true);
        leptos::task::spawn_local(async move {
            match api::get(&format!(
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
                let id = m["id"].as_str().unwrap_or_default().to_string();
                let id2 = id.clone();
                let a = &m["architecture"];
                view! {
                    <article class="card model" data-model=id.clone()>
                        <h3>{m["name"].as_str().map_or(id.clone(), String::from)}</h3>
                        {m["name"].is_string().then(|| view! { <p class="meta">{format!("id {id}")}</p> })}
                        <p class="meta">{format!("{} · {} classes · input {} · ViT {}×{} (dim {}, patch {})",
                            m["kind"].as_str().unwrap_or("model"), m["classes"].as_array().map(|c| c.len()).unwrap_or(0),
                            m["input"], a["depth"], a["num_heads"], a["embed_dim"], a["patch_size"])}</p>
                        <ul class="variants">
                            {m["variants"].as_array().cloned().unwrap_or_default().into_iter().map(|v| {
                                let v = v.as_str().unwrap_or_default().to_string();
                                let href = format!("/api/models/{}/export?variant={}", id, js_sys::encode_uri_component(&v));
                                view! { <li>{variant_label(&v)}" · "<a href=href download>"export"</a></li> }
                            }).collect_view()}
                        </ul>
                        {figures_table(&m)}
                        {tradeoff_sentence(&m["evaluation"], m["default_variant"].as_str().unwrap_or_default()).map(|t| view! { <p class="tradeoff">{t}</p> })}
                        <button on:click=move |_| open(id2.clone())>"details"</button>
                    </article>
                }
            }).collect_view()}
        </div>
        <Busy busy=busy.into() label="loading…" />
        {move || detail.get().map(|d| view! {
            <section class="card" id="model-detail">
                <h3>{d["id"].as_str().unwrap_or_default().to_string()}</h3>
                {(!d["summary"].is_null()).then(|| view! { <pre class="json">{serde_json::to_string_pretty(&d["summary"]).unwrap_or_default()}</pre> })}
                {report_table(&d["results"]).or_else(|| report_table(&d["report"]))}
            </section>
        })}
    }
}

/// A report's rows as a table (any report with a `rows` array of flat objects).
fn report_table(r: &Value) -> Option<impl IntoView + use<>> {
    let rows = r["rows"].as_array()?.clone();
    let keys: Vec<String> = rows
        .first()?
        .as_object()?
        .iter()
        .filter(|(_, v)| !v.is_object() && !v.is_array())
        .map(|(k, _)| k.clone())
        .collect();
    Some(view! {
        <div class="table-wrap" tabindex="0" role="region" aria-label="results table"><table class="report">
            <thead><tr>{keys.iter().map(|k| view! { <th scope="col">{k.clone()}</th> }).collect_view()}</tr></thead>
            <tbody>{rows.iter().map(|row| view! {
                <tr>{keys.iter().map(|k| {
                    let v = &row[k.as_str()];
                    let s = match v.as_f64() { Some(x) if v.is_f64() => format!("{x:.4}"), _ => v.as_str().map(String::from).unwrap_or_else(|| v.to_string()) };
                    view! { <td>{s}</td> }
                }).collect_view()}</tr>
            }).collect_view()}</tbody>
        </table></div>
    })
}

/// Each evaluated variant's clean and robust accuracy (`evaluation` of `/api/models`).
fn figures_table(m: &Value) -> Option<impl IntoView + use<>> {
    let e = &m["evaluation"];
    let rows = e["variants"].as_array()?.clone();
    let pct = |v: &Value| {
        v.as_f64()
            .map_or("—".into(), |x| format!("{:.1}%", 100.0 * x))
    };
    let aa = e["autoattack_n"].as_u64();
    let caption = format!(
        "On the first {} test images; robust: still right under {} at ε = {} (an image counts only when the clean and the attacked copy are both right){}.",
        e["n"],
        e["attack"].as_str().unwrap_or("the attack"),
        eps_text(&e["eps"]),
        aa.map_or(String::new(), |n| format!("; AutoAttack on the first {n}"))
    );
    Some(view! {
        <div class="table-wrap" tabindex="0" role="region" aria-label="variant figures"><table class="figures" data-model=m["id"].as_str().unwrap_or_default().to_string()>
            <caption>{caption}</caption>
            <thead><tr><th scope="col">"variant"</th><th scope="col">"clean"</th><th scope="col">"robust"</th><th scope="col">"mean confidence"</th>
                {aa.map(|_| view! { <th scope="col">"AutoAttack"</th> })}</tr></thead>
            <tbody>{rows.into_iter().map(|r| view! {
                <tr data-variant=r["variant"].as_str().unwrap_or_default().to_string()>
                    <th scope="row">{variant_label(r["variant"].as_str().unwrap_or_default())}</th>
                    <td>{pct(&r["clean_acc"])}</td><td>{pct(&r["robust_acc"])}</td><td>{pct(&r["mean_confidence"])}</td>
                    {aa.map(|_| view! { <td>{pct(&r["autoattack_acc"])}</td> })}
                </tr>
            }).collect_view()}</tbody>
        </table></div>
    })
}

//! Models: every model the server holds, its variants (each exportable as a timm
//! checkpoint) and, where evaluated, its results table.

use leptos::prelude::*;
use serde_json::Value;

use crate::components::{Busy, ErrorBox, variant_label};
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
                        <h3>{id.clone()}</h3>
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
        <div class="table-wrap"><table class="report">
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

//! The HTTP API over the core library: models, predictions, attacks, comparisons,
//! samples and exports. Handlers parse, check and format; the ML is in
//! `hyperat::playground` and runs off the async executor.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hyperat::attack::{Classifier, by_name};
use hyperat::cancel::Cancellable;
use hyperat::data::encode_png;
use hyperat::playground::{self, AttackOutcome, Prediction, amplify, images};
use hyperat::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

use super::blocking::run_blocking;
use super::error::{ApiError, ApiResult};
use super::form::{Form, attack_params, check_work, input, variant_of};
use super::state::AppState;

/// Shared state as handlers see it.
pub type Shared<B> = State<Arc<AppState<B>>>;

pub fn png_url(pixels: &[f32], shape: [usize; 3]) -> ApiResult<String> {
    let bytes = encode_png(pixels, shape)?;
    Ok(format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

fn pred_json(p: &Prediction, classes: &[String]) -> Value {
    let name = |i: usize| {
        classes
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("class {i}"))
    };
    json!({
        "class": p.class,
        "name": name(p.class),
        "confidence": p.probs.get(p.class).copied().unwrap_or(0.0),
        "probs": p.probs,
        "top5": p.top5.iter().map(|(c, pr)| json!({"class": c, "name": name(*c), "prob": pr})).collect::<Vec<_>>(),
    })
}

/// `GET /api/health`.
pub async fn health<B: AutodiffBackend>(State(s): Shared<B>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "models": s.models.len(),
        "backend": std::any::type_name::<B>().rsplit("::").next().unwrap_or("?").trim_end_matches('>'),
        "jobs": s.jobs.counts(),
    }))
}

/// `GET /api/models`.
pub async fn models<B: AutodiffBackend>(State(s): Shared<B>) -> Json<Value> {
    let list: Vec<_> = s.models.all().iter().map(|e| e.info()).collect();
    Json(json!({ "models": list }))
}

/// `GET /api/models/{id}`.
pub async fn model<B: AutodiffBackend>(
    State(s): Shared<B>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let e = s.models.get(&id)?;
    let mut v = serde_json::to_value(e.info()).map_err(|e| ApiError::internal(e.to_string()))?;
    if let Some(run) = &e.run {
        for (key, file) in [("report", "report.json"), ("results", "../report.json")] {
            if let Some(r) = std::fs::read(run.join(file))
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            {
                v[key] = r;
            }
        }
    }
    Ok(Json(v))
}

/// `POST /api/predict`: multipart `image` (or `sample`), `model`, `variant`, `invert`.
pub async fn predict<B: AutodiffBackend>(
    State(s): Shared<B>,
    mp: Multipart,
) -> ApiResult<Json<Value>> {
    let form = Form::read(mp).await?;
    let entry = s.models.get_or_default(form.get("model"))?;
    let (variant, _) = variant_of(&entry, form.get("variant"))?;
    let inp = input(&s, &entry, &form).await?;
    let (st, e2, v2) = (s.clone(), entry.clone(), variant.clone());
    let shape = entry.config.input_shape();
    let (pred, ms) = run_blocking(&s, &s.predict_slots, move |_| {
        let t0 = Instant::now();
        let model = e2.variant(Some(&v2)).expect("checked");
        let x = images::<B::InnerBackend>(&inp.pixels, shape, &st.models.device)?;
        let p = playground::predict::<B>(model, x).remove(0);
        Ok((p, t0.elapsed().as_secs_f64() * 1e3))
    })
    .await?;
    Ok(Json(json!({
        "model": entry.id, "variant": variant,
        "prediction": pred_json(&pred, &entry.classes),
        "latency_ms": ms,
    })))
}

fn outcome_json(
    o: &AttackOutcome,
    label_known: bool,
    classes: &[String],
    shape: [usize; 3],
    eps: f32,
) -> ApiResult<Value> {
    Ok(json!({
        "label": o.label,
        "label_name": classes.get(o.label),
        "clean": pred_json(&o.clean, classes),
        "adversarial": pred_json(&o.adversarial, classes),
        "clean_correct": o.clean.class == o.label,
        "adversarial_correct": o.adversarial.class == o.label,
        "fooled": o.fooled(),
        "verdict": o.verdict(),
        "headline": o.verdict().headline(label_known),
        "label_known": label_known,
        "linf": o.linf,
        "l2": o.l2,
        "adversarial_png": png_url(&o.adv_pixels, shape)?,
        "perturbation_png": png_url(&amplify(&o.delta, eps), shape)?,
    }))
}

/// `POST /api/attack`: an image or sample, `model`, `variant`, `attack`, `eps`, `alpha`,
/// `steps`, `restarts`, `seed`, optional `label`.
pub async fn attack<B: AutodiffBackend>(
    State(s): Shared<B>,
    headers: HeaderMap,
    mp: Multipart,
) -> ApiResult<Json<Value>> {
    let form = Form::read(mp).await?;
    let entry = s.models.get_or_default(form.get("model"))?;
    let (variant, _) = variant_of(&entry, form.get("variant"))?;
    let (name, params) = attack_params(&s, &form)?;
    check_work(&s, &headers, &name, &params, 1)?;
    let seed: u64 = form.parse("seed", 0)?;
    let inp = input(&s, &entry, &form).await?;
    let label_known = inp.label.is_some();
    let shape = entry.config.input_shape();
    let clean_png = png_url(&inp.pixels, shape)?;
    let (st, e2, v2, p2) = (s.clone(), entry.clone(), variant.clone(), params.clone());
    let (outcome, settings, ms) = run_blocking(&s, &s.attack_slots, move |token| {
        let t0 = Instant::now();
        let classes = e2.config.num_classes;
        let model = Cancellable::new(e2.variant(Some(&v2)).expect("checked"), classes, token);
        let attack = by_name::<B>(&name, &p2)?;
        let x = images::<B::InnerBackend>(&inp.pixels, shape, &st.models.device)?;
        let label = inp.label.map(|l| vec![l]);
        let o = playground::attack_images::<B>(&model, attack.as_ref(), x, label.as_deref(), seed)?
            .remove(0);
        Ok((o, attack.settings(), t0.elapsed().as_secs_f64() * 1e3))
    })
    .await?;
    let mut v = outcome_json(&outcome, label_known, &entry.classes, shape, params.eps)?;
    v["model"] = json!(entry.id);
    v["variant"] = json!(variant);
    v["attack"] = settings;
    v["clean_png"] = json!(clean_png);
    v["source"] = inp.source;
    v["ms"] = json!(ms);
    Ok(Json(v))
}

/// `POST /api/compare`: for every variant, an attack made against it, and the transfer
/// matrix (attack made on the row variant, evaluated on the column variant).
pub async fn compare<B: AutodiffBackend>(
    State(s): Shared<B>,
    headers: HeaderMap,
    mp: Multipart,
) -> ApiResult<Json<Value>> {
    let form = Form::read(mp).await?;
    let entry = s.models.get_or_default(form.get("model"))?;
    let (name, params) = attack_params(&s, &form)?;
    check_work(&s, &headers, &name, &params, entry.variants.len())?;
    let seed: u64 = form.parse("seed", 0)?;
    let inp = input(&s, &entry, &form).await?;
    let label_known = inp.label.is_some();
    let shape = entry.config.input_shape();
    let clean_png = png_url(&inp.pixels, shape)?;
    let (st, e2, p2) = (s.clone(), entry.clone(), params.clone());
    let (t, settings, ms) = run_blocking(&s, &s.attack_slots, move |token| {
        let t0 = Instant::now();
        let attack = by_name::<B>(&name, &p2)?;
        let classes = e2.config.num_classes;
        let wrapped: Vec<Cancellable<B>> = e2
            .variants
            .iter()
            .map(|(_, v)| Cancellable::new(v as &dyn Classifier<B>, classes, token))
            .collect();
        let models: Vec<&dyn Classifier<B>> =
            wrapped.iter().map(|m| m as &dyn Classifier<B>).collect();
        let x = images::<B::InnerBackend>(&inp.pixels, shape, &st.models.device)?;
        let t = playground::transfer::<B>(&models, attack.as_ref(), x, inp.label, seed)?;
        Ok((t, attack.settings(), t0.elapsed().as_secs_f64() * 1e3))
    })
    .await?;
    let names: Vec<&str> = entry.variants.iter().map(|(n, _)| n.as_str()).collect();
    let rows = t
        .own
        .iter()
        .zip(&names)
        .map(|(o, n)| {
            let mut v = outcome_json(o, label_known, &entry.classes, shape, params.eps)?;
            v["variant"] = json!(n);
            Ok(v)
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let label = t.own.first().map(|o| o.label).unwrap_or(0);
    let matrix: Vec<Vec<Value>> = t
        .matrix
        .iter()
        .map(|row| {
            row.iter()
                .map(|p| json!({"class": p.class, "correct": p.class == label, "label_prob": p.probs.get(label)}))
                .collect()
        })
        .collect();
    Ok(Json(json!({
        "model": entry.id, "variants": names, "attack": settings, "label": label,
        "label_name": entry.classes.get(label), "clean_png": clean_png, "source": inp.source,
        "rows": rows, "transfer": matrix, "ms": ms,
    })))
}

/// Query of `GET /api/samples`.
#[derive(Debug, Deserialize)]
pub struct SamplesQuery {
    dataset: Option<String>,
    class: Option<usize>,
    n: Option<usize>,
    offset: Option<usize>,
}

/// `GET /api/samples?dataset=&class=&n=&offset=`: test images with labels, as PNG.
pub async fn samples<B: AutodiffBackend>(
    State(s): Shared<B>,
    Query(q): Query<SamplesQuery>,
) -> ApiResult<Json<Value>> {
    let name = q.dataset.unwrap_or_else(|| "fashion-mnist".into());
    let n = q.n.unwrap_or(8);
    if n == 0 || n > 200 {
        return Err(ApiError::invalid(format!("n must be in 1..=200, got {n}")));
    }
    let ds = s.load_test_set(&name).await?;
    if let Some(c) = q.class
        && c >= ds.classes.len()
    {
        return Err(ApiError::invalid(format!(
            "class {c} is out of range for {} classes",
            ds.classes.len()
        )));
    }
    let picked: Vec<usize> = (0..ds.len())
        .filter(|&i| q.class.is_none_or(|c| ds.labels[i] as usize == c))
        .skip(q.offset.unwrap_or(0))
        .take(n)
        .collect();
    let samples = picked
        .iter()
        .map(|&i| {
            Ok(json!({
                "id": i, "label": ds.labels[i], "name": ds.classes[ds.labels[i] as usize],
                "png": png_url(&ds.image(i), ds.shape)?,
            }))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(
        json!({"dataset": name, "classes": ds.classes, "shape": ds.shape, "samples": samples}),
    ))
}

/// Query of the export endpoint.
#[derive(Debug, Deserialize)]
pub struct ExportQuery {
    variant: Option<String>,
}

/// `GET /api/models/{id}/export?variant=`: a tar of `config.json` + `model.safetensors`.
pub async fn export<B: AutodiffBackend>(
    State(s): Shared<B>,
    Path(id): Path<String>,
    Query(q): Query<ExportQuery>,
) -> ApiResult<Response> {
    let entry = s.models.get(&id)?;
    let (variant, _) = variant_of(&entry, q.variant.as_deref().filter(|v| !v.is_empty()))?;
    let (e2, v2) = (entry.clone(), variant.clone());
    let tar = run_blocking(&s, &s.predict_slots, move |_| {
        let model = e2.variant(Some(&v2)).expect("checked");
        let ck = hyperat::variant::export(model)?;
        let weights = ck.safetensors_bytes()?;
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |name: &str, bytes: &[u8]| -> std::io::Result<()> {
            let mut h = tar::Header::new_ustar();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_cksum();
            b.append_data(&mut h, name, bytes)
        };
        add("config.json", ck.config.to_hub_json().as_bytes())
            .and_then(|_| add("model.safetensors", &weights))
            .map_err(|e| ApiError::internal(e.to_string()))?;
        b.into_inner()
            .map_err(|e| ApiError::internal(e.to_string()))
    })
    .await?;
    let file = format!("{id}-{}.tar", variant.replace(':', "-"));
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-tar".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}\""),
            ),
        ],
        Body::from(tar),
    )
        .into_response())
}

/// Any other `/api/...` path.
pub async fn no_route() -> ApiError {
    ApiError::not_found("no such API endpoint (see /api/openapi.json)")
}

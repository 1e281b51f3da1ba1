//! The HTTP API over the core library: models, predictions, attacks, comparisons,
//! samples and exports. Handlers parse, check and format; the ML is in
//! `hyperat::playground` and runs off the async executor.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hyperat::attack::{ATTACKS, AttackParams, Classifier, by_name};
use hyperat::cancel::{CancelToken, Cancellable};
use hyperat::data::{decode_upload, encode_png};
use hyperat::playground::{self, AttackOutcome, Prediction, amplify, images};
use hyperat::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::bearer_matches;
use super::error::{ApiError, ApiResult};
use super::models::ModelEntry;
use super::state::AppState;

/// Shared state as handlers see it.
pub type St<B> = State<Arc<AppState<B>>>;

/// The fields of a multipart form: text fields and the `image` file.
#[derive(Debug, Default)]
pub struct Form {
    fields: HashMap<String, String>,
    image: Option<axum::body::Bytes>,
}

impl Form {
    /// Reads every part; `image` is kept as bytes, other parts as text.
    pub async fn read(mut mp: Multipart) -> ApiResult<Self> {
        let mut form = Form::default();
        while let Some(field) = mp.next_field().await? {
            let name = field.name().unwrap_or_default().to_string();
            if name == "image" {
                form.image = Some(field.bytes().await?);
            } else {
                let text = field.text().await?;
                form.fields.insert(name, text);
            }
        }
        Ok(form)
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.fields
            .get(k)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    }

    fn parse<T: std::str::FromStr>(&self, k: &str, default: T) -> ApiResult<T> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| ApiError::invalid(format!("`{k}`: cannot read `{v}`"))),
        }
    }

    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("1" | "true" | "on" | "yes"))
    }

    fn fraction(&self, k: &str) -> ApiResult<Option<f32>> {
        self.get(k)
            .map(|v| {
                hyperat::attack::parse_fraction(v)
                    .map_err(|e| ApiError::invalid(format!("`{k}`: {e}")))
            })
            .transpose()
    }
}

/// A model input from a form: an uploaded `image`, or `sample` (an index into
/// `dataset`'s test split, default the model's dataset).
struct Input {
    pixels: Vec<f32>,
    label: Option<usize>,
    source: Value,
}

/// The request's image: an upload decoded on the blocking pool under the decode slots
/// (decoding is CPU work and up to `max_decoded` bytes of memory), or a test sample.
async fn input<B: AutodiffBackend>(
    s: &Arc<AppState<B>>,
    entry: &ModelEntry<B>,
    form: &Form,
) -> ApiResult<Input> {
    let shape = entry.config.input_shape();
    let label = match form.get("label") {
        None => None,
        Some(_) => {
            let l: usize = form.parse("label", 0)?;
            if l >= entry.config.num_classes {
                return Err(ApiError::invalid(format!(
                    "label {l} is out of range for {} classes",
                    entry.config.num_classes
                )));
            }
            Some(l)
        }
    };
    if let Some(bytes) = &form.image {
        let (upload, invert, limits) = (bytes.clone(), form.flag("invert"), s.config.limits.upload);
        let px = heavy(s, &s.decode, move |_| {
            Ok(decode_upload(&upload, shape, invert, &limits)?)
        })
        .await?;
        return Ok(Input {
            pixels: px.iter().map(|&p| p as f32 / 255.0).collect(),
            label,
            source: json!({"upload": true, "bytes": bytes.len(), "invert": form.flag("invert")}),
        });
    }
    let Some(_) = form.get("sample") else {
        return Err(ApiError::bad_request(
            "send an `image` file or a `sample` id (with `dataset`)",
        ));
    };
    let id: usize = form.parse("sample", 0)?;
    let name = form
        .get("dataset")
        .map(String::from)
        .or_else(|| entry.dataset.clone())
        .ok_or_else(|| ApiError::bad_request("`dataset` is needed with `sample`"))?;
    let ds = s.load_test_set(&name).await?;
    if id >= ds.len() {
        return Err(ApiError::not_found(format!(
            "sample {id} does not exist ({name} has {} test images)",
            ds.len()
        )));
    }
    if ds.shape != shape {
        return Err(ApiError::invalid(format!(
            "{name} images are {:?} but the model takes {shape:?}",
            ds.shape
        )));
    }
    Ok(Input {
        pixels: ds.image(id),
        label: label.or(Some(ds.labels[id] as usize)),
        source: json!({"dataset": name, "sample": id}),
    })
}

/// Refuses an attack of `work` model calls per variant on `variants` variants above the
/// caller's budget (larger with the admin token).
fn check_work<B: AutodiffBackend>(
    s: &AppState<B>,
    headers: &HeaderMap,
    name: &str,
    p: &AttackParams,
    variants: usize,
) -> ApiResult<()> {
    let l = &s.config.limits;
    let admin = s
        .config
        .admin_token
        .as_deref()
        .is_some_and(|t| bearer_matches(headers, None, t));
    let budget = if admin {
        l.admin_work
    } else {
        l.anonymous_work
    };
    let work = p.work(name).saturating_mul(variants.max(1));
    if work > budget {
        let who = if admin {
            ""
        } else {
            " without the admin token"
        };
        return Err(ApiError::invalid(format!(
            "this {name} costs up to {work} model calls ({} per variant × {variants} variants); requests{who} may cost {budget}: use fewer steps, restarts or queries",
            p.work(name),
        )));
    }
    Ok(())
}

/// Attack settings from a form, checked against the server's limits.
fn attack_params<B: AutodiffBackend>(
    s: &AppState<B>,
    form: &Form,
) -> ApiResult<(String, AttackParams)> {
    let name = form.get("attack").unwrap_or("pgd").to_string();
    if !ATTACKS.contains(&name.as_str()) {
        return Err(ApiError::not_found(format!(
            "unknown attack `{name}` (known: {})",
            ATTACKS.join(", ")
        )));
    }
    let p = AttackParams {
        eps: form.fraction("eps")?.unwrap_or(8.0 / 255.0),
        alpha: form.fraction("alpha")?,
        steps: form.parse("steps", 10)?,
        restarts: form.parse("restarts", 1)?,
        kappa: form.parse("kappa", 50.0)?,
        queries: form.parse("queries", 1000)?,
        ..Default::default()
    };
    if !(p.eps > 0.0 && p.eps <= 1.0) {
        return Err(ApiError::invalid(format!(
            "eps must be in (0, 1], got {}",
            p.eps
        )));
    }
    let max = s.config.limits.max_steps;
    if p.steps == 0 || p.steps > max {
        return Err(ApiError::invalid(format!(
            "steps must be in 1..={max}, got {}",
            p.steps
        )));
    }
    if p.restarts == 0 || p.restarts > 10 {
        return Err(ApiError::invalid(format!(
            "restarts must be in 1..=10, got {}",
            p.restarts
        )));
    }
    if p.queries == 0 || p.queries > 10_000 {
        return Err(ApiError::invalid(format!(
            "queries must be in 1..=10000, got {}",
            p.queries
        )));
    }
    p.validate()?;
    Ok((name, p))
}

/// Runs work on the blocking pool under the concurrency limit `sem` and the timeout.
/// `f` gets a token that is cancelled when the request times out (504) or its client
/// goes away (the handler's future is dropped): work that wraps its models in
/// [`Cancellable`] then ends within one model call and frees the slot.
pub async fn heavy<B: AutodiffBackend, T: Send + 'static>(
    s: &AppState<B>,
    sem: &Arc<tokio::sync::Semaphore>,
    f: impl FnOnce(&CancelToken) -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let l = &s.config.limits;
    let permit = tokio::time::timeout(l.queue_timeout, sem.clone().acquire_owned())
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "the server is busy with other requests like this one; try again shortly",
            )
        })?
        .map_err(|_| ApiError::internal("the server is shutting down"))?;
    let token = CancelToken::new();
    let _cancel_on_drop = CancelOnDrop(token.clone());
    let task = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        f(&token)
    });
    match tokio::time::timeout(l.work_timeout, task).await {
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "the work took longer than {} s; use fewer steps",
                l.work_timeout.as_secs()
            ),
        )),
        Ok(Err(e)) => Err(ApiError::internal(format!("the computation failed: {e}"))),
        Ok(Ok(r)) => r,
    }
}

/// Cancels its token when dropped: on a timeout, on a dropped request, and (harmlessly)
/// after the work finished.
struct CancelOnDrop(CancelToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

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

fn variant_of<'a, B: AutodiffBackend>(
    entry: &'a ModelEntry<B>,
    form: &Form,
) -> ApiResult<(String, &'a hyperat::variant::VariantModel<B>)> {
    let name = form
        .get("variant")
        .unwrap_or(&entry.default_variant)
        .to_string();
    let v = entry.variant(Some(&name)).ok_or_else(|| {
        ApiError::not_found(format!(
            "model `{}` has no variant `{name}` (it has {})",
            entry.id,
            entry
                .variants
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    Ok((name, v))
}

/// `GET /api/health`.
pub async fn health<B: AutodiffBackend>(State(s): St<B>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "models": s.models.read().expect("models lock").len(),
        "backend": std::any::type_name::<B>().rsplit("::").next().unwrap_or("?").trim_end_matches('>'),
        "jobs": s.jobs.counts(),
    }))
}

/// `GET /api/models`.
pub async fn models<B: AutodiffBackend>(State(s): St<B>) -> Json<Value> {
    let list: Vec<_> = s
        .models
        .read()
        .expect("models lock")
        .values()
        .map(|e| e.info())
        .collect();
    Json(json!({ "models": list }))
}

/// `GET /api/models/{id}`.
pub async fn model<B: AutodiffBackend>(
    State(s): St<B>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let e = s.model(&id)?;
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
pub async fn predict<B: AutodiffBackend>(State(s): St<B>, mp: Multipart) -> ApiResult<Json<Value>> {
    let form = Form::read(mp).await?;
    let entry = s.model_or_default(form.get("model"))?;
    let (variant, _) = variant_of(&entry, &form)?;
    let inp = input(&s, &entry, &form).await?;
    let (st, e2, v2) = (s.clone(), entry.clone(), variant.clone());
    let shape = entry.config.input_shape();
    let (pred, ms) = heavy(&s, &s.light, move |_| {
        let t0 = Instant::now();
        let model = e2.variant(Some(&v2)).expect("checked");
        let x = images::<B::InnerBackend>(&inp.pixels, shape, &st.device)?;
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
    State(s): St<B>,
    headers: HeaderMap,
    mp: Multipart,
) -> ApiResult<Json<Value>> {
    let form = Form::read(mp).await?;
    let entry = s.model_or_default(form.get("model"))?;
    let (variant, _) = variant_of(&entry, &form)?;
    let (name, params) = attack_params(&s, &form)?;
    check_work(&s, &headers, &name, &params, 1)?;
    let seed: u64 = form.parse("seed", 0)?;
    let inp = input(&s, &entry, &form).await?;
    let label_known = inp.label.is_some();
    let shape = entry.config.input_shape();
    let clean_png = png_url(&inp.pixels, shape)?;
    let (st, e2, v2, p2) = (s.clone(), entry.clone(), variant.clone(), params.clone());
    let (outcome, settings, ms) = heavy(&s, &s.heavy, move |token| {
        let t0 = Instant::now();
        let classes = e2.config.num_classes;
        let model = Cancellable::new(e2.variant(Some(&v2)).expect("checked"), classes, token);
        let attack = by_name::<B>(&name, &p2)?;
        let x = images::<B::InnerBackend>(&inp.pixels, shape, &st.device)?;
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
    State(s): St<B>,
    headers: HeaderMap,
    mp: Multipart,
) -> ApiResult<Json<Value>> {
    let form = Form::read(mp).await?;
    let entry = s.model_or_default(form.get("model"))?;
    let (name, params) = attack_params(&s, &form)?;
    check_work(&s, &headers, &name, &params, entry.variants.len())?;
    let seed: u64 = form.parse("seed", 0)?;
    let inp = input(&s, &entry, &form).await?;
    let label_known = inp.label.is_some();
    let shape = entry.config.input_shape();
    let clean_png = png_url(&inp.pixels, shape)?;
    let (st, e2, p2) = (s.clone(), entry.clone(), params.clone());
    let (t, settings, ms) = heavy(&s, &s.heavy, move |token| {
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
        let x = images::<B::InnerBackend>(&inp.pixels, shape, &st.device)?;
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
    State(s): St<B>,
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
    State(s): St<B>,
    Path(id): Path<String>,
    Query(q): Query<ExportQuery>,
) -> ApiResult<Response> {
    let entry = s.model(&id)?;
    let mut form = Form::default();
    if let Some(v) = q.variant {
        form.fields.insert("variant".into(), v);
    }
    let (variant, _) = variant_of(&entry, &form)?;
    let (e2, v2) = (entry.clone(), variant.clone());
    let tar = heavy(&s, &s.light, move |_| {
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

//! The HTTP API over the core library: models, predictions, attacks, comparisons,
//! samples and exports. Handlers parse, check and format; the ML is in
//! `hyperat::inspect` and runs off the async executor.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use hyperat::attack::{Classifier, by_name};
use hyperat::cancel::Cancellable;
use hyperat::data::png_data_url;
use hyperat::inspect::{self, images};
use hyperat::prelude::*;
use hyperat::wire::{
    AttackResponse, AttackSettings, AttackView, CompareResponse, CompareRow, Health, ModelDetail,
    ModelList, PredictResponse, PredictionView, Report, Sample, SampleList, TransferCell,
};
use serde::Deserialize;

use super::blocking::run_blocking;
use super::error::{ApiError, ApiResult};
use super::form::{Form, attack_params, check_work, input, variant_of};
use super::state::AppState;

/// Shared state as handlers see it.
pub type Shared<B> = State<Arc<AppState<B>>>;

/// `GET /api/health`.
pub async fn health<B: AutodiffBackend>(State(s): Shared<B>) -> Json<Health> {
    let backend = std::any::type_name::<B>()
        .rsplit("::")
        .next()
        .unwrap_or("?");
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        models: s.models.len(),
        backend: backend.trim_end_matches('>').into(),
        jobs: s.jobs.counts(),
    })
}

/// `GET /api/models`.
pub async fn models<B: AutodiffBackend>(State(s): Shared<B>) -> Json<ModelList> {
    let models = s.models.all().iter().map(|e| e.info()).collect();
    let default = s.models.get_or_default(None).ok().map(|e| e.id.clone());
    Json(ModelList { models, default })
}

/// `GET /api/models/{id}`.
pub async fn model<B: AutodiffBackend>(
    State(s): Shared<B>,
    Path(id): Path<String>,
) -> ApiResult<Json<ModelDetail>> {
    let e = s.models.get(&id)?;
    let table = |file: &str| {
        let run = e.run.as_ref()?;
        serde_json::from_slice::<Report>(&std::fs::read(run.path().join(file)).ok()?).ok()
    };
    Ok(Json(ModelDetail {
        info: e.info(),
        report: table("report.json"),
        results: table("../report.json"),
    }))
}

/// `POST /api/predict`: multipart `image` (or `sample`), `model`, `variant`, `invert`.
pub async fn predict<B: AutodiffBackend>(
    State(s): Shared<B>,
    mp: Multipart,
) -> ApiResult<Json<PredictResponse>> {
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
        let p = inspect::predict::<B>(model, x).remove(0);
        Ok((p, t0.elapsed().as_secs_f64() * 1e3))
    })
    .await?;
    Ok(Json(PredictResponse {
        model: entry.id.clone(),
        variant,
        prediction: PredictionView::of(&pred, &entry.classes),
        latency_ms: ms,
    }))
}

/// `POST /api/attack`: an image or sample, `model`, `variant`, `attack`, `eps`, `alpha`,
/// `steps`, `restarts`, `seed`, optional `label`.
pub async fn attack<B: AutodiffBackend>(
    State(s): Shared<B>,
    headers: HeaderMap,
    mp: Multipart,
) -> ApiResult<Json<AttackResponse>> {
    let form = Form::read(mp).await?;
    let entry = s.models.get_or_default(form.get("model"))?;
    let (variant, _) = variant_of(&entry, form.get("variant"))?;
    let (name, params) = attack_params(&s, &form)?;
    check_work(&s, &headers, &name, &params, 1)?;
    let seed: u64 = form.parse("seed", 0)?;
    let inp = input(&s, &entry, &form).await?;
    let label_known = inp.label.is_some();
    let shape = entry.config.input_shape();
    let clean_png = png_data_url(&inp.pixels, shape)?;
    let (st, e2, v2, p2) = (s.clone(), entry.clone(), variant.clone(), params.clone());
    let (outcome, settings, ms) = run_blocking(&s, &s.attack_slots, move |token| {
        let t0 = Instant::now();
        let classes = e2.config.num_classes;
        let model = Cancellable::new(e2.variant(Some(&v2)).expect("checked"), classes, token);
        let attack = by_name::<B>(&name, &p2)?;
        let x = images::<B::InnerBackend>(&inp.pixels, shape, &st.models.device)?;
        let label = inp.label.map(|l| vec![l]);
        let o = inspect::attack_images::<B>(&model, attack.as_ref(), x, label.as_deref(), seed)?
            .remove(0);
        Ok((o, attack.settings(), t0.elapsed().as_secs_f64() * 1e3))
    })
    .await?;
    Ok(Json(AttackResponse {
        outcome: AttackView::of(&outcome, label_known, &entry.classes, shape, params.eps)?,
        model: entry.id.clone(),
        variant,
        attack: AttackSettings::from_value(settings),
        clean_png,
        source: inp.source,
        ms,
    }))
}

/// `POST /api/compare`: for every variant, an attack made against it, and the transfer
/// matrix (attack made on the row variant, evaluated on the column variant).
pub async fn compare<B: AutodiffBackend>(
    State(s): Shared<B>,
    headers: HeaderMap,
    mp: Multipart,
) -> ApiResult<Json<CompareResponse>> {
    let form = Form::read(mp).await?;
    let entry = s.models.get_or_default(form.get("model"))?;
    let (name, params) = attack_params(&s, &form)?;
    check_work(&s, &headers, &name, &params, entry.variants.len())?;
    let seed: u64 = form.parse("seed", 0)?;
    let inp = input(&s, &entry, &form).await?;
    let label_known = inp.label.is_some();
    let shape = entry.config.input_shape();
    let clean_png = png_data_url(&inp.pixels, shape)?;
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
        let t = inspect::transfer::<B>(&models, attack.as_ref(), x, inp.label, seed)?;
        Ok((t, attack.settings(), t0.elapsed().as_secs_f64() * 1e3))
    })
    .await?;
    let names: Vec<String> = entry.variants.iter().map(|(n, _)| n.clone()).collect();
    let rows = t
        .own
        .iter()
        .zip(&names)
        .map(|(o, n)| {
            Ok(CompareRow {
                outcome: AttackView::of(o, label_known, &entry.classes, shape, params.eps)?,
                variant: n.clone(),
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let label = t.own.first().map(|o| o.label).unwrap_or(0);
    let transfer = t
        .matrix
        .iter()
        .map(|row| {
            row.iter()
                .map(|p| TransferCell {
                    class: p.class,
                    name: PredictionView::of(p, &entry.classes).name,
                    correct: p.class == label,
                    label_prob: p.probs.get(label).copied(),
                })
                .collect()
        })
        .collect();
    Ok(Json(CompareResponse {
        model: entry.id.clone(),
        variants: names,
        attack: AttackSettings::from_value(settings),
        label,
        label_name: entry.classes.get(label).cloned(),
        clean_png,
        source: inp.source,
        rows,
        transfer,
        ms,
    }))
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
) -> ApiResult<Json<SampleList>> {
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
            Ok(Sample {
                id: i,
                label: ds.labels[i],
                name: ds.classes[ds.labels[i] as usize].clone(),
                png: png_data_url(&ds.image(i), ds.shape)?,
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(SampleList {
        dataset: name,
        classes: ds.classes.clone(),
        shape: ds.shape,
        samples,
    }))
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
        Ok(hyperat::archive::to_tar(&ck)?)
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

//! `GET /api/models/{id}/showcase`: the test images a lesson should open on, chosen from
//! data when asked (never hard-coded): images the undefended base and the robust variant
//! both get right, first those where an attack fools the base and the robust one holds.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, Query, State};
use hyperat::attack::{AttackParams, Classifier, by_name};
use hyperat::cancel::Cancellable;
use hyperat::data::Dataset;
use hyperat::inspect::{self, images};
use hyperat::prelude::*;
use hyperat::wire::{AttackSettings, Showcase, ShowcaseImage};
use serde::Deserialize;

use super::api::Shared;
use super::blocking::run_blocking;
use super::error::{ApiError, ApiResult};
use super::models::ModelEntry;
use super::state::AppState;
use hyperat::data::png_data_url;

/// Test images ranked (the first ones of the test split).
const CANDIDATES: usize = 64;

/// Query of the showcase.
#[derive(Debug, Deserialize)]
pub struct ShowcaseQuery {
    /// Images returned (default 8, at most 64).
    n: Option<usize>,
    /// The robust variant (default: the model's default variant).
    variant: Option<String>,
    /// The attack's radius (default 0.1, the lessons' default for Fashion-MNIST).
    eps: Option<f32>,
}

/// `GET /api/models/{id}/showcase?n=&variant=&eps=`.
pub async fn showcase<B: AutodiffBackend>(
    State(s): Shared<B>,
    Path(id): Path<String>,
    Query(q): Query<ShowcaseQuery>,
) -> ApiResult<Json<Showcase>> {
    let entry = s.models.get(&id)?;
    let n = q.n.unwrap_or(8);
    if n == 0 || n > CANDIDATES {
        return Err(ApiError::invalid(format!(
            "n must be in 1..={CANDIDATES}, got {n}"
        )));
    }
    let robust = q
        .variant
        .clone()
        .unwrap_or_else(|| entry.default_variant.clone());
    if entry.variant(Some(&robust)).is_none() {
        return Err(ApiError::not_found(format!(
            "model `{id}` has no variant `{robust}`"
        )));
    }
    let base = entry.variants[0].0.clone();
    let params = AttackParams {
        eps: q.eps.unwrap_or(0.1),
        steps: 10,
        ..Default::default()
    };
    params.validate()?;
    let dataset = entry
        .dataset
        .clone()
        .unwrap_or_else(|| "fashion-mnist".into());
    let ds = s.load_test_set(&dataset).await?;
    if ds.shape != entry.config.input_shape() {
        return Err(ApiError::invalid(format!(
            "model `{id}` takes {:?} images, `{dataset}` has {:?}",
            entry.config.input_shape(),
            ds.shape
        )));
    }
    let key = format!("{id}|{robust}|{}", params.eps);
    let cached = s
        .showcases
        .lock()
        .expect("showcases lock")
        .get(&key)
        .cloned();
    let full = match cached {
        Some(v) => v,
        None => {
            let v = Arc::new(rank(&s, &entry, &ds, &base, &robust, &params).await?);
            let mut cache = s.showcases.lock().expect("showcases lock");
            if cache.len() >= 64 {
                cache.clear();
            }
            cache.insert(key, v.clone());
            v
        }
    };
    // The cached answer holds every ranked image; copy only the first `n`.
    let images = full.images.iter().take(n).cloned().collect();
    Ok(Json(Showcase {
        images,
        model: full.model.clone(),
        dataset: full.dataset.clone(),
        base: full.base.clone(),
        robust: full.robust.clone(),
        attack: full.attack.clone(),
        ..*full.as_ref()
    }))
}

/// Ranks the first [`CANDIDATES`] test images (the whole answer, before `n` is applied).
async fn rank<B: AutodiffBackend>(
    s: &Arc<AppState<B>>,
    entry: &Arc<ModelEntry<B>>,
    ds: &Arc<Dataset>,
    base: &str,
    robust: &str,
    params: &AttackParams,
) -> ApiResult<Showcase> {
    let count = CANDIDATES.min(ds.len());
    let (st, e2, ds2, b2, r2, p2) = (
        s.clone(),
        entry.clone(),
        ds.clone(),
        base.to_string(),
        robust.to_string(),
        params.clone(),
    );
    let (picks, settings, ms) = run_blocking(s, &s.attack_slots, move |token| {
        let t0 = Instant::now();
        let classes = e2.config.num_classes;
        let wrap = |v: &str| {
            Cancellable::new(
                e2.variant(Some(v)).expect("checked") as &dyn Classifier<B>,
                classes,
                token,
            )
        };
        let attack = by_name::<B>("pgd", &p2)?;
        let pixels: Vec<f32> = (0..count).flat_map(|i| ds2.image(i)).collect();
        let labels: Vec<usize> = ds2.labels[..count].iter().map(|&l| l as usize).collect();
        let x = images::<B::InnerBackend>(&pixels, ds2.shape, &st.models.device)?;
        let picks = inspect::showcase::<B>(&wrap(&b2), &wrap(&r2), attack.as_ref(), x, &labels, 0)?;
        Ok((picks, attack.settings(), t0.elapsed().as_secs_f64() * 1e3))
    })
    .await?;
    let lessons = picks
        .iter()
        .filter(|p| p.base_fooled && p.robust_held)
        .count();
    let items = picks
        .iter()
        .map(|p| {
            Ok(ShowcaseImage {
                sample: p.index,
                label: p.label,
                label_name: ds.classes.get(p.label).cloned(),
                png: png_data_url(&ds.image(p.index), ds.shape)?,
                base_fooled: p.base_fooled,
                robust_held: p.robust_held,
                base_confidence: p.base_confidence,
                robust_confidence: p.robust_confidence,
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Showcase {
        model: entry.id.clone(),
        dataset: ds.name.clone(),
        base: base.to_string(),
        robust: robust.to_string(),
        attack: AttackSettings::from_value(settings),
        ranked: count,
        both_right: picks.len(),
        base_fooled_robust_held: lessons,
        images: items,
        ms,
    })
}

//! What a request asks for, parsed and checked: multipart fields, the input image
//! (an upload or a test sample), attack settings, the variant, the caller's work budget.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::Multipart;
use axum::http::HeaderMap;
use hyperat::attack::{ATTACKS, AttackParams};
use hyperat::data::decode_upload;
use hyperat::prelude::*;
use serde_json::{Value, json};

use super::auth::bearer_matches;
use super::blocking::run_blocking;
use super::error::{ApiError, ApiResult};
use super::models::ModelEntry;
use super::state::AppState;

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

    /// A text field, trimmed; `None` where absent or empty.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.fields
            .get(k)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    }

    /// A field parsed, `default` where absent; 422 naming the field where unreadable.
    pub fn parse<T: std::str::FromStr>(&self, k: &str, default: T) -> ApiResult<T> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| ApiError::invalid(format!("`{k}`: cannot read `{v}`"))),
        }
    }

    /// A yes/no field (`1`, `true`, `on`, `yes`).
    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("1" | "true" | "on" | "yes"))
    }

    /// A radius or step as `0.03` or `8/255`.
    pub fn fraction(&self, k: &str) -> ApiResult<Option<f32>> {
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
pub struct Input {
    /// The image, `[C, H, W]` in [0,1], the model's input size.
    pub pixels: Vec<f32>,
    /// Its true class, where known (a sample's label, or one the upload carried).
    pub label: Option<usize>,
    /// Where it came from (`{"upload": …}` or `{"dataset": …, "sample": …}`).
    pub source: Value,
}

/// The request's image: an upload decoded on the blocking pool under the decode slots
/// (decoding is CPU work and up to `max_decoded` bytes of memory), or a test sample.
pub async fn input<B: AutodiffBackend>(
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
        let px = run_blocking(s, &s.decode_slots, move |_| {
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
pub fn check_work<B: AutodiffBackend>(
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
pub fn attack_params<B: AutodiffBackend>(
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

/// The variant named (default: the model's own), or 404 listing the ones there are.
pub fn variant_of<'a, B: AutodiffBackend>(
    entry: &'a ModelEntry<B>,
    name: Option<&str>,
) -> ApiResult<(String, &'a hyperat::variant::VariantModel<B>)> {
    let name = name.unwrap_or(&entry.default_variant).to_string();
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

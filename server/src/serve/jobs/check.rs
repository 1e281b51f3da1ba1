//! Checks a job's spec before it is queued.

use hyperat::attack::AttackParams;
use hyperat::prelude::*;
use hyperat::train::PretrainRequest;
use hyperat::tune::TuneRequest;
use serde_json::{Value, json};

use super::*;
use crate::serve::state::AppState;

/// Parses a job's `config` (absent means every default).
pub fn parse_config<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, String> {
    let v = if v.is_null() { json!({}) } else { v.clone() };
    serde_json::from_value(v).map_err(|e| format!("config: {e}"))
}

/// A pretrain job's request: every `hyperat pretrain` setting but `from` (a job names
/// no server paths).
pub(super) fn pretrain_request(v: &Value) -> Result<PretrainRequest, String> {
    let req: PretrainRequest = parse_config(v)?;
    if req.from.is_some() {
        return Err("config: `from` is not accepted in a job (start from a preset)".into());
    }
    Ok(req)
}

/// Jobs read only the datasets the server knows by name: a path (`folder:…`) from a
/// client would let it probe and read the server's files.
fn known_dataset(name: &str) -> Result<(), crate::serve::error::ApiError> {
    if name == "fmnist" || crate::serve::state::DATASETS.contains(&name) {
        Ok(())
    } else {
        Err(crate::serve::error::ApiError::invalid(format!(
            "dataset `{name}`: jobs take one of {} (no paths)",
            crate::serve::state::DATASETS.join(", ")
        )))
    }
}

/// Checks a spec before it is queued (unknown fields, bad values, unknown models).
pub fn check<B: AutodiffBackend>(
    s: &AppState<B>,
    spec: &JobSpec,
) -> Result<(), crate::serve::error::ApiError> {
    use crate::serve::error::ApiError;
    let inv = ApiError::invalid;
    if let Some(n) = &spec.name {
        clean_name(n).map_err(inv)?;
    }
    match spec.kind {
        JobKind::Tune => {
            let req: TuneRequest = parse_config(&spec.config).map_err(inv)?;
            known_dataset(&req.dataset)?;
            let entry = s.model_or_default(spec.model.as_deref())?;
            let ck = hyperat::checkpoint::Checkpoint::load(entry.backbone_dir())?;
            req.validate(&ck)?;
            if req.steps > 1_000_000 || req.batch_size > 4096 {
                return Err(inv(
                    "steps at most 1000000, batch_size at most 4096".to_string()
                ));
            }
        }
        JobKind::Pretrain => {
            let req = pretrain_request(&spec.config).map_err(inv)?;
            known_dataset(&req.dataset)?;
            req.validate()?;
        }
        JobKind::Eval => {
            let e: EvalJob = parse_config(&spec.config).map_err(inv)?;
            if let Some(d) = &e.dataset {
                known_dataset(d)?;
            }
            let entry = s.model_or_default(spec.model.as_deref())?;
            if let Some(v) = &spec.variant
                && entry.variant(Some(v)).is_none()
            {
                return Err(ApiError::not_found(format!(
                    "model `{}` has no variant `{v}`",
                    entry.id
                )));
            }
            if e.attack != "none" {
                hyperat::attack::by_name::<B>(
                    &e.attack,
                    &AttackParams {
                        eps: e.eps,
                        alpha: e.alpha,
                        steps: e.steps,
                        restarts: e.restarts,
                        ..Default::default()
                    },
                )?;
            }
        }
        JobKind::Report => {
            let r: ReportJob = parse_config(&spec.config).map_err(inv)?;
            known_dataset(&r.dataset)?;
            for row in &r.rows {
                let entry = s.model(&row.model)?;
                if let Some(v) = &row.variant
                    && entry.variant(Some(v)).is_none()
                {
                    return Err(ApiError::not_found(format!(
                        "model `{}` has no variant `{v}`",
                        entry.id
                    )));
                }
            }
            if r.rows.is_empty() {
                s.model_or_default(spec.model.as_deref())?;
            }
            AttackParams {
                eps: r.eps,
                alpha: Some(r.alpha),
                steps: r.steps,
                ..Default::default()
            }
            .validate()?;
        }
    }
    Ok(())
}

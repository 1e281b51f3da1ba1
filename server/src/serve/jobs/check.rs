//! Checks a job's spec before it is queued.

use hyperat::eval::EvalRequest;
use hyperat::prelude::*;
use hyperat::report::ReportRequest;
use hyperat::train::PretrainRequest;
use hyperat::tune::{RunDir, TuneKind, TuneRequest};
use hyperat::variant::MergeRequest;
use serde_json::{Value, json};

use super::*;
use crate::serve::models::ModelEntry;
use crate::serve::registry::{DATASETS, ModelRegistry};

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
    if name == "fmnist" || DATASETS.contains(&name) {
        Ok(())
    } else {
        Err(crate::serve::error::ApiError::invalid(format!(
            "dataset `{name}`: jobs take one of {} (no paths)",
            DATASETS.join(", ")
        )))
    }
}

/// The run a merge job merges: the model's, where it is a HyperAT run.
pub(super) fn merge_source<B: AutodiffBackend>(
    entry: &ModelEntry<B>,
) -> Result<RunDir, crate::serve::error::ApiError> {
    match &entry.run {
        Some(run) if entry.kind == TuneKind::Hyperat.name() => Ok(run.clone()),
        _ => Err(crate::serve::error::ApiError::invalid(format!(
            "model `{}` is a {}, not a HyperAT run: it has no per-method LoRAs to merge",
            entry.id, entry.kind
        ))),
    }
}

/// Checks a spec before it is queued (unknown fields, bad values, unknown models, a
/// training batch that does not split over the server's `train_peers` devices).
pub fn check<B: AutodiffBackend>(
    s: &ModelRegistry<B>,
    spec: &JobSpec,
    train_peers: usize,
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
            let entry = s.get_or_default(spec.model.as_deref())?;
            let ck = hyperat::checkpoint::Checkpoint::load(entry.backbone_dir())?;
            req.validate(&ck)?;
            if req.steps > 1_000_000 || req.batch_size > 4096 {
                return Err(inv(
                    "steps at most 1000000, batch_size at most 4096".to_string()
                ));
            }
            hyperat::parallel::check_split(req.batch_size, train_peers)?;
        }
        JobKind::Pretrain => {
            let req = pretrain_request(&spec.config).map_err(inv)?;
            known_dataset(&req.dataset)?;
            req.validate()?;
            hyperat::parallel::check_split(req.batch_size, train_peers)?;
        }
        JobKind::Eval => {
            let req: EvalRequest = parse_config(&spec.config).map_err(inv)?;
            if let Some(d) = &req.dataset {
                known_dataset(d)?;
            }
            let entry = s.get_or_default(spec.model.as_deref())?;
            if let Some(v) = &spec.variant
                && entry.variant(Some(v)).is_none()
            {
                return Err(ApiError::not_found(format!(
                    "model `{}` has no variant `{v}`",
                    entry.id
                )));
            }
            req.validate()?;
        }
        JobKind::Merge => {
            let req: MergeRequest = parse_config(&spec.config).map_err(inv)?;
            req.validate()?;
            merge_source(&*s.get_or_default(spec.model.as_deref())?)?;
        }
        JobKind::Report => {
            let req: ReportRequest = parse_config(&spec.config).map_err(inv)?;
            known_dataset(&req.dataset)?;
            for row in &req.rows {
                let entry = s.get(&row.model)?;
                if let Some(v) = &row.variant
                    && entry.variant(Some(v)).is_none()
                {
                    return Err(ApiError::not_found(format!(
                        "model `{}` has no variant `{v}`",
                        entry.id
                    )));
                }
            }
            if req.rows.is_empty() {
                s.get_or_default(spec.model.as_deref())?;
            }
            req.validate()?;
        }
    }
    Ok(())
}

//! A comparison table as a caller asks for it (`hyperat report`, a report job): one set
//! of defaults, one validation, one behaviour.

use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use super::{Report, ReportConfig, ReportRow, ReportShard, RowShard, RowTask, merge_row};
use crate::attack::AttackParams;
use crate::data::{self, Split, standard_eps};
use crate::error::{Error, Result};
use crate::eval::{MAX_BATCH, ShardSpec};
use crate::progress::{Progress, Silent};
use crate::variant::{VariantModel, load_spec};

/// One model of the table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportModel {
    /// Row name (default: the model as resolved, e.g. `RUN#merged:uniform`).
    #[serde(default)]
    pub name: Option<String>,
    /// The model: a folder or `RUN_DIR#variant` (CLI), a served model's id (job).
    pub model: String,
    /// Its variant (default: the model's own default).
    #[serde(default)]
    pub variant: Option<String>,
}

impl ReportModel {
    /// `NAME=SPEC` or `SPEC`, as `hyperat report --models` takes them.
    pub fn parse(arg: &str) -> Self {
        let (name, model) = match arg.split_once('=') {
            Some((n, m)) => (Some(n.to_string()), m),
            None => (None, arg),
        };
        Self {
            name,
            model: model.to_string(),
            variant: None,
        }
    }
}

/// A report; every field but `rows` has a default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReportRequest {
    /// The models, one row each, in this order (a job without rows: every variant of
    /// its model).
    pub rows: Vec<ReportModel>,
    /// Dataset (default `fashion-mnist`); its test split.
    pub dataset: String,
    /// The first N test images (default 1000).
    pub limit: usize,
    /// L-inf radius (default: the dataset's standard budget, [`standard_eps`]).
    pub eps: Option<f32>,
    /// Step size (default eps/4).
    pub alpha: Option<f32>,
    /// PGD and CW iterations (default 20).
    pub steps: usize,
    /// Images per batch (default 250).
    pub batch_size: usize,
    /// Attack seed (default 0).
    pub seed: u64,
    /// Standard AutoAttack on the first N images too (default 0: none; about 10 s per
    /// robust image on a 2-core CPU).
    pub aa_limit: usize,
}

impl Default for ReportRequest {
    fn default() -> Self {
        Self {
            rows: vec![],
            dataset: "fashion-mnist".into(),
            limit: 1000,
            eps: None,
            alpha: None,
            steps: 20,
            batch_size: 250,
            seed: 0,
            aa_limit: 0,
        }
    }
}

impl ReportRequest {
    /// The threat model every row is measured under.
    pub fn config(&self) -> ReportConfig {
        let eps = self.eps.unwrap_or_else(|| standard_eps(&self.dataset));
        ReportConfig {
            eps,
            alpha: self.alpha.unwrap_or(eps / 4.0),
            steps: self.steps,
            batch_size: self.batch_size,
            seed: self.seed,
            aa_limit: self.aa_limit,
        }
    }

    /// Rejects values out of range (the rows are checked by whoever resolves them).
    pub fn validate(&self) -> Result<()> {
        if self.limit == 0 {
            return Err(Error::Invalid("limit must be at least 1".into()));
        }
        if self.batch_size == 0 || self.batch_size > MAX_BATCH {
            return Err(Error::Invalid(format!(
                "batch_size must be in 1..={MAX_BATCH}, got {}",
                self.batch_size
            )));
        }
        let c = self.config();
        AttackParams {
            eps: c.eps,
            alpha: Some(c.alpha),
            steps: c.steps,
            ..Default::default()
        }
        .validate()
    }

    /// Measures every row. `resolve` turns a row into the spec to load (`DIR` or
    /// `RUN_DIR#variant`); a row without a name is named after that spec's variant or
    /// what `resolve` calls it. `on_row` hears each row as it is done.
    pub fn run<B: AutodiffBackend>(
        &self,
        resolve: &Resolve<'_>,
        device: &B::Device,
        progress: &mut dyn Progress,
        on_row: &mut dyn FnMut(&ReportRow),
    ) -> Result<Report> {
        self.run_on_devices::<B>(resolve, std::slice::from_ref(device), progress, on_row)
    }

    /// [`ReportRequest::run`] with each row's images split over `devices` (one shard
    /// per device, each on its own thread, merged): the report one device writes.
    pub fn run_on_devices<B: AutodiffBackend>(
        &self,
        resolve: &Resolve<'_>,
        devices: &[B::Device],
        progress: &mut dyn Progress,
        on_row: &mut dyn FnMut(&ReportRow),
    ) -> Result<Report> {
        let count = devices.len().max(1);
        let specs: Vec<ShardSpec> = (0..count).map(|index| ShardSpec { index, count }).collect();
        let mut rows = vec![];
        let mut merge = |shards: Vec<RowShard>| {
            let row = merge_row(shards)?;
            on_row(&row);
            rows.push(row);
            Ok(())
        };
        let config = self.shard_rows::<B>(resolve, &specs, devices, progress, &mut merge)?;
        Ok(Report { config, rows })
    }

    /// Shard `shard` of every row on `device` (`hyperat report --shard`), to merge with
    /// the others' by [`merge_report`](super::merge_report).
    pub fn run_shard<B: AutodiffBackend>(
        &self,
        resolve: &Resolve<'_>,
        shard: ShardSpec,
        device: &B::Device,
        progress: &mut dyn Progress,
    ) -> Result<ReportShard> {
        shard.batches(0)?;
        let mut rows = vec![];
        let mut keep = |mut shards: Vec<RowShard>| {
            rows.extend(shards.pop());
            Ok(())
        };
        let devices = std::slice::from_ref(device);
        let config = self.shard_rows::<B>(resolve, &[shard], devices, progress, &mut keep)?;
        Ok(ReportShard {
            config,
            shard,
            rows,
        })
    }

    /// Evaluates shard `specs[i]` of every row on `devices[i]` (the first on this thread
    /// with `progress`, the others each on its own, loading the model there), handing
    /// each row's shards to `done`; returns the threat model.
    fn shard_rows<B: AutodiffBackend>(
        &self,
        resolve: &Resolve<'_>,
        specs: &[ShardSpec],
        devices: &[B::Device],
        progress: &mut dyn Progress,
        done: &mut dyn FnMut(Vec<RowShard>) -> Result<()>,
    ) -> Result<ReportConfig> {
        self.validate()?;
        if self.rows.is_empty() {
            return Err(Error::Invalid("no models given".into()));
        }
        let config = self.config();
        let resolved = self
            .rows
            .iter()
            .map(|r| {
                let (label, spec) = resolve(r)?;
                Ok((r.name.clone().unwrap_or(label), spec))
            })
            .collect::<Result<Vec<_>>>()?;
        // Every row loads before any is measured: a mistyped last row fails in seconds,
        // not after the first rows' hours of attacks.
        for (name, spec) in &resolved {
            load_spec::<B>(spec, &devices[0]).map_err(|e| e.within(&format!("model {name:?}")))?;
        }
        let mut ds = None;
        for (name, spec) in &resolved {
            if progress.cancelled() {
                return Err(Error::Cancelled);
            }
            let model = load_spec::<B>(spec, &devices[0])?;
            if ds.is_none() {
                let shape = model.config.input_shape();
                let mut d = data::load(&self.dataset, Split::Test, Some(shape))?;
                d.truncate(self.limit);
                ds = Some(d);
            }
            let ds = ds.as_ref().expect("loaded");
            let config = &config;
            let task = |model: &VariantModel<B>, i: usize, progress: &mut dyn Progress| {
                let row = RowTask {
                    name,
                    spec,
                    model,
                    ds,
                    config,
                };
                row.evaluate(specs[i], &devices[i], progress)
            };
            let shards = std::thread::scope(|s| {
                let others: Vec<_> = (1..devices.len())
                    .map(|i| {
                        s.spawn(move || {
                            let model = load_spec::<B>(spec, &devices[i])?;
                            task(&model, i, &mut Silent)
                        })
                    })
                    .collect();
                let mut all = vec![task(&model, 0, progress)];
                all.extend(
                    others
                        .into_iter()
                        .map(|h| h.join().expect("a report shard's thread panicked")),
                );
                all.into_iter().collect::<Result<Vec<_>>>()
            })?;
            done(shards)?;
        }
        Ok(config)
    }
}

/// Turns a row into its display name and the spec to load.
pub type Resolve<'a> = dyn Fn(&ReportModel) -> Result<(String, String)> + 'a;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_dataset_and_bad_values_are_refused() {
        let r: ReportRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(r, ReportRequest::default());
        assert_eq!((r.config().eps, r.config().alpha), (0.1, 0.025));
        let c: ReportRequest = serde_json::from_str(r#"{"dataset": "cifar10"}"#).unwrap();
        assert_eq!(c.config().eps, 8.0 / 255.0);
        for (body, want) in [
            (r#"{"limit": 0}"#, "limit"),
            (r#"{"batch_size": 0}"#, "batch_size"),
            (r#"{"eps": 0}"#, "eps"),
            (r#"{"steps": 0}"#, "steps"),
        ] {
            let r: ReportRequest = serde_json::from_str(body).unwrap();
            let e = r.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{body}: {e}");
        }
        assert_eq!(
            ReportModel::parse("ours=runs/a#merged:uniform"),
            ReportModel {
                name: Some("ours".into()),
                model: "runs/a#merged:uniform".into(),
                variant: None
            }
        );
    }
}

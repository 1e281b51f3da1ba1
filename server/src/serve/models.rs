//! The models the server offers: every folder under `--models` (a timm checkpoint, a
//! tuning run, or the shipped layout `backbone/ hyperat/ merged/`) and every finished
//! run under `data-dir/runs/`, each with its variants built once at start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hyperat::VitConfig;
use hyperat::checkpoint::{Adapt, load_vit};
use hyperat::data::FASHION_MNIST_CLASSES;
use hyperat::prelude::*;
use hyperat::report::{Evaluation, Report};
use hyperat::tune::RunDir;
use hyperat::variant::{VariantModel, build, trained_on};
use hyperat::wire::{Architecture, DefenseSimilarity, ModelInfo};

/// One model and its ready-to-run variants.
#[derive(Debug)]
pub struct ModelEntry<B: AutodiffBackend> {
    /// Id in URLs (the folder name).
    pub id: String,
    /// A name for people, where one was given (a tuning job's name; renamed in place,
    /// the entry being shared with running requests).
    pub name: std::sync::RwLock<Option<String>>,
    /// Where it was loaded from.
    pub path: PathBuf,
    /// The tuning run behind it, if any.
    pub run: Option<RunDir>,
    /// What it is: `checkpoint`, or the run's kind (`hyperat`, `lora-at`, ...).
    pub kind: String,
    /// The dataset it was tuned on, where known.
    pub dataset: Option<String>,
    /// Architecture and preprocessing.
    pub config: VitConfig,
    /// Class names.
    pub classes: Vec<String>,
    /// Variants in display order, each ready to run (gradients off for weights).
    pub variants: Vec<(String, VariantModel<B>)>,
    /// The default variant (the merged model where there is one).
    pub default_variant: String,
    /// Trainable parameters and training time from the run's `summary.json`.
    pub summary: Option<serde_json::Value>,
    /// The L-inf budget the run trained against (a tuning run's), the ε its lessons
    /// open at.
    pub train_eps: Option<f32>,
    /// Each variant's clean and robust accuracy, from the folder's `evaluation.json`
    /// (`hyperat report --json`, rows named by variant) where there is one.
    pub evaluation: Option<Evaluation>,
    /// How distinct its defenses' LoRAs are, from the run's diagnostics (HyperAT runs).
    pub defenses: Option<DefenseSimilarity>,
}

impl<B: AutodiffBackend> ModelEntry<B> {
    /// The public description.
    pub fn info(&self) -> ModelInfo {
        let c = &self.config;
        ModelInfo {
            id: self.id.clone(),
            name: self.name.read().expect("name lock").clone(),
            kind: self.kind.clone(),
            classes: self.classes.clone(),
            input: c.input_shape(),
            channels: c.in_chans,
            mean: c.mean.clone(),
            std: c.std.clone(),
            variants: self.variants.iter().map(|(n, _)| n.clone()).collect(),
            default_variant: self.default_variant.clone(),
            dataset: self.dataset.clone(),
            architecture: Architecture {
                img_size: c.img_size,
                patch_size: c.patch_size,
                embed_dim: c.embed_dim,
                depth: c.depth,
                num_heads: c.num_heads,
                mlp_ratio: c.mlp_ratio,
                num_classes: c.num_classes,
            },
            summary: self.summary.clone(),
            train_eps: self.train_eps,
            evaluation: self.evaluation.clone(),
            defenses: self.defenses.clone(),
        }
    }

    /// A variant by name (`None`: the default).
    pub fn variant(&self, name: Option<&str>) -> Option<&VariantModel<B>> {
        let name = name
            .filter(|n| !n.is_empty())
            .unwrap_or(&self.default_variant);
        self.variants
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// The checkpoint folder new tuning runs start from.
    pub fn backbone_dir(&self) -> PathBuf {
        match &self.run {
            Some(run) => run.backbone_dir(),
            None => self.path.clone(),
        }
    }

    /// A spec `hyperat::variant::load_spec` understands, for reports.
    pub fn spec(&self, variant: &str) -> String {
        match &self.run {
            Some(run) => format!("{}#{variant}", run.path().display()),
            None => self.path.display().to_string(),
        }
    }
}

/// Class names of a model: its `label_names`, else Fashion-MNIST's for a 10-class model
/// tuned on it, else `class i`.
fn class_names(cfg: &VitConfig, dataset: Option<&str>) -> Vec<String> {
    if let Some(names) = &cfg.label_names
        && names.len() == cfg.num_classes
    {
        return names.clone();
    }
    if cfg.num_classes == 10 && matches!(dataset, Some("fashion-mnist" | "fmnist")) {
        return FASHION_MNIST_CLASSES
            .iter()
            .map(|s| s.to_string())
            .collect();
    }
    (0..cfg.num_classes).map(|i| format!("class {i}")).collect()
}

/// Loads the model in folder `dir` (id `id`), or `None` when the folder holds none.
fn load_model<B: AutodiffBackend>(
    id: &str,
    dir: &Path,
    device: &B::Device,
) -> hyperat::Result<Option<ModelEntry<B>>> {
    if let Some(run) = RunDir::find(dir) {
        if !run.has_checkpoint() {
            return Ok(None);
        }
        let info = run.info()?;
        let mut variants = vec![];
        for v in run.variants()? {
            variants.push((v.to_string(), build::<B>(&run, &v, device)?));
        }
        let config = variants[0].1.config.clone();
        let default_variant = info.default_variant().to_string();
        let summary = run.summary().and_then(|s| serde_json::to_value(s).ok());
        let defenses = run.defense_similarity();
        return Ok(Some(ModelEntry {
            id: id.to_string(),
            name: Default::default(),
            path: dir.to_path_buf(),
            classes: class_names(&config, Some(&info.dataset)),
            kind: info.config.kind.name().to_string(),
            dataset: Some(info.dataset),
            run: Some(run),
            config,
            variants,
            default_variant,
            summary,
            train_eps: Some(info.config.defense.eps),
            evaluation: None,
            defenses,
        }));
    }
    let ck_dir = if dir.join("config.json").is_file() {
        dir.to_path_buf()
    } else if dir.join("model/config.json").is_file() {
        dir.join("model")
    } else {
        return Ok(None);
    };
    let (config, vit) = load_vit::<B>(&ck_dir, &Adapt::default(), device)?;
    let dataset = trained_on(&ck_dir.to_string_lossy(), &config);
    Ok(Some(ModelEntry {
        id: id.to_string(),
        name: Default::default(),
        path: ck_dir,
        run: None,
        kind: "checkpoint".into(),
        classes: class_names(&config, dataset.as_deref()),
        dataset,
        variants: vec![(
            "base".into(),
            VariantModel {
                config: config.clone(),
                vit,
                adapters: None,
            }
            .frozen(),
        )],
        config,
        default_variant: "base".into(),
        summary: None,
        train_eps: None,
        evaluation: None,
        defenses: None,
    }))
}

/// Loads the model in folder `dir` (id `id`) with its evaluation, or `None` when the
/// folder holds no model. An unreadable `evaluation.json` is reported and left out: the
/// model still serves.
pub fn load_entry<B: AutodiffBackend>(
    id: &str,
    dir: &Path,
    device: &B::Device,
) -> hyperat::Result<Option<ModelEntry<B>>> {
    let Some(mut entry) = load_model::<B>(id, dir, device)? else {
        return Ok(None);
    };
    let path = dir.join("evaluation.json");
    if path.is_file() {
        let names: Vec<String> = entry.variants.iter().map(|(n, _)| n.clone()).collect();
        match Report::read(&path) {
            Ok(r) => entry.evaluation = r.of_variants(&names),
            Err(e) => eprintln!("serve: model {id}: ignoring {e}"),
        }
    }
    Ok(Some(entry))
}

/// Every model folder directly under `root`, sorted by id; a folder that fails to load
/// is reported on stderr and skipped, so one bad folder does not stop the server.
pub fn load_dir<B: AutodiffBackend>(
    root: &Path,
    device: &B::Device,
) -> BTreeMap<String, ModelEntry<B>> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(root) else {
        return out;
    };
    let mut dirs: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for d in dirs {
        let Some(id) = d.file_name().and_then(|n| n.to_str()).map(String::from) else {
            continue;
        };
        match load_entry::<B>(&id, &d, device) {
            Ok(Some(e)) => {
                out.insert(id, e);
            }
            Ok(None) => {}
            Err(e) => eprintln!("serve: skipping model folder {}: {e}", d.display()),
        }
    }
    out
}

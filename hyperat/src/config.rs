//! The ViT configuration, read from and written to timm's hub `config.json`.
//!
//! timm's `save_for_hf` writes `model_args` (the keyword arguments that rebuild the
//! model on top of the architecture's defaults) and `pretrained_cfg` (preprocessing).
//! We honour the `vit_*` keyword arguments listed in [`SUPPORTED_ARGS`] and refuse any
//! other by name: silently ignoring one (say `qk_norm` or `init_values`) would give a
//! model that loads but computes something else.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};

/// `model_args` keys this implementation understands.
pub const SUPPORTED_ARGS: &[&str] = &[
    "img_size",
    "patch_size",
    "in_chans",
    "embed_dim",
    "depth",
    "num_heads",
    "mlp_ratio",
    "qkv_bias",
    "class_token",
    "reg_tokens",
    "no_embed_class",
    "global_pool",
    "fc_norm",
    "num_classes",
];

/// How the token sequence becomes one feature vector (timm's `global_pool`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GlobalPool {
    /// The class token's output.
    Token,
    /// Mean of the patch tokens (prefix tokens excluded).
    Avg,
}

/// Architecture and preprocessing of a timm Vision Transformer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VitConfig {
    /// timm architecture name the defaults come from (kept for round trips).
    pub architecture: String,
    /// Input height and width in pixels.
    pub img_size: [usize; 2],
    /// Square patch side in pixels.
    pub patch_size: usize,
    /// Input channels.
    pub in_chans: usize,
    /// Token width `D`.
    pub embed_dim: usize,
    /// Number of transformer blocks.
    pub depth: usize,
    /// Attention heads; must divide `embed_dim`.
    pub num_heads: usize,
    /// MLP hidden width is `mlp_ratio * embed_dim`.
    pub mlp_ratio: f64,
    /// Whether `attn.qkv` has a bias.
    pub qkv_bias: bool,
    /// Whether a class token is prepended.
    pub class_token: bool,
    /// Register tokens after the class token.
    pub reg_tokens: usize,
    /// Position embeddings cover the patches only (prefix tokens get none).
    pub no_embed_class: bool,
    /// Pooling of the final tokens.
    pub global_pool: GlobalPool,
    /// LayerNorm after pooling instead of before it; `None` means timm's default
    /// (on for `avg`, off for `token`).
    pub fc_norm: Option<bool>,
    /// Classifier outputs.
    pub num_classes: usize,
    /// Per-channel mean of the [0,1] input, subtracted inside the model.
    pub mean: Vec<f32>,
    /// Per-channel std of the [0,1] input, divided inside the model.
    pub std: Vec<f32>,
    /// Class names, where known (written to `label_names` in `config.json`).
    pub label_names: Option<Vec<String>>,
}

impl VitConfig {
    /// The tiny Fashion-MNIST preset: img 28, patch 4, 1 channel, dim 64, depth 4,
    /// heads 4, mlp 4, mean/std of the Fashion-MNIST training set.
    pub fn vit_tiny_fmnist() -> Self {
        Self {
            architecture: "vit_tiny_patch16_224".into(),
            img_size: [28, 28],
            patch_size: 4,
            in_chans: 1,
            embed_dim: 64,
            depth: 4,
            num_heads: 4,
            mlp_ratio: 4.0,
            qkv_bias: true,
            class_token: true,
            reg_tokens: 0,
            no_embed_class: false,
            global_pool: GlobalPool::Token,
            fc_norm: None,
            num_classes: 10,
            mean: vec![0.2860],
            std: vec![0.3530],
            label_names: None,
        }
    }

    /// A wider and deeper Fashion-MNIST preset (dim 96, depth 6, heads 4, patch 4):
    /// 3.3× the tiny preset's multiply-adds per image, for when the tiny one cannot
    /// reach the accuracy a backbone needs.
    pub fn vit_mini_fmnist() -> Self {
        Self {
            embed_dim: 96,
            depth: 6,
            ..Self::vit_tiny_fmnist()
        }
    }

    /// A ViT-S/16 shape at 224 px with 1000 classes (benchmarks only).
    pub fn vit_small_224() -> Self {
        Self {
            architecture: "vit_small_patch16_224".into(),
            img_size: [224, 224],
            patch_size: 16,
            in_chans: 3,
            embed_dim: 384,
            depth: 12,
            num_heads: 6,
            num_classes: 1000,
            mean: vec![0.5; 3],
            std: vec![0.5; 3],
            ..Self::vit_tiny_fmnist()
        }
    }

    /// Looks a preset up by name.
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "vit-tiny-fmnist" => Ok(Self::vit_tiny_fmnist()),
            "vit-mini-fmnist" => Ok(Self::vit_mini_fmnist()),
            "vit-small-224" => Ok(Self::vit_small_224()),
            other => Err(Error::Config(format!(
                "unknown preset `{other}` (known: vit-tiny-fmnist, vit-mini-fmnist, vit-small-224)"
            ))),
        }
    }

    /// Patch grid `[rows, cols]`.
    pub fn grid(&self) -> [usize; 2] {
        [
            self.img_size[0] / self.patch_size,
            self.img_size[1] / self.patch_size,
        ]
    }

    /// Number of patch tokens.
    pub fn num_patches(&self) -> usize {
        let [gh, gw] = self.grid();
        gh * gw
    }

    /// Class token plus register tokens.
    pub fn num_prefix_tokens(&self) -> usize {
        usize::from(self.class_token) + self.reg_tokens
    }

    /// Rows of `pos_embed`.
    pub fn pos_embed_len(&self) -> usize {
        self.num_patches()
            + if self.no_embed_class {
                0
            } else {
                self.num_prefix_tokens()
            }
    }

    /// MLP hidden width, as timm computes it (`int(dim * mlp_ratio)`).
    pub fn mlp_hidden(&self) -> usize {
        (self.embed_dim as f64 * self.mlp_ratio) as usize
    }

    /// Whether LayerNorm comes after pooling (`fc_norm`) rather than before (`norm`).
    pub fn use_fc_norm(&self) -> bool {
        self.fc_norm
            .unwrap_or(matches!(self.global_pool, GlobalPool::Avg))
    }

    /// Input shape `[C, H, W]`.
    pub fn input_shape(&self) -> [usize; 3] {
        [self.in_chans, self.img_size[0], self.img_size[1]]
    }

    /// Checks the combination is one timm (and we) can build.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.embed_dim == 0 || self.depth == 0 || self.num_heads == 0 || self.patch_size == 0 {
            return bad("embed_dim, depth, num_heads and patch_size must be positive".into());
        }
        if !self.embed_dim.is_multiple_of(self.num_heads) {
            return bad(format!(
                "embed_dim {} is not divisible by num_heads {}",
                self.embed_dim, self.num_heads
            ));
        }
        if !self.img_size[0].is_multiple_of(self.patch_size)
            || !self.img_size[1].is_multiple_of(self.patch_size)
        {
            return bad(format!(
                "img_size {:?} is not a multiple of patch_size {}",
                self.img_size, self.patch_size
            ));
        }
        if !self.class_token && self.global_pool == GlobalPool::Token {
            return bad("global_pool `token` needs class_token".into());
        }
        if self.mean.len() != self.in_chans || self.std.len() != self.in_chans {
            return bad(format!(
                "mean/std have {}/{} values for {} input channels",
                self.mean.len(),
                self.std.len(),
                self.in_chans
            ));
        }
        if self
            .std
            .iter()
            .any(|s| s.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater))
        {
            return bad("std values must be positive".into());
        }
        if self.num_classes == 0 {
            return bad("num_classes must be positive (a headless model is not supported)".into());
        }
        if let Some(names) = &self.label_names
            && names.len() != self.num_classes
        {
            return bad(format!(
                "{} label names for {} classes",
                names.len(),
                self.num_classes
            ));
        }
        Ok(())
    }

    /// Parses timm's hub `config.json`.
    pub fn from_hub_json(text: &str) -> Result<Self> {
        let root: Value = serde_json::from_str(text)
            .map_err(|e| Error::Config(format!("config.json is not valid JSON: {e}")))?;
        let args = root
            .get("model_args")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let unknown: Vec<&String> = args
            .keys()
            .filter(|k| !SUPPORTED_ARGS.contains(&k.as_str()))
            .collect();
        if !unknown.is_empty() {
            return Err(Error::Config(format!(
                "unsupported model_args: {} (supported: {})",
                unknown
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                SUPPORTED_ARGS.join(", ")
            )));
        }
        let architecture = root
            .get("architecture")
            .and_then(Value::as_str)
            .unwrap_or("vit_tiny_patch16_224")
            .to_string();
        let mut cfg = arch_defaults(&architecture)?;
        cfg.architecture = architecture;
        apply_args(&mut cfg, &args)?;
        // num_classes may sit at the top level only.
        if !args.contains_key("num_classes")
            && let Some(n) = root.get("num_classes").and_then(Value::as_u64)
        {
            cfg.num_classes = n as usize;
        }
        if !args.contains_key("global_pool")
            && let Some(p) = root.get("global_pool")
        {
            cfg.global_pool = parse_pool(p)?;
        }
        let pre = root.get("pretrained_cfg").cloned().unwrap_or(json!({}));
        cfg.mean = floats(pre.get("mean")).unwrap_or_else(|| vec![0.5; cfg.in_chans]);
        cfg.std = floats(pre.get("std")).unwrap_or_else(|| vec![0.5; cfg.in_chans]);
        if cfg.mean.len() == 1 && cfg.in_chans > 1 {
            cfg.mean = vec![cfg.mean[0]; cfg.in_chans];
        }
        if cfg.std.len() == 1 && cfg.in_chans > 1 {
            cfg.std = vec![cfg.std[0]; cfg.in_chans];
        }
        cfg.label_names = root.get("label_names").and_then(Value::as_array).map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect()
        });
        cfg.validate()?;
        Ok(cfg)
    }

    /// Writes timm's hub `config.json` (the layout `save_for_hf` produces).
    pub fn to_hub_json(&self) -> String {
        let mut args = Map::new();
        args.insert("num_classes".into(), json!(self.num_classes));
        args.insert("img_size".into(), json!(self.img_size));
        args.insert("patch_size".into(), json!(self.patch_size));
        args.insert("in_chans".into(), json!(self.in_chans));
        args.insert("embed_dim".into(), json!(self.embed_dim));
        args.insert("depth".into(), json!(self.depth));
        args.insert("num_heads".into(), json!(self.num_heads));
        args.insert("mlp_ratio".into(), json!(self.mlp_ratio));
        args.insert("qkv_bias".into(), json!(self.qkv_bias));
        args.insert("class_token".into(), json!(self.class_token));
        args.insert("reg_tokens".into(), json!(self.reg_tokens));
        args.insert("no_embed_class".into(), json!(self.no_embed_class));
        args.insert("global_pool".into(), json!(self.global_pool));
        if let Some(f) = self.fc_norm {
            args.insert("fc_norm".into(), json!(f));
        }
        let mut root = json!({
            "architecture": self.architecture,
            "num_classes": self.num_classes,
            "num_features": self.embed_dim,
            "global_pool": self.global_pool,
            "model_args": args,
            "pretrained_cfg": {
                "input_size": self.input_shape(),
                "fixed_input_size": true,
                "interpolation": "bicubic",
                "crop_pct": 1.0,
                "crop_mode": "center",
                "mean": self.mean,
                "std": self.std,
                "num_classes": self.num_classes,
                "pool_size": null,
                "first_conv": "patch_embed.proj",
                "classifier": "head",
            },
        });
        if let Some(names) = &self.label_names {
            root["label_names"] = json!(names);
        }
        serde_json::to_string_pretty(&root).expect("config serialises")
    }
}

/// Architecture defaults for the timm names we know; keyword arguments override them.
fn arch_defaults(arch: &str) -> Result<VitConfig> {
    let base = VitConfig {
        architecture: arch.to_string(),
        img_size: [224, 224],
        patch_size: 16,
        in_chans: 3,
        embed_dim: 192,
        depth: 12,
        num_heads: 3,
        mlp_ratio: 4.0,
        qkv_bias: true,
        class_token: true,
        reg_tokens: 0,
        no_embed_class: false,
        global_pool: GlobalPool::Token,
        fc_norm: None,
        num_classes: 1000,
        mean: vec![0.5; 3],
        std: vec![0.5; 3],
        label_names: None,
    };
    let (dim, depth, heads, patch) = match arch {
        "vit_tiny_patch16_224" => (192, 12, 3, 16),
        "vit_small_patch16_224" => (384, 12, 6, 16),
        "vit_small_patch32_224" => (384, 12, 6, 32),
        "vit_base_patch16_224" => (768, 12, 12, 16),
        "vit_base_patch32_224" => (768, 12, 12, 32),
        "vit_large_patch16_224" => (1024, 24, 16, 16),
        "deit_tiny_patch16_224" => (192, 12, 3, 16),
        "deit_small_patch16_224" => (384, 12, 6, 16),
        "deit_base_patch16_224" => (768, 12, 12, 16),
        other => {
            return Err(Error::Config(format!(
                "unknown architecture `{other}` (known: vit_{{tiny,small,base,large}}_patch16_224, \
                 vit_{{small,base}}_patch32_224, deit_{{tiny,small,base}}_patch16_224)"
            )));
        }
    };
    Ok(VitConfig {
        embed_dim: dim,
        depth,
        num_heads: heads,
        patch_size: patch,
        ..base
    })
}

fn apply_args(cfg: &mut VitConfig, args: &Map<String, Value>) -> Result<()> {
    for (k, v) in args {
        let bad = || Error::Config(format!("model_args.{k} has an unexpected value {v}"));
        let uint = || v.as_u64().map(|n| n as usize).ok_or_else(bad);
        let boolean = || v.as_bool().ok_or_else(bad);
        match k.as_str() {
            "img_size" => cfg.img_size = pair(v).ok_or_else(bad)?,
            "patch_size" => {
                let [a, b] = pair(v).ok_or_else(bad)?;
                if a != b {
                    return Err(Error::Config(format!(
                        "non-square patch_size {v} is not supported"
                    )));
                }
                cfg.patch_size = a;
            }
            "in_chans" => cfg.in_chans = uint()?,
            "embed_dim" => cfg.embed_dim = uint()?,
            "depth" => cfg.depth = uint()?,
            "num_heads" => cfg.num_heads = uint()?,
            "mlp_ratio" => cfg.mlp_ratio = v.as_f64().ok_or_else(bad)?,
            "qkv_bias" => cfg.qkv_bias = boolean()?,
            "class_token" => cfg.class_token = boolean()?,
            "reg_tokens" => cfg.reg_tokens = uint()?,
            "no_embed_class" => cfg.no_embed_class = boolean()?,
            "global_pool" => cfg.global_pool = parse_pool(v)?,
            "fc_norm" => cfg.fc_norm = if v.is_null() { None } else { Some(boolean()?) },
            "num_classes" => cfg.num_classes = uint()?,
            _ => unreachable!("filtered against SUPPORTED_ARGS"),
        }
    }
    Ok(())
}

fn parse_pool(v: &Value) -> Result<GlobalPool> {
    match v.as_str() {
        Some("token") => Ok(GlobalPool::Token),
        Some("avg") => Ok(GlobalPool::Avg),
        _ => Err(Error::Config(format!(
            "global_pool {v} is not supported (use \"token\" or \"avg\")"
        ))),
    }
}

fn pair(v: &Value) -> Option<[usize; 2]> {
    match v {
        Value::Number(n) => n.as_u64().map(|n| [n as usize; 2]),
        Value::Array(a) if a.len() == 2 => Some([a[0].as_u64()? as usize, a[1].as_u64()? as usize]),
        _ => None,
    }
}

fn floats(v: Option<&Value>) -> Option<Vec<f32>> {
    match v? {
        Value::Number(n) => Some(vec![n.as_f64()? as f32]),
        Value::Array(a) => a.iter().map(|x| x.as_f64().map(|f| f as f32)).collect(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_hub_json() {
        let mut cfg = VitConfig::vit_tiny_fmnist();
        cfg.reg_tokens = 2;
        cfg.global_pool = GlobalPool::Avg;
        cfg.label_names = Some((0..10).map(|i| format!("c{i}")).collect());
        let back = VitConfig::from_hub_json(&cfg.to_hub_json()).unwrap();
        assert_eq!(cfg, back);
    }

    #[test]
    fn refuses_unknown_args_by_name() {
        let text = r#"{"architecture":"vit_tiny_patch16_224",
            "model_args":{"qk_norm":true,"init_values":1e-5,"depth":2}}"#;
        let err = VitConfig::from_hub_json(text).unwrap_err().to_string();
        assert!(
            err.contains("qk_norm") && err.contains("init_values"),
            "{err}"
        );
        let named = err.split("(supported").next().unwrap();
        assert!(!named.contains("depth"), "{err}");
    }

    #[test]
    fn refuses_bad_combinations() {
        let text = r#"{"model_args":{"embed_dim":30,"num_heads":4}}"#;
        assert!(VitConfig::from_hub_json(text).is_err());
        let text = r#"{"model_args":{"class_token":false}}"#;
        assert!(VitConfig::from_hub_json(text).is_err());
        let text = r#"{"model_args":{"global_pool":"max"}}"#;
        assert!(VitConfig::from_hub_json(text).is_err());
    }

    #[test]
    fn fc_norm_default_follows_pool() {
        let mut cfg = VitConfig::vit_tiny_fmnist();
        assert!(!cfg.use_fc_norm());
        cfg.global_pool = GlobalPool::Avg;
        assert!(cfg.use_fc_norm());
        cfg.fc_norm = Some(false);
        assert!(!cfg.use_fc_norm());
    }
}

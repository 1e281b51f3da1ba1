//! Are the defenses' LoRAs still distinct? For a HyperAT run: per (block, target) the
//! pairwise cosine between the methods' weight deltas `ΔW_m = s·A_m B_m` and each
//! delta's norm relative to the frozen `W0`, plus the pairwise cosines of the method
//! embeddings `z_m` and of the conditioning vectors `e`. Method collapse (one LoRA under
//! three names, which turns every merge into a rescaling) shows as cosines near 1.

use std::collections::BTreeMap;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::Tuned;
use crate::merge::{MethodLora, dense};
use crate::vit::{Target, Vit};
use crate::wire::{DefenseSimilarity, PairCosine};

/// Mean, minimum and maximum of a set of cosines.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Mean.
    pub mean: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    /// Of the finite values; `None` when there are none.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        Some(Self {
            mean: v.iter().sum::<f64>() / v.len() as f64,
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        })
    }
}

/// One adapted weight: how alike the methods' deltas are and how large.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeltaEntry {
    /// Block index.
    pub block: usize,
    /// `qkv`, `proj`, `fc1` or `fc2`.
    pub target: String,
    /// Cosine of every method pair, in [`DeltaDiagnostics::pairs`] order; `None` where a
    /// delta is zero (before any update).
    pub cosine: Vec<Option<f64>>,
    /// `‖ΔW_m‖ / ‖W0‖` per method.
    pub rel_norm: Vec<f64>,
}

/// The whole picture at one step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeltaDiagnostics {
    /// Method names, in slot order.
    pub methods: Vec<String>,
    /// The method pairs `(i, j)`, `i < j`, as `"a/b"`.
    pub pairs: Vec<String>,
    /// Per (block, target), in block then target order.
    pub entries: Vec<DeltaEntry>,
    /// Spread of every entry's pairwise cosines; `None` while every delta is zero.
    pub delta_cosine: Option<Spread>,
    /// Pairwise cosines of the method embeddings `z_m` (HyperAT).
    pub embed_cosine: Vec<f64>,
    /// Mean of `embed_cosine`.
    pub embed_cosine_mean: Option<f64>,
    /// Mean over (block, target) of the pairwise cosines of the conditioning vectors.
    pub cond_cosine_mean: Option<f64>,
}

/// Cosine of two equally long vectors; `None` when either is zero.
pub fn cosine(a: &[f32], b: &[f32]) -> Option<f64> {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (*x as f64, *y as f64);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    (aa > 0.0 && bb > 0.0).then(|| ab / (aa.sqrt() * bb.sqrt()))
}

fn norm(a: &[f32]) -> f64 {
    a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()
}

fn pairs(n: usize) -> Vec<(usize, usize)> {
    (0..n)
        .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
        .collect()
}

/// The delta similarity of host-side LoRAs against the frozen weights' norms
/// (`w0_norms` by (block, target); a missing norm reads as 1).
pub fn delta_diagnostics(
    loras: &[MethodLora],
    w0_norms: &BTreeMap<(usize, Target), f64>,
) -> DeltaDiagnostics {
    let methods: Vec<String> = loras.iter().map(|m| m.name.clone()).collect();
    let pair_idx = pairs(loras.len());
    let mut entries = vec![];
    if let Some(first) = loras.first() {
        for key in first.factors.keys() {
            let deltas: Vec<Vec<f32>> = loras
                .iter()
                .map(|m| {
                    let (a, b) = &m.factors[key];
                    dense(a, b, m.scaling).data
                })
                .collect();
            let w0 = w0_norms.get(key).copied().unwrap_or(1.0);
            entries.push(DeltaEntry {
                block: key.0,
                target: key.1.name().to_string(),
                cosine: pair_idx
                    .iter()
                    .map(|&(i, j)| cosine(&deltas[i], &deltas[j]))
                    .collect(),
                rel_norm: deltas.iter().map(|d| norm(d) / w0).collect(),
            });
        }
    }
    let delta_cosine = Spread::of(
        entries
            .iter()
            .flat_map(|e| e.cosine.iter().flatten().copied()),
    );
    DeltaDiagnostics {
        pairs: pair_idx
            .iter()
            .map(|&(i, j)| format!("{}/{}", methods[i], methods[j]))
            .collect(),
        methods,
        entries,
        delta_cosine,
        embed_cosine: vec![],
        embed_cosine_mean: None,
        cond_cosine_mean: None,
    }
}

/// Frobenius norms of the frozen weights every LoRA target adapts.
pub fn weight_norms<B: Backend>(vit: &Vit<B>) -> BTreeMap<(usize, Target), f64> {
    let mut out = BTreeMap::new();
    for (l, block) in vit.blocks.iter().enumerate() {
        for t in Target::ALL {
            let w = block.linear(t).weight.val();
            let sq = w.powi_scalar(2).sum().into_scalar().elem::<f64>();
            out.insert((l, t), sq.sqrt());
        }
    }
    out
}

/// A HyperAT model's diagnostics (`None` for the baselines: one LoRA, nothing to compare).
pub fn run_diagnostics<B: Backend>(
    model: &Tuned<B>,
    methods: &[String],
) -> Option<DeltaDiagnostics> {
    model.hyper.as_ref()?;
    // Generated from a frozen copy: no autodiff graph is recorded (none would be freed).
    let model = &model.clone().no_grad();
    let hyper = model.hyper.as_ref()?;
    let mut d = delta_diagnostics(&model.method_loras(methods), &weight_norms(&model.vit));
    let rows = |t: Tensor<B, 2>| -> Vec<Vec<f32>> {
        let [n, w] = t.dims();
        let flat = t.into_data().convert::<f32>().to_vec::<f32>().expect("f32");
        (0..n).map(|i| flat[i * w..(i + 1) * w].to_vec()).collect()
    };
    let z = rows(hyper.method_embed.val());
    let idx = pairs(z.len());
    d.embed_cosine = idx
        .iter()
        .map(|&(i, j)| cosine(&z[i], &z[j]).unwrap_or(f64::NAN))
        .collect();
    d.embed_cosine_mean = Spread::of(d.embed_cosine.iter().copied()).map(|s| s.mean);
    let conds: Vec<Vec<Vec<f32>>> = (0..z.len()).map(|m| rows(hyper.conditioning(m))).collect();
    let per_row = conds.first().map_or(0, Vec::len);
    d.cond_cosine_mean = Spread::of((0..per_row).flat_map(|r| {
        idx.iter()
            .filter_map(|&(i, j)| cosine(&conds[i][r], &conds[j][r]))
            .collect::<Vec<_>>()
    }))
    .map(|s| s.mean);
    Some(d)
}

impl DeltaDiagnostics {
    /// Each method pair's cosine averaged over the adapted weights, in [`Self::pairs`]
    /// order (`None` for a pair without a nonzero delta yet).
    pub fn pair_means(&self) -> Vec<Option<f64>> {
        (0..self.pairs.len())
            .map(|k| {
                Spread::of(
                    self.entries
                        .iter()
                        .filter_map(|e| e.cosine.get(k).copied().flatten()),
                )
                .map(|s| s.mean)
            })
            .collect()
    }

    /// What a model page shows of it (`None` before any delta moved).
    pub fn similarity(&self, step: usize) -> Option<DefenseSimilarity> {
        let pairs = pairs(self.methods.len())
            .into_iter()
            .zip(self.pair_means())
            .filter_map(|((i, j), cosine)| {
                Some(PairCosine {
                    a: self.methods[i].clone(),
                    b: self.methods[j].clone(),
                    cosine: cosine?,
                })
            })
            .collect();
        Some(DefenseSimilarity {
            step,
            pairs,
            mean: self.delta_cosine?.mean,
        })
    }

    /// The similarity in the last diagnostics record of `records` (a run's metrics).
    pub fn last_similarity(records: &[serde_json::Value]) -> Option<DefenseSimilarity> {
        let r = records.iter().rev().find(|r| r["kind"] == "diagnostics")?;
        let step = r["step"].as_u64()? as usize;
        serde_json::from_value::<Self>(r.clone())
            .ok()?
            .similarity(step)
    }

    /// The metrics record (`kind: diagnostics`) for `metrics.jsonl` and job events.
    pub fn record(&self, step: usize) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("json");
        v["kind"] = "diagnostics".into();
        v["step"] = step.into();
        v["delta_cosine_mean"] = self.delta_cosine.map(|s| s.mean).into();
        v
    }

    /// A markdown table: one row per (block, target), the pairwise cosines and each
    /// method's relative delta norm, then the embedding cosines.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let head: Vec<String> = self
            .pairs
            .iter()
            .map(|p| format!("cos {p}"))
            .chain(self.methods.iter().map(|m| format!("‖ΔW‖/‖W0‖ {m}")))
            .collect();
        s += &format!("| block | target | {} |\n", head.join(" | "));
        s += &format!("|---|---|{}\n", "---|".repeat(head.len()));
        let f = |v: Option<f64>| v.map_or("—".to_string(), |x| format!("{x:.3}"));
        for e in &self.entries {
            let cells: Vec<String> = e
                .cosine
                .iter()
                .map(|c| f(*c))
                .chain(e.rel_norm.iter().map(|n| format!("{n:.3}")))
                .collect();
            s += &format!("| {} | {} | {} |\n", e.block, e.target, cells.join(" | "));
        }
        if let Some(sp) = self.delta_cosine {
            s += &format!(
                "\nDelta cosine between methods: mean {:.3}, min {:.3}, max {:.3}.",
                sp.mean, sp.min, sp.max
            );
        }
        if !self.embed_cosine.is_empty() {
            let list: Vec<String> = self
                .pairs
                .iter()
                .zip(&self.embed_cosine)
                .map(|(p, c)| format!("{p} {c:.3}"))
                .collect();
            s += &format!("\nMethod embedding cosines: {}.", list.join(", "));
        }
        if let Some(c) = self.cond_cosine_mean {
            s += &format!("\nConditioning-vector cosine, mean over blocks and targets: {c:.3}.");
        }
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host_tensor::HostTensor;

    fn lora(name: &str, a: Vec<f32>, b: Vec<f32>) -> MethodLora {
        let mut factors = BTreeMap::new();
        factors.insert(
            (0, Target::Proj),
            (
                HostTensor::new(vec![2, 1], a),
                HostTensor::new(vec![1, 2], b),
            ),
        );
        MethodLora {
            name: name.into(),
            factors,
            scaling: 2.0,
        }
    }

    #[test]
    fn known_deltas_give_their_known_cosines_and_norms() {
        // ΔW = 2·a bᵀ: [[2,0],[0,0]], [[2,2],[0,0]] and [[0,0],[0,-2]].
        let m = [
            lora("p", vec![1.0, 0.0], vec![1.0, 0.0]),
            lora("q", vec![1.0, 0.0], vec![1.0, 1.0]),
            lora("r", vec![0.0, 1.0], vec![0.0, -1.0]),
        ];
        let norms = BTreeMap::from([((0, Target::Proj), 4.0)]);
        let d = delta_diagnostics(&m, &norms);
        assert_eq!(d.pairs, ["p/q", "p/r", "q/r"]);
        let e = &d.entries[0];
        assert_eq!((e.block, e.target.as_str()), (0, "proj"));
        let c: Vec<f64> = e.cosine.iter().map(|c| c.unwrap()).collect();
        assert!((c[0] - 1.0 / 2f64.sqrt()).abs() < 1e-12, "{c:?}");
        assert!(c[1].abs() < 1e-12 && c[2].abs() < 1e-12, "{c:?}");
        assert!((e.rel_norm[0] - 0.5).abs() < 1e-12);
        assert!((e.rel_norm[1] - 8f64.sqrt() / 4.0).abs() < 1e-12);
        let sp = d.delta_cosine.unwrap();
        assert!((sp.mean - 1.0 / (3.0 * 2f64.sqrt())).abs() < 1e-12);
        assert!((sp.max - 1.0 / 2f64.sqrt()).abs() < 1e-12 && sp.min.abs() < 1e-12);
        // Opposite deltas: cosine -1; a zero delta has none.
        let opp = [
            lora("p", vec![1.0, 0.0], vec![1.0, 0.0]),
            lora("n", vec![1.0, 0.0], vec![-1.0, 0.0]),
            lora("z", vec![0.0, 0.0], vec![1.0, 0.0]),
        ];
        let d = delta_diagnostics(&opp, &norms);
        assert!((d.entries[0].cosine[0].unwrap() + 1.0).abs() < 1e-12);
        assert_eq!(d.entries[0].cosine[1], None);
        assert!(
            d.markdown().contains("| 0 | proj | -1.000 | — | — |"),
            "{}",
            d.markdown()
        );
    }

    #[test]
    fn a_page_gets_each_pairs_mean_over_the_weights_from_the_last_record() {
        // Block 0's proj as above (p/q 1/√2, p/r 0, q/r 0); block 1's proj the same delta
        // for all three (every pair 1).
        let with_second = |mut m: MethodLora| {
            let same = (
                HostTensor::new(vec![2, 1], vec![1.0, 1.0]),
                HostTensor::new(vec![1, 2], vec![1.0, 0.0]),
            );
            m.factors.insert((1, Target::Proj), same);
            m
        };
        let m = [
            with_second(lora("p", vec![1.0, 0.0], vec![1.0, 0.0])),
            with_second(lora("q", vec![1.0, 0.0], vec![1.0, 1.0])),
            with_second(lora("r", vec![0.0, 1.0], vec![0.0, -1.0])),
        ];
        let d = delta_diagnostics(&m, &BTreeMap::new());
        let means: Vec<f64> = d.pair_means().into_iter().map(Option::unwrap).collect();
        let expect = [(1.0 / 2f64.sqrt() + 1.0) / 2.0, 0.5, 0.5];
        assert!(
            means.iter().zip(expect).all(|(a, b)| (a - b).abs() < 1e-12),
            "{means:?}"
        );
        // Through metrics.jsonl: the last diagnostics record wins, other kinds are skipped.
        let records = [
            delta_diagnostics(&m[..2], &BTreeMap::new()).record(10),
            d.record(20),
            serde_json::json!({"kind": "holdout", "step": 30}),
        ];
        let s = DeltaDiagnostics::last_similarity(&records).unwrap();
        assert_eq!(s.step, 20);
        let names: Vec<(&str, &str)> = s
            .pairs
            .iter()
            .map(|p| (p.a.as_str(), p.b.as_str()))
            .collect();
        assert_eq!(names, [("p", "q"), ("p", "r"), ("q", "r")]);
        assert!((s.pairs[0].cosine - expect[0]).abs() < 1e-12);
        assert!((s.mean - expect.iter().sum::<f64>() / 3.0).abs() < 1e-12);
        assert_eq!(s.reading(), crate::wire::Distinctness::Distinct);
        // Methods sharing one delta read as one LoRA; no record, no similarity.
        let one = [
            lora("p", vec![1.0, 0.0], vec![1.0, 0.0]),
            lora("q", vec![2.0, 0.0], vec![1.0, 0.0]),
        ];
        let s = delta_diagnostics(&one, &BTreeMap::new())
            .similarity(1)
            .unwrap();
        assert_eq!(s.reading(), crate::wire::Distinctness::OneLora);
        assert_eq!(DeltaDiagnostics::last_similarity(&records[2..]), None);
    }
}

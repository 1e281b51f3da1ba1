//! Weight-space interpolation between two models of one architecture, WiSE-FT's
//! ensembling (Wortsman et al., CVPR 2022): `θ(t) = θ_from + t·(θ_to − θ_from)`.
//!
//! From a clean backbone (`t = 0`) to its robust fine-tune (`t = 1`) the path trades
//! robustness for clean accuracy without any training, so the operating point is a
//! choice made on the hold-out split, after training. Works on timm checkpoints in
//! memory (no backend), so a folded HyperAT+ merge and any baseline export qualify.

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::host_tensor::{HostTensor, TensorMap};

/// `from + t·(to − from)` tensor by tensor; `t` in `[0, 1]`. The result keeps `to`'s
/// config. Refuses models of different architectures (configs differing in anything
/// but the class names) or different tensor names or shapes.
pub fn interpolate(from: &Checkpoint, to: &Checkpoint, t: f32) -> Result<Checkpoint> {
    if !(0.0..=1.0).contains(&t) {
        return Err(Error::Invalid(format!(
            "the interpolation weight must lie in [0, 1], got {t}"
        )));
    }
    let (mut a, mut b) = (from.config.clone(), to.config.clone());
    (a.label_names, b.label_names) = (None, None);
    if a != b {
        return Err(Error::Invalid(
            "the two models differ in architecture or preprocessing (config.json)".into(),
        ));
    }
    if from.tensors.len() != to.tensors.len() {
        return Err(Error::Invalid(format!(
            "the two models hold {} and {} tensors",
            from.tensors.len(),
            to.tensors.len()
        )));
    }
    let mut tensors = TensorMap::new();
    for (name, y) in &to.tensors {
        let x = from
            .tensors
            .get(name)
            .ok_or_else(|| Error::Invalid(format!("`{name}` is missing from the first model")))?;
        if x.shape != y.shape {
            return Err(Error::Invalid(format!(
                "`{name}` has shape {:?} in the first model and {:?} in the second",
                x.shape, y.shape
            )));
        }
        // `(1 − t)·x + t·y`: exactly `from` at 0 and `to` at 1.
        let data = x.data.iter().zip(&y.data);
        let data = data.map(|(x, y)| (1.0 - t) * x + t * y).collect();
        tensors.insert(name.clone(), HostTensor::new(y.shape.clone(), data));
    }
    Ok(Checkpoint {
        config: to.config.clone(),
        tensors,
    })
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::prelude::Backend;

    use super::*;
    use crate::config::VitConfig;
    use crate::vit::Vit;

    /// A randomly initialised tiny ViT (the seed is global: parallel tests may mix
    /// seeds, which only changes which random models are compared).
    fn model(seed: u64) -> Checkpoint {
        let cfg = VitConfig::vit_tiny_fmnist();
        Flex::seed(&Default::default(), seed);
        let vit = Vit::<Flex>::init(&cfg, &Default::default());
        Checkpoint::from_vit(&cfg, &vit)
    }

    #[test]
    fn ends_are_the_models_and_the_middle_is_their_mean() {
        let (a, b) = (model(1), model(2));
        assert!(a.tensors != b.tensors);
        assert!(interpolate(&a, &b, 0.0).unwrap().tensors == a.tensors);
        assert!(interpolate(&a, &b, 1.0).unwrap().tensors == b.tensors);
        let mid = interpolate(&a, &b, 0.25).unwrap();
        for (name, m) in &mid.tensors {
            let (x, y) = (&a.tensors[name], &b.tensors[name]);
            for ((m, x), y) in m.data.iter().zip(&x.data).zip(&y.data) {
                assert!((m - (0.75 * x + 0.25 * y)).abs() <= 1e-6, "{name}");
            }
        }
    }

    #[test]
    fn refuses_other_architectures_and_weights_outside_the_segment() {
        let a = model(1);
        assert!(interpolate(&a, &a, 1.5).is_err());
        assert!(interpolate(&a, &a, f32::NAN).is_err());
        let mut deeper = a.clone();
        deeper.config.depth += 1;
        assert!(interpolate(&a, &deeper, 0.5).is_err());
        let mut missing = a.clone();
        missing.tensors.remove("head.bias");
        assert!(interpolate(&a, &missing, 0.5).is_err());
        assert!(interpolate(&missing, &a, 0.5).is_err());
        let mut renamed = a.clone();
        let bias = renamed.tensors.remove("head.bias").unwrap();
        renamed.tensors.insert("head.bias2".into(), bias);
        assert!(interpolate(&a, &renamed, 0.5).is_err());
    }
}

//! The loader reproduces timm's logits for every reference checkpoint: the copies in
//! `tests/fixtures/timm/` and, where present, `../shared/fixtures/timm/`.

use std::path::{Path, PathBuf};

use hyperat::backend::Cpu;
use hyperat::checkpoint::{Adapt, Checkpoint, load_vit};
use hyperat::host_tensor::f32_from_le;
use hyperat::prelude::*;

fn fixture_dirs() -> Vec<PathBuf> {
    // The repository's root, relative to the package root, where cargo runs tests:
    // `env!("CARGO_MANIFEST_DIR")` would name the clone that compiled the test, which a
    // shared target dir reuses.
    let root = Path::new("..");
    let mut dirs = vec![];
    for base in [
        root.join("tests/fixtures/timm"),
        root.join("../shared/fixtures/timm"),
    ] {
        if let Ok(rd) = std::fs::read_dir(&base) {
            let mut found: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join("model.safetensors").is_file())
                .collect();
            found.sort();
            dirs.extend(found);
        }
    }
    dirs
}

fn meta(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap()
}

#[test]
fn reproduces_timm_logits_for_every_fixture() {
    let dirs = fixture_dirs();
    assert!(
        dirs.len() >= 4,
        "expected the four committed fixtures, found {dirs:?}"
    );
    let dev = Default::default();
    for dir in dirs {
        let m = meta(&dir);
        let shape: Vec<usize> = serde_json::from_value(m["inputs_shape"].clone()).unwrap();
        let (cfg, vit) = load_vit::<Cpu>(&dir, &Adapt::default(), &dev).unwrap();
        assert_eq!(cfg.input_shape().to_vec(), shape[1..].to_vec());
        let x = f32_from_le(&std::fs::read(dir.join("inputs.f32")).unwrap()).unwrap();
        let want = f32_from_le(&std::fs::read(dir.join("logits.f32")).unwrap()).unwrap();
        let x = Tensor::<Cpu, 4>::from_data(
            TensorData::new(x, [shape[0], shape[1], shape[2], shape[3]]),
            &dev,
        );
        let got = vit.forward(x).into_data().to_vec::<f32>().unwrap();
        assert_eq!(got.len(), want.len());
        let max_ref = want.iter().fold(0f32, |a, v| a.max(v.abs()));
        let max_err = got
            .iter()
            .zip(&want)
            .fold(0f32, |a, (g, w)| a.max((g - w).abs()));
        eprintln!(
            "{}: max |ours - timm| = {max_err:.3e} (max |ref| {max_ref:.4})",
            dir.display()
        );
        assert!(
            max_err <= 1e-5 * max_ref,
            "{}: {max_err} > 1e-5 * {max_ref}",
            dir.display()
        );
    }
}

#[test]
fn load_save_load_gives_identical_tensors() {
    let dev = Default::default();
    for dir in fixture_dirs() {
        let original = Checkpoint::load(&dir).unwrap();
        let vit = original.build::<Cpu>(&dev).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        hyperat::checkpoint::save_vit(tmp.path(), &original.config, &vit).unwrap();
        let again = Checkpoint::load(tmp.path()).unwrap();
        assert_eq!(original.tensors, again.tensors, "{}", dir.display());
        assert_eq!(original.config.to_hub_json(), again.config.to_hub_json());
    }
}

#[test]
fn names_missing_unexpected_and_misshaped_tensors() {
    let dir = &fixture_dirs()[0];
    let mut ck = Checkpoint::load(dir).unwrap();
    ck.tensors.remove("blocks.0.mlp.fc1.bias");
    let w = ck.tensors.remove("head.weight").unwrap();
    ck.tensors.insert(
        "head.weight".into(),
        hyperat::host_tensor::HostTensor::new(
            vec![w.shape[0] + 1, w.shape[1]],
            vec![0.0; (w.shape[0] + 1) * w.shape[1]],
        ),
    );
    ck.tensors.insert(
        "blocks.9.extra".into(),
        hyperat::host_tensor::HostTensor::new(vec![1], vec![0.0]),
    );
    let err = ck
        .build::<Cpu>(&Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing tensors: blocks.0.mlp.fc1.bias"),
        "{err}"
    );
    assert!(err.contains("unexpected tensors: blocks.9.extra"), "{err}");
    assert!(err.contains("mis-shaped tensors: head.weight"), "{err}");
}

#[test]
fn adapts_grid_and_head_for_another_task() {
    // The 224/16 fixture moved to 32 px with patch 4 and 7 classes (ImageNet -> CIFAR).
    let dir = fixture_dirs()
        .into_iter()
        .find(|d| d.ends_with("vit_p16_224_c3"))
        .unwrap();
    let dev = Default::default();
    let a = Adapt {
        img_size: Some([32, 32]),
        patch_size: Some(4),
        num_classes: Some(7),
        ..Default::default()
    };
    let (cfg, vit) = load_vit::<Cpu>(&dir, &a, &dev).unwrap();
    assert_eq!(cfg.grid(), [8, 8]);
    assert_eq!(vit.pos_embed.dims(), [1, 65, 192]);
    let out = vit.forward(Tensor::zeros([2, 3, 32, 32], &dev));
    assert_eq!(out.dims(), [2, 7]);
    assert!(
        out.into_data()
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .all(|v| v.is_finite())
    );
}

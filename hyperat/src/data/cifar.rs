//! CIFAR-10 and CIFAR-100 in their binary formats.
//!
//! CIFAR-10: `data_batch_{1..5}.bin` and `test_batch.bin`, records of one label byte
//! and 3072 pixel bytes (R, G, B planes of 32x32); names in `batches.meta.txt`.
//! CIFAR-100: `train.bin` and `test.bin`, records of a coarse and a fine label byte
//! and 3072 pixel bytes; we use the fine label; names in `fine_label_names.txt`.

use std::path::Path;

use super::{Dataset, Split};
use crate::error::{Error, Result};

const PIXELS: usize = 3 * 32 * 32;

fn read_records(path: &Path, label_bytes: usize, classes: usize, ds: &mut Dataset) -> Result<()> {
    let raw = crate::io::read(path)?;
    let rec = label_bytes + PIXELS;
    if raw.is_empty() || raw.len() % rec != 0 {
        return Err(Error::Data(format!(
            "{}: {} bytes is not a whole number of {rec}-byte records",
            path.display(),
            raw.len()
        )));
    }
    for r in raw.chunks_exact(rec) {
        let label = r[label_bytes - 1] as usize;
        if label >= classes {
            return Err(Error::Data(format!(
                "{}: label {label} out of range",
                path.display()
            )));
        }
        ds.labels.push(label as u32);
        ds.pixels.extend_from_slice(&r[label_bytes..]);
    }
    Ok(())
}

fn names(path: &Path, n: usize, fallback: &str) -> Vec<String> {
    let read: Vec<String> = std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if read.len() == n {
        read
    } else {
        (0..n).map(|i| format!("{fallback}{i}")).collect()
    }
}

fn empty(name: &str, classes: Vec<String>) -> Dataset {
    Dataset {
        name: name.into(),
        shape: [3, 32, 32],
        pixels: vec![],
        labels: vec![],
        classes,
    }
}

/// Loads CIFAR-10 from the folder holding its `.bin` files.
pub fn load_cifar10(dir: &Path, split: Split) -> Result<Dataset> {
    let mut ds = empty("cifar10", names(&dir.join("batches.meta.txt"), 10, "class"));
    let files: Vec<String> = match split {
        Split::Train => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
        Split::Test => vec!["test_batch.bin".into()],
    };
    for f in files {
        read_records(&dir.join(f), 1, 10, &mut ds)?;
    }
    Ok(ds)
}

/// Loads CIFAR-100 (fine labels) from the folder holding `train.bin` / `test.bin`.
pub fn load_cifar100(dir: &Path, split: Split) -> Result<Dataset> {
    let mut ds = empty(
        "cifar100",
        names(&dir.join("fine_label_names.txt"), 100, "class"),
    );
    read_records(&dir.join(format!("{}.bin", split.name())), 2, 100, &mut ds)?;
    Ok(ds)
}

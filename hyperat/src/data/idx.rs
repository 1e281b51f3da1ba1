//! The idx-ubyte format of (Fashion-)MNIST, plain or gzipped.
//!
//! Header: two zero bytes, a type byte (0x08 = u8), the number of dimensions, then
//! each dimension as a big-endian u32; the data follows.

use std::io::Read;
use std::path::Path;

use super::{Dataset, FASHION_MNIST_CLASSES, Split};
use crate::error::{Error, Result};

/// Reads an idx file (gzip detected by its magic bytes): dimensions and u8 data.
pub fn read_idx(path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    let raw = crate::io::read(path)?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::Data(format!("{}: bad gzip data: {e}", path.display())))?;
        out
    } else {
        raw
    };
    parse_idx(&bytes).map_err(|m| Error::Data(format!("{}: {m}", path.display())))
}

fn parse_idx(b: &[u8]) -> std::result::Result<(Vec<usize>, Vec<u8>), String> {
    if b.len() < 4 || b[0] != 0 || b[1] != 0 {
        return Err("not an idx file (bad magic)".into());
    }
    if b[2] != 0x08 {
        return Err(format!("idx element type 0x{:02x} is not u8", b[2]));
    }
    let nd = b[3] as usize;
    let head = 4 + 4 * nd;
    if nd == 0 || b.len() < head {
        return Err("truncated idx header".into());
    }
    let dims: Vec<usize> = (0..nd)
        .map(|i| u32::from_be_bytes(b[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize)
        .collect();
    let n = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("idx dimensions overflow")?;
    if b.len() - head != n {
        return Err(format!(
            "idx data has {} bytes, dimensions {dims:?} need {n}",
            b.len() - head
        ));
    }
    Ok((dims, b[head..].to_vec()))
}

fn find_file(dir: &Path, stem: &str) -> Result<std::path::PathBuf> {
    for name in [format!("{stem}.gz"), stem.to_string()] {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(Error::Data(format!(
        "{}/{stem}[.gz] not found (install Debian's `dataset-fashion-mnist`, or set HYPERAT_DATA)",
        dir.display()
    )))
}

/// Loads Fashion-MNIST's train or test split from `dir`.
pub fn load_fashion_mnist(dir: &Path, split: Split) -> Result<Dataset> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let (idims, pixels) = read_idx(&find_file(dir, &format!("{prefix}-images-idx3-ubyte"))?)?;
    let (ldims, labels) = read_idx(&find_file(dir, &format!("{prefix}-labels-idx1-ubyte"))?)?;
    if idims.len() != 3 || ldims.len() != 1 || idims[0] != ldims[0] {
        return Err(Error::Data(format!(
            "Fashion-MNIST {prefix}: image dims {idims:?} do not fit label dims {ldims:?}"
        )));
    }
    if let Some(bad) = labels.iter().find(|&&l| l >= 10) {
        return Err(Error::Data(format!(
            "Fashion-MNIST {prefix}: label {bad} out of range"
        )));
    }
    Ok(Dataset {
        name: "fashion-mnist".into(),
        shape: [1, idims[1], idims[2]],
        pixels,
        labels: labels.into_iter().map(u32::from).collect(),
        classes: FASHION_MNIST_CLASSES
            .iter()
            .map(|s| s.to_string())
            .collect(),
    })
}

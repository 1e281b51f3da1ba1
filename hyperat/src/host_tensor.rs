//! Host-side tensors: named f32 arrays for checkpoint I/O, independent of any backend.

use std::collections::BTreeMap;

use burn::prelude::*;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::error::{Error, Result};

/// A dense f32 array in C order.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Values, `shape.iter().product()` of them.
    pub data: Vec<f32>,
}

impl HostTensor {
    /// Wraps values, checking the element count.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "shape {shape:?}"
        );
        Self { shape, data }
    }

    /// Zeros of the given shape.
    pub fn zeros(shape: Vec<usize>) -> Self {
        let n = shape.iter().product();
        Self {
            shape,
            data: vec![0.0; n],
        }
    }

    /// Reads a backend tensor back to the host.
    pub fn from_tensor<B: Backend, const D: usize>(t: Tensor<B, D>) -> Self {
        let shape = t.dims().to_vec();
        let data = t
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("f32 tensor data");
        Self { shape, data }
    }

    /// Uploads to a backend tensor of rank `D` (the shape must have rank `D`).
    pub fn to_tensor<B: Backend, const D: usize>(&self, device: &B::Device) -> Tensor<B, D> {
        assert_eq!(self.shape.len(), D, "rank of {:?}", self.shape);
        Tensor::from_data(
            TensorData::new(self.data.clone(), self.shape.clone()),
            device,
        )
    }

    /// Whether every value is finite.
    pub fn is_finite(&self) -> bool {
        self.data.iter().all(|v| v.is_finite())
    }
}

/// Tensors by name, sorted (safetensors writes names in order).
pub type TensorMap = BTreeMap<String, HostTensor>;

/// Parses a `.safetensors` buffer; every tensor must be float (f32, f64, f16 or bf16;
/// the others are converted to f32).
pub fn read_safetensors(bytes: &[u8]) -> Result<TensorMap> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::Checkpoint(format!("not a safetensors file: {e}")))?;
    let mut out = TensorMap::new();
    for (name, view) in st.tensors() {
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F64 => raw
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(Error::Checkpoint(format!(
                    "tensor `{name}` has dtype {other:?}; only float tensors are supported"
                )));
            }
        };
        out.insert(name, HostTensor::new(view.shape().to_vec(), data));
    }
    Ok(out)
}

/// Serialises tensors as f32 `.safetensors` (no metadata block, like timm).
pub fn write_safetensors(map: &TensorMap) -> Result<Vec<u8>> {
    write_safetensors_with(map, None)
}

/// The `__metadata__` string map of a `.safetensors` buffer.
pub fn read_safetensors_metadata(
    bytes: &[u8],
) -> Result<std::collections::HashMap<String, String>> {
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::Checkpoint(format!("not a safetensors file: {e}")))?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

/// Serialises tensors as f32 `.safetensors` with an optional metadata map.
pub fn write_safetensors_with(
    map: &TensorMap,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = map
        .iter()
        .map(|(k, t)| {
            let b = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (k.clone(), t.shape.clone(), b)
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(k, s, b)| {
            TensorView::new(Dtype::F32, s.clone(), b)
                .map(|v| (k.clone(), v))
                .map_err(|e| Error::Checkpoint(format!("tensor `{k}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, metadata)
        .map_err(|e| Error::Checkpoint(format!("serialising safetensors: {e}")))
}

/// Reads a raw little-endian f32 buffer.
pub fn f32_from_le(bytes: &[u8]) -> Result<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        return Err(Error::Invalid(format!(
            "{} bytes is not a whole number of f32 values",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Writes f32 values as raw little-endian bytes.
pub fn f32_to_le(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_round_trip() {
        let mut m = TensorMap::new();
        m.insert(
            "a.weight".into(),
            HostTensor::new(vec![2, 3], (0..6).map(|i| i as f32 * 0.5).collect()),
        );
        m.insert("b".into(), HostTensor::new(vec![1], vec![-1.25]));
        let back = read_safetensors(&write_safetensors(&m).unwrap()).unwrap();
        assert_eq!(m, back);
    }

    #[test]
    fn rejects_garbage() {
        assert!(read_safetensors(b"not a file").is_err());
        assert!(f32_from_le(&[0, 1, 2]).is_err());
    }
}

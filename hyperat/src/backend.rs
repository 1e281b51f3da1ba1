//! Backend choice at run time (`--device cpu|flex|ndarray|cuda|wgpu`).
//!
//! Model code is generic over `B: Backend`; a command names what it runs as a
//! [`BackendTask`], and [`dispatch`] instantiates it for the chosen backend (always
//! wrapped in `Autodiff`, since attacks need input gradients). `cpu` is burn's `flex`
//! backend (pure Rust, SIMD, rayon): on our workloads it beat `ndarray` (figures in
//! docs/performance.md, `hyperat bench`).

use std::fmt;
use std::str::FromStr;

use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use crate::error::{Error, Result};

/// The CPU backend used by default.
pub type Cpu = burn::backend::Flex;
/// The default CPU backend with autodiff.
pub type CpuAutodiff = Autodiff<Cpu>;

/// A backend the binary can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceKind {
    /// The default CPU backend (flex).
    #[default]
    Cpu,
    /// burn-flex explicitly.
    Flex,
    /// burn-ndarray (feature `ndarray`).
    Ndarray,
    /// NVIDIA GPU through burn-cuda (feature `cuda`).
    Cuda,
    /// Any GPU through burn-wgpu (feature `wgpu`).
    Wgpu,
}

impl DeviceKind {
    /// Names accepted by `--device`.
    pub const NAMES: &[&str] = &["cpu", "flex", "ndarray", "cuda", "wgpu"];

    /// The name as `--device` takes it.
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Flex => "flex",
            DeviceKind::Ndarray => "ndarray",
            DeviceKind::Cuda => "cuda",
            DeviceKind::Wgpu => "wgpu",
        }
    }

    /// Whether this binary was built with the backend.
    pub fn compiled(self) -> bool {
        match self {
            DeviceKind::Cpu | DeviceKind::Flex => true,
            DeviceKind::Ndarray => cfg!(feature = "ndarray"),
            DeviceKind::Cuda => cfg!(feature = "cuda"),
            DeviceKind::Wgpu => cfg!(feature = "wgpu"),
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DeviceKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let kind = match s {
            "cpu" => DeviceKind::Cpu,
            "flex" => DeviceKind::Flex,
            "ndarray" => DeviceKind::Ndarray,
            "cuda" => DeviceKind::Cuda,
            "wgpu" => DeviceKind::Wgpu,
            other => {
                return Err(Error::Invalid(format!(
                    "unknown device `{other}` (known: {})",
                    Self::NAMES.join(", ")
                )));
            }
        };
        if !kind.compiled() {
            return Err(Error::Invalid(format!(
                "device `{s}` is not available: this binary was built without the `{s}` \
                 feature (rebuild with `cargo build --release --features {s}`)"
            )));
        }
        Ok(kind)
    }
}

/// Work that runs on any autodiff backend.
pub trait BackendTask {
    /// What the work returns.
    type Output;
    /// Runs on backend `B` and `device`.
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output;
}

/// Runs `task` on the chosen backend's default device; a GPU backend that finds no
/// usable device is an error, not a crash.
pub fn dispatch<T: BackendTask>(kind: DeviceKind, task: T) -> Result<T::Output> {
    dispatch_devices(&DeviceList::single(kind), OneDevice(task))
}

/// A one-device task as a [`DevicesTask`].
struct OneDevice<T>(T);

impl<T: BackendTask> DevicesTask for OneDevice<T> {
    type Output = T::Output;
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> T::Output {
        let device = devices.into_iter().next().expect("one device");
        self.0.run::<B>(device)
    }
}

/// `--devices cpu:0,cpu:1` / `cuda:0,cuda:1`: several devices of one backend, one
/// data-parallel peer each (CPU peers share the cores, one thread each).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceList {
    /// The backend.
    pub kind: DeviceKind,
    /// Device indices, in peer order; empty: the backend's default device alone.
    pub indices: Vec<usize>,
}

impl DeviceList {
    /// The default device of `kind` (what `--device` picks).
    pub fn single(kind: DeviceKind) -> Self {
        Self {
            kind,
            indices: vec![],
        }
    }

    /// How many devices.
    pub fn len(&self) -> usize {
        self.indices.len().max(1)
    }

    /// Always false: a list holds at least the default device.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The devices as `--devices` names them (`cuda:0`; the default device: `cuda`).
    pub fn names(&self) -> Vec<String> {
        let name = self.kind.name();
        if self.indices.is_empty() {
            return vec![name.to_string()];
        }
        self.indices.iter().map(|i| format!("{name}:{i}")).collect()
    }
}

impl FromStr for DeviceList {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let mut kind = None;
        let mut indices = Vec::new();
        for item in s.split(',').map(str::trim) {
            let (name, index) = item.split_once(':').unwrap_or((item, "0"));
            let k: DeviceKind = name.parse()?;
            if kind.is_some_and(|seen| seen != k) {
                return Err(Error::Invalid(format!(
                    "`{s}` mixes backends: every device of a data-parallel run uses one"
                )));
            }
            kind = Some(k);
            indices.push(index.parse().map_err(|_| {
                Error::Invalid(format!("`{item}`: expected KIND:INDEX, e.g. cuda:1"))
            })?);
        }
        Ok(Self {
            kind: kind.ok_or_else(|| Error::Invalid("no device given".into()))?,
            indices,
        })
    }
}

/// Work that runs on several devices of any autodiff backend.
pub trait DevicesTask {
    /// What the work returns.
    type Output;
    /// Runs on backend `B` and `devices` (at least one).
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output;
}

/// Runs `task` on the listed devices of their backend.
pub fn dispatch_devices<T: DevicesTask>(list: &DeviceList, task: T) -> Result<T::Output> {
    let n = list.len();
    match list.kind {
        DeviceKind::Cpu | DeviceKind::Flex => {
            Ok(task.run::<CpuAutodiff>(vec![Default::default(); n]))
        }
        #[cfg(feature = "ndarray")]
        DeviceKind::Ndarray => {
            Ok(task.run::<Autodiff<burn::backend::NdArray>>(vec![Default::default(); n]))
        }
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda => {
            use burn::backend::cuda::CudaDevice;
            let devices = match list.indices.is_empty() {
                true => vec![CudaDevice::default()],
                false => list.indices.iter().map(|&i| CudaDevice::new(i)).collect(),
            };
            let devices = probed::<burn::backend::Cuda>(devices, "cuda")?;
            Ok(task.run::<Autodiff<burn::backend::Cuda>>(devices))
        }
        #[cfg(feature = "wgpu")]
        DeviceKind::Wgpu => {
            use burn::backend::wgpu::WgpuDevice;
            let devices = match list.indices.is_empty() {
                true => vec![WgpuDevice::default()],
                false => list
                    .indices
                    .iter()
                    .map(|&i| WgpuDevice::DiscreteGpu(i))
                    .collect(),
            };
            let devices = probed::<burn::backend::Wgpu>(devices, "wgpu")?;
            Ok(task.run::<Autodiff<burn::backend::Wgpu>>(devices))
        }
        #[allow(unreachable_patterns)]
        other => Err(Error::Invalid(format!(
            "device `{other}` is not compiled in"
        ))),
    }
}

/// `devices`, once each has run a tiny op.
#[allow(dead_code)]
fn probed<B: Backend>(devices: Vec<B::Device>, name: &str) -> Result<Vec<B::Device>> {
    for d in &devices {
        probe::<B>(d, name)?;
    }
    Ok(devices)
}

/// Runs one tiny op to find out whether the device works.
#[allow(dead_code)]
fn probe<B: Backend>(device: &B::Device, name: &str) -> Result<()> {
    let device = device.clone();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let t = Tensor::<B, 1>::ones([4], &device);
        t.sum().into_scalar().elem::<f32>()
    }));
    std::panic::set_hook(hook);
    match r {
        Ok(4.0) => Ok(()),
        Ok(v) => Err(Error::Invalid(format!(
            "device `{name}` computed 1+1+1+1 = {v}"
        ))),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(Error::Invalid(format!(
                "device `{name}` is compiled in but not usable here (no GPU or driver?): {msg}"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_lists_name_one_backend_and_its_indices() {
        let l: DeviceList = "cpu:0, cpu:1".parse().unwrap();
        assert_eq!(l.names(), ["cpu:0", "cpu:1"]);
        assert_eq!(DeviceList::single(DeviceKind::Cuda).names(), ["cuda"]);
        assert_eq!(DeviceList::single(DeviceKind::Cpu).len(), 1);
        assert_eq!((l.kind, l.indices), (DeviceKind::Cpu, vec![0, 1]));
        assert_eq!("flex".parse::<DeviceList>().unwrap().indices, vec![0]);
        assert!("cpu:0,flex:1".parse::<DeviceList>().is_err());
        assert!("cpu:x".parse::<DeviceList>().is_err());
        assert!("tpu:0".parse::<DeviceList>().is_err());
    }
}

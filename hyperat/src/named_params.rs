//! Named access to any module's float parameters (a "state dict"), keyed by the dotted
//! module path (`hyper.heads_a.0.weight`). Run checkpoints and the optimiser use it, so
//! their files name every tensor and survive a rebuild of the module.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::prelude::*;

use crate::error::{Error, Result};
use crate::host_tensor::{HostTensor, TensorMap};

/// Tracks the dotted path while a visitor or mapper walks a module.
#[derive(Debug, Default)]
pub(crate) struct Path(Vec<String>);

impl Path {
    pub(crate) fn enter(&mut self, name: &str) {
        self.0.push(name.to_string());
    }
    pub(crate) fn exit(&mut self) {
        self.0.pop();
    }
    pub(crate) fn joined(&self) -> String {
        self.0.join(".")
    }
}

struct Collect<F> {
    path: Path,
    keep: F,
    out: TensorMap,
}

impl<B: Backend, F: FnMut(&str, bool) -> bool> ModuleVisitor<B> for Collect<F> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let name = self.path.joined();
        if (self.keep)(&name, param.is_require_grad()) {
            self.out.insert(name, HostTensor::from_tensor(param.val()));
        }
    }
}

/// Every float parameter for which `keep(path, requires_grad)` holds, read to the host.
pub fn collect<B: Backend, M: Module<B>>(m: &M, keep: impl FnMut(&str, bool) -> bool) -> TensorMap {
    let mut c = Collect {
        path: Path::default(),
        keep,
        out: TensorMap::new(),
    };
    m.visit(&mut c);
    c.out
}

/// All float parameters.
pub fn named_tensors<B: Backend, M: Module<B>>(m: &M) -> TensorMap {
    collect(m, |_, _| true)
}

/// The parameters that train (require a gradient).
pub fn trainable_tensors<B: Backend, M: Module<B>>(m: &M) -> TensorMap {
    collect(m, |_, rg| rg)
}

/// A short digest of `tensors` (FNV-1a over names, shapes and the values' bits): equal
/// digests mean bit-equal tensors, so peers can show they hold the same model.
pub fn fingerprint(tensors: &TensorMap) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (name, t) in tensors {
        eat(name.as_bytes());
        t.shape.iter().for_each(|&d| eat(&(d as u64).to_le_bytes()));
        t.data.iter().for_each(|v| eat(&v.to_bits().to_le_bytes()));
    }
    format!("{h:016x}")
}

/// Draws every lazily initialised parameter of `m` now. burn draws a fresh module's
/// random weights at first use, from its process-wide generator, and a clone taken
/// before then draws its own: a seed set before `init` is only kept if nothing else draws
/// first, and copies sent to data-parallel peers would each get other weights.
pub fn materialize<B: Backend, M: Module<B>>(m: &M) {
    struct Touch;
    impl<B: Backend> ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let _ = param.val();
        }
    }
    m.visit(&mut Touch);
}

/// Number of trainable scalars.
pub fn count_trainable<B: Backend, M: Module<B>>(m: &M) -> usize {
    struct Count(usize);
    impl<B: Backend> ModuleVisitor<B> for Count {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if param.is_require_grad() {
                self.0 += param.shape().num_elements();
            }
        }
    }
    let mut c = Count(0);
    m.visit(&mut c);
    c.0
}

struct Load<'a, B: Backend> {
    path: Path,
    map: &'a TensorMap,
    device: B::Device,
    used: Vec<String>,
    misshaped: Vec<String>,
}

impl<B: Backend> ModuleMapper<B> for Load<'_, B> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let name = self.path.joined();
        let Some(t) = self.map.get(&name) else {
            return param;
        };
        if t.shape != param.shape().dims::<D>() {
            self.misshaped.push(format!(
                "{name}: expected {:?}, found {:?}",
                param.shape().dims::<D>(),
                t.shape
            ));
            return param;
        }
        self.used.push(name);
        let rg = param.is_require_grad();
        let (id, _, mapper) = param.consume();
        Param::from_mapped_value(
            id,
            t.to_tensor::<B, D>(&self.device).set_require_grad(rg),
            mapper,
        )
    }
}

/// Replaces parameters by name from `map` (others keep their values); every entry of
/// `map` must name a parameter of the right shape.
pub fn load_named<B: Backend, M: Module<B>>(
    m: M,
    map: &TensorMap,
    device: &B::Device,
) -> Result<M> {
    let mut l = Load::<B> {
        path: Path::default(),
        map,
        device: device.clone(),
        used: vec![],
        misshaped: vec![],
    };
    let m = m.map(&mut l);
    let unused: Vec<&String> = map.keys().filter(|k| !l.used.contains(k)).collect();
    if !l.misshaped.is_empty() || !unused.is_empty() {
        let unused: Vec<&str> = unused.iter().map(|s| s.as_str()).collect();
        return Err(Error::Checkpoint(format!(
            "mis-shaped tensors: [{}]; tensors naming no parameter: [{}]",
            l.misshaped.join("; "),
            unused.join(", ")
        )));
    }
    Ok(m)
}

/// Ids of the trainable parameters with their paths.
pub fn trainable_ids<B: Backend, M: Module<B>>(m: &M) -> Vec<(String, ParamId)> {
    struct Ids(Path, Vec<(String, ParamId)>);
    impl<B: Backend> ModuleVisitor<B> for Ids {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.0.enter(name);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.0.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if param.is_require_grad() {
                self.1.push((self.0.joined(), param.id));
            }
        }
    }
    let mut v = Ids(Path::default(), vec![]);
    m.visit(&mut v);
    v.1
}

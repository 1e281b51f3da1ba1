//! Data-parallel training on burn-collective (tuning and pretraining): one thread per
//! device (a *peer*), each with the same parameters, takes its rows of every step's
//! batch; the peers average their gradients with burn-collective's all-reduce before the
//! optimiser step, so every peer takes the same update and a run does not depend on how
//! many peers made it (up to float summation order).
//!
//! What keeps a peer's share equal to the single-device step: the batch, the sampled
//! defense, the augmentation and the attack's random start are functions of
//! `(seed, step)` (a peer's [`Rng::for_rows`](crate::rng::Rng::for_rows) draws the whole
//! batch's noise and keeps its rows); every loss is a mean over equal shares. Only peer 0
//! writes the run folder (metrics, evaluations, checkpoints).

use std::ops::Range;

use burn::collective::{
    CollectiveConfig, PeerId, ReduceOperation, all_reduce, finish_collective, register,
    reset_collective,
};
use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn::tensor::backend::AutodiffBackend;

use crate::error::{Error, Result};
use crate::progress::{Progress, Silent};
use crate::rng::RowShard;

/// One peer of a data-parallel run: `rank` of `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// 0-based; peer 0 writes the run folder.
    pub rank: usize,
    /// Peers in the run.
    pub count: usize,
}

impl Peer {
    /// The only peer of a single-device run.
    pub const ALONE: Peer = Peer { rank: 0, count: 1 };

    /// Whether this peer writes the run folder.
    pub fn leads(self) -> bool {
        self.rank == 0
    }

    /// Whether other peers take part.
    pub fn shared(self) -> bool {
        self.count > 1
    }

    /// This peer's rows of a batch of `batch` images (equal shares, so the mean of the
    /// peers' mean gradients is the whole batch's).
    pub fn rows(self, batch: usize) -> Result<Range<usize>> {
        if !batch.is_multiple_of(self.count) {
            return Err(Error::Invalid(format!(
                "a batch of {batch} images does not split evenly over {} devices",
                self.count
            )));
        }
        let share = batch / self.count;
        Ok(self.rank * share..(self.rank + 1) * share)
    }

    /// The row window its random draws keep.
    pub fn shard(self, batch: usize) -> Result<RowShard> {
        let rows = self.rows(batch)?;
        Ok(RowShard {
            start: rows.start,
            len: rows.len(),
            of: batch,
        })
    }

    fn id(self) -> PeerId {
        PeerId::from(self.rank)
    }

    /// Joins the collective on `device` (`config`: the peers of this process, and the
    /// other nodes if any).
    pub fn register<B: Backend>(self, device: &B::Device, config: CollectiveConfig) -> Result<()> {
        register::<B>(self.id(), device.clone(), config).map_err(collective)
    }

    /// Leaves the collective at the end of a run (a warning if it cannot: the run is
    /// done either way).
    pub fn leave<B: Backend>(self) {
        if let Err(e) = finish_collective::<B>(self.id()) {
            eprintln!("peer {}: leaving the collective: {e:?}", self.rank);
        }
    }

    /// Ends the collective after a peer failed, so the others' pending all-reduces
    /// return an error instead of waiting for it forever.
    pub fn abort<B: Backend>() {
        reset_collective::<B>();
    }

    /// The mean over the peers of a few numbers (losses, accuracies, flags).
    pub fn mean<B: Backend>(self, values: &[f64], device: &B::Device) -> Result<Vec<f64>> {
        if !self.shared() {
            return Ok(values.to_vec());
        }
        let t = Tensor::<B, 1>::from_data(
            TensorData::new(values.iter().map(|&v| v as f32).collect(), [values.len()]),
            device,
        );
        let t = self.all_reduce_mean(t)?;
        let v = t
            .into_data()
            .to_vec::<f32>()
            .map_err(|e| Error::Invalid(format!("reading an all-reduced tensor failed: {e:?}")))?;
        Ok(v.into_iter().map(f64::from).collect())
    }

    /// Whether `flag` holds on any peer (a cancel seen by peer 0 stops every peer before
    /// the same step).
    pub fn any<B: Backend>(self, flag: bool, device: &B::Device) -> Result<bool> {
        Ok(self.mean::<B>(&[f64::from(u8::from(flag))], device)?[0] > 0.0)
    }

    fn all_reduce_mean<B: Backend, const D: usize>(self, t: Tensor<B, D>) -> Result<Tensor<B, D>> {
        let shape = t.shape();
        let reduced = all_reduce::<B>(
            self.id(),
            t.into_primitive().tensor(),
            ReduceOperation::Mean,
        )
        .map_err(collective)?;
        Ok(Tensor::<B, D>::from_primitive(TensorPrimitive::Float(reduced)).reshape(shape))
    }

    /// Replaces every trainable tensor's gradient in `grads` by its mean over the
    /// peers (the same tensors in the same order on every peer: the module's). The
    /// gradients travel flattened into buckets of up to [`BUCKET`] values, one
    /// all-reduce each: every all-reduce costs a round of messages and, across nodes, a
    /// barrier, so one per tensor made latency the cost of a step. The mean of each
    /// value is the same either way.
    pub fn average_grads<B: AutodiffBackend, M: AutodiffModule<B>>(
        self,
        model: &M,
        grads: &mut B::Gradients,
    ) -> Result<()> {
        if !self.shared() {
            return Ok(());
        }
        let mut collect = CollectGrads::<B> {
            grads,
            flat: Vec::new(),
        };
        model.visit(&mut collect);
        let mut averaged = Vec::with_capacity(collect.flat.len());
        let mut bucket: Vec<Tensor<B::InnerBackend, 1>> = Vec::new();
        let mut filled = 0;
        let flat = collect.flat;
        let count = flat.len();
        for (i, g) in flat.into_iter().enumerate() {
            filled += g.dims()[0];
            bucket.push(g);
            if filled >= BUCKET || i + 1 == count {
                let sizes: Vec<usize> = bucket.iter().map(|t| t.dims()[0]).collect();
                let mean = self.all_reduce_mean(Tensor::cat(std::mem::take(&mut bucket), 0))?;
                averaged.extend(mean.split_with_sizes(sizes, 0));
                filled = 0;
            }
        }
        model.visit(&mut ReplaceGrads::<B> {
            grads,
            averaged: averaged.into_iter(),
        });
        Ok(())
    }
}

/// Checks, before anything starts, that a batch of `batch` images splits evenly over
/// `devices` data-parallel peers (each peer checks its own rows again as it starts).
pub fn check_split(batch: usize, devices: usize) -> Result<()> {
    let peer = Peer {
        rank: 0,
        count: devices.max(1),
    };
    peer.rows(batch).map(|_| ())
}

/// This process's peers of a data-parallel run: global ranks `first..` (one per local
/// device) of `count`, joined through `config`.
pub struct Peers {
    /// Global rank of this process's first device.
    pub first: usize,
    /// Peers in the run, over every process.
    pub count: usize,
    /// The collective they join.
    pub config: CollectiveConfig,
}

impl Peers {
    /// One process's `count` devices, no other nodes.
    pub fn local(count: usize) -> Self {
        Self {
            first: 0,
            count,
            config: CollectiveConfig::default().with_num_devices(count),
        }
    }

    /// Runs `work` once per device, each as its peer on its own thread (local peer 0 on
    /// this one, with `progress`; the others silent), and returns local peer 0's result.
    /// A peer that fails or panics resets the collective, so the others' pending
    /// all-reduces fail too instead of waiting forever.
    pub fn run<B: AutodiffBackend, T: Send>(
        &self,
        devices: &[B::Device],
        progress: &mut dyn Progress,
        work: impl Fn(Peer, &B::Device, &mut dyn Progress) -> Result<T> + Sync,
    ) -> Result<T> {
        let work = &work;
        let peer_run = |local: usize, progress: &mut dyn Progress| {
            let peer = Peer {
                rank: self.first + local,
                count: self.count,
            };
            let device = &devices[local];
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                peer.register::<B::InnerBackend>(device, self.config.clone())?;
                work(peer, device, progress)
            }))
            .unwrap_or_else(|_| {
                Err(Error::Invalid(format!(
                    "data-parallel peer {} panicked",
                    peer.rank
                )))
            });
            if r.is_err() {
                Peer::abort::<B::InnerBackend>();
            }
            r
        };
        let results: Vec<Result<T>> = std::thread::scope(|s| {
            let others: Vec<_> = (1..devices.len())
                .map(|local| s.spawn(move || peer_run(local, &mut Silent)))
                .collect();
            let mut all = vec![peer_run(0, progress)];
            all.extend(
                others
                    .into_iter()
                    .map(|h| h.join().expect("panics are caught")),
            );
            all
        });
        // A cancel stops every peer alike; otherwise the first peer's own error explains
        // best (the others then report the broken collective).
        let mut results = results.into_iter();
        let lead = results.next().expect("peer 0");
        match (lead, results.find(|r| r.is_err())) {
            (Ok(out), None) => Ok(out),
            (Err(e), _) | (Ok(_), Some(Err(e))) => Err(e),
            (Ok(_), Some(Ok(_))) => unreachable!("found an error"),
        }
    }
}

/// Runs `work` data-parallel over `devices` of this process ([`Peers::run`]), or alone
/// on the one device (the default device if none is given), then ends the collective so
/// the next run can form its own.
pub fn on_devices<B: AutodiffBackend, T: Send>(
    devices: &[B::Device],
    progress: &mut dyn Progress,
    work: impl Fn(Peer, &B::Device, &mut dyn Progress) -> Result<T> + Sync,
) -> Result<T> {
    if devices.len() <= 1 {
        let device = devices.first().cloned().unwrap_or_default();
        return work(Peer::ALONE, &device, progress);
    }
    let out = Peers::local(devices.len()).run::<B, T>(devices, progress, work);
    Peer::abort::<B::InnerBackend>();
    out
}

/// Values per all-reduce of gradients (64 MiB of f32), as PyTorch DDP's buckets.
pub const BUCKET: usize = 16 << 20;

/// Every trainable tensor's gradient, flattened, in the module's order.
struct CollectGrads<'a, B: AutodiffBackend> {
    grads: &'a B::Gradients,
    flat: Vec<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for CollectGrads<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !param.is_require_grad() {
            return;
        }
        if let Some(g) = param.val().grad(self.grads) {
            let n = g.shape().num_elements();
            self.flat.push(g.reshape([n]));
        }
    }
}

/// Puts the averaged gradients back, in the order [`CollectGrads`] took them.
struct ReplaceGrads<'a, B: AutodiffBackend> {
    grads: &'a mut B::Gradients,
    averaged: std::vec::IntoIter<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for ReplaceGrads<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !param.is_require_grad() {
            return;
        }
        let value = param.val();
        if let Some(g) = value.grad(self.grads) {
            let mean = self.averaged.next().expect("one average per gradient");
            value.grad_replace(self.grads, mean.reshape(g.shape()));
        }
    }
}

fn collective(e: burn::collective::CollectiveError) -> Error {
    Error::PeerLost(format!("{e:?}"))
}

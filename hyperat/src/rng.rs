//! A small, portable, seedable RNG (xoshiro256++ seeded by SplitMix64).
//!
//! Everything random in training and attacks (shuffles, random starts, noise) draws
//! from this on the host, so a seed gives the same numbers on every backend and
//! platform, and a resumed run can restore the exact stream.

use serde::{Deserialize, Serialize};

/// Mixes a seed with step/purpose numbers (SplitMix-style): the seed of a per-step
/// generator, so a resumed run draws what an uninterrupted one would.
pub fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut z =
        seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z ^ (z >> 31)
}

/// The indices of training step `step` over `n` images: a fresh permutation per epoch
/// from the seed, cut into `batch`-sized pieces (the short remainder is dropped).
pub fn step_batch(n: usize, batch: usize, seed: u64, step: usize) -> Vec<usize> {
    let per_epoch = (n / batch).max(1);
    let (epoch, b) = (step / per_epoch, step % per_epoch);
    let mut idx: Vec<usize> = (0..n).collect();
    Rng::new(mix(seed, epoch as u64, 0xDA7A)).shuffle(&mut idx);
    idx[b * batch..((b + 1) * batch).min(n)].to_vec()
}

/// xoshiro256++ state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rng {
    s: [u64; 4],
    /// Set on a data-parallel peer: which rows of the step's batch it holds.
    #[serde(skip)]
    rows: Option<RowShard>,
}

/// The rows `start..start + len` of a batch of `of` rows, held by one data-parallel peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowShard {
    /// First row held.
    pub start: usize,
    /// Rows held.
    pub len: usize,
    /// Rows in the whole batch.
    pub of: usize,
}

impl Rng {
    /// Seeds the generator.
    pub fn new(seed: u64) -> Self {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        Self {
            s: [next(), next(), next(), next()],
            rows: None,
        }
    }

    /// This generator for a peer that holds only `rows` of the batch: vector draws
    /// (random starts, noise; `n` values for the held rows) draw for the whole batch and
    /// keep the held rows' values, so each image gets the noise it would get in a
    /// single-device step and the stream stays in step with the other peers'.
    pub fn for_rows(mut self, rows: RowShard) -> Self {
        self.rows = Some(rows);
        self
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let out = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    /// Uniform in `[0, 1)` with 24 bits (exact in f32).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform_in(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.uniform()
    }

    /// Standard normal (Box–Muller, one value per call).
    pub fn normal(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 1.0) * (1.0 / (1u64 << 53) as f64);
        let u2 = (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }

    /// Uniform integer in `0..n` (n > 0), without modulo bias worth mentioning for n < 2^32.
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }

    /// A derived generator, independent enough for a sub-task (e.g. one restart).
    pub fn fork(&mut self) -> Rng {
        Rng::new(self.next_u64())
    }

    /// `n` values uniform in `[lo, hi)` (the held rows' share under [`Rng::for_rows`]).
    pub fn uniform_vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        self.rows_vec(n, |r| r.uniform_in(lo, hi))
    }

    /// `n` standard normal values (the held rows' share under [`Rng::for_rows`]).
    pub fn normal_vec(&mut self, n: usize) -> Vec<f32> {
        self.rows_vec(n, Rng::normal)
    }

    fn rows_vec(&mut self, n: usize, mut draw: impl FnMut(&mut Rng) -> f32) -> Vec<f32> {
        let Some(rows) = self.rows else {
            return (0..n).map(|_| draw(self)).collect();
        };
        assert!(
            rows.len > 0 && n.is_multiple_of(rows.len),
            "{n} values do not split into {} rows",
            rows.len
        );
        let per_row = n / rows.len;
        let (keep_from, keep_to) = (rows.start * per_row, (rows.start + rows.len) * per_row);
        let mut out = Vec::with_capacity(n);
        for i in 0..rows.of * per_row {
            let v = draw(self);
            if (keep_from..keep_to).contains(&i) {
                out.push(v);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_in_range() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..1000 {
            let u = a.uniform();
            assert_eq!(u, b.uniform());
            assert!((0.0..1.0).contains(&u));
        }
        let n = a.normal_vec(20000);
        let mean = n.iter().sum::<f32>() / n.len() as f32;
        let var = n.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / n.len() as f32;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
        let mut v: Vec<usize> = (0..50).collect();
        a.shuffle(&mut v);
        let mut s = v.clone();
        s.sort();
        assert_eq!(s, (0..50).collect::<Vec<_>>());
        assert_ne!(v, s);
    }

    #[test]
    fn a_peers_rows_get_the_whole_batchs_values() {
        let whole = Rng::new(3).uniform_vec(8 * 5, -1.0, 1.0);
        let mut peer = Rng::new(3).for_rows(RowShard {
            start: 4,
            len: 2,
            of: 8,
        });
        assert_eq!(peer.uniform_vec(2 * 5, -1.0, 1.0), whole[20..30]);
        // The stream stays in step: the next draw is the whole batch's next draw.
        let mut rest = Rng::new(3);
        rest.uniform_vec(40, -1.0, 1.0);
        assert_eq!(peer.normal_vec(2), rest.normal_vec(8)[4..6]);
    }
}

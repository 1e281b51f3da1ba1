//! Resampling of position embeddings and patch kernels, as timm does it.
//!
//! timm's `resample_abs_pos_embed` calls `F.interpolate(mode="bicubic", antialias=True,
//! align_corners=False)`; PyTorch computes that with a separable filter whose cubic
//! kernel uses `a = -0.5` (not the `-0.75` of plain bicubic), widens the support by the
//! scale when downsampling, and normalises each row of weights. We build the same 1-D
//! weight matrices on the host (in f64) and apply them along each axis.
//! `resample_patch_embed` (FlexiViT's PI-resize) maps a kernel with the pseudo-inverse
//! of the transposed resize matrix.

/// PyTorch's antialiased bicubic filter (`a = -0.5`).
fn aa_cubic(x: f64) -> f64 {
    let a = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    } else {
        0.0
    }
}

/// Weights `[output, input]` of a 1-D antialiased bicubic resize (align_corners=False).
pub fn bicubic_aa_matrix(input: usize, output: usize) -> Vec<f64> {
    let scale = input as f64 / output as f64;
    let support = if scale >= 1.0 { 2.0 * scale } else { 2.0 };
    let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    let mut m = vec![0.0; output * input];
    for i in 0..output {
        let center = scale * (i as f64 + 0.5);
        // C++ casts truncate toward zero.
        let xmin = ((center - support + 0.5).trunc() as i64).max(0) as usize;
        let xmax = ((center + support + 0.5).trunc() as i64).min(input as i64) as usize;
        let row = &mut m[i * input..(i + 1) * input];
        let mut total = 0.0;
        for j in xmin..xmax {
            let w = aa_cubic((j as f64 - center + 0.5) * invscale);
            row[j] = w;
            total += w;
        }
        if total != 0.0 {
            row[xmin..xmax].iter_mut().for_each(|w| *w /= total);
        }
    }
    m
}

/// Resizes `channels` planes of `[h, w]` (channel-last: value `[y, x, c]`) to `[nh, nw]`.
pub fn resize_hwc(
    src: &[f32],
    [h, w]: [usize; 2],
    [nh, nw]: [usize; 2],
    channels: usize,
) -> Vec<f32> {
    let mw = bicubic_aa_matrix(w, nw);
    let mh = bicubic_aa_matrix(h, nh);
    // Width pass: [h, nw, c].
    let mut tmp = vec![0.0f64; h * nw * channels];
    for y in 0..h {
        for ox in 0..nw {
            for x in 0..w {
                let wt = mw[ox * w + x];
                if wt == 0.0 {
                    continue;
                }
                for c in 0..channels {
                    tmp[(y * nw + ox) * channels + c] +=
                        wt * src[(y * w + x) * channels + c] as f64;
                }
            }
        }
    }
    // Height pass: [nh, nw, c].
    let mut out = vec![0.0f32; nh * nw * channels];
    for oy in 0..nh {
        for y in 0..h {
            let wt = mh[oy * h + y];
            if wt == 0.0 {
                continue;
            }
            for i in 0..nw * channels {
                out[oy * nw * channels + i] += (wt * tmp[y * nw * channels + i]) as f32;
            }
        }
    }
    out
}

/// timm's `resample_abs_pos_embed`: `posemb` is `[tokens, dim]` with `prefix` leading
/// rows (class/register tokens) kept as they are; the rest is an `old` grid.
pub fn resample_pos_embed(
    posemb: &[f32],
    dim: usize,
    prefix: usize,
    old: [usize; 2],
    new: [usize; 2],
) -> Vec<f32> {
    let (head, grid) = posemb.split_at(prefix * dim);
    let mut out = head.to_vec();
    out.extend(resize_hwc(grid, old, new, dim));
    out
}

/// Solves `A X = B` for square `A` (`n x n`) with partial pivoting; `B` is `n x k`.
fn solve(mut a: Vec<f64>, mut b: Vec<f64>, n: usize, k: usize) -> Vec<f64> {
    for col in 0..n {
        let piv = (col..n)
            .max_by(|&i, &j| a[i * n + col].abs().total_cmp(&a[j * n + col].abs()))
            .expect("non-empty");
        if piv != col {
            for c in 0..n {
                a.swap(col * n + c, piv * n + c);
            }
            for c in 0..k {
                b.swap(col * k + c, piv * k + c);
            }
        }
        let d = a[col * n + col];
        for r in 0..n {
            if r == col {
                continue;
            }
            let f = a[r * n + col] / d;
            if f == 0.0 {
                continue;
            }
            for c in col..n {
                a[r * n + c] -= f * a[col * n + c];
            }
            for c in 0..k {
                b[r * k + c] -= f * b[col * k + c];
            }
        }
    }
    for r in 0..n {
        let d = a[r * n + r];
        b[r * k..(r + 1) * k].iter_mut().for_each(|v| *v /= d);
    }
    b
}

/// The matrix `[new², old²]` that maps a flattened `old x old` kernel to its resize.
fn resize_matrix(old: usize, new: usize) -> Vec<f64> {
    let mh = bicubic_aa_matrix(old, new);
    let (o2, n2) = (old * old, new * new);
    let mut r = vec![0.0; n2 * o2];
    for oy in 0..new {
        for ox in 0..new {
            for y in 0..old {
                for x in 0..old {
                    r[(oy * new + ox) * o2 + y * old + x] = mh[oy * old + y] * mh[ox * old + x];
                }
            }
        }
    }
    r
}

/// timm's `resample_patch_embed`: kernels `[out, C, old, old]` (flattened) become
/// `[out, C, new, new]` via `pinv(R^T) · k`, with `R` the bicubic resize matrix.
pub fn resample_patch_kernel(w: &[f32], old: usize, new: usize) -> Vec<f32> {
    let r = resize_matrix(old, new); // [n2, o2]
    let (o2, n2) = (old * old, new * new);
    // pinv(R^T) for R^T [o2, n2]: full column rank when shrinking (n2 <= o2) gives
    // (R R^T)^-1 R; full row rank when growing gives R (R^T R)^-1... applied to k.
    let kernels = w.len() / o2;
    let mut out = Vec::with_capacity(kernels * n2);
    if n2 <= o2 {
        // P = (R R^T)^{-1} R, [n2, o2].
        let mut rrt = vec![0.0; n2 * n2];
        for i in 0..n2 {
            for j in 0..n2 {
                rrt[i * n2 + j] = (0..o2).map(|t| r[i * o2 + t] * r[j * o2 + t]).sum();
            }
        }
        let p = solve(rrt, r.clone(), n2, o2);
        for k in w.chunks_exact(o2) {
            out.extend(
                (0..n2).map(|i| (0..o2).map(|t| p[i * o2 + t] * k[t] as f64).sum::<f64>() as f32),
            );
        }
    } else {
        // P = R (R^T R)^{-1}, [n2, o2].
        let mut rtr = vec![0.0; o2 * o2];
        for i in 0..o2 {
            for j in 0..o2 {
                rtr[i * o2 + j] = (0..n2).map(|t| r[t * o2 + i] * r[t * o2 + j]).sum();
            }
        }
        let inv = solve(
            rtr,
            (0..o2 * o2)
                .map(|i| f64::from(u8::from(i / o2 == i % o2)))
                .collect(),
            o2,
            o2,
        );
        for k in w.chunks_exact(o2) {
            let z: Vec<f64> = (0..o2)
                .map(|i| (0..o2).map(|t| inv[i * o2 + t] * k[t] as f64).sum())
                .collect();
            out.extend((0..n2).map(|i| (0..o2).map(|t| r[i * o2 + t] * z[t]).sum::<f64>() as f32));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_size_is_identity() {
        let m = bicubic_aa_matrix(5, 5);
        for i in 0..5 {
            for j in 0..5 {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!(
                    (m[i * 5 + j] - want).abs() < 1e-12,
                    "{i},{j}: {}",
                    m[i * 5 + j]
                );
            }
        }
    }

    #[test]
    fn rows_sum_to_one_and_constants_survive() {
        for (a, b) in [(14, 8), (7, 4), (4, 7), (8, 14), (3, 9)] {
            let m = bicubic_aa_matrix(a, b);
            for i in 0..b {
                let s: f64 = m[i * a..(i + 1) * a].iter().sum();
                assert!((s - 1.0).abs() < 1e-12);
            }
            let src = vec![0.25f32; a * a * 3];
            let out = resize_hwc(&src, [a, a], [b, b], 3);
            assert!(out.iter().all(|v| (v - 0.25).abs() < 1e-6));
        }
    }

    #[test]
    fn upsample_weights_match_pytorch_aa_kernel() {
        // torch: F.interpolate(eye(2)[None,None], size=(1,4), mode="bicubic", antialias=True)
        // for a 2 -> 4 resize; centres at 0.25, 0.75, 1.25, 1.75 of a 2-pixel row.
        let m = bicubic_aa_matrix(2, 4);
        // Output 0: center 0.25, taps j=0,1 at offsets 0.25, -0.75 (x = j - center + 0.5).
        let w0 = aa_cubic(0.25);
        let w1 = aa_cubic(1.25);
        assert!((m[0] - w0 / (w0 + w1)).abs() < 1e-12);
        assert!((m[1] - w1 / (w0 + w1)).abs() < 1e-12);
    }

    #[test]
    fn patch_kernel_keeps_token_values_for_resized_inputs() {
        // PI-resize's defining property: <resize(x), resample(k)> = <x, k> when growing.
        let small: Vec<f32> = (0..16).map(|i| ((i * 7) % 5) as f32 - 2.0).collect();
        let grown = resample_patch_kernel(&small, 4, 8);
        let x: Vec<f32> = (0..16).map(|i| ((i * 3) % 7) as f32 / 7.0).collect();
        let rx = resize_hwc(&x, [4, 4], [8, 8], 1);
        let lhs: f32 = rx.iter().zip(&grown).map(|(a, b)| a * b).sum();
        let rhs: f32 = x.iter().zip(&small).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-3, "{lhs} vs {rhs}");
    }
}

//! Numeric kernels for the Whisper forward pass: GEMM wrappers, matrix-vector products
//! (f32 and f16 weights), layer norm, GELU and softmax. Everything runs on the calling
//! thread or on the current rayon pool.

use rayon::prelude::*;

/// Below this many multiply-adds a GEMM is not worth splitting across threads.
const PARALLEL_GEMM_MIN_WORK: usize = 4_000_000;

/// `out[m, n] = x[m, k] · w[n, k]^T (+ bias[n])`, all row-major and contiguous.
/// `w` is stored like a PyTorch `nn.Linear` weight (`[out_features, in_features]`).
/// Large products are split across the current rayon pool.
pub fn linear(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    if m == 0 || n == 0 || x.len() < m * k || w.len() < n * k || out.len() < m * n {
        return;
    }
    if m == 1 {
        matvec(&x[..k], w, n, bias, &mut out[..n]);
        return;
    }
    let threads = rayon::current_num_threads().max(1);
    let parallelism = if threads > 1 && m * n * k >= PARALLEL_GEMM_MIN_WORK {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    if let Some(b) = bias {
        for row in out[..m * n].chunks_exact_mut(n) {
            row.copy_from_slice(&b[..n]);
        }
    }
    // SAFETY: x is m×k, w is n×k and out is m×n, row-major, checked above; the strides
    // below stay inside them.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            bias.is_some(),
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// General strided GEMM `c = alpha · a · b` on raw strides, for attention heads that
/// live inside a wider fused buffer. Runs on the calling thread.
#[allow(clippy::too_many_arguments)]
pub fn gemm_strided(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: &[f32],
    a_row_stride: usize,
    a_col_stride: usize,
    b: &[f32],
    b_row_stride: usize,
    b_col_stride: usize,
    c: &mut [f32],
    c_row_stride: usize,
) {
    let a_needed = (m.saturating_sub(1)) * a_row_stride + (k.saturating_sub(1)) * a_col_stride + 1;
    let b_needed = (k.saturating_sub(1)) * b_row_stride + (n.saturating_sub(1)) * b_col_stride + 1;
    let c_needed = (m.saturating_sub(1)) * c_row_stride + n;
    if m == 0 || n == 0 || k == 0 || a.len() < a_needed || b.len() < b_needed || c.len() < c_needed
    {
        return;
    }
    // SAFETY: bounds of every strided access were checked just above.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            c_row_stride as isize,
            false,
            a.as_ptr(),
            a_col_stride as isize,
            a_row_stride as isize,
            b.as_ptr(),
            b_col_stride as isize,
            b_row_stride as isize,
            0.0,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// `out[n] = w[n, k] · x[k] (+ bias)`: one token through a linear layer.
pub fn matvec(x: &[f32], w: &[f32], n: usize, bias: Option<&[f32]>, out: &mut [f32]) {
    let k = x.len();
    for (i, o) in out[..n].iter_mut().enumerate() {
        let row = &w[i * k..(i + 1) * k];
        *o = dot(x, row) + bias.map_or(0.0, |b| b[i]);
    }
}

/// Dot product, dispatched to the widest SIMD the CPU has.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if simd::has_avx2_fma() {
            // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
            return unsafe { simd::dot_avx2(a, b) };
        }
    }
    dot_portable(a, b)
}

#[inline(always)]
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = [0.0f32; 16];
    let chunks = n / 16;
    for c in 0..chunks {
        let xa = &a[c * 16..c * 16 + 16];
        let xb = &b[c * 16..c * 16 + 16];
        for i in 0..16 {
            acc[i] += xa[i] * xb[i];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for i in chunks * 16..n {
        sum += a[i] * b[i];
    }
    sum
}

/// `y += alpha * x`.
#[inline]
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (yv, xv) in y.iter_mut().zip(x) {
        *yv += alpha * xv;
    }
}

/// Logits over the vocabulary: `out[v] = emb_f16[v, :] · x`, split across the pool.
/// The table is kept in half precision because this product reads the whole vocabulary
/// table every token and is bound by memory bandwidth; the checkpoints are f16 anyway.
pub fn logits_f16(x: &[f32], table: &[u16], vocab: usize, out: &mut [f32]) {
    let d = x.len();
    let chunk_rows = 2048;
    out[..vocab]
        .par_chunks_mut(chunk_rows)
        .enumerate()
        .for_each(|(ci, chunk)| {
            let first = ci * chunk_rows;
            for (j, o) in chunk.iter_mut().enumerate() {
                let v = first + j;
                *o = dot_f16(x, &table[v * d..(v + 1) * d]);
            }
        });
}

/// `out[r, v] = x[r, :] · w_f16[v, :] (+ bias[v])` for `rows` inputs at once: each weight
/// row is read once for all inputs. Every element is the same `dot_f16` as
/// [`matvec_f16`] / [`logits_f16`] computes one input at a time, so results are
/// bit-identical to them (what lets draft tokens be verified in one batch).
pub fn matmul_f16_rows(
    x: &[f32],
    rows: usize,
    w: &[u16],
    n_out: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    if rows == 0 || n_out == 0 {
        return;
    }
    let k = x.len() / rows;
    // Weight-row-major scratch (`[n_out, rows]`), split across the pool by weight rows.
    let mut by_weight = vec![0.0f32; n_out * rows];
    let chunk_rows = n_out
        .div_ceil(rayon::current_num_threads().max(1) * 4)
        .max(64);
    by_weight
        .par_chunks_mut(chunk_rows * rows)
        .enumerate()
        .for_each_init(
            || vec![0.0f32; k],
            |widened, (ci, chunk)| {
                for (j, col) in chunk.chunks_exact_mut(rows).enumerate() {
                    let v = ci * chunk_rows + j;
                    dots_f16_row(x, rows, k, &w[v * k..(v + 1) * k], widened, col);
                    if let Some(b) = bias {
                        col.iter_mut().for_each(|o| *o += b[v]);
                    }
                }
            },
        );
    for (r, orow) in out.chunks_exact_mut(n_out).take(rows).enumerate() {
        for (v, o) in orow.iter_mut().enumerate() {
            *o = by_weight[v * rows + r];
        }
    }
}

/// `out[r] = dot_f16(x[r, :], w_row)` for every input row, bit-identical to `dot_f16`
/// but widening the weight row to f32 once (into `widened`) for all rows.
fn dots_f16_row(
    x: &[f32],
    rows: usize,
    k: usize,
    w_row: &[u16],
    widened: &mut [f32],
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        if simd::has_avx2_fma_f16c() {
            // SAFETY: the CPU supports AVX2, FMA and F16C (checked at run time); the
            // slices hold `rows × k`, `k`, `k` and `rows` values.
            unsafe { simd::dots_f16_row_avx2(x, rows, k, w_row, widened, out) };
            return;
        }
    }
    for (r, o) in out.iter_mut().take(rows).enumerate() {
        *o = dot_f16(&x[r * k..(r + 1) * k], w_row);
    }
}

/// Quantises a `[rows × d]` table to int8 with one scale per row (`max|w| / 127`,
/// round to nearest). Returns the int8 values and the per-row scales.
pub fn quantize_rows_i8(table: &[f32], d: usize) -> (Vec<i8>, Vec<f32>) {
    let rows = table.len().checked_div(d).unwrap_or(0);
    let mut q = vec![0i8; rows * d];
    let mut scales = vec![0f32; rows];
    for ((row, qrow), scale) in table
        .chunks_exact(d)
        .zip(q.chunks_exact_mut(d))
        .zip(scales.iter_mut())
    {
        let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        if max > 0.0 {
            *scale = max / 127.0;
            let inv = 127.0 / max;
            for (o, v) in qrow.iter_mut().zip(row) {
                *o = (v * inv).round().clamp(-127.0, 127.0) as i8;
            }
        }
    }
    (q, scales)
}

/// `out[v] = scales[v] · Σ_k x[k]·q[v·d + k]` for `v < vocab`: the logits product against an
/// int8 per-row-scaled embedding table (half the memory traffic of f16), rows split over rayon.
pub fn logits_i8(x: &[f32], q: &[i8], scales: &[f32], vocab: usize, out: &mut [f32]) {
    let d = x.len();
    let chunk_rows = 2048;
    out[..vocab]
        .par_chunks_mut(chunk_rows)
        .enumerate()
        .for_each(|(ci, chunk)| {
            let first = ci * chunk_rows;
            for (j, o) in chunk.iter_mut().enumerate() {
                let v = first + j;
                *o = scales[v] * dot_i8(x, &q[v * d..(v + 1) * d]);
            }
        });
}

#[inline]
fn dot_i8(x: &[f32], w: &[i8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if simd::has_avx2_fma() {
            // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
            return unsafe { simd::dot_i8_avx2(x, w) };
        }
    }
    x.iter().zip(w).map(|(a, b)| a * f32::from(*b)).sum()
}

#[inline]
fn dot_f16(x: &[f32], w: &[u16]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if simd::has_avx2_fma_f16c() {
            // SAFETY: the CPU supports AVX2, FMA and F16C (checked at run time).
            return unsafe { simd::dot_f16_avx2(x, w) };
        }
    }
    x.iter().zip(w).map(|(a, b)| a * f16_to_f32(*b)).sum()
}

/// IEEE 754 half → single precision, including subnormals, infinities and NaN.
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    let bits = if exp == 0 {
        if mant == 0 {
            sign
        } else {
            // Subnormal: renormalise.
            let mut e: i32 = -1;
            let mut m = mant;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            let m = m & 0x3ff;
            sign | (((127 - 15 + 1 + e) as u32) << 23) | (m << 13)
        }
    } else if exp == 0x1f {
        sign | 0x7f80_0000 | (mant << 13)
    } else {
        sign | ((exp + 127 - 15) << 23) | (mant << 13)
    };
    f32::from_bits(bits)
}

/// Single → half precision with round-to-nearest-even (for the logits table of f32 models).
pub fn f32_to_f16(value: f32) -> u16 {
    let bits = value.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let mant = bits & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if mant != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = mant | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = m >> shift;
        let rem = m & ((1 << shift) - 1);
        let mid = 1 << (shift - 1);
        let rounded = if rem > mid || (rem == mid && half & 1 == 1) {
            half + 1
        } else {
            half
        };
        return sign | rounded as u16;
    }
    let half = ((e as u32) << 10) | (mant >> 13);
    let rem = mant & 0x1fff;
    let rounded = if rem > 0x1000 || (rem == 0x1000 && half & 1 == 1) {
        half + 1
    } else {
        half
    };
    sign | rounded as u16
}

/// Layer norm over each row of `x` (`[rows, d]`), eps 1e-5 as in Whisper.
pub fn layer_norm(x: &[f32], d: usize, gamma: &[f32], beta: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if simd::has_avx2_fma() {
            // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
            unsafe { simd::layer_norm_avx2(x, d, gamma, beta, out) };
            return;
        }
    }
    layer_norm_portable(x, d, gamma, beta, out);
}

#[inline(always)]
fn layer_norm_portable(x: &[f32], d: usize, gamma: &[f32], beta: &[f32], out: &mut [f32]) {
    for (row, orow) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let mean = row.iter().sum::<f32>() / d as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
        let inv = 1.0 / (var + 1e-5).sqrt();
        for i in 0..d {
            orow[i] = (row[i] - mean) * inv * gamma[i] + beta[i];
        }
    }
}

/// Layer norm of many rows, split across the pool.
pub fn layer_norm_par(x: &[f32], d: usize, gamma: &[f32], beta: &[f32], out: &mut [f32]) {
    out.par_chunks_mut(d * 64)
        .zip(x.par_chunks(d * 64))
        .for_each(|(o, i)| layer_norm(i, d, gamma, beta, o));
}

/// GELU with the erf form (Whisper's), in place. erf uses Abramowitz–Stegun 7.1.26
/// (|error| < 1.5e-7) on a branch-free f32 path so the loop vectorises.
pub fn gelu(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if simd::has_avx2_fma() {
            // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
            unsafe { simd::gelu_avx2(x) };
            return;
        }
    }
    gelu_portable(x);
}

#[inline(always)]
fn gelu_portable(x: &mut [f32]) {
    for v in x.iter_mut() {
        let z = *v * std::f32::consts::FRAC_1_SQRT_2;
        let a = z.abs();
        let t = 1.0 / (1.0 + 0.327_591_1 * a);
        let poly = t
            * (0.254_829_6
                + t * (-0.284_496_72 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
        let erf_abs = 1.0 - poly * fast_exp(-a * a);
        *v = 0.5 * *v * (1.0 + erf_abs.copysign(z));
    }
}

pub fn gelu_par(x: &mut [f32]) {
    x.par_chunks_mut(16_384).for_each(gelu);
}

/// e^x in f32 with ~2 ulp error, written branch-free so loops over it vectorise
/// (libm's expf is a call per element and dominated the softmaxes).
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUNDER: f32 = 12_582_912.0; // 1.5·2^23: adding and subtracting rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2E + ROUNDER;
    let n = shifted - ROUNDER;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2^n from the bits of `shifted`, whose low mantissa bits hold n (|n| ≤ 126 here):
    // integer arithmetic only, no float→int conversion, so loops over this vectorise.
    let scale = f32::from_bits(shifted.to_bits().wrapping_add(127) << 23);
    p * scale
}

/// The largest value (NaN-ignoring, −∞ for an empty slice).
pub fn max_value(row: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if simd::has_avx2_fma() {
            // SAFETY: the CPU supports AVX2 (checked at run time).
            return unsafe { simd::max_avx2(row) };
        }
    }
    row.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

/// Softmax of one row in place.
pub fn softmax(row: &mut [f32]) {
    let max = max_value(row);
    if !max.is_finite() {
        let n = row.len().max(1) as f32;
        row.iter_mut().for_each(|v| *v = 1.0 / n);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if simd::has_avx2_fma() {
            // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
            unsafe { simd::softmax_tail_avx2(row, max) };
            return;
        }
    }
    for v in row.iter_mut() {
        *v = fast_exp(*v - max);
    }
    let sum: f32 = row.iter().sum();
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// `out[n] = w_f16[n, k] · x[k] (+ bias)`: a linear layer with half-precision weights.
pub fn matvec_f16(x: &[f32], w: &[u16], n: usize, bias: Option<&[f32]>, out: &mut [f32]) {
    let k = x.len();
    for (i, o) in out[..n].iter_mut().enumerate() {
        *o = dot_f16(x, &w[i * k..(i + 1) * k]) + bias.map_or(0.0, |b| b[i]);
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;
    use std::sync::OnceLock;

    pub fn has_avx2_fma() -> bool {
        static FLAG: OnceLock<bool> = OnceLock::new();
        *FLAG.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }

    pub fn has_avx2_fma_f16c() -> bool {
        static FLAG: OnceLock<bool> = OnceLock::new();
        *FLAG.get_or_init(|| has_avx2_fma() && is_x86_feature_detected!("f16c"))
    }

    #[inline]
    unsafe fn hsum(v: __m256) -> f32 {
        let hi = _mm256_extractf128_ps(v, 1);
        let lo = _mm256_castps256_ps128(v);
        let s = _mm_add_ps(hi, lo);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// `row = exp(row - max) / Σ`, eight lanes at a time with the same polynomial as
    /// `fast_exp` (masked −∞ inputs clamp to e^-87 ≈ 0).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn softmax_tail_avx2(row: &mut [f32], max: f32) {
        let n = row.len();
        let p = row.as_mut_ptr();
        let vmax = _mm256_set1_ps(max);
        let lo = _mm256_set1_ps(-87.0);
        let hi = _mm256_set1_ps(88.0);
        let log2e = _mm256_set1_ps(std::f32::consts::LOG2_E);
        let ln2_hi = _mm256_set1_ps(0.693_145_75);
        let ln2_lo = _mm256_set1_ps(1.428_606_8e-6);
        let c = [
            1.0f32 / 720.0,
            1.0 / 120.0,
            1.0 / 24.0,
            1.0 / 6.0,
            0.5,
            1.0,
            1.0,
        ]
        .map(|v| _mm256_set1_ps(v));
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i + 8 <= n {
            let x = _mm256_min_ps(
                _mm256_max_ps(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), vmax), lo),
                hi,
            );
            let k = _mm256_round_ps(
                _mm256_mul_ps(x, log2e),
                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
            );
            let r = _mm256_fnmadd_ps(k, ln2_lo, _mm256_fnmadd_ps(k, ln2_hi, x));
            let mut poly = c[0];
            for coef in &c[1..] {
                poly = _mm256_fmadd_ps(poly, r, *coef);
            }
            let pow2 = _mm256_castsi256_ps(_mm256_slli_epi32(
                _mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)),
                23,
            ));
            let e = _mm256_mul_ps(poly, pow2);
            _mm256_storeu_ps(p.add(i), e);
            acc = _mm256_add_ps(acc, e);
            i += 8;
        }
        let mut sum = hsum(acc);
        while i < n {
            let e = super::fast_exp(*p.add(i) - max);
            *p.add(i) = e;
            sum += e;
            i += 1;
        }
        let inv = _mm256_set1_ps(1.0 / sum);
        let mut i = 0;
        while i + 8 <= n {
            _mm256_storeu_ps(p.add(i), _mm256_mul_ps(_mm256_loadu_ps(p.add(i)), inv));
            i += 8;
        }
        let inv = 1.0 / sum;
        while i < n {
            *p.add(i) *= inv;
            i += 1;
        }
    }

    /// The portable GELU compiled for AVX2/FMA: its branch-free body vectorises.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gelu_avx2(x: &mut [f32]) {
        super::gelu_portable(x)
    }

    /// The portable layer norm compiled for AVX2/FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn layer_norm_avx2(
        x: &[f32],
        d: usize,
        gamma: &[f32],
        beta: &[f32],
        out: &mut [f32],
    ) {
        super::layer_norm_portable(x, d, gamma, beta, out)
    }

    /// Maximum of a row, eight lanes at a time (`max_ps` returns its second operand
    /// when either is NaN, so NaNs in the row are skipped as by `f32::max`).
    #[target_feature(enable = "avx2")]
    pub unsafe fn max_avx2(row: &[f32]) -> f32 {
        let n = row.len();
        let p = row.as_ptr();
        let mut acc = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut i = 0;
        while i + 8 <= n {
            acc = _mm256_max_ps(_mm256_loadu_ps(p.add(i)), acc);
            i += 8;
        }
        let mut lanes = [0.0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
        let mut max = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        while i < n {
            max = max.max(*p.add(i));
            i += 1;
        }
        max
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let pa = a.as_ptr();
        let pb = b.as_ptr();
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut acc2 = _mm256_setzero_ps();
        let mut acc3 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 32 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            acc1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 8)),
                _mm256_loadu_ps(pb.add(i + 8)),
                acc1,
            );
            acc2 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 16)),
                _mm256_loadu_ps(pb.add(i + 16)),
                acc2,
            );
            acc3 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 24)),
                _mm256_loadu_ps(pb.add(i + 24)),
                acc3,
            );
            i += 32;
        }
        while i + 8 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            i += 8;
        }
        let mut sum = hsum(_mm256_add_ps(
            _mm256_add_ps(acc0, acc1),
            _mm256_add_ps(acc2, acc3),
        ));
        while i < n {
            sum += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        sum
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_i8_avx2(x: &[f32], w: &[i8]) -> f32 {
        let n = x.len().min(w.len());
        let px = x.as_ptr();
        let pw = w.as_ptr();
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            let b = _mm_loadu_si128(pw.add(i) as *const __m128i);
            let w0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
            let w1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(b, 8)));
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(px.add(i)), w0, acc0);
            acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(px.add(i + 8)), w1, acc1);
            i += 16;
        }
        let mut sum = hsum(_mm256_add_ps(acc0, acc1));
        while i < n {
            sum += *px.add(i) * f32::from(*pw.add(i));
            i += 1;
        }
        sum
    }

    /// [`dot_f16_avx2`] of each of `rows` inputs with one weight row, which is widened
    /// once; four inputs share each weight load. Every input keeps `dot_f16_avx2`'s
    /// exact accumulation order, so the sums are bit-identical to it.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dots_f16_row_avx2(
        x: &[f32],
        rows: usize,
        k: usize,
        w: &[u16],
        widened: &mut [f32],
        out: &mut [f32],
    ) {
        let k = k.min(w.len()).min(widened.len());
        if x.len() < rows * k || out.len() < rows {
            return;
        }
        let pw = w.as_ptr();
        let pv = widened.as_mut_ptr();
        let mut i = 0;
        while i + 8 <= k {
            _mm256_storeu_ps(
                pv.add(i),
                _mm256_cvtph_ps(_mm_loadu_si128(pw.add(i) as *const __m128i)),
            );
            i += 8;
        }
        while i < k {
            *pv.add(i) = super::f16_to_f32(*pw.add(i));
            i += 1;
        }
        let px = x.as_ptr();
        let tail = |r: usize, from: usize, mut sum: f32| {
            for i in from..k {
                sum += *px.add(r * k + i) * *pv.add(i);
            }
            sum
        };
        let mut r = 0;
        while r + 4 <= rows {
            let p = [
                px.add(r * k),
                px.add((r + 1) * k),
                px.add((r + 2) * k),
                px.add((r + 3) * k),
            ];
            let mut a0 = [_mm256_setzero_ps(); 4];
            let mut a1 = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i + 16 <= k {
                let w0 = _mm256_loadu_ps(pv.add(i));
                let w1 = _mm256_loadu_ps(pv.add(i + 8));
                for q in 0..4 {
                    a0[q] = _mm256_fmadd_ps(_mm256_loadu_ps(p[q].add(i)), w0, a0[q]);
                    a1[q] = _mm256_fmadd_ps(_mm256_loadu_ps(p[q].add(i + 8)), w1, a1[q]);
                }
                i += 16;
            }
            for q in 0..4 {
                out[r + q] = tail(r + q, i, hsum(_mm256_add_ps(a0[q], a1[q])));
            }
            r += 4;
        }
        while r < rows {
            let p = px.add(r * k);
            let mut a0 = _mm256_setzero_ps();
            let mut a1 = _mm256_setzero_ps();
            let mut i = 0;
            while i + 16 <= k {
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(i)), _mm256_loadu_ps(pv.add(i)), a0);
                a1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(p.add(i + 8)),
                    _mm256_loadu_ps(pv.add(i + 8)),
                    a1,
                );
                i += 16;
            }
            out[r] = tail(r, i, hsum(_mm256_add_ps(a0, a1)));
            r += 1;
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f16_avx2(x: &[f32], w: &[u16]) -> f32 {
        let n = x.len().min(w.len());
        let px = x.as_ptr();
        let pw = w.as_ptr();
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            let w0 = _mm256_cvtph_ps(_mm_loadu_si128(pw.add(i) as *const __m128i));
            let w1 = _mm256_cvtph_ps(_mm_loadu_si128(pw.add(i + 8) as *const __m128i));
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(px.add(i)), w0, acc0);
            acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(px.add(i + 8)), w1, acc1);
            i += 16;
        }
        let mut sum = hsum(_mm256_add_ps(acc0, acc1));
        while i < n {
            sum += *px.add(i) * super::f16_to_f32(*pw.add(i));
            i += 1;
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_round_trip() {
        for v in [
            0.0f32,
            1.0,
            -2.5,
            0.000_061_035_156,
            65504.0,
            1e-7,
            3.140_625,
        ] {
            let back = f16_to_f32(f32_to_f16(v));
            assert!((back - v).abs() <= v.abs() * 1e-3 + 1e-7, "{v} -> {back}");
        }
    }

    #[test]
    fn linear_matches_naive() {
        let (m, k, n) = (5, 7, 3);
        let x: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.1).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.3).sin()).collect();
        let b = vec![1.0, 2.0, 3.0];
        let mut out = vec![0.0; m * n];
        linear(&x, m, k, &w, n, Some(&b), &mut out);
        for r in 0..m {
            for c in 0..n {
                let want: f32 = (0..k).map(|i| x[r * k + i] * w[c * k + i]).sum::<f32>() + b[c];
                assert!((out[r * n + c] - want).abs() < 1e-4);
            }
        }
        let long: Vec<f32> = (0..77).map(|i| (i as f32 * 0.7).cos()).collect();
        let d: f32 = dot(&long, &long);
        let want: f32 = long.iter().map(|a| a * a).sum();
        assert!((d - want).abs() < 1e-3);
        let mut row: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin() * 5.0).collect();
        row[3] = f32::NEG_INFINITY;
        let want: Vec<f32> = {
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = row.iter().map(|v| (v - m).exp()).collect();
            let s: f32 = e.iter().sum();
            e.iter().map(|v| v / s).collect()
        };
        softmax(&mut row);
        for (a, b) in row.iter().zip(&want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        for x in [-80.0f32, -5.0, -0.3, 0.0, 0.7, 3.0, 20.0] {
            assert!((fast_exp(x) - x.exp()).abs() <= x.exp() * 1e-5, "exp {x}");
        }
    }
}

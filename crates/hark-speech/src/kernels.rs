//! Numeric kernels for the Whisper forward pass: GEMM wrappers, matrix-vector products
//! (f32 and f16 weights), layer norm, GELU and softmax. Everything runs on the calling
//! thread or on the current rayon pool.
//!
//! Every kernel runs on one of three instruction-set paths ([`SimdPath`]): `avx512`
//! (the gemm crates' AVX-512 GEMM micro-kernels, AVX2/FMA/F16C for the rest), `avx2`
//! (AVX2/FMA/F16C everywhere, including the GEMMs) and `scalar` (portable code). The path
//! is chosen once, at first use, from the CPU's features; `HARK_SIMD=avx512|avx2|scalar`
//! forces a lower path (never a higher one than the CPU has), so the AVX2 path can be
//! measured on an AVX-512 machine. The `*_on` variants take the path explicitly (tests
//! and benchmarks compare paths with them).

use rayon::prelude::*;
use std::sync::OnceLock;

/// An instruction-set path of the kernels, ordered from narrowest to widest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SimdPath {
    /// Portable Rust (what the compiler makes of it for the baseline target).
    Scalar,
    /// AVX2 + FMA + F16C: 8-lane f32 kernels and the `gemm` crate's FMA GEMM kernels.
    Avx2,
    /// AVX-512F for the GEMMs (the `gemm` crate's 16-lane kernels); AVX2 for the rest.
    Avx512,
}

impl SimdPath {
    pub fn name(self) -> &'static str {
        match self {
            SimdPath::Scalar => "scalar",
            SimdPath::Avx2 => "avx2",
            SimdPath::Avx512 => "avx512",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "scalar" | "none" | "portable" => Some(SimdPath::Scalar),
            "avx2" => Some(SimdPath::Avx2),
            "avx512" | "avx-512" | "avx512f" => Some(SimdPath::Avx512),
            _ => None,
        }
    }

    /// The widest path this CPU supports.
    pub fn detected() -> Self {
        static DETECTED: OnceLock<SimdPath> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                let avx2 = is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c");
                if avx2 && is_x86_feature_detected!("avx512f") {
                    return SimdPath::Avx512;
                }
                if avx2 {
                    return SimdPath::Avx2;
                }
            }
            SimdPath::Scalar
        })
    }

    /// Every path this CPU can run, narrowest first.
    pub fn available() -> Vec<Self> {
        [SimdPath::Scalar, SimdPath::Avx2, SimdPath::Avx512]
            .into_iter()
            .filter(|p| *p <= Self::detected())
            .collect()
    }
}

/// The path the kernels use: [`SimdPath::detected`], lowered by `HARK_SIMD` when that
/// names a narrower path. Decided once per process.
pub fn simd_path() -> SimdPath {
    static PATH: OnceLock<SimdPath> = OnceLock::new();
    *PATH.get_or_init(|| {
        resolve_path(
            SimdPath::detected(),
            std::env::var("HARK_SIMD").ok().as_deref(),
        )
        .0
    })
}

/// The path for `requested` (the `HARK_SIMD` value) on a CPU whose widest path is
/// `detected`, and a note when the request was not taken as given.
fn resolve_path(detected: SimdPath, requested: Option<&str>) -> (SimdPath, Option<String>) {
    match requested.map(str::trim).filter(|r| !r.is_empty()) {
        None => (detected, None),
        Some(text) => match SimdPath::parse(text) {
            Some(p) if p <= detected => (p, None),
            Some(p) => (
                detected,
                Some(format!(
                    "HARK_SIMD={text} asks for {} but this CPU only has {}",
                    p.name(),
                    detected.name()
                )),
            ),
            None => (
                detected,
                Some(format!(
                    "HARK_SIMD={text} is not one of avx512, avx2, scalar; ignored"
                )),
            ),
        },
    }
}

/// One line for benchmark output: the CPU model, its SIMD-relevant flags and the path in
/// use, e.g. `cpu: AMD EPYC | flags: avx2 fma f16c -avx512f | kernels: avx2 (detected avx2)`.
pub fn cpu_summary() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    let mut flags = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        let features: [(&str, bool); 7] = [
            ("avx2", is_x86_feature_detected!("avx2")),
            ("fma", is_x86_feature_detected!("fma")),
            ("f16c", is_x86_feature_detected!("f16c")),
            ("avx512f", is_x86_feature_detected!("avx512f")),
            ("avx512bw", is_x86_feature_detected!("avx512bw")),
            ("avx512vnni", is_x86_feature_detected!("avx512vnni")),
            ("avx512bf16", is_x86_feature_detected!("avx512bf16")),
        ];
        for (name, present) in features {
            flags.push(if present {
                name.to_string()
            } else {
                format!("-{name}")
            });
        }
    }
    let requested = std::env::var("HARK_SIMD").ok();
    let (_, note) = resolve_path(SimdPath::detected(), requested.as_deref());
    let forced = match requested
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
    {
        Some(r) => format!(", HARK_SIMD={r}"),
        None => String::new(),
    };
    use crate::model::EncoderPrecision;
    let precision = EncoderPrecision::configured();
    let why = if EncoderPrecision::is_set() {
        format!("{} set", EncoderPrecision::ENV)
    } else {
        format!("default on {}", simd_path().name())
    };
    let mut encoder = match precision {
        EncoderPrecision::Int8 => format!(
            "int8 ({}; {why})",
            crate::quant::Int8Kernel::for_path(simd_path()).name()
        ),
        EncoderPrecision::F32 => format!("f32 ({why})"),
    };
    if let Some(text) = EncoderPrecision::unrecognised_setting() {
        encoder.push_str(&format!(
            " ({}={text} is not f32, int8 or auto; ignored)",
            EncoderPrecision::ENV
        ));
    }
    let mut line = format!(
        "cpu: {model} | cores: {} | flags: {} | kernels: {} (detected {}{forced}) | encoder: {encoder}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        flags.join(" "),
        simd_path().name(),
        SimdPath::detected().name(),
    );
    if let Some(note) = note {
        line.push_str(" | ");
        line.push_str(&note);
    }
    line
}

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
    linear_on(simd_path(), x, m, k, w, n, bias, out);
}

/// [`linear`] on a given path.
#[allow(clippy::too_many_arguments)]
pub fn linear_on(
    path: SimdPath,
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
        matvec_on(path, &x[..k], w, n, bias, &mut out[..n]);
        return;
    }
    let threads = rayon::current_num_threads().max(1);
    let parallelism = if threads > 1 && m * n * k >= PARALLEL_GEMM_MIN_WORK {
        gemm_common::Parallelism::Rayon(threads)
    } else {
        gemm_common::Parallelism::None
    };
    if let Some(b) = bias {
        for row in out[..m * n].chunks_exact_mut(n) {
            row.copy_from_slice(&b[..n]);
        }
    }
    // SAFETY: x is m×k, w is n×k and out is m×n, row-major, checked above; the strides
    // below stay inside them.
    unsafe {
        gemm_raw(
            path,
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
    gemm_strided_on(
        simd_path(),
        m,
        k,
        n,
        alpha,
        a,
        a_row_stride,
        a_col_stride,
        b,
        b_row_stride,
        b_col_stride,
        c,
        c_row_stride,
    );
}

/// [`gemm_strided`] on a given path.
#[allow(clippy::too_many_arguments)]
pub fn gemm_strided_on(
    path: SimdPath,
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
        gemm_raw(
            path,
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
            gemm_common::Parallelism::None,
        );
    }
}

/// The gemm crates' `dst = alpha·dst + beta·lhs·rhs` (its naming: `alpha` scales what
/// `dst` held when `read_dst`) on a given path. The crate picks its micro-kernels from
/// the CPU's features with no way to ask for narrower ones, so below AVX-512 this calls
/// its generic driver with the FMA (8-lane) or scalar micro-kernels directly: the same
/// code the crate itself runs on a CPU without AVX-512. Strides must be positive (all of
/// ours are); the crate's own entry point additionally normalises negative ones.
///
/// # Safety
/// `dst`, `lhs` and `rhs` must be valid for every element the sizes and strides reach.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_raw(
    path: SimdPath,
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_cs: isize,
    dst_rs: isize,
    read_dst: bool,
    lhs: *const f32,
    lhs_cs: isize,
    lhs_rs: isize,
    rhs: *const f32,
    rhs_cs: isize,
    rhs_rs: isize,
    alpha: f32,
    beta: f32,
    parallelism: gemm_common::Parallelism,
) {
    use gemm_common::simd::MixedSimd;
    // As the `gemm` crate's entry point does: the drivers want the destination's smaller stride along
    // rows, so a row-major product is computed as its transpose.
    let (m, n, dst_cs, dst_rs, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs) =
        if dst_cs.abs() < dst_rs.abs() {
            (
                n, m, dst_rs, dst_cs, rhs, rhs_rs, rhs_cs, lhs, lhs_rs, lhs_cs,
            )
        } else {
            (
                m, n, dst_cs, dst_rs, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs,
            )
        };
    if path == SimdPath::Avx512 {
        // The crate's f32 driver picks its AVX-512 micro-kernels itself (this path is
        // only chosen on a CPU that has them).
        gemm_f32::gemm::f32::get_gemm_fn()(
            m,
            n,
            k,
            dst,
            dst_cs,
            dst_rs,
            read_dst,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            alpha,
            beta,
            false,
            false,
            false,
            parallelism,
        );
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if path == SimdPath::Avx2 {
        use gemm_f32::microkernel::fma::f32 as ukr;
        if let Some(simd) = <gemm_common::simd::V3 as MixedSimd<f32, f32, f32, f32>>::try_new() {
            gemm_common::gemm::gemm_basic_generic::<
                _,
                f32,
                8,
                { ukr::MR_DIV_N * 8 },
                { ukr::NR },
                { ukr::MR_DIV_N },
                { ukr::H_M },
                { ukr::H_N },
            >(
                simd,
                m,
                n,
                k,
                dst,
                dst_cs,
                dst_rs,
                read_dst,
                lhs,
                lhs_cs,
                lhs_rs,
                rhs,
                rhs_cs,
                rhs_rs,
                alpha,
                beta,
                false,
                false,
                false,
                |a, b, c| a * b + c,
                &ukr::UKR,
                &ukr::H_UKR,
                false,
                parallelism,
            );
            return;
        }
    }
    use gemm_f32::microkernel::scalar::f32 as ukr;
    gemm_common::gemm::gemm_basic_generic::<
        _,
        f32,
        1,
        { ukr::MR_DIV_N },
        { ukr::NR },
        { ukr::MR_DIV_N },
        { ukr::H_M },
        { ukr::H_N },
    >(
        gemm_common::simd::Scalar,
        m,
        n,
        k,
        dst,
        dst_cs,
        dst_rs,
        read_dst,
        lhs,
        lhs_cs,
        lhs_rs,
        rhs,
        rhs_cs,
        rhs_rs,
        alpha,
        beta,
        false,
        false,
        false,
        |a, b, c| a * b + c,
        &ukr::UKR,
        &ukr::H_UKR,
        false,
        parallelism,
    );
}

/// `out[n] = w[n, k] · x[k] (+ bias)`: one token through a linear layer.
pub fn matvec(x: &[f32], w: &[f32], n: usize, bias: Option<&[f32]>, out: &mut [f32]) {
    matvec_on(simd_path(), x, w, n, bias, out);
}

fn matvec_on(
    path: SimdPath,
    x: &[f32],
    w: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let k = x.len();
    for (i, o) in out[..n].iter_mut().enumerate() {
        let row = &w[i * k..(i + 1) * k];
        *o = dot_on(path, x, row) + bias.map_or(0.0, |b| b[i]);
    }
}

/// Dot product, dispatched to the widest SIMD the CPU has.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    dot_on(simd_path(), a, b)
}

/// [`dot`] on a given path.
#[inline]
pub fn dot_on(path: SimdPath, a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if path >= SimdPath::Avx2 {
            // SAFETY: the CPU supports AVX2 and FMA (the path is only chosen when it does).
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
    let path = simd_path();
    let d = x.len();
    let chunk_rows = 2048;
    out[..vocab]
        .par_chunks_mut(chunk_rows)
        .enumerate()
        .for_each(|(ci, chunk)| {
            let first = ci * chunk_rows;
            for (j, o) in chunk.iter_mut().enumerate() {
                let v = first + j;
                *o = dot_f16(path, x, &table[v * d..(v + 1) * d]);
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
    matmul_f16_rows_on(simd_path(), x, rows, w, n_out, bias, out);
}

/// [`matmul_f16_rows`] on a given path.
pub fn matmul_f16_rows_on(
    path: SimdPath,
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
                    dots_f16_row(path, x, rows, k, &w[v * k..(v + 1) * k], widened, col);
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
    path: SimdPath,
    x: &[f32],
    rows: usize,
    k: usize,
    w_row: &[u16],
    widened: &mut [f32],
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        if path >= SimdPath::Avx2 {
            // SAFETY: the CPU supports AVX2, FMA and F16C (the path is only chosen when it does); the
            // slices hold `rows × k`, `k`, `k` and `rows` values.
            unsafe { simd::dots_f16_row_avx2(x, rows, k, w_row, widened, out) };
            return;
        }
    }
    for (r, o) in out.iter_mut().take(rows).enumerate() {
        *o = dot_f16(path, &x[r * k..(r + 1) * k], w_row);
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
    let path = simd_path();
    let d = x.len();
    let chunk_rows = 2048;
    out[..vocab]
        .par_chunks_mut(chunk_rows)
        .enumerate()
        .for_each(|(ci, chunk)| {
            let first = ci * chunk_rows;
            for (j, o) in chunk.iter_mut().enumerate() {
                let v = first + j;
                *o = scales[v] * dot_i8(path, x, &q[v * d..(v + 1) * d]);
            }
        });
}

#[inline]
fn dot_i8(path: SimdPath, x: &[f32], w: &[i8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if path >= SimdPath::Avx2 {
            // SAFETY: the CPU supports AVX2 and FMA (the path is only chosen when it does).
            return unsafe { simd::dot_i8_avx2(x, w) };
        }
    }
    x.iter().zip(w).map(|(a, b)| a * f32::from(*b)).sum()
}

/// `Σ x[k]·w[k]` over f16 weights: the one product every f16 score and projection uses.
#[inline]
pub(crate) fn dot_f16(path: SimdPath, x: &[f32], w: &[u16]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if path == SimdPath::Avx512 {
            // SAFETY: the CPU supports AVX-512F, AVX2, FMA and F16C (the path is only
            // chosen when it does).
            return unsafe { simd::dot_f16_avx512(x, w) };
        }
        if path >= SimdPath::Avx2 {
            // SAFETY: the CPU supports AVX2, FMA and F16C (the path is only chosen when it does).
            return unsafe { simd::dot_f16_avx2(x, w) };
        }
    }
    x.iter().zip(w).map(|(a, b)| a * f16_to_f32(*b)).sum()
}

/// `out = Σ_j p[j] · v[j, :]` over f16 rows `v` (`[p.len(), out.len()]`): attention's
/// weighted sum of values, each output lane summed over `j` in order. The same inputs
/// give the same bits on a given path, whoever calls it.
pub fn weighted_sum_f16(p: &[f32], v: &[u16], out: &mut [f32]) {
    let width = out.len();
    let rows = p.len().min(v.len().checked_div(width).unwrap_or(0));
    #[cfg(target_arch = "x86_64")]
    {
        if simd_path() >= SimdPath::Avx2 && width.is_multiple_of(8) {
            // SAFETY: the CPU supports AVX2, FMA and F16C (the path is only chosen when it
            // does); `v` holds `rows × width` values and `p` at least `rows`.
            unsafe { simd::weighted_sum_f16_avx2(&p[..rows], v, out) };
            return;
        }
    }
    out.fill(0.0);
    for (pj, row) in p.iter().zip(v.chunks_exact(width.max(1))).take(rows) {
        for (o, h) in out.iter_mut().zip(row) {
            *o = pj.mul_add(f16_to_f32(*h), *o);
        }
    }
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

/// [`f32_to_f16`] of every value of `src` into `dst` (the same bits for every value but
/// NaN, which stays a NaN), eight at a time with F16C where the path has it.
pub fn f32_to_f16_slice(src: &[f32], dst: &mut [u16]) {
    let n = src.len().min(dst.len());
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    {
        if simd_path() >= SimdPath::Avx2 {
            // SAFETY: the CPU supports F16C (the path is only chosen when it does); both
            // slices hold at least `n` values.
            done = unsafe { simd::f32_to_f16_avx2(&src[..n], &mut dst[..n]) };
        }
    }
    for (d, s) in dst[done..n].iter_mut().zip(&src[done..n]) {
        *d = f32_to_f16(*s);
    }
}

/// Layer norm over each row of `x` (`[rows, d]`), eps 1e-5 as in Whisper.
pub fn layer_norm(x: &[f32], d: usize, gamma: &[f32], beta: &[f32], out: &mut [f32]) {
    layer_norm_on(simd_path(), x, d, gamma, beta, out);
}

/// [`layer_norm`] on a given path.
pub fn layer_norm_on(
    path: SimdPath,
    x: &[f32],
    d: usize,
    gamma: &[f32],
    beta: &[f32],
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        if path >= SimdPath::Avx2 {
            // SAFETY: the CPU supports AVX2 and FMA (the path is only chosen when it does).
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
    gelu_on(simd_path(), x);
}

/// [`gelu`] on a given path.
pub fn gelu_on(path: SimdPath, x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if path >= SimdPath::Avx2 {
            // SAFETY: the CPU supports AVX2 and FMA (the path is only chosen when it does).
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

/// Σ e^(v − shift) over `row`, summed in eight independent lanes so the loop
/// vectorises (one running sum would be a chain the compiler may not reorder).
pub fn exp_sum(row: &[f32], shift: f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = row.chunks_exact(8);
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|&v| fast_exp(v - shift))
        .sum();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += fast_exp(v - shift);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// The largest value (NaN-ignoring, −∞ for an empty slice).
pub fn max_value(row: &[f32]) -> f32 {
    max_value_on(simd_path(), row)
}

/// [`max_value`] on a given path.
pub fn max_value_on(path: SimdPath, row: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if path >= SimdPath::Avx2 {
            // SAFETY: the CPU supports AVX2 (the path is only chosen when it does).
            return unsafe { simd::max_avx2(row) };
        }
    }
    row.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

/// Softmax of one row in place.
pub fn softmax(row: &mut [f32]) {
    softmax_on(simd_path(), row);
}

/// [`softmax`] on a given path.
pub fn softmax_on(path: SimdPath, row: &mut [f32]) {
    let max = max_value_on(path, row);
    if !max.is_finite() {
        let n = row.len().max(1) as f32;
        row.iter_mut().for_each(|v| *v = 1.0 / n);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if path >= SimdPath::Avx2 {
            // SAFETY: the CPU supports AVX2 and FMA (the path is only chosen when it does).
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
    matvec_f16_on(simd_path(), x, w, n, bias, out);
}

/// [`matvec_f16`] on a given path.
pub fn matvec_f16_on(
    path: SimdPath,
    x: &[f32],
    w: &[u16],
    n: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let k = x.len();
    for (i, o) in out[..n].iter_mut().enumerate() {
        *o = dot_f16(path, x, &w[i * k..(i + 1) * k]) + bias.map_or(0.0, |b| b[i]);
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

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

    /// [`super::f32_to_f16_slice`] for whole groups of eight (round to nearest even);
    /// returns how many values it converted.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn f32_to_f16_avx2(src: &[f32], dst: &mut [u16]) -> usize {
        let n = src.len().min(dst.len()) / 8 * 8;
        let (ps, pd) = (src.as_ptr(), dst.as_mut_ptr());
        let mut i = 0;
        while i < n {
            let half = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(ps.add(i)));
            _mm_storeu_si128(pd.add(i) as *mut __m128i, half);
            i += 8;
        }
        n
    }

    /// [`super::weighted_sum_f16`] for a width that is a multiple of 8: 32 output lanes
    /// at a time stay in registers over every row.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn weighted_sum_f16_avx2(p: &[f32], v: &[u16], out: &mut [f32]) {
        let width = out.len();
        let pv = v.as_ptr();
        let po = out.as_mut_ptr();
        let mut c = 0;
        while c + 32 <= width {
            let mut acc = [_mm256_setzero_ps(); 4];
            for (j, pj) in p.iter().enumerate() {
                let weight = _mm256_set1_ps(*pj);
                let row = pv.add(j * width + c);
                for (k, a) in acc.iter_mut().enumerate() {
                    let vals = _mm256_cvtph_ps(_mm_loadu_si128(row.add(8 * k) as *const __m128i));
                    *a = _mm256_fmadd_ps(weight, vals, *a);
                }
            }
            for (k, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(po.add(c + 8 * k), *a);
            }
            c += 32;
        }
        while c < width {
            let mut acc = _mm256_setzero_ps();
            for (j, pj) in p.iter().enumerate() {
                let vals =
                    _mm256_cvtph_ps(_mm_loadu_si128(pv.add(j * width + c) as *const __m128i));
                acc = _mm256_fmadd_ps(_mm256_set1_ps(*pj), vals, acc);
            }
            _mm256_storeu_ps(po.add(c), acc);
            c += 8;
        }
    }

    /// [`dot_f16_avx2`] with its two 8-lane sums held as the halves of one 16-lane
    /// register: the same products added in the same order, so the same bits (which keeps
    /// `matmul_f16_rows`, built on the AVX2 order, bit-identical to it), in half the
    /// instructions.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub unsafe fn dot_f16_avx512(x: &[f32], w: &[u16]) -> f32 {
        let n = x.len().min(w.len());
        let px = x.as_ptr();
        let pw = w.as_ptr();
        let mut acc = _mm512_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            let wv = _mm512_cvtph_ps(_mm256_loadu_si256(pw.add(i) as *const __m256i));
            acc = _mm512_fmadd_ps(_mm512_loadu_ps(px.add(i)), wv, acc);
            i += 16;
        }
        let low = _mm512_castps512_ps256(acc);
        let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(acc)));
        let mut sum = hsum(_mm256_add_ps(low, high));
        while i < n {
            sum += *px.add(i) * super::f16_to_f32(*pw.add(i));
            i += 1;
        }
        sum
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
pub(crate) mod tests {
    use super::*;

    #[test]
    fn converting_a_slice_to_f16_gives_the_scalar_bits() {
        // Normal, subnormal, overflowing, underflowing, halfway and special values.
        let mut values: Vec<f32> = noise(1000, 8).iter().map(|v| v * 70_000.0).collect();
        values.extend(noise(1000, 9).iter().map(|v| v * 1e-4));
        values.extend([
            0.0,
            -0.0,
            65504.0,
            65520.0,
            1e9,
            -1e9,
            6e-8,
            3e-8,
            2.9e-8,
            1e-12,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE,
            1.0 + 1.0 / 2048.0,
            1.0 + 3.0 / 2048.0,
            2049.0,
            2051.0,
        ]);
        values.push(f32::NAN);
        let mut out = vec![0u16; values.len()];
        f32_to_f16_slice(&values, &mut out);
        for (v, h) in values.iter().zip(&out) {
            if v.is_nan() {
                assert!(f16_to_f32(*h).is_nan());
            } else {
                assert_eq!(*h, f32_to_f16(*v), "{v}");
            }
        }
    }

    #[test]
    fn the_avx512_f16_dot_product_gives_the_avx2_bits() {
        if SimdPath::detected() < SimdPath::Avx512 {
            eprintln!("no AVX-512 on this CPU: nothing to compare");
            return;
        }
        for n in [384usize, 1536, 64, 100, 7] {
            let x = noise(n, 11);
            let w: Vec<u16> = noise(n, 12).iter().map(|v| f32_to_f16(*v)).collect();
            let a = dot_f16(SimdPath::Avx512, &x, &w);
            let b = dot_f16(SimdPath::Avx2, &x, &w);
            assert_eq!(a.to_bits(), b.to_bits(), "n {n}: {a} vs {b}");
        }
    }

    #[test]
    fn weighted_sum_f16_matches_the_plain_sum() {
        for width in [64usize, 40, 8, 5] {
            let rows = 37;
            let p = noise(rows, 3);
            let v: Vec<u16> = noise(rows * width, 4)
                .iter()
                .map(|x| f32_to_f16(*x))
                .collect();
            let mut out = vec![7.0f32; width];
            weighted_sum_f16(&p, &v, &mut out);
            for (c, o) in out.iter().enumerate() {
                let expected: f64 = (0..rows)
                    .map(|j| f64::from(p[j]) * f64::from(f16_to_f32(v[j * width + c])))
                    .sum();
                assert!(
                    (f64::from(*o) - expected).abs() < 1e-5,
                    "width {width}, lane {c}: {o} vs {expected}"
                );
            }
        }
    }

    /// Deterministic pseudo-random values in [-1, 1) (no test dependency needed); the
    /// `quant` tests use them too.
    pub(crate) fn noise(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn assert_close(what: &str, path: SimdPath, got: &[f32], want: &[f32], tol: f32) {
        assert_eq!(got.len(), want.len(), "{what} on {path:?}: length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= tol * (1.0 + w.abs()),
                "{what} on {path:?}: [{i}] {g} vs scalar {w}"
            );
        }
    }

    #[test]
    fn exp_sum_is_the_sum_of_shifted_exponentials() {
        // Vocabulary-sized rows, and lengths around the eight lanes.
        for (n, seed) in [(51_864, 1), (0, 2), (1, 3), (7, 4), (8, 5), (9, 6), (17, 7)] {
            let row: Vec<f32> = noise(n, seed).iter().map(|v| v * 20.0).collect();
            let shift = max_value(&row).max(0.0);
            let naive: f64 = row.iter().map(|&v| f64::from(v - shift).exp()).sum();
            let got = f64::from(exp_sum(&row, shift));
            assert!(
                (got - naive).abs() <= 1e-5 * naive.max(1e-30),
                "n={n}: {got} vs {naive}"
            );
        }
        // Suppressed tokens (−∞) add nothing that counts (fast_exp floors at e^−87).
        assert!(exp_sum(&[f32::NEG_INFINITY; 9], 0.0) < 1e-35);
    }

    #[test]
    fn simd_setting_only_lowers_the_path() {
        use SimdPath::*;
        assert_eq!(resolve_path(Avx512, None).0, Avx512);
        assert_eq!(resolve_path(Avx512, Some("avx2")).0, Avx2);
        assert_eq!(resolve_path(Avx512, Some(" Scalar ")).0, Scalar);
        assert_eq!(
            resolve_path(Avx2, Some("avx512")),
            (Avx2, resolve_path(Avx2, Some("avx512")).1)
        );
        assert!(resolve_path(Avx2, Some("avx512")).1.is_some());
        assert_eq!(resolve_path(Scalar, Some("avx2")).0, Scalar);
        let (p, note) = resolve_path(Avx2, Some("sse9"));
        assert_eq!(p, Avx2);
        assert!(note.is_some());
        assert_eq!(resolve_path(Avx2, Some("")).0, Avx2);
        assert!(SimdPath::available().contains(&simd_path()));
        assert!(cpu_summary().contains("kernels: "));
    }

    /// Every path this CPU can run gives scalar's results (within float tolerance: the
    /// paths sum in different orders) for every kernel, on odd sizes that exercise the
    /// vector tails.
    #[test]
    fn every_path_matches_scalar() {
        let s = SimdPath::Scalar;
        for path in SimdPath::available() {
            for (m, k, n) in [(1, 37, 5), (7, 45, 33), (67, 384, 129), (130, 240, 70)] {
                let x = noise(m * k, 1);
                let w = noise(n * k, 2);
                let b = noise(n, 3);
                let mut want = vec![0.0; m * n];
                let mut got = vec![0.0; m * n];
                linear_on(s, &x, m, k, &w, n, Some(&b), &mut want);
                linear_on(path, &x, m, k, &w, n, Some(&b), &mut got);
                assert_close("linear", path, &got, &want, 1e-4);
                // A strided product with alpha, as the encoder's attention runs it.
                let (mut want, mut got) = (vec![0.0; m * n], vec![0.0; m * n]);
                gemm_strided_on(s, m, k, n, 0.125, &x, k, 1, &w, 1, k, &mut want, n);
                gemm_strided_on(path, m, k, n, 0.125, &x, k, 1, &w, 1, k, &mut got, n);
                assert_close("gemm_strided", path, &got, &want, 1e-4);
                // Half-precision weights, one input at a time and batched.
                let w16: Vec<u16> = w.iter().map(|v| f32_to_f16(*v)).collect();
                let (mut want, mut got) = (vec![0.0; m * n], vec![0.0; m * n]);
                matmul_f16_rows_on(s, &x, m, &w16, n, Some(&b), &mut want);
                matmul_f16_rows_on(path, &x, m, &w16, n, Some(&b), &mut got);
                assert_close("matmul_f16_rows", path, &got, &want, 1e-4);
                let (mut want, mut got) = (vec![0.0; n], vec![0.0; n]);
                matvec_f16_on(s, &x[..k], &w16, n, Some(&b), &mut want);
                matvec_f16_on(path, &x[..k], &w16, n, Some(&b), &mut got);
                assert_close("matvec_f16", path, &got, &want, 1e-4);
                let d = dot_on(path, &x[..k], &w[..k]);
                let e = dot_on(s, &x[..k], &w[..k]);
                assert_close("dot", path, &[d], &[e], 1e-4);
            }
            let x: Vec<f32> = noise(3 * 77, 4).iter().map(|v| v * 6.0).collect();
            let g = noise(77, 5);
            let b = noise(77, 6);
            let (mut want, mut got) = (vec![0.0; 3 * 77], vec![0.0; 3 * 77]);
            layer_norm_on(s, &x, 77, &g, &b, &mut want);
            layer_norm_on(path, &x, 77, &g, &b, &mut got);
            assert_close("layer_norm", path, &got, &want, 1e-5);
            let (mut want, mut got) = (x.clone(), x.clone());
            gelu_on(s, &mut want);
            gelu_on(path, &mut got);
            assert_close("gelu", path, &got, &want, 1e-6);
            let (mut want, mut got) = (x.clone(), x.clone());
            want[5] = f32::NEG_INFINITY;
            got[5] = f32::NEG_INFINITY;
            softmax_on(s, &mut want);
            softmax_on(path, &mut got);
            assert_close("softmax", path, &got, &want, 1e-6);
            assert_eq!(max_value_on(path, &x), max_value_on(s, &x));
        }
    }

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

//! The encoder's self-attention products for one head: query · key scores and
//! probabilities · values, on keys and values laid out once per layer for them.
//!
//! With head dimension 64 a general GEMM fits these products poorly: called per block of
//! queries, it re-packs the head's 1,500 keys or values every time for a reduction only
//! 64 deep. Here each head's keys and values are packed once per layer (`pack_keys`,
//! `pack_values`) and the micro-kernels keep six query rows × sixteen outputs in
//! registers (two 8-lane registers a row on AVX2, one 16-lane on AVX-512, with the same
//! sums in the same order on both). `examples/kernel_bench.rs` times both ways.

use crate::kernels::SimdPath;

/// Keys per panel of packed keys (two 8-lane registers).
pub const KEY_PANEL: usize = 16;

/// Query rows one micro-kernel call keeps in registers.
const ROWS: usize = 6;

/// Length of [`pack_keys`]' output for `t` keys of `head_dim`.
pub fn packed_keys_len(t: usize, head_dim: usize) -> usize {
    t.div_ceil(KEY_PANEL) * head_dim * KEY_PANEL
}

/// Lays out `t` keys (key `j` at `keys[j·row_stride..][..head_dim]`) as panels of
/// [`KEY_PANEL`] keys, each `[head_dim][KEY_PANEL]`, zero past the last key; `out` must
/// hold [`packed_keys_len`] values.
pub fn pack_keys(keys: &[f32], row_stride: usize, t: usize, head_dim: usize, out: &mut [f32]) {
    let out = &mut out[..packed_keys_len(t, head_dim)];
    for (panel_no, panel) in out.chunks_exact_mut(head_dim * KEY_PANEL).enumerate() {
        for lane in 0..KEY_PANEL {
            let j = panel_no * KEY_PANEL + lane;
            if j < t {
                let key = &keys[j * row_stride..j * row_stride + head_dim];
                for (c, &value) in key.iter().enumerate() {
                    panel[c * KEY_PANEL + lane] = value;
                }
            } else {
                for c in 0..head_dim {
                    panel[c * KEY_PANEL + lane] = 0.0;
                }
            }
        }
    }
}

/// Columns per panel of packed values (two 8-lane registers).
pub const VALUE_PANEL: usize = 16;

/// Length of [`pack_values`]' output for `t` values of `head_dim`.
pub fn packed_values_len(t: usize, head_dim: usize) -> usize {
    head_dim.div_ceil(VALUE_PANEL) * t * VALUE_PANEL
}

/// Lays out `t` values (value `j` at `values[j·row_stride..][..head_dim]`) as panels of
/// [`VALUE_PANEL`] columns, each `[t][VALUE_PANEL]`, zero past the last column; `out`
/// must hold [`packed_values_len`] values.
pub fn pack_values(values: &[f32], row_stride: usize, t: usize, head_dim: usize, out: &mut [f32]) {
    let out = &mut out[..packed_values_len(t, head_dim)];
    for (panel_no, panel) in out.chunks_exact_mut(t * VALUE_PANEL).enumerate() {
        let first = panel_no * VALUE_PANEL;
        let width = VALUE_PANEL.min(head_dim - first);
        for (j, dst) in panel.chunks_exact_mut(VALUE_PANEL).enumerate() {
            let src = &values[j * row_stride + first..j * row_stride + first + width];
            dst[..width].copy_from_slice(src);
            dst[width..].iter_mut().for_each(|v| *v = 0.0);
        }
    }
}

/// `scores[r][j] = scale · (q_r · k_j)` for `rows` queries (query `r` at
/// `queries[r·query_stride..][..head_dim]`) against `t` keys packed by [`pack_keys`];
/// `scores` is `[rows][t]`.
#[allow(clippy::too_many_arguments)]
pub fn scores(
    path: SimdPath,
    queries: &[f32],
    query_stride: usize,
    rows: usize,
    packed_keys: &[f32],
    t: usize,
    head_dim: usize,
    scale: f32,
    scores: &mut [f32],
) {
    if rows == 0
        || t == 0
        || queries.len() < (rows - 1) * query_stride + head_dim
        || packed_keys.len() < packed_keys_len(t, head_dim)
        || scores.len() < rows * t
    {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if path >= SimdPath::Avx2 {
        let kernel = if path == SimdPath::Avx512 {
            simd::scores_avx512
        } else {
            simd::scores_avx2
        };
        // SAFETY: the CPU has the path's features (the path is only chosen when it
        // does), and the lengths were checked above.
        unsafe {
            kernel(
                queries.as_ptr(),
                query_stride,
                rows,
                packed_keys.as_ptr(),
                t,
                head_dim,
                scale,
                scores.as_mut_ptr(),
            )
        };
        return;
    }
    let _ = path;
    for r in 0..rows {
        let query = &queries[r * query_stride..r * query_stride + head_dim];
        for j in 0..t {
            let panel = &packed_keys[(j / KEY_PANEL) * head_dim * KEY_PANEL..];
            let lane = j % KEY_PANEL;
            let mut sum = 0.0f32;
            for (c, &q) in query.iter().enumerate() {
                sum += q * panel[c * KEY_PANEL + lane];
            }
            scores[r * t + j] = sum * scale;
        }
    }
}

/// `out[r·out_stride + c] = Σ_j probs[r][j] · v_j[c]` for `rows` rows of probabilities
/// (`[rows][t]`) and `t` values packed by [`pack_values`].
#[allow(clippy::too_many_arguments)]
pub fn weighted_values(
    path: SimdPath,
    probs: &[f32],
    rows: usize,
    t: usize,
    packed_values: &[f32],
    head_dim: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    if rows == 0
        || t == 0
        || probs.len() < rows * t
        || packed_values.len() < packed_values_len(t, head_dim)
        || out.len() < (rows - 1) * out_stride + head_dim
    {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if path >= SimdPath::Avx2 {
        let kernel = if path == SimdPath::Avx512 {
            simd::weighted_values_avx512
        } else {
            simd::weighted_values_avx2
        };
        // SAFETY: as in `scores`.
        unsafe {
            kernel(
                probs.as_ptr(),
                rows,
                t,
                packed_values.as_ptr(),
                head_dim,
                out.as_mut_ptr(),
                out_stride,
            )
        };
        return;
    }
    let _ = path;
    for r in 0..rows {
        let row = &mut out[r * out_stride..r * out_stride + head_dim];
        for (c, o) in row.iter_mut().enumerate() {
            let panel = &packed_values[(c / VALUE_PANEL) * t * VALUE_PANEL..];
            let lane = c % VALUE_PANEL;
            let mut sum = 0.0f32;
            for j in 0..t {
                sum += probs[r * t + j] * panel[j * VALUE_PANEL + lane];
            }
            *o = sum;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{KEY_PANEL, ROWS, VALUE_PANEL};
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX2 and FMA; the operands hold what their shapes say (checked by the caller).
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn scores_avx2(
        queries: *const f32,
        query_stride: usize,
        rows: usize,
        packed: *const f32,
        t: usize,
        head_dim: usize,
        scale: f32,
        out: *mut f32,
    ) {
        let mut r = 0;
        while r < rows {
            let q = queries.add(r * query_stride);
            let o = out.add(r * t);
            match rows - r {
                1 => score_rows::<1>(q, query_stride, packed, t, head_dim, scale, o),
                2 => score_rows::<2>(q, query_stride, packed, t, head_dim, scale, o),
                3 => score_rows::<3>(q, query_stride, packed, t, head_dim, scale, o),
                4 => score_rows::<4>(q, query_stride, packed, t, head_dim, scale, o),
                5 => score_rows::<5>(q, query_stride, packed, t, head_dim, scale, o),
                _ => score_rows::<ROWS>(q, query_stride, packed, t, head_dim, scale, o),
            }
            r += ROWS;
        }
    }

    /// `R` query rows against every key panel.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn score_rows<const R: usize>(
        queries: *const f32,
        query_stride: usize,
        packed: *const f32,
        t: usize,
        head_dim: usize,
        scale: f32,
        out: *mut f32,
    ) {
        let vscale = _mm256_set1_ps(scale);
        for panel_no in 0..t.div_ceil(KEY_PANEL) {
            let panel = packed.add(panel_no * head_dim * KEY_PANEL);
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            for c in 0..head_dim {
                let k0 = _mm256_loadu_ps(panel.add(c * KEY_PANEL));
                let k1 = _mm256_loadu_ps(panel.add(c * KEY_PANEL + 8));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let q = _mm256_broadcast_ss(&*queries.add(r * query_stride + c));
                    acc[0] = _mm256_fmadd_ps(q, k0, acc[0]);
                    acc[1] = _mm256_fmadd_ps(q, k1, acc[1]);
                }
            }
            let j = panel_no * KEY_PANEL;
            for (r, acc) in acc.iter().enumerate() {
                let dst = out.add(r * t + j);
                let a0 = _mm256_mul_ps(acc[0], vscale);
                let a1 = _mm256_mul_ps(acc[1], vscale);
                if j + KEY_PANEL <= t {
                    _mm256_storeu_ps(dst, a0);
                    _mm256_storeu_ps(dst.add(8), a1);
                } else {
                    let mut tail = [0.0f32; KEY_PANEL];
                    _mm256_storeu_ps(tail.as_mut_ptr(), a0);
                    _mm256_storeu_ps(tail.as_mut_ptr().add(8), a1);
                    std::ptr::copy_nonoverlapping(tail.as_ptr(), dst, t - j);
                }
            }
        }
    }

    /// # Safety
    /// AVX2 and FMA; the operands hold what their shapes say (checked by the caller).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn weighted_values_avx2(
        probs: *const f32,
        rows: usize,
        t: usize,
        packed: *const f32,
        head_dim: usize,
        out: *mut f32,
        out_stride: usize,
    ) {
        let mut r = 0;
        while r < rows {
            let p = probs.add(r * t);
            let o = out.add(r * out_stride);
            match rows - r {
                1 => value_rows::<1>(p, t, packed, head_dim, o, out_stride),
                2 => value_rows::<2>(p, t, packed, head_dim, o, out_stride),
                3 => value_rows::<3>(p, t, packed, head_dim, o, out_stride),
                4 => value_rows::<4>(p, t, packed, head_dim, o, out_stride),
                5 => value_rows::<5>(p, t, packed, head_dim, o, out_stride),
                _ => value_rows::<ROWS>(p, t, packed, head_dim, o, out_stride),
            }
            r += ROWS;
        }
    }

    /// `R` rows of probabilities times every value panel.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn value_rows<const R: usize>(
        probs: *const f32,
        t: usize,
        packed: *const f32,
        head_dim: usize,
        out: *mut f32,
        out_stride: usize,
    ) {
        for panel_no in 0..head_dim.div_ceil(VALUE_PANEL) {
            let panel = packed.add(panel_no * t * VALUE_PANEL);
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            for j in 0..t {
                let v0 = _mm256_loadu_ps(panel.add(j * VALUE_PANEL));
                let v1 = _mm256_loadu_ps(panel.add(j * VALUE_PANEL + 8));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let p = _mm256_broadcast_ss(&*probs.add(r * t + j));
                    acc[0] = _mm256_fmadd_ps(p, v0, acc[0]);
                    acc[1] = _mm256_fmadd_ps(p, v1, acc[1]);
                }
            }
            let col = panel_no * VALUE_PANEL;
            let width = VALUE_PANEL.min(head_dim - col);
            for (r, acc) in acc.iter().enumerate() {
                let dst = out.add(r * out_stride + col);
                if width == VALUE_PANEL {
                    _mm256_storeu_ps(dst, acc[0]);
                    _mm256_storeu_ps(dst.add(8), acc[1]);
                } else {
                    let mut tail = [0.0f32; VALUE_PANEL];
                    _mm256_storeu_ps(tail.as_mut_ptr(), acc[0]);
                    _mm256_storeu_ps(tail.as_mut_ptr().add(8), acc[1]);
                    std::ptr::copy_nonoverlapping(tail.as_ptr(), dst, width);
                }
            }
        }
    }

    /// [`scores_avx2`] sixteen lanes wide: two key panels per pass, the same sums in the
    /// same order, so the same bits.
    ///
    /// # Safety
    /// AVX-512F; the operands hold what their shapes say (checked by the caller).
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn scores_avx512(
        queries: *const f32,
        query_stride: usize,
        rows: usize,
        packed: *const f32,
        t: usize,
        head_dim: usize,
        scale: f32,
        out: *mut f32,
    ) {
        let mut r = 0;
        while r < rows {
            let q = queries.add(r * query_stride);
            let o = out.add(r * t);
            match rows - r {
                1 => score_rows_512::<1>(q, query_stride, packed, t, head_dim, scale, o),
                2 => score_rows_512::<2>(q, query_stride, packed, t, head_dim, scale, o),
                3 => score_rows_512::<3>(q, query_stride, packed, t, head_dim, scale, o),
                4 => score_rows_512::<4>(q, query_stride, packed, t, head_dim, scale, o),
                5 => score_rows_512::<5>(q, query_stride, packed, t, head_dim, scale, o),
                _ => score_rows_512::<ROWS>(q, query_stride, packed, t, head_dim, scale, o),
            }
            r += ROWS;
        }
    }

    /// The lanes of a 16-lane register that hold the first `n` (≤ 16) values.
    #[inline]
    fn first_lanes(n: usize) -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            (1u16 << n) - 1
        }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn score_rows_512<const R: usize>(
        queries: *const f32,
        query_stride: usize,
        packed: *const f32,
        t: usize,
        head_dim: usize,
        scale: f32,
        out: *mut f32,
    ) {
        let vscale = _mm512_set1_ps(scale);
        let panels = t.div_ceil(KEY_PANEL);
        let mut first = 0;
        while first < panels {
            // Two panels at a time; a last lone panel is loaded as both (stored once).
            let pair = (panels - first).min(2);
            let a = packed.add(first * head_dim * KEY_PANEL);
            let b = packed.add((first + pair - 1) * head_dim * KEY_PANEL);
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            for c in 0..head_dim {
                let k0 = _mm512_loadu_ps(a.add(c * KEY_PANEL));
                let k1 = _mm512_loadu_ps(b.add(c * KEY_PANEL));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let q = _mm512_set1_ps(*queries.add(r * query_stride + c));
                    acc[0] = _mm512_fmadd_ps(q, k0, acc[0]);
                    acc[1] = _mm512_fmadd_ps(q, k1, acc[1]);
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                for (half, sum) in acc.iter().enumerate().take(pair) {
                    let j = (first + half) * KEY_PANEL;
                    _mm512_mask_storeu_ps(
                        out.add(r * t + j),
                        first_lanes(t - j),
                        _mm512_mul_ps(*sum, vscale),
                    );
                }
            }
            first += pair;
        }
    }

    /// [`weighted_values_avx2`] sixteen lanes wide: two value panels per pass, the same
    /// sums in the same order, so the same bits.
    ///
    /// # Safety
    /// AVX-512F; the operands hold what their shapes say (checked by the caller).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn weighted_values_avx512(
        probs: *const f32,
        rows: usize,
        t: usize,
        packed: *const f32,
        head_dim: usize,
        out: *mut f32,
        out_stride: usize,
    ) {
        let mut r = 0;
        while r < rows {
            let p = probs.add(r * t);
            let o = out.add(r * out_stride);
            match rows - r {
                1 => value_rows_512::<1>(p, t, packed, head_dim, o, out_stride),
                2 => value_rows_512::<2>(p, t, packed, head_dim, o, out_stride),
                3 => value_rows_512::<3>(p, t, packed, head_dim, o, out_stride),
                4 => value_rows_512::<4>(p, t, packed, head_dim, o, out_stride),
                5 => value_rows_512::<5>(p, t, packed, head_dim, o, out_stride),
                _ => value_rows_512::<ROWS>(p, t, packed, head_dim, o, out_stride),
            }
            r += ROWS;
        }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn value_rows_512<const R: usize>(
        probs: *const f32,
        t: usize,
        packed: *const f32,
        head_dim: usize,
        out: *mut f32,
        out_stride: usize,
    ) {
        let panels = head_dim.div_ceil(VALUE_PANEL);
        let mut first = 0;
        while first < panels {
            let pair = (panels - first).min(2);
            let a = packed.add(first * t * VALUE_PANEL);
            let b = packed.add((first + pair - 1) * t * VALUE_PANEL);
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            for j in 0..t {
                let v0 = _mm512_loadu_ps(a.add(j * VALUE_PANEL));
                let v1 = _mm512_loadu_ps(b.add(j * VALUE_PANEL));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let p = _mm512_set1_ps(*probs.add(r * t + j));
                    acc[0] = _mm512_fmadd_ps(p, v0, acc[0]);
                    acc[1] = _mm512_fmadd_ps(p, v1, acc[1]);
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                for (half, sum) in acc.iter().enumerate().take(pair) {
                    let col = (first + half) * VALUE_PANEL;
                    _mm512_mask_storeu_ps(
                        out.add(r * out_stride + col),
                        first_lanes(head_dim - col),
                        *sum,
                    );
                }
            }
            first += pair;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::tests::noise;

    /// Shapes that leave partial panels and partial row groups: keys not a multiple of
    /// 16, rows not a multiple of 6, head dimensions whole, odd and below one panel.
    const SHAPES: [(usize, usize, usize); 5] = [
        (13, 37, 64),
        (6, 16, 64),
        (7, 1, 24),
        (1, 33, 8),
        (20, 50, 40),
    ];

    /// The scores and the weighted values of one head on `path`, from a `[t][3·hd]`
    /// buffer of queries, keys and values as the encoder lays them out.
    fn attend(path: SimdPath, rows: usize, t: usize, hd: usize) -> (Vec<f32>, Vec<f32>) {
        let stride = 3 * hd;
        let qkv = noise(t.max(rows) * stride, (rows * 31 + t * 7 + hd) as u32);
        let mut keys = vec![f32::NAN; packed_keys_len(t, hd)];
        pack_keys(&qkv[hd..], stride, t, hd, &mut keys);
        let mut values = vec![f32::NAN; packed_values_len(t, hd)];
        pack_values(&qkv[2 * hd..], stride, t, hd, &mut values);
        let mut s = vec![f32::NAN; rows * t];
        scores(path, &qkv, stride, rows, &keys, t, hd, 0.125, &mut s);
        // Out rows wider than a head, as the encoder's are; the gaps must stay untouched.
        let out_stride = hd + 5;
        let mut out = vec![-7.0f32; rows * out_stride];
        weighted_values(path, &s, rows, t, &values, hd, &mut out, out_stride);
        (s, out)
    }

    #[test]
    fn attention_products_match_the_definition_on_every_path() {
        for path in SimdPath::available() {
            for (rows, t, hd) in SHAPES {
                let stride = 3 * hd;
                let qkv = noise(t.max(rows) * stride, (rows * 31 + t * 7 + hd) as u32);
                let (s, out) = attend(path, rows, t, hd);
                let out_stride = hd + 5;
                for r in 0..rows {
                    for j in 0..t {
                        let expected: f64 = (0..hd)
                            .map(|c| qkv[r * stride + c] as f64 * qkv[j * stride + hd + c] as f64)
                            .sum::<f64>()
                            * 0.125;
                        let got = s[r * t + j] as f64;
                        assert!(
                            (got - expected).abs() < 1e-5,
                            "{path:?} {rows}x{t}x{hd}: score ({r},{j}) {got} vs {expected}"
                        );
                    }
                    for c in 0..out_stride {
                        let got = out[r * out_stride + c] as f64;
                        if c >= hd {
                            assert_eq!(got, -7.0, "{path:?}: column {c} past the head written");
                            continue;
                        }
                        let expected: f64 = (0..t)
                            .map(|j| s[r * t + j] as f64 * qkv[j * stride + 2 * hd + c] as f64)
                            .sum();
                        assert!(
                            (got - expected).abs() < 1e-5,
                            "{path:?} {rows}x{t}x{hd}: value ({r},{c}) {got} vs {expected}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_avx512_attention_kernels_give_the_avx2_bits() {
        let paths = SimdPath::available();
        if !paths.contains(&SimdPath::Avx512) {
            eprintln!(
                "skipped: this CPU has no AVX-512 (the AVX2 kernels are the only vector path)"
            );
            return;
        }
        for (rows, t, hd) in SHAPES {
            let (s2, out2) = attend(SimdPath::Avx2, rows, t, hd);
            let (s5, out5) = attend(SimdPath::Avx512, rows, t, hd);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&s2), bits(&s5), "scores {rows}x{t}x{hd}");
            assert_eq!(bits(&out2), bits(&out5), "values {rows}x{t}x{hd}");
        }
    }
}

//! Matrix products against a right-hand side laid out once in panels of 16: the
//! encoder's linear layers (weights packed when the model loads) and its self-attention
//! (each head's keys and values packed once per layer).
//!
//! A general GEMM re-packs its operands on every call. For the attention, called per
//! block of queries, that meant the head's 1,500 keys or values every time, for a
//! reduction only 64 deep; for the linear layers it meant the constant weights on every
//! window. Here the right-hand side is packed once, and the micro-kernels keep six rows ×
//! sixteen outputs in registers: two 8-lane registers a row on AVX2, one 16-lane on
//! AVX-512, with the same sums in the same order on both, so the same bits.
//! `examples/kernel_bench.rs` times these against the GEMM.

use crate::kernels::SimdPath;
use rayon::prelude::*;

/// Rows (or columns) per panel: two 8-lane registers, or one 16-lane.
pub const PANEL: usize = 16;

/// Left-hand rows one micro-kernel call keeps in registers.
const ROWS: usize = 6;

/// Length of [`pack_row_panels`]' output for `n` rows of length `k`.
pub fn row_panels_len(n: usize, k: usize) -> usize {
    n.div_ceil(PANEL) * k * PANEL
}

/// Lays out `n` rows of length `k` (row `j` at `src[j·row_stride..][..k]`; a linear
/// layer's weight rows, or attention keys) as panels of [`PANEL`] rows, each
/// `[k][PANEL]` (element `c` of the panel's rows side by side), zero past the last row;
/// `out` must hold [`row_panels_len`] values.
pub fn pack_row_panels(src: &[f32], row_stride: usize, n: usize, k: usize, out: &mut [f32]) {
    if n == 0 || k == 0 {
        return; // nothing to lay out (and no zero-length chunks to split by)
    }
    let out = &mut out[..row_panels_len(n, k)];
    for (panel_no, panel) in out.chunks_exact_mut(k * PANEL).enumerate() {
        for lane in 0..PANEL {
            let j = panel_no * PANEL + lane;
            if j < n {
                let row = &src[j * row_stride..j * row_stride + k];
                for (c, &value) in row.iter().enumerate() {
                    panel[c * PANEL + lane] = value;
                }
            } else {
                for c in 0..k {
                    panel[c * PANEL + lane] = 0.0;
                }
            }
        }
    }
}

/// Length of [`pack_column_panels`]' output for `t` rows of `width`.
pub fn column_panels_len(t: usize, width: usize) -> usize {
    width.div_ceil(PANEL) * t * PANEL
}

/// Lays out `t` rows of `width` (row `j` at `src[j·row_stride..][..width]`; attention
/// values) as panels of [`PANEL`] columns, each `[t][PANEL]`, zero past the last column;
/// `out` must hold [`column_panels_len`] values.
pub fn pack_column_panels(src: &[f32], row_stride: usize, t: usize, width: usize, out: &mut [f32]) {
    if t == 0 || width == 0 {
        return; // nothing to lay out (and no zero-length chunks to split by)
    }
    let out = &mut out[..column_panels_len(t, width)];
    for (panel_no, panel) in out.chunks_exact_mut(t * PANEL).enumerate() {
        let first = panel_no * PANEL;
        let used = PANEL.min(width - first);
        for (j, dst) in panel.chunks_exact_mut(PANEL).enumerate() {
            dst[..used]
                .copy_from_slice(&src[j * row_stride + first..j * row_stride + first + used]);
            dst[used..].iter_mut().for_each(|v| *v = 0.0);
        }
    }
}

/// `out[r·out_stride + j] = scale · (x_r · b_j) + bias[j]` for `rows` left-hand rows (row
/// `r` at `x[r·x_stride..][..k]`) and `n` right-hand rows packed by [`pack_row_panels`]:
/// attention scores (`b` the keys), or a linear layer (`b` its weight rows).
#[allow(clippy::too_many_arguments)]
pub fn dot_rows(
    path: SimdPath,
    x: &[f32],
    x_stride: usize,
    rows: usize,
    panels: &[f32],
    n: usize,
    k: usize,
    scale: f32,
    bias: Option<&[f32]>,
    out: &mut [f32],
    out_stride: usize,
) {
    if rows == 0
        || n == 0
        || x.len() < (rows - 1) * x_stride + k
        || panels.len() < row_panels_len(n, k)
        || bias.is_some_and(|b| b.len() < n)
        || out.len() < (rows - 1) * out_stride + n
    {
        return;
    }
    let shape = Shape {
        x_stride,
        n,
        k,
        scale,
        bias: bias.map(|b| b.as_ptr()),
        out_stride,
    };
    #[cfg(target_arch = "x86_64")]
    if path >= SimdPath::Avx2 {
        let kernel = if path == SimdPath::Avx512 {
            simd::dot_rows_avx512
        } else {
            simd::dot_rows_avx2
        };
        // SAFETY: the CPU has the path's features (the path is only chosen when it
        // does), and the lengths were checked above.
        unsafe { kernel(x.as_ptr(), rows, panels.as_ptr(), &shape, out.as_mut_ptr()) };
        return;
    }
    let _ = path;
    // Sixteen independent lanes, which the compiler vectorises on the baseline target.
    for r in 0..rows {
        let xr = &x[r * x_stride..r * x_stride + k];
        for panel_no in 0..n.div_ceil(PANEL) {
            // By range, not `chunks_exact`: a zero depth gives empty panels, not a panic.
            let panel = &panels[panel_no * k * PANEL..(panel_no + 1) * k * PANEL];
            let mut acc = [0.0f32; PANEL];
            for (&xc, b) in xr.iter().zip(panel.chunks_exact(PANEL)) {
                for (a, &bv) in acc.iter_mut().zip(b) {
                    *a += xc * bv;
                }
            }
            let first = panel_no * PANEL;
            for (lane, a) in acc.iter().enumerate().take(PANEL.min(n - first)) {
                let j = first + lane;
                out[r * out_stride + j] = a * scale + bias.map_or(0.0, |b| b[j]);
            }
        }
    }
}

/// What [`linear`] does with a block of its outputs while they are still in the core's
/// cache: the encoder follows its feed-forward and convolution products with a GELU, and
/// adds its attention and feed-forward outputs into the residual stream; done per block,
/// neither is another pass over megabytes that have left the cache. Every output gets the
/// same arithmetic as a separate pass would give it, so the same bits.
pub enum Epilogue<'a> {
    /// The products as they are.
    Store,
    /// GELU of every product ([`crate::kernels::gelu_on`]).
    Gelu,
    /// The products added into this `[m, n]` residual (`out` is then only scratch).
    AddTo(&'a mut [f32]),
}

impl Epilogue<'_> {
    /// The epilogue as a pass of its own over finished outputs `out` (a residual as long
    /// as `out`, or longer).
    pub fn apply(self, out: &mut [f32]) {
        match self {
            Epilogue::Store => {}
            Epilogue::Gelu => crate::kernels::gelu_par(out),
            Epilogue::AddTo(residual) => residual.iter_mut().zip(&*out).for_each(|(r, p)| *r += p),
        }
    }
}

/// `out[m, n] = x[m, k] · w[n, k]^T (+ bias[n])` with `w` packed by [`pack_row_panels`],
/// then `epilogue`: a linear layer over many rows. Blocks of rows run in parallel on the
/// current rayon pool; each block takes two panels (32 outputs) at a time over all its
/// rows, so they stay in the core's cache while they are used, and the block's inputs too.
#[allow(clippy::too_many_arguments)]
pub fn linear(
    path: SimdPath,
    x: &[f32],
    m: usize,
    k: usize,
    w_panels: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
    epilogue: Epilogue<'_>,
) {
    // A multiple of the kernels' six rows: 48 rows of 1,536 inputs are 288 KB.
    const BLOCK_ROWS: usize = 48;
    if m == 0
        || n == 0
        || x.len() < m * k
        || w_panels.len() < row_panels_len(n, k)
        || bias.is_some_and(|b| b.len() < n)
        || out.len() < m * n
        || matches!(&epilogue, Epilogue::AddTo(residual) if residual.len() < m * n)
    {
        return;
    }
    // Two panels per call: the AVX-512 kernel covers both in one pass.
    let step = 2 * PANEL;
    let products = |block: usize, out_rows: &mut [f32]| {
        let rows = out_rows.len() / n;
        let inputs = &x[block * BLOCK_ROWS * k..];
        for first in (0..n).step_by(step) {
            dot_rows(
                path,
                inputs,
                k,
                rows,
                &w_panels[first * k..],
                step.min(n - first),
                k,
                1.0,
                bias.map(|b| &b[first..]),
                &mut out_rows[first..],
                n,
            );
        }
    };
    let out = &mut out[..m * n];
    match epilogue {
        Epilogue::AddTo(residual) => out
            .par_chunks_mut(BLOCK_ROWS * n)
            .zip(residual[..m * n].par_chunks_mut(BLOCK_ROWS * n))
            .enumerate()
            .for_each(|(block, (out_rows, residual_rows))| {
                products(block, out_rows);
                Epilogue::AddTo(residual_rows).apply(out_rows);
            }),
        Epilogue::Gelu => {
            out.par_chunks_mut(BLOCK_ROWS * n)
                .enumerate()
                .for_each(|(block, out_rows)| {
                    products(block, out_rows);
                    crate::kernels::gelu_on(path, out_rows);
                })
        }
        Epilogue::Store => out
            .par_chunks_mut(BLOCK_ROWS * n)
            .enumerate()
            .for_each(|(block, out_rows)| products(block, out_rows)),
    }
}

/// `out[r·out_stride + c] = Σ_j probs[r][j] · v_j[c]` for `rows` rows of weights
/// (`[rows][t]`, attention probabilities) and `t` rows of `width` packed by
/// [`pack_column_panels`] (attention values).
#[allow(clippy::too_many_arguments)]
pub fn weighted_rows(
    path: SimdPath,
    probs: &[f32],
    rows: usize,
    t: usize,
    panels: &[f32],
    width: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    if rows == 0
        || t == 0
        || probs.len() < rows * t
        || panels.len() < column_panels_len(t, width)
        || out.len() < (rows - 1) * out_stride + width
    {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if path >= SimdPath::Avx2 {
        let kernel = if path == SimdPath::Avx512 {
            simd::weighted_rows_avx512
        } else {
            simd::weighted_rows_avx2
        };
        // SAFETY: as in `dot_rows`.
        unsafe {
            kernel(
                probs.as_ptr(),
                rows,
                t,
                panels.as_ptr(),
                width,
                out.as_mut_ptr(),
                out_stride,
            )
        };
        return;
    }
    let _ = path;
    for r in 0..rows {
        let pr = &probs[r * t..(r + 1) * t];
        for (panel_no, panel) in panels
            .chunks_exact(t * PANEL)
            .take(width.div_ceil(PANEL))
            .enumerate()
        {
            let mut acc = [0.0f32; PANEL];
            for (&p, v) in pr.iter().zip(panel.chunks_exact(PANEL)) {
                for (a, &vv) in acc.iter_mut().zip(v) {
                    *a += p * vv;
                }
            }
            let first = panel_no * PANEL;
            let used = PANEL.min(width - first);
            out[r * out_stride + first..r * out_stride + first + used]
                .copy_from_slice(&acc[..used]);
        }
    }
}

/// The fixed arguments of one [`dot_rows`] call, passed to the kernels by reference.
struct Shape {
    x_stride: usize,
    n: usize,
    k: usize,
    scale: f32,
    bias: Option<*const f32>,
    out_stride: usize,
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{Shape, PANEL, ROWS};
    use std::arch::x86_64::*;

    /// Calls `$kernel::<R>` for each group of up to six rows, the group size known at
    /// compile time so the accumulators stay in registers.
    macro_rules! by_row_groups {
        ($rows:expr, |$r:ident, $group:ident| $call:expr) => {{
            let mut $r = 0;
            while $r < $rows {
                match $rows - $r {
                    1 => {
                        const $group: usize = 1;
                        $call
                    }
                    2 => {
                        const $group: usize = 2;
                        $call
                    }
                    3 => {
                        const $group: usize = 3;
                        $call
                    }
                    4 => {
                        const $group: usize = 4;
                        $call
                    }
                    5 => {
                        const $group: usize = 5;
                        $call
                    }
                    _ => {
                        const $group: usize = ROWS;
                        $call
                    }
                }
                $r += ROWS;
            }
        }};
    }

    /// # Safety
    /// AVX2 and FMA; the operands hold what their shapes say (checked by the caller).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_rows_avx2(
        x: *const f32,
        rows: usize,
        panels: *const f32,
        shape: &Shape,
        out: *mut f32,
    ) {
        by_row_groups!(rows, |r, G| dot_group_avx2::<G>(
            x.add(r * shape.x_stride),
            panels,
            shape,
            out.add(r * shape.out_stride)
        ));
    }

    /// `R` left-hand rows against every panel.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn dot_group_avx2<const R: usize>(
        x: *const f32,
        panels: *const f32,
        shape: &Shape,
        out: *mut f32,
    ) {
        let Shape { x_stride, n, k, .. } = *shape;
        let scale = _mm256_set1_ps(shape.scale);
        for panel_no in 0..n.div_ceil(PANEL) {
            let panel = panels.add(panel_no * k * PANEL);
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            for c in 0..k {
                let b0 = _mm256_loadu_ps(panel.add(c * PANEL));
                let b1 = _mm256_loadu_ps(panel.add(c * PANEL + 8));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let xv = _mm256_broadcast_ss(&*x.add(r * x_stride + c));
                    acc[0] = _mm256_fmadd_ps(xv, b0, acc[0]);
                    acc[1] = _mm256_fmadd_ps(xv, b1, acc[1]);
                }
            }
            let j = panel_no * PANEL;
            let used = PANEL.min(n - j);
            let mut bias = [_mm256_setzero_ps(); 2];
            if let Some(b) = shape.bias {
                let mut lanes = [0.0f32; PANEL];
                std::ptr::copy_nonoverlapping(b.add(j), lanes.as_mut_ptr(), used);
                bias = [
                    _mm256_loadu_ps(lanes.as_ptr()),
                    _mm256_loadu_ps(lanes.as_ptr().add(8)),
                ];
            }
            for (r, acc) in acc.iter().enumerate() {
                let dst = out.add(r * shape.out_stride + j);
                let sums = [
                    _mm256_fmadd_ps(acc[0], scale, bias[0]),
                    _mm256_fmadd_ps(acc[1], scale, bias[1]),
                ];
                store_panel_avx2(dst, sums, used);
            }
        }
    }

    /// Stores the first `used` (≤ 16) of a panel's sixteen outputs held in two registers.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn store_panel_avx2(dst: *mut f32, sums: [__m256; 2], used: usize) {
        if used == PANEL {
            _mm256_storeu_ps(dst, sums[0]);
            _mm256_storeu_ps(dst.add(8), sums[1]);
        } else {
            let mut tail = [0.0f32; PANEL];
            _mm256_storeu_ps(tail.as_mut_ptr(), sums[0]);
            _mm256_storeu_ps(tail.as_mut_ptr().add(8), sums[1]);
            std::ptr::copy_nonoverlapping(tail.as_ptr(), dst, used);
        }
    }

    /// # Safety
    /// AVX2 and FMA; the operands hold what their shapes say (checked by the caller).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn weighted_rows_avx2(
        probs: *const f32,
        rows: usize,
        t: usize,
        panels: *const f32,
        width: usize,
        out: *mut f32,
        out_stride: usize,
    ) {
        by_row_groups!(rows, |r, G| weighted_group_avx2::<G>(
            probs.add(r * t),
            t,
            panels,
            width,
            out.add(r * out_stride),
            out_stride
        ));
    }

    /// `R` rows of weights times every value panel.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn weighted_group_avx2<const R: usize>(
        probs: *const f32,
        t: usize,
        panels: *const f32,
        width: usize,
        out: *mut f32,
        out_stride: usize,
    ) {
        for panel_no in 0..width.div_ceil(PANEL) {
            let panel = panels.add(panel_no * t * PANEL);
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            for j in 0..t {
                let v0 = _mm256_loadu_ps(panel.add(j * PANEL));
                let v1 = _mm256_loadu_ps(panel.add(j * PANEL + 8));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let p = _mm256_broadcast_ss(&*probs.add(r * t + j));
                    acc[0] = _mm256_fmadd_ps(p, v0, acc[0]);
                    acc[1] = _mm256_fmadd_ps(p, v1, acc[1]);
                }
            }
            let col = panel_no * PANEL;
            let used = PANEL.min(width - col);
            for (r, acc) in acc.iter().enumerate() {
                let dst = out.add(r * out_stride + col);
                store_panel_avx2(dst, *acc, used);
            }
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

    /// [`dot_rows_avx2`] sixteen lanes wide, two panels per pass: the same sums in the
    /// same order, so the same bits.
    ///
    /// # Safety
    /// AVX-512F; the operands hold what their shapes say (checked by the caller).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dot_rows_avx512(
        x: *const f32,
        rows: usize,
        panels: *const f32,
        shape: &Shape,
        out: *mut f32,
    ) {
        by_row_groups!(rows, |r, G| dot_group_avx512::<G>(
            x.add(r * shape.x_stride),
            panels,
            shape,
            out.add(r * shape.out_stride)
        ));
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn dot_group_avx512<const R: usize>(
        x: *const f32,
        panels: *const f32,
        shape: &Shape,
        out: *mut f32,
    ) {
        let Shape { x_stride, n, k, .. } = *shape;
        let scale = _mm512_set1_ps(shape.scale);
        let count = n.div_ceil(PANEL);
        let mut first = 0;
        while first < count {
            // Two panels at a time; a last lone panel is loaded as both (stored once).
            let pair = (count - first).min(2);
            let a = panels.add(first * k * PANEL);
            let b = panels.add((first + pair - 1) * k * PANEL);
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            for c in 0..k {
                let b0 = _mm512_loadu_ps(a.add(c * PANEL));
                let b1 = _mm512_loadu_ps(b.add(c * PANEL));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let xv = _mm512_set1_ps(*x.add(r * x_stride + c));
                    acc[0] = _mm512_fmadd_ps(xv, b0, acc[0]);
                    acc[1] = _mm512_fmadd_ps(xv, b1, acc[1]);
                }
            }
            for half in 0..pair {
                let j = (first + half) * PANEL;
                let lanes = first_lanes(n - j);
                let bias = match shape.bias {
                    Some(b) => _mm512_maskz_loadu_ps(lanes, b.add(j)),
                    None => _mm512_setzero_ps(),
                };
                for (r, acc) in acc.iter().enumerate() {
                    _mm512_mask_storeu_ps(
                        out.add(r * shape.out_stride + j),
                        lanes,
                        _mm512_fmadd_ps(acc[half], scale, bias),
                    );
                }
            }
            first += pair;
        }
    }

    /// [`weighted_rows_avx2`] sixteen lanes wide, two panels per pass: the same sums in
    /// the same order, so the same bits.
    ///
    /// # Safety
    /// AVX-512F; the operands hold what their shapes say (checked by the caller).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn weighted_rows_avx512(
        probs: *const f32,
        rows: usize,
        t: usize,
        panels: *const f32,
        width: usize,
        out: *mut f32,
        out_stride: usize,
    ) {
        by_row_groups!(rows, |r, G| weighted_group_avx512::<G>(
            probs.add(r * t),
            t,
            panels,
            width,
            out.add(r * out_stride),
            out_stride
        ));
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn weighted_group_avx512<const R: usize>(
        probs: *const f32,
        t: usize,
        panels: *const f32,
        width: usize,
        out: *mut f32,
        out_stride: usize,
    ) {
        let count = width.div_ceil(PANEL);
        let mut first = 0;
        while first < count {
            let pair = (count - first).min(2);
            let a = panels.add(first * t * PANEL);
            let b = panels.add((first + pair - 1) * t * PANEL);
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            for j in 0..t {
                let v0 = _mm512_loadu_ps(a.add(j * PANEL));
                let v1 = _mm512_loadu_ps(b.add(j * PANEL));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let p = _mm512_set1_ps(*probs.add(r * t + j));
                    acc[0] = _mm512_fmadd_ps(p, v0, acc[0]);
                    acc[1] = _mm512_fmadd_ps(p, v1, acc[1]);
                }
            }
            for half in 0..pair {
                let col = (first + half) * PANEL;
                let lanes = first_lanes(width - col);
                for (r, acc) in acc.iter().enumerate() {
                    _mm512_mask_storeu_ps(out.add(r * out_stride + col), lanes, acc[half]);
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

    fn bits(values: &[f32]) -> Vec<u32> {
        values.iter().map(|v| v.to_bits()).collect()
    }

    /// (left rows, right rows or positions, depth or width): partial panels, partial row
    /// groups, depths whole, odd and below one panel.
    const SHAPES: [(usize, usize, usize); 5] = [
        (13, 37, 64),
        (6, 16, 64),
        (7, 1, 24),
        (1, 33, 8),
        (20, 50, 40),
    ];

    /// Both products on `path` over one head laid out as the encoder's fused buffer
    /// (`[t][3·k]`: queries, keys, values), with a bias on the scores so it is covered.
    fn products(path: SimdPath, rows: usize, t: usize, k: usize) -> (Vec<f32>, Vec<f32>) {
        let stride = 3 * k;
        let qkv = noise(t.max(rows) * stride, (rows * 31 + t * 7 + k) as u32);
        let bias = noise(t, 99);
        let mut keys = vec![f32::NAN; row_panels_len(t, k)];
        pack_row_panels(&qkv[k..], stride, t, k, &mut keys);
        let mut values = vec![f32::NAN; column_panels_len(t, k)];
        pack_column_panels(&qkv[2 * k..], stride, t, k, &mut values);
        // Output rows wider than the product, as the encoder's are; the gaps must stay.
        let out_stride = t.max(k) + 5;
        let mut scores = vec![-7.0f32; rows * out_stride];
        dot_rows(
            path,
            &qkv,
            stride,
            rows,
            &keys,
            t,
            k,
            0.125,
            Some(&bias),
            &mut scores,
            out_stride,
        );
        let probs: Vec<f32> = (0..rows)
            .flat_map(|r| scores[r * out_stride..r * out_stride + t].to_vec())
            .collect();
        let mut out = vec![-7.0f32; rows * out_stride];
        weighted_rows(path, &probs, rows, t, &values, k, &mut out, out_stride);
        (scores, out)
    }

    #[test]
    fn panel_products_match_the_definition_on_every_path() {
        for path in SimdPath::available() {
            for (rows, t, k) in SHAPES {
                let stride = 3 * k;
                let qkv = noise(t.max(rows) * stride, (rows * 31 + t * 7 + k) as u32);
                let bias = noise(t, 99);
                let (scores, out) = products(path, rows, t, k);
                let out_stride = t.max(k) + 5;
                for r in 0..rows {
                    for j in 0..out_stride {
                        let got = scores[r * out_stride + j] as f64;
                        if j >= t {
                            assert_eq!(
                                got, -7.0,
                                "{path:?}: score column {j} past the end written"
                            );
                            continue;
                        }
                        let dot: f64 = (0..k)
                            .map(|c| qkv[r * stride + c] as f64 * qkv[j * stride + k + c] as f64)
                            .sum();
                        let expected = dot * 0.125 + bias[j] as f64;
                        assert!(
                            (got - expected).abs() < 1e-5,
                            "{path:?} {rows}x{t}x{k}: score ({r},{j}) {got} vs {expected}"
                        );
                    }
                    for c in 0..out_stride {
                        let got = out[r * out_stride + c] as f64;
                        if c >= k {
                            assert_eq!(
                                got, -7.0,
                                "{path:?}: value column {c} past the end written"
                            );
                            continue;
                        }
                        let expected: f64 = (0..t)
                            .map(|j| {
                                scores[r * out_stride + j] as f64
                                    * qkv[j * stride + 2 * k + c] as f64
                            })
                            .sum();
                        assert!(
                            (got - expected).abs() < 1e-5,
                            "{path:?} {rows}x{t}x{k}: value ({r},{c}) {got} vs {expected}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_linear_layer_on_panels_matches_the_gemm_on_every_path() {
        // Row counts across the 48-row blocks, outputs across the 32-output pairs.
        for (m, k, n) in [(1, 7, 3), (50, 20, 40), (97, 64, 33), (6, 384, 16)] {
            let x = noise(m * k, 5);
            let w = noise(n * k, 6);
            let bias = noise(n, 7);
            let mut packed = vec![0.0f32; row_panels_len(n, k)];
            pack_row_panels(&w, k, n, k, &mut packed);
            let mut want = vec![0.0f32; m * n];
            crate::kernels::linear(&x, m, k, &w, n, Some(&bias), &mut want);
            for path in SimdPath::available() {
                let mut got = vec![f32::NAN; m * n];
                linear(
                    path,
                    &x,
                    m,
                    k,
                    &packed,
                    n,
                    Some(&bias),
                    &mut got,
                    Epilogue::Store,
                );
                for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - e).abs() < 1e-4,
                        "{path:?} {m}x{k}x{n} [{i}]: {g} vs {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_epilogues_give_the_bits_of_separate_passes() {
        // Rows across several 48-row blocks and a short last one.
        let (m, k, n) = (101, 40, 24);
        let x = noise(m * k, 8);
        let w = noise(n * k, 9);
        let bias = noise(n, 10);
        let residual = noise(m * n, 11);
        let mut packed = vec![0.0f32; row_panels_len(n, k)];
        pack_row_panels(&w, k, n, k, &mut packed);
        for path in SimdPath::available() {
            let mut plain = vec![0.0f32; m * n];
            linear(
                path,
                &x,
                m,
                k,
                &packed,
                n,
                Some(&bias),
                &mut plain,
                Epilogue::Store,
            );
            let mut want_gelu = plain.clone();
            crate::kernels::gelu_on(path, &mut want_gelu);
            let mut got_gelu = vec![f32::NAN; m * n];
            linear(
                path,
                &x,
                m,
                k,
                &packed,
                n,
                Some(&bias),
                &mut got_gelu,
                Epilogue::Gelu,
            );
            assert_eq!(bits(&got_gelu), bits(&want_gelu), "{path:?} gelu");
            let want_sum: Vec<f32> = residual.iter().zip(&plain).map(|(r, p)| r + p).collect();
            let mut got_sum = residual.clone();
            let mut scratch = vec![f32::NAN; m * n];
            let epilogue = Epilogue::AddTo(&mut got_sum);
            linear(
                path,
                &x,
                m,
                k,
                &packed,
                n,
                Some(&bias),
                &mut scratch,
                epilogue,
            );
            assert_eq!(bits(&got_sum), bits(&want_sum), "{path:?} residual");
            // A residual too short for the product is refused, not written past.
            let mut short = vec![-7.0f32; m * n - 1];
            let epilogue = Epilogue::AddTo(&mut short);
            linear(path, &x, m, k, &packed, n, None, &mut scratch, epilogue);
            assert!(short.iter().all(|&v| v == -7.0), "{path:?} short residual");
        }
    }

    #[test]
    fn empty_shapes_neither_panic_nor_write_past_their_outputs() {
        for path in SimdPath::available() {
            // No depth: each output is its bias alone.
            let mut out = vec![f32::NAN; 6];
            linear(
                path,
                &[],
                2,
                0,
                &[],
                3,
                Some(&[1.0, 2.0, 3.0]),
                &mut out,
                Epilogue::Store,
            );
            assert_eq!(out, [1.0, 2.0, 3.0, 1.0, 2.0, 3.0], "{path:?}");
            pack_row_panels(&[], 0, 3, 0, &mut []);
            pack_row_panels(&[], 4, 0, 4, &mut []);
            pack_column_panels(&[], 0, 0, 4, &mut []);
            pack_column_panels(&[], 4, 3, 0, &mut []);
            // No rows, no positions: nothing written.
            let mut untouched = vec![-7.0f32; 4];
            weighted_rows(path, &[], 1, 0, &[], 4, &mut untouched, 4);
            linear(
                path,
                &[],
                0,
                4,
                &[],
                4,
                None,
                &mut untouched,
                Epilogue::Gelu,
            );
            assert_eq!(untouched, [-7.0; 4], "{path:?}");
        }
    }

    #[test]
    fn the_avx512_panel_kernels_give_the_avx2_bits() {
        if !SimdPath::available().contains(&SimdPath::Avx512) {
            eprintln!(
                "skipped: this CPU has no AVX-512 (the AVX2 kernels are the only vector path)"
            );
            return;
        }
        for (rows, t, k) in SHAPES {
            let (s2, o2) = products(SimdPath::Avx2, rows, t, k);
            let (s5, o5) = products(SimdPath::Avx512, rows, t, k);
            assert_eq!(bits(&s2), bits(&s5), "scores {rows}x{t}x{k}");
            assert_eq!(bits(&o2), bits(&o5), "weighted rows {rows}x{t}x{k}");
        }
    }
}

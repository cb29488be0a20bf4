//! Int8 linear layers for the encoder's large products: weights quantised once per output
//! row, activations per input row at run time, and every product summed exactly in 32-bit
//! integers (AVX-512 VNNI `vpdpbusd`, AVX2 `vpmaddwd`, or portable code).
//!
//! `out[m, n] = sx[m] · sw[n] · Σ_k qx[m, k] · qw[n, k] + bias[n]`, where `qw = round(w /
//! sw)` with `sw = max|w[n, ·]| / 127` and `qx = round(x / sx)` with `sx = max|x[m, ·]| /
//! 127`: 8-bit weights and 8-bit activations on every kernel. VNNI multiplies unsigned by
//! signed bytes, so for it (and the portable code) weights are stored as the bytes `qw +
//! 128` and each sum is corrected by `128 · Σ_k qx[m, k]`. AVX2 has no exact byte
//! product for 8-bit weights (`vpmaddubsw` adds pairs of products in 16 bits with
//! saturation, which `(qw + 128) · qx` pairs overflow), so for it weights are stored as
//! 16-bit values and multiplied by activations widened to 16 bits with `vpmaddwd`, whose
//! pair sums (at most `2 · 127 · 127`) land in 32 bits exactly. Every kernel's integer
//! sums are therefore the same, and the portable code, which reads either packing, is
//! the reference the vector kernels are tested against bit for bit.

use crate::kernels::SimdPath;
use rayon::prelude::*;

/// Outputs per packed panel: one 512-bit register of i32 sums (two 256-bit halves on AVX2).
const PANEL: usize = 16;
/// Inputs per group: `vpdpbusd` adds four u8·i8 products into each 32-bit lane.
const GROUP: usize = 4;
const PANEL_BYTES: usize = PANEL * GROUP;
/// Rows of activations per parallel task (a multiple of every kernel's tile height).
const ROWS_PER_TASK: usize = 48;
/// Below this many multiply-adds the product is not split across threads.
const PARALLEL_MIN_WORK: usize = 2_000_000;

/// The integer kernel an int8 product runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int8Kernel {
    Scalar,
    /// AVX2 `vpmaddwd` on 16-bit weights and widened activations.
    Avx2,
    /// AVX-512BW + VNNI `vpdpbusd`.
    Vnni512,
}

impl Int8Kernel {
    /// The widest integer kernel the kernel path `path` allows on this CPU: VNNI needs
    /// AVX-512BW and AVX-512 VNNI beside the `avx512` path.
    pub fn for_path(path: SimdPath) -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if path == SimdPath::Avx512
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vnni")
            {
                return Int8Kernel::Vnni512;
            }
            if path >= SimdPath::Avx2 {
                return Int8Kernel::Avx2;
            }
        }
        let _ = path;
        Int8Kernel::Scalar
    }

    pub fn name(self) -> &'static str {
        match self {
            Int8Kernel::Scalar => "scalar",
            Int8Kernel::Avx2 => "avx2-maddwd",
            Int8Kernel::Vnni512 => "avx512-vnni",
        }
    }
}

/// Quantised activations span ±127.
const ACTIVATION_MAX: f32 = 127.0;
/// Quantised weights span ±127.
const WEIGHT_MAX: f32 = 127.0;
/// What is added to every weight stored as a byte to make it unsigned.
const WEIGHT_SHIFT: i32 = 128;
/// Inputs per pair: `vpmaddwd` adds two 16-bit products into each 32-bit lane.
const PAIR: usize = 2;
/// A panel's 16-bit weights for one pair of inputs: 32 values (two 256-bit vectors).
const PANEL_PAIR: usize = PANEL * PAIR;

/// A linear layer (`[n_out, n_in]` weights, PyTorch layout) quantised to int8.
pub struct QuantLinear {
    /// The kernel [`Self::forward`] runs on.
    kernel: Int8Kernel,
    n_out: usize,
    n_in: usize,
    /// `ceil(n_in / 4)`: inputs are padded with zeros to whole groups.
    groups: usize,
    /// `ceil(n_out / 16)`.
    panels: usize,
    /// For VNNI and the portable kernel: `qw + 128` as bytes, panel-major:
    /// `[panel][group][16 outputs][4 inputs]`; padding holds 128 (zero weights). Empty
    /// when `wide` holds the weights.
    packed: Vec<u8>,
    /// For AVX2: `qw` as 16-bit values, `[panel][pair][16 outputs][2 inputs]` with
    /// `2 · groups` pairs; padding holds 0. Empty when `packed` holds the weights.
    wide: Vec<i16>,
    /// Per output, padded with zeros to whole panels: `max|w[n, ·]| / 127`.
    scales: Vec<f32>,
    /// Per output, padded with zeros (all zeros when the layer has no bias).
    bias: Vec<f32>,
}

impl std::fmt::Debug for QuantLinear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuantLinear")
            .field("kernel", &self.kernel)
            .field("n_out", &self.n_out)
            .field("n_in", &self.n_in)
            .finish_non_exhaustive()
    }
}

/// Activations of one product, quantised per row.
struct QuantRows {
    /// `[rows][groups · 4]`, zero-padded.
    q: Vec<i8>,
    /// Per row: `max|x| / 127`.
    scale: Vec<f32>,
    /// Per row: `128 · Σ q`, what the byte packing's shift added to every VNNI sum.
    shift: Vec<i32>,
}

impl QuantLinear {
    /// Quantises `weight` (`[n_out, n_in]`, row-major) for the current path's kernel and
    /// keeps `bias` (`n_out` values).
    pub fn quantize(weight: &[f32], n_out: usize, n_in: usize, bias: Option<&[f32]>) -> Self {
        Self::quantize_for(
            Int8Kernel::for_path(crate::kernels::simd_path()),
            weight,
            n_out,
            n_in,
            bias,
        )
    }

    /// [`Self::quantize`] for a given kernel (it must run on this CPU).
    pub fn quantize_for(
        kernel: Int8Kernel,
        weight: &[f32],
        n_out: usize,
        n_in: usize,
        bias: Option<&[f32]>,
    ) -> Self {
        let groups = n_in.div_ceil(GROUP);
        let panels = n_out.div_ceil(PANEL);
        let pairs = groups * (GROUP / PAIR);
        let is_wide = kernel == Int8Kernel::Avx2;
        let (mut packed, mut wide) = if is_wide {
            (Vec::new(), vec![0i16; panels * pairs * PANEL_PAIR])
        } else {
            (
                vec![WEIGHT_SHIFT as u8; panels * groups * PANEL_BYTES],
                Vec::new(),
            )
        };
        let mut scales = vec![0.0f32; panels * PANEL];
        for (n, row) in weight.chunks_exact(n_in).take(n_out).enumerate() {
            let max = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            if max <= 0.0 || !max.is_finite() {
                continue;
            }
            scales[n] = max / WEIGHT_MAX;
            let inv = WEIGHT_MAX / max;
            let (panel, lane) = (n / PANEL, n % PANEL);
            for (k, v) in row.iter().enumerate() {
                let q = (v * inv).round_ties_even().clamp(-WEIGHT_MAX, WEIGHT_MAX) as i32;
                if is_wide {
                    let at = (panel * pairs + k / PAIR) * PANEL_PAIR + lane * PAIR + k % PAIR;
                    wide[at] = q as i16;
                } else {
                    let at = (panel * groups + k / GROUP) * PANEL_BYTES + lane * GROUP + k % GROUP;
                    packed[at] = (q + WEIGHT_SHIFT) as u8;
                }
            }
        }
        let mut padded_bias = vec![0.0f32; panels * PANEL];
        if let Some(b) = bias {
            for (o, v) in padded_bias.iter_mut().zip(b.iter().take(n_out)) {
                *o = *v;
            }
        }
        QuantLinear {
            kernel,
            n_out,
            n_in,
            groups,
            panels,
            packed,
            wide,
            scales,
            bias: padded_bias,
        }
    }

    /// `out[rows, n_out] = x[rows, n_in] · Wᵀ + bias`.
    pub fn forward(&self, x: &[f32], rows: usize, out: &mut [f32]) {
        self.forward_on(self.kernel, x, rows, out);
    }

    /// [`Self::forward`] on the layer's own kernel or on the portable one (which reads
    /// either packing); any other kernel is replaced by the portable one.
    pub fn forward_on(&self, kernel: Int8Kernel, x: &[f32], rows: usize, out: &mut [f32]) {
        if rows == 0 || x.len() < rows * self.n_in || out.len() < rows * self.n_out {
            return;
        }
        let kernel = if kernel == self.kernel {
            kernel
        } else {
            Int8Kernel::Scalar
        };
        let qx = self.quantize_rows(x, rows);
        self.product(kernel, &qx, rows, &mut out[..rows * self.n_out]);
    }

    fn quantize_rows(&self, x: &[f32], rows: usize) -> QuantRows {
        let limit = ACTIVATION_MAX;
        let width = self.groups * GROUP;
        let mut q = vec![0i8; rows * width];
        let parallel = rows * self.n_in >= PARALLEL_MIN_WORK / 8;
        let vector = crate::kernels::simd_path() >= SimdPath::Avx2;
        let quantize = |(r, dst): (usize, &mut [i8])| -> (f32, i32) {
            let src = &x[r * self.n_in..(r + 1) * self.n_in];
            #[cfg(target_arch = "x86_64")]
            if vector {
                // SAFETY: the AVX2 path is only chosen on a CPU with AVX2 and FMA.
                return unsafe { quantize_row_avx2(src, dst, limit) };
            }
            let _ = vector;
            quantize_row(src, dst, limit)
        };
        let rows_out: Vec<(f32, i32)> = if parallel {
            q.par_chunks_exact_mut(width)
                .enumerate()
                .map(quantize)
                .collect()
        } else {
            q.chunks_exact_mut(width)
                .enumerate()
                .map(quantize)
                .collect()
        };
        let (scale, shift) = rows_out
            .into_iter()
            .map(|(scale, sum)| (scale, WEIGHT_SHIFT * sum))
            .unzip();
        QuantRows { q, scale, shift }
    }

    /// The integer product and its rescaling, split over rayon by blocks of rows.
    fn product(&self, kernel: Int8Kernel, qx: &QuantRows, rows: usize, out: &mut [f32]) {
        let width = self.groups * GROUP;
        let task = |(block, out_rows): (usize, &mut [f32])| {
            let first = block * ROWS_PER_TASK;
            let n_rows = out_rows.len() / self.n_out;
            let tile = Tile {
                layer: self,
                q: &qx.q[first * width..(first + n_rows) * width],
                scale: &qx.scale[first..first + n_rows],
                shift: &qx.shift[first..first + n_rows],
                rows: n_rows,
            };
            match kernel {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `Int8Kernel::for_path` only names VNNI/AVX2 on a CPU that has them,
                // and each vector kernel only runs on the packing it reads.
                Int8Kernel::Vnni512 if !self.packed.is_empty() => unsafe {
                    vnni::product(&tile, out_rows)
                },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                Int8Kernel::Avx2 if !self.wide.is_empty() => unsafe {
                    avx2::product(&tile, out_rows)
                },
                _ => scalar_product(&tile, out_rows),
            }
        };
        if rows * self.n_in * self.n_out >= PARALLEL_MIN_WORK && rayon::current_num_threads() > 1 {
            out.par_chunks_mut(ROWS_PER_TASK * self.n_out)
                .enumerate()
                .for_each(task);
        } else {
            out.chunks_mut(ROWS_PER_TASK * self.n_out)
                .enumerate()
                .for_each(task);
        }
    }
}

/// Quantises one row of activations to `±limit` (rounding to nearest, ties to even);
/// returns its scale and `Σ q`. A row of zeros, or one with a value that is not finite,
/// quantises to zeros with scale 0.
fn quantize_row(src: &[f32], dst: &mut [i8], limit: f32) -> (f32, i32) {
    let max = src.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if max <= 0.0 || !max.is_finite() || src.iter().any(|v| v.is_nan()) {
        dst.fill(0);
        return (0.0, 0);
    }
    let inv = limit / max;
    let mut sum = 0i32;
    for (o, v) in dst.iter_mut().zip(src) {
        let q = (v * inv).round_ties_even().clamp(-limit, limit) as i32;
        sum += q;
        *o = q as i8;
    }
    (max / limit, sum)
}

/// [`quantize_row`] eight lanes at a time, with the same results: `vcvtps2dq` rounds to
/// nearest, ties to even (the default rounding mode), as `round_ties_even` does, and
/// `|x · inv| ≤ limit` (plus rounding) needs no clamp before the conversion.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_row_avx2(src: &[f32], dst: &mut [i8], limit: f32) -> (f32, i32) {
    use std::arch::x86_64::*;
    let n = src.len().min(dst.len());
    let p = src.as_ptr();
    let magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let mut vmax = _mm256_setzero_ps();
    let mut unordered = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n {
        let v = _mm256_loadu_ps(p.add(i));
        unordered = _mm256_or_ps(unordered, _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
        vmax = _mm256_max_ps(vmax, _mm256_and_ps(v, magnitude));
        i += 8;
    }
    let mut lanes = [0.0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), vmax);
    let mut max = lanes.iter().fold(0.0f32, |m, v| m.max(*v));
    let mut nan = _mm256_movemask_ps(unordered) != 0;
    for v in &src[i..n] {
        max = max.max(v.abs());
        nan |= v.is_nan();
    }
    if max <= 0.0 || !max.is_finite() || nan {
        dst.fill(0);
        return (0.0, 0);
    }
    let inv = limit / max;
    let vinv = _mm256_set1_ps(inv);
    let lo = _mm256_set1_epi32(-(limit as i32));
    let hi = _mm256_set1_epi32(limit as i32);
    // (A macro, not a closure: the intrinsics must inline under this function's features.)
    macro_rules! convert {
        ($at:expr) => {
            _mm256_min_epi32(
                _mm256_max_epi32(
                    _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(p.add($at)), vinv)),
                    lo,
                ),
                hi,
            )
        };
    }
    // Four vectors of eight make 32 bytes: the packs work within 128-bit halves, and the
    // permutation puts the four groups of four back in order.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let mut total = _mm256_setzero_si256();
    let out = dst.as_mut_ptr();
    let mut i = 0;
    while i + 32 <= n {
        let (a, b, c, d) = (
            convert!(i),
            convert!(i + 8),
            convert!(i + 16),
            convert!(i + 24),
        );
        total = _mm256_add_epi32(
            total,
            _mm256_add_epi32(_mm256_add_epi32(a, b), _mm256_add_epi32(c, d)),
        );
        let bytes = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
        _mm256_storeu_si256(out.add(i).cast(), _mm256_permutevar8x32_epi32(bytes, order));
        i += 32;
    }
    let mut sums = [0i32; 8];
    _mm256_storeu_si256(sums.as_mut_ptr().cast(), total);
    let mut sum: i32 = sums.iter().sum();
    for (o, v) in dst[i..n].iter_mut().zip(&src[i..n]) {
        let q = (v * inv).round_ties_even().clamp(-limit, limit) as i32;
        sum += q;
        *o = q as i8;
    }
    (max / limit, sum)
}

/// One task's rows of quantised activations against the whole layer.
struct Tile<'a> {
    layer: &'a QuantLinear,
    q: &'a [i8],
    scale: &'a [f32],
    shift: &'a [i32],
    rows: usize,
}

impl Tile<'_> {
    /// The output value for row `r`, output `n`, from its integer sum `Σ qw · qx`.
    #[inline]
    fn finish(&self, r: usize, n: usize, sum: i32) -> f32 {
        let l = self.layer;
        (sum as f32).mul_add(self.scale[r] * l.scales[n], l.bias[n])
    }
}

/// The reference kernel: the same integer sums as the vector kernels, one at a time, from
/// either packing.
fn scalar_product(tile: &Tile, out: &mut [f32]) {
    let l = tile.layer;
    let width = l.groups * GROUP;
    for r in 0..tile.rows {
        let x = &tile.q[r * width..(r + 1) * width];
        for n in 0..l.n_out {
            let (panel, lane) = (n / PANEL, n % PANEL);
            let mut sum = 0i32;
            if l.wide.is_empty() {
                // Bytes `qw + 128`: the shift comes off once per sum.
                for g in 0..l.groups {
                    let w =
                        &l.packed[(panel * l.groups + g) * PANEL_BYTES + lane * GROUP..][..GROUP];
                    for i in 0..GROUP {
                        sum += i32::from(w[i]) * i32::from(x[g * GROUP + i]);
                    }
                }
                sum -= tile.shift[r];
            } else {
                for k in 0..width / PAIR {
                    let w =
                        &l.wide[(panel * width / PAIR + k) * PANEL_PAIR + lane * PAIR..][..PAIR];
                    for i in 0..PAIR {
                        sum += i32::from(w[i]) * i32::from(x[k * PAIR + i]);
                    }
                }
            }
            out[r * l.n_out + n] = tile.finish(r, n, sum);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::{Tile, GROUP, PANEL, PANEL_BYTES};
    use std::arch::x86_64::*;

    /// Rows per register tile and panels (16 outputs each) per register tile: 24 of the
    /// 32 vector registers hold sums.
    const MR: usize = 6;
    const NP: usize = 4;

    /// # Safety
    /// The CPU must have AVX-512F, AVX-512BW and AVX-512 VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn product(tile: &Tile, out: &mut [f32]) {
        let l = tile.layer;
        let mut p = 0;
        while p < l.panels {
            let np = (l.panels - p).min(NP);
            let mut r = 0;
            while r + MR <= tile.rows {
                match np {
                    4 => block::<MR, 4>(tile, out, r, p),
                    3 => block::<MR, 3>(tile, out, r, p),
                    2 => block::<MR, 2>(tile, out, r, p),
                    _ => block::<MR, 1>(tile, out, r, p),
                }
                r += MR;
            }
            // The last rows, fewer than a tile, one panel at a time.
            if r < tile.rows {
                for q in p..p + np {
                    match tile.rows - r {
                        5 => block::<5, 1>(tile, out, r, q),
                        4 => block::<4, 1>(tile, out, r, q),
                        3 => block::<3, 1>(tile, out, r, q),
                        2 => block::<2, 1>(tile, out, r, q),
                        _ => block::<1, 1>(tile, out, r, q),
                    }
                }
            }
            p += np;
        }
    }

    /// Sums for rows `r0..r0 + R` against panels `p0..p0 + P`, over every input group.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn block<const R: usize, const P: usize>(
        tile: &Tile,
        out: &mut [f32],
        r0: usize,
        p0: usize,
    ) {
        let l = tile.layer;
        let width = l.groups * GROUP;
        let mut acc = [[_mm512_setzero_si512(); P]; R];
        let w_base = l.packed.as_ptr().add(p0 * l.groups * PANEL_BYTES);
        let panel_stride = l.groups * PANEL_BYTES;
        let x_base = tile.q.as_ptr().add(r0 * width);
        for g in 0..l.groups {
            let mut w = [_mm512_setzero_si512(); P];
            for (j, wj) in w.iter_mut().enumerate() {
                *wj = _mm512_loadu_si512(w_base.add(j * panel_stride + g * PANEL_BYTES).cast());
            }
            for (i, acc_row) in acc.iter_mut().enumerate() {
                let xi = (x_base.add(i * width + g * GROUP) as *const i32).read_unaligned();
                let xb = _mm512_set1_epi32(xi);
                for (a, wj) in acc_row.iter_mut().zip(&w) {
                    *a = _mm512_dpbusd_epi32(*a, *wj, xb);
                }
            }
        }
        for (i, acc_row) in acc.iter().enumerate() {
            let r = r0 + i;
            let shift = _mm512_set1_epi32(tile.shift[r]);
            let sx = _mm512_set1_ps(tile.scale[r]);
            for (j, a) in acc_row.iter().enumerate() {
                let first = (p0 + j) * PANEL;
                let scale = _mm512_mul_ps(sx, _mm512_loadu_ps(l.scales.as_ptr().add(first)));
                let bias = _mm512_loadu_ps(l.bias.as_ptr().add(first));
                let v =
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(*a, shift)), scale, bias);
                // The layer's last panel may be cut short.
                let valid = l.n_out.saturating_sub(first).min(PANEL);
                let mask: __mmask16 = if valid == PANEL {
                    !0
                } else {
                    (1u16 << valid) - 1
                };
                _mm512_mask_storeu_ps(out.as_mut_ptr().add(r * l.n_out + first), mask, v);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Tile, GROUP, PAIR, PANEL, PANEL_PAIR};
    use std::arch::x86_64::*;

    /// Rows per register tile; each covers one panel as two 8-output halves, so 12 of the
    /// 16 vector registers hold sums.
    const MR: usize = 6;

    /// # Safety
    /// The CPU must have AVX2 and FMA, and the layer must hold 16-bit weights.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn product(tile: &Tile, out: &mut [f32]) {
        let l = tile.layer;
        // The activations widened to 16 bits once, for every panel.
        let wide_x: Vec<i16> = tile.q.iter().map(|v| i16::from(*v)).collect();
        for p in 0..l.panels {
            let mut r = 0;
            while r < tile.rows {
                let mr = (tile.rows - r).min(MR);
                match mr {
                    6 => block::<6>(tile, &wide_x, out, r, p),
                    5 => block::<5>(tile, &wide_x, out, r, p),
                    4 => block::<4>(tile, &wide_x, out, r, p),
                    3 => block::<3>(tile, &wide_x, out, r, p),
                    2 => block::<2>(tile, &wide_x, out, r, p),
                    _ => block::<1>(tile, &wide_x, out, r, p),
                }
                r += mr;
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block<const R: usize>(
        tile: &Tile,
        wide_x: &[i16],
        out: &mut [f32],
        r0: usize,
        p: usize,
    ) {
        let l = tile.layer;
        let width = l.groups * GROUP;
        let pairs = width / PAIR;
        let mut lo = [_mm256_setzero_si256(); R];
        let mut hi = [_mm256_setzero_si256(); R];
        let w_base = l.wide.as_ptr().add(p * pairs * PANEL_PAIR);
        let x_base = wide_x.as_ptr().add(r0 * width);
        for k in 0..pairs {
            let w_lo = _mm256_loadu_si256(w_base.add(k * PANEL_PAIR).cast());
            let w_hi = _mm256_loadu_si256(w_base.add(k * PANEL_PAIR + PANEL).cast());
            for i in 0..R {
                // Inputs 2k and 2k + 1 of row i, as one 32-bit lane in every position.
                let xi = (x_base.add(i * width + k * PAIR) as *const i32).read_unaligned();
                let xb = _mm256_set1_epi32(xi);
                // Each lane: qw[n, 2k]·qx[2k] + qw[n, 2k+1]·qx[2k+1], exact in 32 bits.
                lo[i] = _mm256_add_epi32(lo[i], _mm256_madd_epi16(w_lo, xb));
                hi[i] = _mm256_add_epi32(hi[i], _mm256_madd_epi16(w_hi, xb));
            }
        }
        let first = p * PANEL;
        let scale_lo = _mm256_loadu_ps(l.scales.as_ptr().add(first));
        let scale_hi = _mm256_loadu_ps(l.scales.as_ptr().add(first + 8));
        let bias_lo = _mm256_loadu_ps(l.bias.as_ptr().add(first));
        let bias_hi = _mm256_loadu_ps(l.bias.as_ptr().add(first + 8));
        let whole = first + PANEL <= l.n_out;
        for i in 0..R {
            let r = r0 + i;
            let sx = _mm256_set1_ps(tile.scale[r]);
            let v_lo = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(lo[i]),
                _mm256_mul_ps(sx, scale_lo),
                bias_lo,
            );
            let v_hi = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(hi[i]),
                _mm256_mul_ps(sx, scale_hi),
                bias_hi,
            );
            let dst = out.as_mut_ptr().add(r * l.n_out + first);
            if whole {
                _mm256_storeu_ps(dst, v_lo);
                _mm256_storeu_ps(dst.add(8), v_hi);
            } else {
                // The layer's last panel, cut short.
                let mut values = [0.0f32; PANEL];
                _mm256_storeu_ps(values.as_mut_ptr(), v_lo);
                _mm256_storeu_ps(values.as_mut_ptr().add(8), v_hi);
                let valid = l.n_out - first;
                std::ptr::copy_nonoverlapping(values.as_ptr(), dst, valid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::tests::noise;

    fn kernels_here() -> Vec<Int8Kernel> {
        let mut kernels: Vec<Int8Kernel> = SimdPath::available()
            .into_iter()
            .map(Int8Kernel::for_path)
            .collect();
        kernels.dedup();
        kernels
    }

    /// Sizes around every tile edge: rows not a multiple of the tile heights or of a
    /// task, outputs not a multiple of a panel, inputs not a multiple of a group.
    const SHAPES: [(usize, usize, usize); 6] = [
        (1, 4, 16),
        (5, 37, 17),
        (13, 45, 33),
        (49, 384, 129),
        (100, 240, 70),
        (150, 1152, 384),
    ];

    /// Noise activations (`m × k`, from `seed`), weights (`n × k`, `seed + 1`) and bias
    /// (`seed + 2`), and those weights and bias quantised for `kernel`.
    fn noisy_layer(
        kernel: Int8Kernel,
        (m, k, n): (usize, usize, usize),
        seed: u32,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>, QuantLinear) {
        let x = noise(m * k, seed);
        let w = noise(n * k, seed + 1);
        let b = noise(n, seed + 2);
        let layer = QuantLinear::quantize_for(kernel, &w, n, k, Some(&b));
        (x, w, b, layer)
    }

    #[test]
    fn every_kernel_sums_exactly_what_the_scalar_kernel_sums() {
        for kernel in kernels_here() {
            for (m, k, n) in SHAPES {
                let (x, _, _, layer) = noisy_layer(kernel, (m, k, n), 1);
                let qx = layer.quantize_rows(&x, m);
                let mut want = vec![0.0; m * n];
                let mut got = vec![0.0; m * n];
                layer.product(Int8Kernel::Scalar, &qx, m, &mut want);
                layer.product(kernel, &qx, m, &mut got);
                assert_eq!(got, want, "{} at {m}×{k}×{n}", kernel.name());
            }
        }
    }

    /// Every quantised value at ±127, with signs that make every product +127² (then
    /// −127², then mixed): the largest sums any kernel must carry exactly (a byte
    /// product of shifted weights, `(qw + 128) · qx` pairs in 16 bits, would saturate).
    #[test]
    fn the_largest_products_are_summed_exactly() {
        let (m, k, n) = (6, 96, 40);
        let signs = noise(n * k, 11);
        let w: Vec<f32> = signs
            .iter()
            .map(|s| if *s < 0.0 { -1.0 } else { 1.0 })
            .collect();
        for case in 0..3 {
            // Row r of x copies weight row r's signs: +, negated, or unrelated.
            let x: Vec<f32> = (0..m * k)
                .map(|i| {
                    let same = w[i];
                    match case {
                        0 => same,
                        1 => -same,
                        _ => w[(i * 7 + 3) % w.len()],
                    }
                })
                .collect();
            for kernel in kernels_here() {
                let layer = QuantLinear::quantize_for(kernel, &w, n, k, None);
                let mut got = vec![0.0; m * n];
                layer.forward(&x, m, &mut got);
                for r in 0..m {
                    for c in 0..n {
                        // Scales are 1/127 on both sides, so the output is Σ x·w exactly.
                        let want: f32 = (0..k).map(|i| x[r * k + i] * w[c * k + i]).sum();
                        assert_eq!(
                            got[r * n + c],
                            want,
                            "{} case {case} [{r},{c}]",
                            kernel.name()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn an_int8_product_stays_within_its_quantisation_error_of_f32() {
        for kernel in kernels_here() {
            for (m, k, n) in SHAPES {
                let (x, w, b, layer) = noisy_layer(kernel, (m, k, n), 4);
                let mut got = vec![0.0; m * n];
                layer.forward(&x, m, &mut got);
                for r in 0..m {
                    let xr = &x[r * k..(r + 1) * k];
                    let sx = xr.iter().fold(0.0f32, |a, v| a.max(v.abs())) / ACTIVATION_MAX;
                    for c in 0..n {
                        let wr = &w[c * k..(c + 1) * k];
                        let sw = wr.iter().fold(0.0f32, |a, v| a.max(v.abs())) / WEIGHT_MAX;
                        let exact: f32 = xr.iter().zip(wr).map(|(a, b)| a * b).sum::<f32>() + b[c];
                        // Each product is off by at most |x|·sw/2 + |w|·sx/2 + sx·sw/4.
                        let bound: f32 = xr
                            .iter()
                            .zip(wr)
                            .map(|(a, v)| a.abs() * sw / 2.0 + v.abs() * sx / 2.0 + sx * sw / 4.0)
                            .sum::<f32>()
                            + 1e-4;
                        let g = got[r * n + c];
                        assert!(
                            (g - exact).abs() <= bound,
                            "{} at {m}×{k}×{n} [{r},{c}]: {g} vs {exact} (bound {bound})",
                            kernel.name()
                        );
                    }
                }
            }
        }
    }

    /// The AVX2 quantiser gives the portable one's bytes, scale and sum, on row lengths
    /// around its 32-value blocks, on values that round at .5, and on rows with zeros,
    /// an infinity or a NaN.
    #[test]
    fn the_vector_quantiser_matches_the_portable_one() {
        if SimdPath::detected() < SimdPath::Avx2 {
            return;
        }
        let mut rows: Vec<Vec<f32>> = [1usize, 7, 8, 31, 32, 33, 80, 384, 1152, 1539]
            .iter()
            .enumerate()
            .map(|(i, n)| noise(*n, 20 + i as u32).iter().map(|v| v * 3.0).collect())
            .collect();
        // Exact halves after scaling: max 127 makes inv 1, so x.5 rounds to even.
        rows.push(
            (0..64)
                .map(|i| i as f32 * 0.5 - 16.0)
                .chain([127.0])
                .collect(),
        );
        rows.push(vec![0.0; 40]);
        let mut with_inf = noise(40, 30);
        with_inf[35] = f32::INFINITY;
        rows.push(with_inf);
        let mut with_nan = noise(40, 31);
        with_nan[3] = f32::NAN;
        rows.push(with_nan);
        for row in &rows {
            let mut want = vec![7i8; row.len()];
            let mut got = vec![7i8; row.len()];
            let a = quantize_row(row, &mut want, ACTIVATION_MAX);
            // SAFETY: the CPU has AVX2 (checked above).
            let b = unsafe { quantize_row_avx2(row, &mut got, ACTIVATION_MAX) };
            assert_eq!(got, want, "bytes of a {}-value row", row.len());
            assert_eq!(a.1, b.1, "sum of a {}-value row", row.len());
            assert_eq!(
                a.0.to_bits(),
                b.0.to_bits(),
                "scale of a {}-value row",
                row.len()
            );
        }
    }

    #[test]
    fn zero_rows_and_zero_weights_give_the_bias() {
        let (m, k, n) = (3, 8, 20);
        let mut w = noise(n * k, 7);
        w[..k].fill(0.0);
        let b = noise(n, 8);
        let mut x = noise(m * k, 9);
        x[k..2 * k].fill(0.0);
        for kernel in kernels_here() {
            let layer = QuantLinear::quantize_for(kernel, &w, n, k, Some(&b));
            let mut out = vec![f32::NAN; m * n];
            layer.forward_on(kernel, &x, m, &mut out);
            for r in 0..m {
                assert_eq!(out[r * n], b[0], "zero weight row on {}", kernel.name());
            }
            assert_eq!(
                &out[n..2 * n],
                &b[..],
                "zero input row on {}",
                kernel.name()
            );
            assert!(out.iter().all(|v| v.is_finite()));
        }
    }
}

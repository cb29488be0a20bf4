//! The decoder's output projection: scores every vocabulary token from the decoder's final
//! state by reading an int8 copy of the embedding table, then recomputes in f16 exactly
//! the rows that a decoding choice depends on, so every choice is the f16 product's.
//!
//! The product reads the whole table for every token and is bound by memory traffic; the
//! int8 copy halves it. Each int8 score `a` lies within a known distance of the f16
//! score `e` that [`kernels::logits_f16`] computes: with `f` the f16 row, `q` its int8
//! row and `s` its scale,
//!
//! `|e − a| ≤ ‖x‖₂ · (‖f − s·q‖₂ + γ·(‖f‖₂ + ‖s·q‖₂))`
//!
//! by Cauchy–Schwarz for the quantisation and the standard bound on a floating-point
//! sum's rounding (`γ`) for both products. The factor after `‖x‖₂` is fixed per row and
//! computed at load time. A row whose score could reach the best score is recomputed in
//! f16, so the best token, and every row decoding compares, is bit-identical to the f16
//! product's; the rest keep their int8 score, which only enters the normaliser of a
//! probability.

use std::ops::Range;

use rayon::prelude::*;

use crate::kernels::{self, f16_to_f32, f32_to_f16, SimdPath};

/// Rows per parallel task of the full-vocabulary products.
const CHUNK_ROWS: usize = 2048;

/// The token embedding as the output projection: f16 rows (the reference) and, unless
/// built with [`LogitsTable::f16_only`], an int8 copy that screens them.
pub struct LogitsTable {
    d: usize,
    n_vocab: usize,
    f16: Vec<u16>,
    /// int8 rows (`[n_vocab, d]`), empty when every score is computed in f16.
    q: Vec<i8>,
    /// Per row, the scale of `q`.
    scales: Vec<f32>,
    /// Per row, the factor that `‖x‖₂` multiplies to bound `|f16 score − int8 score|`.
    slack: Vec<f32>,
}

impl LogitsTable {
    /// Builds the table from f32 embedding rows (`[n_vocab, d]`), with the int8 screen.
    pub fn new(embedding: &[f32], d: usize) -> Self {
        let mut table = Self::f16_only(embedding, d);
        table.add_int8();
        table
    }

    /// Builds the table with f16 rows only: every score is computed in f16.
    pub fn f16_only(embedding: &[f32], d: usize) -> Self {
        let d = d.max(1);
        let n_vocab = embedding.len() / d;
        Self {
            d,
            n_vocab,
            f16: embedding[..n_vocab * d]
                .iter()
                .map(|v| f32_to_f16(*v))
                .collect(),
            q: Vec::new(),
            scales: Vec::new(),
            slack: Vec::new(),
        }
    }

    /// Drops the int8 screen, so that every score is computed in f16.
    pub fn into_f16_only(mut self) -> Self {
        self.q = Vec::new();
        self.scales = Vec::new();
        self.slack = Vec::new();
        self
    }

    /// Whether scores are screened in int8 first.
    pub fn screens_int8(&self) -> bool {
        !self.q.is_empty()
    }

    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// Quantises the f16 rows (one scale per row) and records each row's slack.
    fn add_int8(&mut self) {
        let d = self.d;
        let widened: Vec<f32> = self.f16.iter().map(|h| f16_to_f32(*h)).collect();
        let (q, scales) = kernels::quantize_rows_i8(&widened, d);
        // `γ` for a sum of `d` products, doubled (and the result rounded up below) so
        // that the bound also covers the few roundings outside the sum: the scale's
        // product, the norm of `x` and the bound's own product.
        let gamma = 2.0 * (d as f64 + 2.0) * f64::from(f32::EPSILON) / 2.0;
        let slack = widened
            .chunks_exact(d)
            .zip(q.chunks_exact(d))
            .zip(&scales)
            .map(|((f, qrow), s)| {
                let (mut err, mut f_norm, mut sq_norm) = (0.0f64, 0.0f64, 0.0f64);
                for (fv, qv) in f.iter().zip(qrow) {
                    let sq = f64::from(*s) * f64::from(*qv);
                    err += (f64::from(*fv) - sq).powi(2);
                    f_norm += f64::from(*fv).powi(2);
                    sq_norm += sq * sq;
                }
                let bound = err.sqrt() + gamma * (f_norm.sqrt() + sq_norm.sqrt());
                (bound * (1.0 + 1e-6)) as f32
            })
            .collect();
        self.q = q;
        self.scales = scales;
        self.slack = slack;
    }

    /// The f16 score of row `v`: the same value as [`kernels::logits_f16`] gives it.
    fn exact(&self, x: &[f32], v: usize) -> f32 {
        kernels::dot_f16(
            kernels::simd_path(),
            x,
            &self.f16[v * self.d..(v + 1) * self.d],
        )
    }

    /// The int8 score of row `v`.
    fn screened(&self, path: SimdPath, x: &[f32], v: usize) -> f32 {
        self.scales[v] * kernels::dot_i8(path, x, &self.q[v * self.d..(v + 1) * self.d])
    }

    /// The scores of one decoder state `x` (`d` values).
    pub fn scores(&self, x: &[f32]) -> Logits {
        let mut logits = Logits::unscored(self.n_vocab, x);
        self.fill(&mut logits);
        logits
    }

    /// As [`Self::scores`], into `out` (reusing its buffers).
    pub fn scores_into(&self, x: &[f32], out: &mut Logits) {
        out.reset(self.n_vocab, x);
        self.fill(out);
    }

    /// The scores of `rows` decoder states (`[rows, d]`) at once, each row of the table
    /// read once for all of them; each equals what [`Self::scores`] gives that state.
    pub fn scores_rows(&self, x: &[f32], rows: usize) -> Vec<Logits> {
        let d = self.d;
        let mut out: Vec<Logits> = x
            .chunks_exact(d)
            .take(rows)
            .map(|xr| Logits::unscored(self.n_vocab, xr))
            .collect();
        let rows = out.len();
        if rows == 0 {
            return out;
        }
        if !self.screens_int8() || out.iter().any(|l| !l.hidden_norm.is_finite()) {
            let mut flat = vec![0.0f32; rows * self.n_vocab];
            kernels::matmul_f16_rows(
                &x[..rows * d],
                rows,
                &self.f16,
                self.n_vocab,
                None,
                &mut flat,
            );
            for (l, values) in out.iter_mut().zip(flat.chunks_exact(self.n_vocab)) {
                l.values.copy_from_slice(values);
                l.exact.fill(true);
            }
            return out;
        }
        let path = kernels::simd_path();
        // Row-of-the-table-major scratch, split over the pool by table rows.
        let mut by_row = vec![0.0f32; self.n_vocab * rows];
        by_row
            .par_chunks_mut(CHUNK_ROWS * rows)
            .enumerate()
            .for_each(|(ci, chunk)| {
                for (j, col) in chunk.chunks_exact_mut(rows).enumerate() {
                    let v = ci * CHUNK_ROWS + j;
                    for (r, o) in col.iter_mut().enumerate() {
                        *o = self.screened(path, &x[r * d..(r + 1) * d], v);
                    }
                }
            });
        for (r, l) in out.iter_mut().enumerate() {
            for (v, o) in l.values.iter_mut().enumerate() {
                *o = by_row[v * rows + r];
            }
            l.exact.fill(false);
        }
        out
    }

    /// Scores every row of `logits` for its state: int8 screens, or f16 when the table
    /// has no int8 copy or the state is not finite (where no bound holds).
    fn fill(&self, logits: &mut Logits) {
        let x = &logits.hidden;
        if !self.screens_int8() || !logits.hidden_norm.is_finite() {
            kernels::logits_f16(x, &self.f16, self.n_vocab, &mut logits.values);
            logits.exact.fill(true);
            return;
        }
        let path = kernels::simd_path();
        logits
            .values
            .par_chunks_mut(CHUNK_ROWS)
            .enumerate()
            .for_each(|(ci, chunk)| {
                for (j, o) in chunk.iter_mut().enumerate() {
                    *o = self.screened(path, x, ci * CHUNK_ROWS + j);
                }
            });
        logits.exact.fill(false);
    }
}

/// One decoder state's scores over the vocabulary: some rows exact (the f16 product's
/// value, or `-inf` once suppressed), the rest int8 screens within a known bound of it.
#[derive(Clone)]
pub struct Logits {
    values: Vec<f32>,
    exact: Vec<bool>,
    hidden: Vec<f32>,
    hidden_norm: f32,
    /// Rows recomputed in f16 since these scores were made or copied.
    rescored: usize,
}

impl Logits {
    fn unscored(n_vocab: usize, x: &[f32]) -> Self {
        let mut logits = Self::from_exact(Vec::new());
        logits.reset(n_vocab, x);
        logits
    }

    /// Sizes the buffers for `n_vocab` rows of state `x`, before they are scored.
    fn reset(&mut self, n_vocab: usize, x: &[f32]) {
        self.values.resize(n_vocab, 0.0);
        self.exact.resize(n_vocab, true);
        self.hidden.clear();
        self.hidden.extend_from_slice(x);
        // Rounded up, so the bounds it scales stay bounds.
        let norm = x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
        self.hidden_norm = (norm * (1.0 + 1e-6)) as f32;
        self.rescored = 0;
    }

    /// Copies `other` into `self`, reusing the buffers (the count of rescored rows starts
    /// again at zero).
    pub fn copy_from(&mut self, other: &Logits) {
        self.values.clone_from(&other.values);
        self.exact.clone_from(&other.exact);
        self.hidden.clone_from(&other.hidden);
        self.hidden_norm = other.hidden_norm;
        self.rescored = 0;
    }

    /// Scores that are all exact already (no table is read for them).
    pub fn from_exact(values: Vec<f32>) -> Self {
        let n = values.len();
        Self {
            values,
            exact: vec![true; n],
            hidden: Vec::new(),
            hidden_norm: 0.0,
            rescored: 0,
        }
    }

    /// Every row's score: exact where [`Self::make_exact`], [`Self::resolve_best`] or a
    /// suppression made it so, an int8 screen elsewhere.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// How many rows were recomputed in f16 since these scores were made or copied.
    pub fn rescored_rows(&self) -> usize {
        self.rescored
    }

    /// How many rows hold their exact score (suppressed rows included).
    pub fn exact_rows(&self) -> usize {
        self.exact.iter().filter(|e| **e).count()
    }

    /// Takes row `v` out of every choice (its score becomes `-inf`).
    pub fn suppress(&mut self, v: usize) {
        if let (Some(value), Some(exact)) = (self.values.get_mut(v), self.exact.get_mut(v)) {
            *value = f32::NEG_INFINITY;
            *exact = true;
        }
    }

    /// Takes every row in `range` out of every choice.
    pub fn suppress_range(&mut self, range: Range<usize>) {
        let range = range.start.min(self.len())..range.end.min(self.len());
        self.values[range.clone()].fill(f32::NEG_INFINITY);
        self.exact[range].fill(true);
    }

    /// The largest distance between row `v`'s score and its exact score.
    fn bound(&self, table: &LogitsTable, v: usize) -> f32 {
        if self.exact[v] {
            0.0
        } else {
            self.hidden_norm * table.slack[v]
        }
    }

    /// Makes row `v`'s score exact and returns it (`-inf` outside the vocabulary).
    pub fn make_exact(&mut self, table: &LogitsTable, v: usize) -> f32 {
        if v >= self.len() {
            return f32::NEG_INFINITY;
        }
        if !self.exact[v] {
            self.values[v] = table.exact(&self.hidden, v);
            self.exact[v] = true;
            self.rescored += 1;
        }
        self.values[v]
    }

    /// Makes exact every row in `range` whose exact score could be the range's largest,
    /// so that the largest score in `range`, and the row that holds it, are the f16
    /// product's, and every row left inexact scores below it. Suppressed rows are skipped.
    pub fn resolve_best(&mut self, table: &LogitsTable, range: Range<usize>) {
        self.resolve_near_best(table, range, 0.0);
    }

    /// As [`Self::resolve_best`], and also every row whose exact score could lie within
    /// `window` of the largest.
    pub fn resolve_near_best(&mut self, table: &LogitsTable, range: Range<usize>, window: f32) {
        let range = range.start.min(self.len())..range.end.min(self.len());
        if self.exact[range.clone()].iter().all(|e| *e) {
            return;
        }
        // A lower bound on the range's largest exact score, lowered by a few units in the
        // last place for the roundings of these sums.
        let best = range
            .clone()
            .map(|v| self.values[v] - self.bound(table, v))
            .fold(f32::NEG_INFINITY, f32::max);
        let floor = best - best.abs() * 4.0 * f32::EPSILON - window;
        let reaches = |l: &Self, v: usize| !l.exact[v] && l.values[v] + l.bound(table, v) >= floor;
        let candidates = range.clone().filter(|v| reaches(self, *v)).count();
        if candidates > range.len() / 8 {
            // A flat distribution (a window's first step): one parallel pass over the
            // range beats recomputing a large share of it row by row.
            self.make_all_exact(table, range);
            return;
        }
        for v in range {
            if reaches(self, v) {
                self.make_exact(table, v);
            }
        }
    }

    /// Makes every row in `range` exact, in one parallel pass.
    fn make_all_exact(&mut self, table: &LogitsTable, range: Range<usize>) {
        let first = range.start;
        let hidden = &self.hidden;
        let rescored: usize = self.values[range.clone()]
            .par_chunks_mut(CHUNK_ROWS)
            .zip(self.exact[range].par_chunks_mut(CHUNK_ROWS))
            .enumerate()
            .map(|(ci, (values, exact))| {
                let mut n = 0;
                for (j, (value, exact)) in values.iter_mut().zip(exact.iter_mut()).enumerate() {
                    if !*exact {
                        *value = table.exact(hidden, first + ci * CHUNK_ROWS + j);
                        *exact = true;
                        n += 1;
                    }
                }
                n
            })
            .sum();
        self.rescored += rescored;
    }

    /// The log of the summed exponentials of the scores in `range` could exceed
    /// `threshold`: false only when even every inexact score at its upper bound sums below it.
    pub fn log_sum_exp_may_exceed(
        &self,
        table: &LogitsTable,
        range: Range<usize>,
        threshold: f32,
    ) -> bool {
        let range = range.start.min(self.len())..range.end.min(self.len());
        let upper: Vec<f32> = range
            .map(|v| self.values[v] + self.bound(table, v))
            .collect();
        let max = kernels::max_value(&upper);
        if !max.is_finite() {
            return max > threshold;
        }
        // The margin covers the rounding of this sum and of the caller's exact one.
        max + kernels::exp_sum(&upper, max).ln() + 1e-3 > threshold
    }

    /// Makes every finite row in `range` exact.
    pub fn make_range_exact(&mut self, table: &LogitsTable, range: Range<usize>) {
        let range = range.start.min(self.len())..range.end.min(self.len());
        for v in range {
            if self.values[v] != f32::NEG_INFINITY {
                self.make_exact(table, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic generator (xorshift) so the tests need no seed crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
    }

    /// A table whose rows have a few large entries, as embeddings do, and a state with
    /// outliers, so quantisation errors are neither uniform nor small.
    fn table_and_state(n_vocab: usize, d: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
        let mut rng = Rng(seed);
        let table = (0..n_vocab * d)
            .map(|i| {
                let v = rng.next() * 0.1;
                if i % 37 == 0 {
                    v * 8.0
                } else {
                    v
                }
            })
            .collect();
        let x = (0..d)
            .map(|i| rng.next() * if i % 50 == 0 { 20.0 } else { 1.5 })
            .collect();
        (table, x)
    }

    #[test]
    fn every_screen_lies_within_its_bound_of_the_f16_score() {
        for (seed, d) in [(1u64, 384usize), (2, 100), (3, 17)] {
            let (emb, x) = table_and_state(3000, d, seed);
            let table = LogitsTable::new(&emb, d);
            let reference = LogitsTable::f16_only(&emb, d).scores(&x);
            let screened = table.scores(&x);
            let mut tightest = f32::INFINITY;
            for v in 0..table.n_vocab() {
                let gap = (screened.values()[v] - reference.values()[v]).abs();
                let bound = screened.bound(&table, v);
                assert!(gap <= bound, "row {v}: gap {gap} exceeds bound {bound}");
                tightest = tightest.min(bound / gap.max(1e-12));
            }
            // The bound is not vacuous: some row comes within a factor of 40 of it.
            assert!(tightest < 40.0, "bound is loose everywhere: {tightest}");
        }
    }

    #[test]
    fn the_best_row_and_its_score_are_the_f16_products() {
        let d = 64;
        for seed in 1..40u64 {
            let (mut emb, x) = table_and_state(2000, d, seed);
            // Near-ties: copies of one row with tiny changes, so screens cannot order them.
            let (src, dst) = (7usize, 1500usize);
            for k in 0..5 {
                for i in 0..d {
                    emb[(dst + k) * d + i] = emb[src * d + i] * (1.0 + 1e-4 * k as f32);
                }
            }
            let table = LogitsTable::new(&emb, d);
            let reference = LogitsTable::f16_only(&emb, d).scores(&x);
            let mut screened = table.scores(&x);
            let cut = 1000;
            screened.suppress_range(0..3);
            screened.resolve_best(&table, cut..2000);
            screened.resolve_best(&table, 0..2000);
            let best = |v: &[f32], r: Range<usize>| {
                v[r.clone()]
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map(|(i, s)| (i + r.start, s.to_bits()))
            };
            let mut expected = reference.values().to_vec();
            expected[..3].fill(f32::NEG_INFINITY);
            assert_eq!(best(screened.values(), 0..2000), best(&expected, 0..2000));
            assert_eq!(
                best(screened.values(), cut..2000),
                best(&expected, cut..2000)
            );
            assert!(
                screened.exact_rows() < 200,
                "screened {} rows",
                screened.exact_rows()
            );
        }
    }

    #[test]
    fn a_flat_distribution_is_made_exact_in_one_pass() {
        let d = 32;
        // Every row nearly equal: every screen could be the best.
        let (emb, x) = table_and_state(1, d, 4);
        let emb: Vec<f32> = (0..3000)
            .flat_map(|i| emb.iter().map(move |w| w * (1.0 + 1e-5 * i as f32)))
            .collect();
        let table = LogitsTable::new(&emb, d);
        let reference = LogitsTable::f16_only(&emb, d).scores(&x);
        let mut screened = table.scores(&x);
        screened.resolve_best(&table, 0..3000);
        assert_eq!(screened.exact_rows(), 3000);
        assert_eq!(screened.rescored_rows(), 3000);
        assert!(screened
            .values()
            .iter()
            .zip(reference.values())
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    #[test]
    fn an_unbounded_state_is_scored_in_f16() {
        let (emb, mut x) = table_and_state(50, 8, 5);
        x[3] = f32::INFINITY;
        let logits = LogitsTable::new(&emb, 8).scores(&x);
        assert_eq!(logits.exact_rows(), 50);
    }

    #[test]
    fn batched_scores_equal_one_at_a_time() {
        let d = 48;
        let (emb, x0) = table_and_state(5000, d, 9);
        let (_, x1) = table_and_state(1, d, 10);
        let table = LogitsTable::new(&emb, d);
        let both: Vec<f32> = x0.iter().chain(&x1).copied().collect();
        let batch = table.scores_rows(&both, 2);
        for (l, x) in batch.iter().zip([&x0, &x1]) {
            let one = table.scores(x);
            assert!(l
                .values()
                .iter()
                .zip(one.values())
                .all(|(a, b)| a.to_bits() == b.to_bits()));
            assert_eq!(l.exact_rows(), one.exact_rows());
        }
    }

    #[test]
    fn the_timestamp_mass_test_never_misses_a_mass_that_exceeds() {
        let d = 32;
        for seed in 1..30u64 {
            let (emb, x) = table_and_state(400, d, seed);
            let table = LogitsTable::new(&emb, d);
            let screened = table.scores(&x);
            let exact = LogitsTable::f16_only(&emb, d).scores(&x);
            let v = exact.values();
            let max = kernels::max_value(&v[100..]);
            let lse = max + kernels::exp_sum(&v[100..], max).ln();
            for threshold in [lse - 0.01, lse - 1e-4, lse + 1e-4, lse + 0.5] {
                if lse > threshold {
                    assert!(screened.log_sum_exp_may_exceed(&table, 100..400, threshold));
                }
            }
        }
    }
}

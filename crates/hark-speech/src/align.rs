//! Alignment helpers for word timings: a median filter along time and dynamic time
//! warping between text tokens and audio frames.

/// Median filter of odd `width` along each row of a `[rows, cols]` matrix, with reflect
/// padding at the row ends (as scipy/whisper do).
pub fn median_filter_rows(data: &mut [f32], cols: usize, width: usize) {
    if cols < width || width < 3 {
        return;
    }
    let half = width / 2;
    let mut padded = vec![0.0f32; cols + 2 * half];
    let mut window = vec![0.0f32; width];
    for row in data.chunks_exact_mut(cols) {
        for (i, v) in padded.iter_mut().enumerate() {
            let j = i as isize - half as isize;
            let j = if j < 0 {
                -j
            } else if j >= cols as isize {
                2 * (cols as isize - 1) - j
            } else {
                j
            };
            *v = row[j.clamp(0, cols as isize - 1) as usize];
        }
        for (c, out) in row.iter_mut().enumerate() {
            window.copy_from_slice(&padded[c..c + width]);
            window.sort_by(|a, b| a.total_cmp(b));
            *out = window[half];
        }
    }
}

/// Minimum-cost monotonic path through a `[n, m]` cost matrix from (0, 0) to (n-1, m-1),
/// moving diagonally, down (next token) or right (next frame). Returns (token, frame) pairs.
pub fn dtw_path(cost: &[f32], n: usize, m: usize) -> Vec<(usize, usize)> {
    if n == 0 || m == 0 || cost.len() < n * m {
        return Vec::new();
    }
    let w = m + 1;
    let mut acc = vec![f32::INFINITY; (n + 1) * w];
    let mut trace = vec![0u8; (n + 1) * w];
    acc[0] = 0.0;
    for j in 1..=m {
        for i in 1..=n {
            let c0 = acc[(i - 1) * w + j - 1];
            let c1 = acc[(i - 1) * w + j];
            let c2 = acc[i * w + j - 1];
            let (c, t) = if c0 < c1 && c0 < c2 {
                (c0, 0)
            } else if c1 < c0 && c1 < c2 {
                (c1, 1)
            } else {
                (c2, 2)
            };
            acc[i * w + j] = cost[(i - 1) * m + j - 1] + c;
            trace[i * w + j] = t;
        }
    }
    let (mut i, mut j) = (n, m);
    let mut path = Vec::with_capacity(n + m);
    while i > 0 || j > 0 {
        path.push((i.saturating_sub(1), j.saturating_sub(1)));
        let t = if i == 0 {
            2
        } else if j == 0 {
            1
        } else {
            trace[i * w + j]
        };
        match t {
            0 => {
                i -= 1;
                j -= 1;
            }
            1 => i -= 1,
            _ => j -= 1,
        }
    }
    path.reverse();
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtw_follows_the_cheap_diagonal() {
        // 3 tokens over 6 frames; token k is cheap at frames 2k..2k+1.
        let mut cost = vec![1.0f32; 18];
        for k in 0..3 {
            cost[k * 6 + 2 * k] = 0.0;
            cost[k * 6 + 2 * k + 1] = 0.0;
        }
        let path = dtw_path(&cost, 3, 6);
        let first_frame: Vec<usize> = (0..3)
            .map(|k| path.iter().find(|p| p.0 == k).unwrap().1)
            .collect();
        assert_eq!(first_frame, vec![0, 2, 4]);
    }

    #[test]
    fn median_removes_spikes() {
        let mut row = vec![0.0, 0.0, 9.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        median_filter_rows(&mut row, 8, 7);
        assert!(row.iter().all(|v| *v == 0.0));
    }
}

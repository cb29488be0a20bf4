//! Micro-benchmark of the hot kernels (GEMM shapes of the tiny encoder, one attention head,
//! the logits product) to see where time goes; run with `--release`.

use hark_speech::panels;
use std::time::Instant;

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    println!("{}", hark_speech::kernels::cpu_summary());
    pool.install(|| {
        for (m, k, n) in [
            (1500, 384, 1536),
            (1500, 1536, 384),
            (1500, 384, 1152),
            (3000, 240, 384),
            (1500, 1152, 384),
        ] {
            let x = vec![0.5f32; m * k];
            let w = vec![0.25f32; n * k];
            let mut out = vec![0.0f32; m * n];
            let t = Instant::now();
            let reps = 5;
            for _ in 0..reps {
                hark_speech::kernels::linear(&x, m, k, &w, n, None, &mut out);
            }
            let secs = t.elapsed().as_secs_f64() / reps as f64;
            println!(
                "gemm {m}x{k}x{n}: {:.2} ms, {:.1} GFLOP/s",
                secs * 1e3,
                2.0 * (m * k * n) as f64 / secs / 1e9
            );
            // The same product on weights packed in panels (as the model loads them).
            let mut w_panels = vec![0.0f32; panels::row_panels_len(n, k)];
            panels::pack_row_panels(&w, k, n, k, &mut w_panels);
            let path = hark_speech::kernels::simd_path();
            let t = Instant::now();
            for _ in 0..reps {
                panels::linear(path, &x, m, k, &w_panels, n, None, &mut out, panels::Epilogue::Store);
            }
            let secs = t.elapsed().as_secs_f64() / reps as f64;
            println!(
                "  panels: {:.2} ms, {:.1} GFLOP/s",
                secs * 1e3,
                2.0 * (m * k * n) as f64 / secs / 1e9
            );
            // The same product on int8 weights (quantisation of the activations included).
            let w: Vec<f32> = (0..n * k)
                .map(|i| ((i * 7919) % 255) as f32 / 255.0 - 0.5)
                .collect();
            let layer = hark_speech::quant::QuantLinear::quantize(&w, n, k, None);
            let kernel =
                hark_speech::quant::Int8Kernel::for_path(hark_speech::kernels::simd_path());
            let t = Instant::now();
            for _ in 0..reps {
                layer.forward(&x, m, &mut out);
            }
            let secs = t.elapsed().as_secs_f64() / reps as f64;
            println!(
                "  int8 ({}): {:.2} ms, {:.1} GOP/s",
                kernel.name(),
                secs * 1e3,
                2.0 * (m * k * n) as f64 / secs / 1e9
            );
        }
        // One head of the encoder's self-attention for one block of 96 queries over a
        // 30-s window (t = 1,500, head_dim 64, rows of the fused [t, 3·384] buffer):
        // the general GEMM on the strided operands against the attention kernels on
        // keys and values packed once per layer (packing timed on its own).
        let (t, d, hd, rows) = (1500, 384, 64, 96);
        let path = hark_speech::kernels::simd_path();
        let qkv: Vec<f32> = (0..t * 3 * d)
            .map(|i| (i * 7919 % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let mut scores = vec![0.0f32; rows * t];
        let mut out = vec![0.0f32; rows * d];
        let mut keys = vec![0.0f32; panels::row_panels_len(t, hd)];
        let mut values = vec![0.0f32; panels::column_panels_len(t, hd)];
        let reps = 50;
        let gflops = |secs: f64| 2.0 * (rows * t * hd) as f64 / secs / 1e9;
        let timed = |f: &mut dyn FnMut()| {
            let c = Instant::now();
            for _ in 0..reps {
                f();
            }
            c.elapsed().as_secs_f64() / reps as f64
        };
        let gemm_qk = timed(&mut || {
            hark_speech::kernels::gemm_strided(
                rows, hd, t, 0.125, &qkv, 3 * d, 1, &qkv[d..], 1, 3 * d, &mut scores, t,
            )
        });
        let gemm_pv = timed(&mut || {
            hark_speech::kernels::gemm_strided(
                rows, t, hd, 1.0, &scores, t, 1, &qkv[2 * d..], 3 * d, 1, &mut out, d,
            )
        });
        let pack = timed(&mut || {
            panels::pack_row_panels(&qkv[d..], 3 * d, t, hd, &mut keys);
            panels::pack_column_panels(&qkv[2 * d..], 3 * d, t, hd, &mut values);
        });
        let qk = timed(&mut || {
            panels::dot_rows(
                path, &qkv, 3 * d, rows, &keys, t, hd, 0.125, None, &mut scores, t,
            )
        });
        let pv = timed(&mut || {
            panels::weighted_rows(path, &scores, rows, t, &values, hd, &mut out, d)
        });
        println!(
            "attention head, {rows} queries x {t} keys, one thread: gemm scores {:.3} ms ({:.1} GFLOP/s), values {:.3} ms ({:.1}); kernels scores {:.3} ms ({:.1}), values {:.3} ms ({:.1}); packing {:.3} ms per head and layer",
            gemm_qk * 1e3,
            gflops(gemm_qk),
            gemm_pv * 1e3,
            gflops(gemm_pv),
            qk * 1e3,
            gflops(qk),
            pv * 1e3,
            gflops(pv),
            pack * 1e3
        );
        let c = Instant::now();
        for row in scores.chunks_exact_mut(t) {
            hark_speech::kernels::softmax(row);
        }
        println!(
            "softmax, {rows} rows of {t}: {:.3} ms",
            c.elapsed().as_secs_f64() * 1e3
        );
        let table = vec![0x3c00u16; 51864 * 384];
        let x = vec![0.1f32; 384];
        let mut logits = vec![0.0f32; 51864];
        let c = Instant::now();
        for _ in 0..20 {
            hark_speech::kernels::logits_f16(&x, &table, 51864, &mut logits);
        }
        println!(
            "logits f16: {:.2} ms",
            c.elapsed().as_secs_f64() * 1e3 / 20.0
        );
        let qtable = vec![1i8; 51864 * 384];
        let scales = vec![0.01f32; 51864];
        let c = Instant::now();
        for _ in 0..20 {
            hark_speech::kernels::logits_i8(&x, &qtable, &scales, 51864, &mut logits);
        }
        println!(
            "logits i8: {:.2} ms",
            c.elapsed().as_secs_f64() * 1e3 / 20.0
        );
        let mut g = vec![0.3f32; 1500 * 1536];
        let c = Instant::now();
        hark_speech::kernels::gelu_par(&mut g);
        println!("gelu 1500x1536: {:.2} ms", c.elapsed().as_secs_f64() * 1e3);
    });
}

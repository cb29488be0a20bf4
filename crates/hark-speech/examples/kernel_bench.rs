//! Micro-benchmark of the hot kernels (GEMM shapes of the tiny encoder, the logits product,
//! one decoder step) to see where time goes; run with `--release`.

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
        let (t, hd) = (1500, 64);
        let q = vec![0.1f32; t * 1152];
        let mut scores = vec![0.0f32; t * t];
        let c = Instant::now();
        hark_speech::kernels::gemm_strided(
            t,
            hd,
            t,
            1.0,
            &q,
            1152,
            1,
            &q[384..],
            1,
            1152,
            &mut scores,
            t,
        );
        println!(
            "attn scores head: {:.2} ms",
            c.elapsed().as_secs_f64() * 1e3
        );
        let c = Instant::now();
        for row in scores.chunks_exact_mut(t) {
            hark_speech::kernels::softmax(row);
        }
        println!("softmax head: {:.2} ms", c.elapsed().as_secs_f64() * 1e3);
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

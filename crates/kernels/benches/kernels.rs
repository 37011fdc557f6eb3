//! Micro-benchmarks of the CPU kernels (`cargo bench -p frugal-kernels`), single-threaded.
//!
//! - GEMV: `y = W x` for a quantized (or F32/F16/BF16) `W` of 2048×2048 (an attention
//!   projection) and 1408×2048 (a DeepSeek-V2-Lite expert's gate/up), one `vec_dot` per row,
//!   on every available ISA. Reported as weight GB/s (bytes of `W` / time): decode is bound by
//!   streaming the weights, so this is the number to compare with memory bandwidth.
//! - GEMM: `matmul::matmul_wt` (f32, `[t, k] × [n, k]ᵀ`) in GFLOP/s (`2·t·n·k / time`).
//! - Quantized products through `quant::gemm` (`qgemm`), next to the per-row `vec_dot` loop
//!   they replace (`old`), for the types of Q4_K_M files: with 1 token as weight GB/s (decode),
//!   with 8, 32, 64 tokens as GFLOP/s (prefill; an expert sees ~50 tokens of a 512-token
//!   batch), on 2048×2048, a 512×1024 and a 1408×2048 (DeepSeek-V2-Lite) expert, and 64×2048
//!   (in L2). `cold`: 16384×7168 Q4_K (66 MB) and Q6_K (96 MB), larger than the L3, read once
//!   per pass, i.e. from DRAM.
//! - `repack`: Q4_K and Q6_K products, plain `gemm` (`old`) against the row-interleaved
//!   `quant::repack` layout (`new`), on 2048×2048, the expert shapes 1024×512, 512×1024,
//!   1408×2048, and the cold 16384×7168, and Q8_0 on four heads of MLA's `k_b` (2048×128):
//!   one token as GB/s of the original bytes (decode); in
//!   cache also 4, 16 and 64 tokens (the multi-token tiles; prefill), and 512 on 2048×2048,
//!   as GFLOP/s. Rows marked `(models keep it plain)` time the layout on an ISA where
//!   `repack::worth_repacking` says no (e.g. Q8_0 on AVX-512 without VNNI, which falls back
//!   row by row): models use the plain product (`old`) there.
//! - `mla`: the f32 products of MLA attention (`matmul::gemm_nn`, `matmul::gemm_nt`) per ISA,
//!   in GFLOP/s (see `attention_f32`); `cold`: decode's scores against 27 layers' caches of
//!   4096 latents, from DRAM. `gqa … cold`: GQA decode's value sums over 28 layers' caches
//!   of 4096 positions, from DRAM, with `gemm_nn` and with `gemm_nn_streamed`.
//!
//! Plain `harness = false` timing: one warm-up pass, then passes until `MIN_TIME` has elapsed,
//! reporting the fastest pass (least disturbed by other processes on a shared machine).
//! Arguments filter by substring: `cargo bench -p frugal-kernels -- Q4_K avx2`.

use frugal_kernels::cpu::Isa;
use frugal_kernels::matmul::matmul_wt;
use frugal_kernels::quant::repack::{repack, repacked_gemm, worth_repacking};
use frugal_kernels::quant::{dot::vec_dot, gemm, QuantType, QuantizedActs};
use frugal_testdata::Rng;
use std::hint::black_box;
use std::time::{Duration, Instant};

const MIN_TIME: Duration = Duration::from_millis(150);

/// Fastest of the timed passes of `f`, after one warm-up pass.
fn time(mut f: impl FnMut()) -> Duration {
    f();
    let (start, mut best) = (Instant::now(), Duration::MAX);
    while start.elapsed() < MIN_TIME {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
    }
    best
}

/// Random weight bytes of `ty` whose f16 fields are small finite scales. Speed does not depend
/// on the values, only on the kernels not meeting NaN/denormal slow paths in the float step.
fn weights(rng: &mut Rng, ty: QuantType, rows: usize, cols: usize) -> Vec<u8> {
    let n = rows * cols;
    let mut w: Vec<u8> = (0..ty.row_bytes(n).expect("whole blocks"))
        .map(|_| rng.next() as u8)
        .collect();
    let f16_at: &[usize] = match ty {
        QuantType::F16 => {
            for c in w.chunks_exact_mut(2) {
                c.copy_from_slice(&half::f16::from_f32(rng.unit()).to_le_bytes());
            }
            &[]
        }
        QuantType::F32 => {
            for c in w.chunks_exact_mut(4) {
                c.copy_from_slice(&rng.unit().to_le_bytes());
            }
            &[]
        }
        QuantType::BF16 => {
            for c in w.chunks_exact_mut(2) {
                c.copy_from_slice(&half::bf16::from_f32(rng.unit()).to_le_bytes());
            }
            &[]
        }
        QuantType::Q2K => &[80, 82],
        QuantType::Q3K => &[108],
        QuantType::Q6K => &[208],
        QuantType::Q4_1 | QuantType::Q5_1 => &[0, 2],
        QuantType::Q4K | QuantType::Q5K => &[0, 2],
        QuantType::MXFP4 => &[], // E8M0 scale: any byte is finite except 0xff.
        _ => &[0],
    };
    let ts = ty.type_size();
    for b in w.chunks_exact_mut(ts) {
        for &o in f16_at {
            b[o..o + 2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
        }
        if ty == QuantType::MXFP4 {
            b[0] = 120;
        }
    }
    w
}

fn main() {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted =
        |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    let mut rng = Rng(0x0062_656e_6368);
    println!(
        "single thread; best of repeated passes ≥ {MIN_TIME:?}; ISAs {:?}",
        Isa::available()
    );
    println!(
        "{:<28} {:>10} {:>10}",
        "gemv (rows×cols) type isa", "µs", "GB/s"
    );
    let types = [
        QuantType::Q2K,
        QuantType::Q3K,
        QuantType::Q4K,
        QuantType::Q5K,
        QuantType::Q6K,
        QuantType::IQ4XS,
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q5_0,
        QuantType::Q5_1,
        QuantType::Q8_0,
        QuantType::IQ4NL,
        QuantType::MXFP4,
        QuantType::F32,
        QuantType::F16,
        QuantType::BF16,
    ];
    for (rows, cols) in [(2048usize, 2048usize), (1408, 2048)] {
        let x: Vec<f32> = (0..cols).map(|_| rng.unit()).collect();
        for ty in types {
            let isas: Vec<Isa> = Isa::available()
                .into_iter()
                .filter(|isa| wanted(&format!("{rows}x{cols} {} {isa}", ty.name())))
                .collect();
            if isas.is_empty() {
                continue;
            }
            let format = ty.act_format().expect("kernel type");
            let acts = QuantizedActs::from_f32(format, &x).expect("whole blocks");
            let w = weights(&mut rng, ty, rows, cols);
            let rb = ty.row_bytes(cols).expect("whole blocks");
            for isa in isas {
                let name = format!("{rows}x{cols} {} {isa}", ty.name());
                let mut y = vec![0.0f32; rows];
                let t = time(|| {
                    for (o, row) in y.iter_mut().zip(w.chunks_exact(rb)) {
                        *o = vec_dot(isa, ty, black_box(row), black_box(&acts)).expect("valid");
                    }
                    black_box(&y);
                });
                let gbs = w.len() as f64 / t.as_secs_f64() / 1e9;
                println!("{name:<28} {:>10.1} {gbs:>10.2}", t.as_secs_f64() * 1e6);
            }
        }
    }
    let (t, n, k) = (16usize, 1024usize, 2048usize);
    let name = format!("gemm f32 matmul_wt t={t} n={n} k={k}");
    if wanted(&name) {
        let x: Vec<f32> = (0..t * k).map(|_| rng.unit()).collect();
        let w: Vec<f32> = (0..n * k).map(|_| rng.unit()).collect();
        let mut y = vec![0.0f32; t * n];
        let d = time(|| {
            matmul_wt(black_box(&x), black_box(&w), k, &mut y);
            black_box(&y);
        });
        let gflops = 2.0 * (t * n * k) as f64 / d.as_secs_f64() / 1e9;
        println!(
            "{name:<40} {:>10.1} µs {gflops:>8.2} GFLOP/s",
            d.as_secs_f64() * 1e6
        );
    }
    qgemm(&mut rng, &wanted);
    repacked(&mut rng, &wanted);
    attention_f32(&mut rng, &wanted);
}

/// The `qgemm` and `cold` rows (module docs): old per-row `vec_dot` loop against `gemm`.
fn qgemm(rng: &mut Rng, wanted: &dyn Fn(&str) -> bool) {
    println!(
        "{:<36} {:>10} {:>10} {:>10} {:>10} {:>7}",
        "qgemm (rows×cols) type isa tokens", "old µs", "new µs", "old", "new", "new/old"
    );
    let types = [
        QuantType::Q4K,
        QuantType::Q6K,
        QuantType::Q8_0,
        QuantType::Q5K,
        QuantType::Q5_0,
    ];
    let shapes = [
        (2048usize, 2048usize),
        (512, 1024),
        (1408, 2048),
        (64, 2048),
    ];
    let mut cases: Vec<(usize, usize, QuantType, usize, &str)> = Vec::new();
    for (rows, cols) in shapes {
        for ty in types {
            for tokens in [1usize, 8, 32, 64] {
                cases.push((rows, cols, ty, tokens, "qgemm"));
            }
        }
    }
    // 16384 × 7168: 66 MB of Q4_K, 96 MB of Q6_K, past this machine's 32 MB L3.
    cases.push((16384, 7168, QuantType::Q4K, 1, "cold"));
    cases.push((16384, 7168, QuantType::Q6K, 1, "cold"));
    // MLA decode's per-head products (`mla`): four heads' `k_b` (`W_UK_hᵀ`, 512 rows of 128,
    // Q8_0 in llama.cpp's Q4_K_M files) and of `v_b` (`W_UV_h`, 128 rows of 512).
    cases.push((2048, 128, QuantType::Q8_0, 1, "mla k_b"));
    cases.push((512, 512, QuantType::Q6K, 1, "mla v_b"));
    cases.push((512, 512, QuantType::Q4K, 1, "mla v_b"));
    for (rows, cols, ty, tokens, what) in cases {
        let isas: Vec<Isa> = Isa::available()
            .into_iter()
            .filter(|&isa| isa != Isa::Scalar)
            .filter(|isa| {
                wanted(&format!(
                    "{what} {rows}x{cols} {} {isa} t={tokens}",
                    ty.name()
                ))
            })
            .collect();
        if isas.is_empty() {
            continue;
        }
        let format = ty.act_format().expect("kernel type");
        let acts: Vec<QuantizedActs> = (0..tokens)
            .map(|_| {
                let x: Vec<f32> = (0..cols).map(|_| rng.unit()).collect();
                QuantizedActs::from_f32(format, &x).expect("whole blocks")
            })
            .collect();
        let w = weights(rng, ty, rows, cols);
        let rb = ty.row_bytes(cols).expect("whole blocks");
        for isa in isas {
            let name = format!("{what} {rows}x{cols} {} {isa} t={tokens}", ty.name());
            let mut y = vec![0.0f32; rows * tokens];
            let old = time(|| {
                for (r, row) in w.chunks_exact(rb).enumerate() {
                    for (t, a) in acts.iter().enumerate() {
                        y[t * rows + r] = vec_dot(isa, ty, black_box(row), a).expect("valid");
                    }
                }
                black_box(&y);
            });
            let new = time(|| {
                gemm(isa, ty, black_box(&w), &acts, &mut y, rows).expect("valid");
                black_box(&y);
            });
            let rate = |d: Duration| {
                if tokens == 1 {
                    w.len() as f64 / d.as_secs_f64() / 1e9
                } else {
                    2.0 * (rows * cols * tokens) as f64 / d.as_secs_f64() / 1e9
                }
            };
            let unit = if tokens == 1 { "GB/s" } else { "GFLOP/s" };
            // Where models keep the plain layout on this ISA, the row only says why.
            let used = if worth_repacking(isa, ty, cols) {
                ""
            } else {
                "  (models keep it plain)"
            };
            println!(
                "{name:<36} {:>10.1} {:>10.1} {:>10.2} {:>10.2} {:>7.2} {unit}{used}",
                old.as_secs_f64() * 1e6,
                new.as_secs_f64() * 1e6,
                rate(old),
                rate(new),
                old.as_secs_f64() / new.as_secs_f64()
            );
        }
    }
}

/// The `repack` rows (module docs): plain `gemm` against `repacked_gemm`.
fn repacked(rng: &mut Rng, wanted: &dyn Fn(&str) -> bool) {
    println!(
        "{:<36} {:>10} {:>10} {:>10} {:>10} {:>7}",
        "repack (rows×cols) type isa tokens", "old µs", "new µs", "old", "new", "new/old"
    );
    let shapes = [
        (2048usize, 2048usize),
        (1024, 512),
        (512, 1024),
        (1408, 2048),
        (16384, 7168),
    ];
    // Q8_0: four heads of MLA's `k_b` (rows of 128: the short rows it is repacked for).
    for (ty, (rows, cols)) in [QuantType::Q4K, QuantType::Q6K]
        .into_iter()
        .flat_map(|ty| shapes.map(|s| (ty, s)))
        .chain([(QuantType::Q8_0, (2048, 128))])
    {
        let isas: Vec<Isa> = Isa::available()
            .into_iter()
            .filter(|&isa| isa != Isa::Scalar)
            .filter(|isa| wanted(&format!("repack {rows}x{cols} {} {isa}", ty.name())))
            .collect();
        if isas.is_empty() {
            continue;
        }
        let w = weights(rng, ty, rows, cols);
        let r = repack(ty, &w, rows, cols).expect("repack");
        // Several tokens too (in cache only): the multi-token tiles.
        let token_counts: &[usize] = match (rows, cols) {
            (16384, _) => &[1],
            // A whole 512-token prompt through a dense matrix (several activation blocks).
            (2048, 2048) => &[1, 4, 16, 64, 512],
            (_, 128) => &[1, 4],
            _ => &[1, 4, 16, 64],
        };
        for (&tokens, isa) in token_counts
            .iter()
            .flat_map(|t| isas.iter().map(move |i| (t, *i)))
        {
            let acts: Vec<QuantizedActs> = (0..tokens)
                .map(|_| {
                    let x: Vec<f32> = (0..cols).map(|_| rng.unit()).collect();
                    QuantizedActs::from_f32(ty.act_format().expect("kernel"), &x).expect("acts")
                })
                .collect();
            let name = format!("repack {rows}x{cols} {} {isa} t={tokens}", ty.name());
            let mut y = vec![0.0f32; rows * tokens];
            let old = time(|| {
                gemm(isa, ty, black_box(&w), &acts, &mut y, rows).expect("valid");
                black_box(&y);
            });
            let new = time(|| {
                repacked_gemm(isa, black_box(&r), 0..rows, &acts, &mut y, rows).expect("valid");
                black_box(&y);
            });
            // One token: original weight bytes per second (the decode rate); more: GFLOP/s.
            let rate = |d: Duration| {
                if tokens == 1 {
                    w.len() as f64 / d.as_secs_f64() / 1e9
                } else {
                    2.0 * (rows * cols * tokens) as f64 / d.as_secs_f64() / 1e9
                }
            };
            let unit = if tokens == 1 { "GB/s" } else { "GFLOP/s" };
            // Where models keep the plain layout on this ISA, the row only says why.
            let used = if worth_repacking(isa, ty, cols) {
                ""
            } else {
                "  (models keep it plain)"
            };
            println!(
                "{name:<36} {:>10.1} {:>10.1} {:>10.2} {:>10.2} {:>7.2} {unit}{used}",
                old.as_secs_f64() * 1e6,
                new.as_secs_f64() * 1e6,
                rate(old),
                rate(new),
                old.as_secs_f64() / new.as_secs_f64()
            );
        }
    }
}

/// The `mla` rows: the f32 products of MLA attention (DeepSeek V3 head shapes, a 512-position
/// cache) per ISA, in GFLOP/s. `gemm_nn`: decompressing one head's keys `W_UK_h Cᵀ`
/// (128×512 · 512×512), a 64-query block's `P·V` (64×512 · 512×128); `gemm_nt`: 8 absorbed
/// queries' scores against 512 latents (8×512 · (512×512)ᵀ), next to the `dot_n` loop (4
/// queries per latent read) it replaced (`old`).
fn attention_f32(rng: &mut Rng, wanted: &dyn Fn(&str) -> bool) {
    use frugal_kernels::matmul::nn::{gemm_nn_streamed_with, gemm_nn_with};
    use frugal_kernels::matmul::{dot_n, nt::gemm_nt_with, MatMut, MatRef};
    let report = |name: String, flops: usize, d: Duration| {
        let gflops = 2.0 * flops as f64 / d.as_secs_f64() / 1e9;
        println!(
            "{name:<40} {:>10.1} µs {gflops:>8.2} GFLOP/s",
            d.as_secs_f64() * 1e6
        );
    };
    let mut vals = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.unit()).collect() };
    for (what, m, n, k) in [
        ("W_UK·Cᵀ", 128usize, 512usize, 512usize),
        ("P·V", 64, 128, 512),
        // Absorbed decode: 4 heads' probabilities over 64 cached latents.
        ("decode P·C", 4, 512, 64),
    ] {
        let (a, b) = (vals(m * k), vals(k * n));
        let mut c = vec![0.0f32; m * n];
        for isa in Isa::available() {
            let name = format!("mla gemm_nn {what} {m}x{n}x{k} {isa}");
            if !wanted(&name) {
                continue;
            }
            let d = time(|| {
                let (a, b) = (
                    MatRef::new(black_box(&a), m, k, k),
                    MatRef::new(&b, k, n, n),
                );
                gemm_nn_with(isa, a, b, MatMut::new(&mut c, m, n, n), false);
                black_box(&c);
            });
            report(name, m * n * k, d);
        }
    }
    // Prefill-like (8 queries × 512 positions) and absorbed decode (4 heads × 64 latents).
    for (m, n, k) in [(4usize, 64usize, 512usize), (8, 512, 512)] {
        let (a, b) = (vals(m * k), vals(n * k));
        let mut c = vec![0.0f32; m * n];
        for isa in Isa::available() {
            let name = format!("mla gemm_nt scores {m}x{n}x{k} {isa}");
            if !wanted(&name) {
                continue;
            }
            let d = time(|| {
                let (a, b) = (
                    MatRef::new(black_box(&a), m, k, k),
                    MatRef::new(&b, n, k, k),
                );
                gemm_nt_with(isa, a, b, MatMut::new(&mut c, m, n, n), false);
                black_box(&c);
            });
            report(name, m * n * k, d);
        }
    }
    // Deep-context decode, from DRAM: 8 absorbed queries against 27 layers' caches of 4096
    // latents (226 MB, far past the L3), 128 positions per product as `attend_range` goes.
    let (m, k, layers, depth, block) = (8usize, 512usize, 27usize, 4096usize, 128usize);
    let name = |isa: Isa| format!("mla gemm_nt scores cold {m}x({layers}·{depth})x{k} {isa}");
    if Isa::available().into_iter().any(|isa| wanted(&name(isa))) {
        let a = vals(m * k);
        let caches: Vec<Vec<f32>> = (0..layers).map(|_| vals(depth * k)).collect();
        let mut c = vec![0.0f32; m * block];
        for isa in Isa::available().into_iter().filter(|&i| i != Isa::Scalar) {
            if !wanted(&name(isa)) {
                continue;
            }
            let d = time(|| {
                for cache in &caches {
                    for b in cache.chunks_exact(block * k) {
                        let (a, b) = (
                            MatRef::new(black_box(&a), m, k, k),
                            MatRef::new(b, block, k, k),
                        );
                        gemm_nt_with(isa, a, b, MatMut::new(&mut c, m, block, block), false);
                        black_box(&c);
                    }
                }
            });
            report(name(isa), m * k * layers * depth, d);
        }
    }
    // GQA decode's `P·V` from DRAM: 6 query heads' weights over one kv head's values, 28
    // layers of 4096 positions of 128 (59 MB), 256 positions per product as `gqa` goes;
    // plain (`gemm_nn`) and `streamed` (`gemm_nn_streamed`, which gqa uses).
    let (m, n, layers, depth, block) = (6usize, 128usize, 28usize, 4096usize, 256usize);
    for streamed in [false, true] {
        let how = if streamed { "streamed" } else { "plain" };
        let name =
            |isa: Isa| format!("gqa gemm_nn values cold {m}x{n}x({layers}·{depth}) {how} {isa}");
        if !Isa::available().into_iter().any(|isa| wanted(&name(isa))) {
            continue;
        }
        let a = vals(m * block);
        let caches: Vec<Vec<f32>> = (0..layers).map(|_| vals(depth * n)).collect();
        let mut c = vec![0.0f32; m * n];
        for isa in Isa::available().into_iter().filter(|&i| i != Isa::Scalar) {
            if !wanted(&name(isa)) {
                continue;
            }
            let product = if streamed {
                gemm_nn_streamed_with
            } else {
                gemm_nn_with
            };
            let d = time(|| {
                for cache in &caches {
                    for b in cache.chunks_exact(block * n) {
                        let (a, b) = (
                            MatRef::new(black_box(&a), m, block, block),
                            MatRef::new(b, block, n, n),
                        );
                        product(isa, a, b, MatMut::new(&mut c, m, n, n), true);
                        black_box(&c);
                    }
                }
            });
            report(name(isa), m * n * layers * depth, d);
        }
    }
    let (m, n, k) = (8usize, 512usize, 512usize);
    let (a, b) = (vals(m * k), vals(n * k));
    let mut c = vec![0.0f32; m * n];
    let name = format!("mla dot_n scores {m}x{n}x{k} old");
    if wanted(&name) {
        let d = time(|| {
            for q0 in (0..m).step_by(4) {
                let rows: [&[f32]; 4] = std::array::from_fn(|j| &a[(q0 + j) * k..(q0 + j + 1) * k]);
                for s in 0..n {
                    let r = dot_n(rows, black_box(&b[s * k..(s + 1) * k]));
                    for j in 0..4 {
                        c[(q0 + j) * n + s] = r[j];
                    }
                }
            }
            black_box(&c);
        });
        report(name, m * n * k, d);
    }
}

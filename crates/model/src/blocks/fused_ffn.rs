//! SwiGLU MLPs run together: the routed experts a MoE layer chose, its shared experts, or one
//! dense MLP, in two parallel steps instead of three products per MLP.
//!
//! Each MLP of the step (a "job") takes a group of the input's rows (the tokens routed to that
//! expert; every row for shared experts and dense MLPs):
//!
//! 1. The input rows are quantized once per activation format and shared by every job's gate
//!    and up projections (a job over a subset of rows gathers its rows' quantized copies).
//! 2. One parallel step over work items `(job, block of intermediate rows)`: each item computes
//!    its block of `gate` and `up` for the job's rows and writes `silu(gate) · up` into the
//!    job's hidden buffer `[rows, inter]`. The items of all jobs are shared as one list
//!    ([`ItemPlan`]), so the threads stay busy across experts of different sizes. With one
//!    token, an MLP whose gate and up were repacked as a pair (`Linear::load_pair`) reads
//!    each group of gate rows just before the same group of up rows: one stream from memory,
//!    not two.
//! 3. Each job's hidden rows are quantized for its down projection: in prefill as one
//!    parallel step; in decode inside step 2, by the thread whose item completes the job.
//! 4. One parallel step over `(job, block of output rows)` for every down projection.
//!
//! For many tokens (prefill) each expert's gate, up and down are `gemm`s over its token group:
//! its weights are read once per batch. Every output value is the same row dot product as
//! [`Mlp::forward`]'s, so the results equal the unfused path's bit for bit. The buffers live in
//! per-thread scratch reused across calls.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

use frugal_kernels::activation;
use smallvec::SmallVec;

use super::ffn::Mlp;
use super::linear::Linear;
use super::products::{
    self, quantize_in_parallel, quantize_rows, run_items, with_scratch, Acts, ActsCache, ItemPlan,
    QuantRequest, SharedOut,
};
use crate::profile::{self, Phase};

/// One MLP of a fused step and the input rows it takes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FfnJob<'j, 'w> {
    /// The MLP.
    pub mlp: &'j Mlp<'w>,
    /// Indices of the input rows it runs on, ascending; `None`: all rows in order.
    pub rows: Option<&'j [usize]>,
}

/// One job's buffers.
#[derive(Debug, Default)]
struct JobScratch {
    /// The job's input rows `[n, hidden]` when it takes a subset.
    x: Vec<f32>,
    /// Those rows quantized (a subset's own; all rows share [`Scratch::x`]).
    x_acts: ActsCache,
    /// `silu(gate) · up`, `[n, inter]`.
    h: Vec<f32>,
    /// `h` quantized for the down projection.
    h_acts: ActsCache,
    /// The MLP's output `[n, hidden]`.
    y: Vec<f32>,
}

/// Buffers of a fused step, kept per thread between calls.
#[derive(Debug, Default)]
struct Scratch {
    /// All input rows quantized.
    x: ActsCache,
    jobs: Vec<JobScratch>,
}

/// A job's down-projection input cache, filled inside step 2 by the thread that finishes
/// the job (`run_in`).
#[derive(Debug)]
struct DownActs(*mut ActsCache);

// SAFETY: only the one thread whose item completes a job dereferences its pointer, while the
// caller's borrow of the job's scratch outlives the parallel step.
unsafe impl Send for DownActs {}
// SAFETY: as above.
unsafe impl Sync for DownActs {}

/// A job's hidden rows `h` (written by step 2's items) and its down-projection input cache.
type JobOut = (SharedOut, DownActs);

/// One value per job of a step: on the stack for a decode step's few MLPs (a MoE layer's
/// chosen and shared experts), so that the step allocates nothing.
type PerJob<T> = SmallVec<[T; 16]>;

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Run every job's MLP over its rows of `x` (`[t, hidden]`), then call `finish` with each
/// job's output (`[rows of job j, hidden]`, in the job's row order).
pub(crate) fn run_mlps<R>(
    jobs: &[FfnJob<'_, '_>],
    x: &[f32],
    threads: usize,
    finish: impl FnOnce(&[&[f32]]) -> R,
) -> R {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => run_in(&mut s, jobs, x, threads, finish),
        Err(_) => run_in(&mut Scratch::default(), jobs, x, threads, finish),
    })
}

fn run_in<R>(
    s: &mut Scratch,
    jobs: &[FfnJob<'_, '_>],
    x: &[f32],
    threads: usize,
    finish: impl FnOnce(&[&[f32]]) -> R,
) -> R {
    let Some(first) = jobs.first() else {
        return finish(&[]);
    };
    let hidden = first.mlp.gate().cols();
    assert!(
        x.len().is_multiple_of(hidden),
        "fused MLPs: input is not [t, {hidden}]"
    );
    let t = x.len() / hidden;
    if s.jobs.len() < jobs.len() {
        s.jobs.resize_with(jobs.len(), JobScratch::default);
    }
    let Scratch {
        x: x_acts,
        jobs: js,
    } = s;
    let js = &mut js[..jobs.len()];

    // 1. Inputs: all rows once per format (in parallel for many rows); a job over a subset
    //    gathers its rows and their quantized copies.
    let in_span = profile::span(Phase::FfnQuant);
    x_acts.clear();
    for job in jobs {
        for lin in [job.mlp.gate(), job.mlp.up()] {
            if let Some(f) = lin.act_format() {
                x_acts.prepare_par(f, x, hidden, threads);
            }
        }
    }
    for (job, j) in jobs.iter().zip(js.iter_mut()) {
        let [gate, up, down] = job.mlp.projections();
        let n = job.rows.map_or(t, <[usize]>::len);
        j.h.resize(n * gate.rows(), 0.0);
        j.y.resize(n * down.rows(), 0.0);
        if let Some(rows) = job.rows {
            j.x.clear();
            for &r in rows {
                j.x.extend_from_slice(&x[r * hidden..(r + 1) * hidden]);
            }
            j.x_acts.clear();
            for lin in [gate, up] {
                if let Some(f) = lin.act_format() {
                    j.x_acts.gather(x_acts, f, rows);
                }
            }
        }
    }

    // The down projections' inputs: few values (decode) are quantized inside step 2, by
    // the thread that completes each job's hidden rows, while its rows are still in that
    // thread's cache and alongside the other jobs' products; many (prefill) in a parallel step
    // of their own (3.).
    let values: usize = jobs
        .iter()
        .zip(js.iter())
        .filter(|(job, _)| job.mlp.down().act_format().is_some())
        .map(|(_, j)| j.h.len())
        .sum();
    let fold_quant = !quantize_in_parallel(values, threads);
    if fold_quant {
        js.iter_mut().for_each(|j| j.h_acts.clear());
    }

    drop(in_span);

    // 2. gate, up and silu(gate) · up of every job: one parallel step.
    {
        let _span = profile::span(Phase::FfnGateUp);
        let x_acts = &*x_acts;
        let (inputs, outs): (PerJob<(Acts<'_>, Acts<'_>)>, PerJob<JobOut>) = jobs
            .iter()
            .zip(js.iter_mut())
            .map(|(job, j)| {
                let JobScratch {
                    x: jx,
                    x_acts: ja,
                    h,
                    h_acts,
                    ..
                } = j;
                let (jx, ja): (&Vec<f32>, &ActsCache) = (jx, ja);
                let (gate, up) = (job.mlp.gate(), job.mlp.up());
                let acts = match job.rows {
                    None => (x_acts.acts(gate, x), x_acts.acts(up, x)),
                    Some(_) => (ja.acts(gate, jx), ja.acts(up, jx)),
                };
                (acts, (SharedOut::new(h), DownActs(h_acts)))
            })
            .unzip();
        // An item computes its rows of both gate and up.
        let plan = ItemPlan::new(
            jobs.iter().map(|j| {
                let (gate, up) = (j.mlp.gate(), j.mlp.up());
                (gate.rows(), gate.row_bytes() + up.row_bytes())
            }),
            threads,
        );
        // Items of each job not yet done: the one that brings it to 0 quantizes the job.
        let left: PerJob<AtomicUsize> = (0..jobs.len())
            .map(|jb| AtomicUsize::new(plan.job_items(jb)))
            .collect();
        run_items(threads, step_work(jobs, t, false), &plan, |jb, rows| {
            let gate = jobs[jb].mlp.gate();
            let up = jobs[jb].mlp.up();
            let (gx, ux) = inputs[jb];
            let n = gx.rows(hidden);
            let w = rows.len();
            with_scratch(2 * n * w, |buf| {
                let (g, u) = buf.split_at_mut(n * w);
                if n == 1 && gate.act_format() == up.act_format() {
                    // One token: gate and up rows read as one stream when paired.
                    Linear::product_block_pair(gate, up, gx, rows.clone(), g, u);
                } else {
                    gate.product_block(gx, rows.clone(), g, w);
                    up.product_block(ux, rows.clone(), u, w);
                }
                activation::swiglu_inplace(g, u);
                // SAFETY: items of job `jb` cover disjoint column blocks of its `h`, which is
                // not resized or read until the step ends (but by the job's last item below).
                unsafe { outs[jb].0.scatter(g, w, rows.start, gate.rows()) };
            });
            // AcqRel: the last item sees every other item's writes to `h` (each released
            // them with its own decrement).
            if fold_quant && left[jb].fetch_sub(1, Ordering::AcqRel) == 1 {
                let down = jobs[jb].mlp.down();
                if let Some(f) = down.act_format() {
                    let (h, h_acts) = &outs[jb];
                    // SAFETY: every item of job `jb` has written its block (the counter) and
                    // none touches `h` or `h_acts` again in this step; the caller reads them
                    // only after the step.
                    unsafe { (*h_acts.0).prepare(f, h.slice(0..h.len()), down.cols()) };
                }
            }
        });
    }

    // 3. Each job's hidden rows in its down projection's format, when step 2 did not: one
    //    parallel step over every job's rows.
    let quant_span = profile::span(Phase::FfnQuant);
    if !fold_quant {
        let mut requests: Vec<QuantRequest<'_>> = Vec::with_capacity(jobs.len());
        for (job, j) in jobs.iter().zip(js.iter_mut()) {
            let down = job.mlp.down();
            j.h_acts.clear();
            if let Some(format) = down.act_format() {
                let cols = down.cols();
                let JobScratch { h, h_acts, .. } = j;
                if let Some(rows) = h_acts.reserve(format, h.len() / cols) {
                    requests.push(QuantRequest {
                        rows,
                        format,
                        x: h,
                        cols,
                    });
                }
            }
        }
        quantize_rows(&mut requests, threads);
    }

    drop(quant_span);

    // 4. Every down projection: one parallel step.
    {
        let _span = profile::span(Phase::FfnDown);
        let (inputs, outs): (PerJob<Acts<'_>>, PerJob<SharedOut>) = jobs
            .iter()
            .zip(js.iter_mut())
            .map(|(job, j)| {
                let JobScratch { h, h_acts, y, .. } = j;
                let (h, h_acts): (&Vec<f32>, &ActsCache) = (h, h_acts);
                (h_acts.acts(job.mlp.down(), h), SharedOut::new(y))
            })
            .unzip();
        let plan = ItemPlan::new(
            jobs.iter()
                .map(|j| (j.mlp.down().rows(), j.mlp.down().row_bytes())),
            threads,
        );
        run_items(threads, step_work(jobs, t, true), &plan, |jb, rows| {
            let down = jobs[jb].mlp.down();
            let hx = inputs[jb];
            let n = hx.rows(down.cols());
            // SAFETY: items of job `jb` cover disjoint column blocks of its `y`, which is not
            // resized or read until the step ends.
            unsafe {
                outs[jb].write_block(n, rows.len(), rows.start, down.rows(), |o, stride| {
                    down.product_block(hx, rows.clone(), o, stride)
                })
            };
        });
    }

    let _span = profile::span(Phase::FfnCombine);
    let ys: PerJob<&[f32]> = js.iter().map(|j| &j.y[..]).collect();
    finish(&ys)
}

/// The size of a step ([`products::step_work`]): multiply-adds and weight bytes of every
/// job's gate and up (or `down`) over its rows of the `t` input rows.
fn step_work(jobs: &[FfnJob<'_, '_>], t: usize, down: bool) -> usize {
    let (mut macs, mut bytes) = (0, 0);
    for job in jobs {
        let n = job.rows.map_or(t, <[usize]>::len);
        let (first, second) = if down {
            (job.mlp.down(), None)
        } else {
            (job.mlp.gate(), Some(job.mlp.up()))
        };
        for lin in std::iter::once(first).chain(second) {
            let (rows, cols) = lin.shape();
            macs += n * rows * cols;
            bytes += lin.stored_bytes();
        }
    }
    products::step_work(macs, bytes)
}

#[cfg(test)]
mod tests {
    use frugal_formats::{DType, TensorSource, TensorView};
    use frugal_kernels::quant::{quantize::quantize_row, QuantType};

    use super::*;
    use crate::blocks::linear::tests::{values, Mem};
    use crate::blocks::linear::Weights;

    /// `Mem` asking for the repacked copies a model file's quantized matrices get.
    struct Repacked<'m>(&'m Mem);

    impl<'m> Weights<'m> for Repacked<'m> {
        fn tensor(&self, name: &str) -> Option<TensorView<'m>> {
            self.0.tensor(name)
        }
        fn repack(&self, _name: &str) -> bool {
            true
        }
    }

    /// `rows × cols` pseudo-random weights quantized to `ty`, as tensor `name`.
    fn put(
        m: &mut Mem,
        seed: usize,
        name: &str,
        ty: QuantType,
        dtype: DType,
        rows: usize,
        cols: usize,
    ) {
        let x = values(seed, rows * cols, 1.0);
        let rb = ty.row_bytes(cols).unwrap();
        let mut data = vec![0u8; rows * rb];
        for (src, dst) in x.chunks_exact(cols).zip(data.chunks_exact_mut(rb)) {
            quantize_row(ty, src, dst).unwrap();
        }
        m.put(name, dtype, &[rows, cols], data);
    }

    /// Several experts in one fused step, large enough to be shared by the pool (Q4_K gate
    /// and up, Q6_K down, as in Q4_K_M files): every job's output, on any thread count, is
    /// what its three projections give one after another through `Linear::forward` (which
    /// quantizes `x` and `h` on its own). One token: the down inputs are quantized by the
    /// thread that completes each job, inside the gate/up step, so a job quantized before all
    /// its items had written `h` would show here. Three tokens: the separate step.
    #[test]
    fn fused_step_equals_each_projection_in_turn() {
        let (hidden, inter, experts) = (512, 256, 6);
        let mut m = Mem::default();
        for e in 0..experts {
            for (k, name) in ["gate_proj", "up_proj"].into_iter().enumerate() {
                let n = format!("e{e}.{name}.weight");
                put(
                    &mut m,
                    3 * e + k,
                    &n,
                    QuantType::Q4K,
                    DType::Q4K,
                    inter,
                    hidden,
                );
            }
            let n = format!("e{e}.down_proj.weight");
            put(
                &mut m,
                3 * e + 2,
                &n,
                QuantType::Q6K,
                DType::Q6K,
                hidden,
                inter,
            );
        }
        let src = Repacked(&m);
        let mlps: Vec<Mlp<'_>> = (0..experts)
            .map(|e| Mlp::load(&src, &format!("e{e}"), hidden, inter, 0).unwrap())
            .collect();
        let all: Vec<FfnJob<'_, '_>> = mlps.iter().map(|mlp| FfnJob { mlp, rows: None }).collect();
        assert!(
            step_work(&all, 1, false) >= super::super::linear::PARALLEL_MIN_WORK,
            "the step must be large enough to use the pool"
        );
        // A new input each time: the scratch buffers of one call hold the previous call's
        // values, which must not leak into a result.
        let mut seed = 100;
        for t in [1, 3] {
            for threads in [1, 2, 3] {
                for round in 0..10 {
                    seed += 1;
                    let x = values(seed, t * hidden, 1.0);
                    let want: Vec<Vec<f32>> = mlps
                        .iter()
                        .map(|mlp| {
                            let mut g = mlp.gate().forward(&x, 1);
                            let u = mlp.up().forward(&x, 1);
                            activation::swiglu_inplace(&mut g, &u);
                            mlp.down().forward(&g, 1)
                        })
                        .collect();
                    run_mlps(&all, &x, threads, |ys| {
                        for (e, (y, w)) in ys.iter().zip(&want).enumerate() {
                            let same = y.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits());
                            assert!(same, "t {t}, {threads} threads, round {round}: expert {e}");
                        }
                    });
                }
            }
        }
    }
}

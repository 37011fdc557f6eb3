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
//!    ([`ItemPlan`]), so the threads stay busy across experts of different sizes. With one token, an MLP whose
//!    gate and up were repacked as a pair (`Linear::load_pair`) reads each group of gate
//!    rows just before the same group of up rows: one stream from memory, not two.
//! 3. Each job's hidden rows are quantized for its down projection (one parallel step).
//! 4. One parallel step over `(job, block of output rows)` for every down projection.
//!
//! For many tokens (prefill) each expert's gate, up and down are `gemm`s over its token group:
//! its weights are read once per batch. Every output value is the same row dot product as
//! [`Mlp::forward`]'s, so the results equal the unfused path's bit for bit. The buffers live in
//! per-thread scratch reused across calls.

use std::cell::RefCell;

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

    drop(in_span);

    // 2. gate, up and silu(gate) · up of every job: one parallel step.
    {
        let _span = profile::span(Phase::FfnGateUp);
        let x_acts = &*x_acts;
        let (inputs, outs): (PerJob<(Acts<'_>, Acts<'_>)>, PerJob<SharedOut>) = jobs
            .iter()
            .zip(js.iter_mut())
            .map(|(job, j)| {
                let JobScratch {
                    x: jx,
                    x_acts: ja,
                    h,
                    ..
                } = j;
                let (jx, ja): (&Vec<f32>, &ActsCache) = (jx, ja);
                let (gate, up) = (job.mlp.gate(), job.mlp.up());
                let acts = match job.rows {
                    None => (x_acts.acts(gate, x), x_acts.acts(up, x)),
                    Some(_) => (ja.acts(gate, jx), ja.acts(up, jx)),
                };
                (acts, SharedOut::new(h))
            })
            .unzip();
        let plan = ItemPlan::new(jobs.iter().map(|j| j.mlp.gate().rows()), threads);
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
                // not resized or read until the step ends.
                unsafe { outs[jb].scatter(g, w, rows.start, gate.rows()) };
            });
        });
    }

    // 3. Each job's hidden rows in its down projection's format: one parallel step over
    //    every job's rows when they are many (prefill), on this thread without building a
    //    request list otherwise (decode).
    let quant_span = profile::span(Phase::FfnQuant);
    let values: usize = jobs
        .iter()
        .zip(js.iter())
        .filter(|(job, _)| job.mlp.down().act_format().is_some())
        .map(|(_, j)| j.h.len())
        .sum();
    if quantize_in_parallel(values, threads) {
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
    } else {
        for (job, j) in jobs.iter().zip(js.iter_mut()) {
            let down = job.mlp.down();
            j.h_acts.clear();
            if let Some(f) = down.act_format() {
                j.h_acts.prepare(f, &j.h, down.cols());
            }
        }
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
        let plan = ItemPlan::new(jobs.iter().map(|j| j.mlp.down().rows()), threads);
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

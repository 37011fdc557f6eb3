//! Row-interleaved ("repacked") Q4_K and Q6_K weights for the one-token product (decode) and
//! the many-token one (prefill), and Q8_0 weights with short rows (`q8_0.rs`: MLA's `k_b`).
//!
//! The plain layout stores each weight row's super-blocks back to back, so a matrix-vector
//! product reads one row at a time and finishes every 256-weight block with a scalar float
//! step `acc += (d_a·d)·isum − (d_a·dmin)·summs`; on x86 that step and the per-block scale
//! unpacking, not the memory, bound the one-token speed (issue 6). Here groups of
//! [`ROWS`] = 8 rows are interleaved block by block: block `j` of rows `8g..8g+8` is one
//! 1184-byte record, so one sequential stream feeds eight rows, the integer dot products run
//! with the eight rows in SIMD lanes against broadcast activations, and the float step runs
//! once per block for all eight rows (one f32 lane each). Per record:
//!
//! ```text
//! bytes    0..16    d of rows 0..8 (f16, as stored)
//!         16..32    dmin of rows 0..8 (f16)
//!         32..96    scale of sub-block s, row r at 32 + 8s + r (u8, 6 bits, unpacked)
//!         96..160   offset of sub-block s, row r at 96 + 16(s/2) + 2r + s%2 (u8, unpacked)
//!        160..1184  codes: byte 160 + 256c + 32q + 4r + b = qs[32c + 4q + b] of row r
//! ```
//!
//! so a 32-byte load of codes holds four consecutive bytes (eight 4-bit weights: low
//! nibbles of sub-block `2c`, high nibbles of `2c + 1`) of each of the eight rows. The
//! record is 2.8 % larger than the eight 144-byte blocks it replaces (the unpacked scales
//! take 128 bytes instead of 96).
//!
//! Q6_K records (1680 bytes, exactly the eight 210-byte blocks) hold the eight `d` (f16), the
//! 16 i8 scales per row at `16 + 8s + r`, then the codes in the order the kernels consume
//! them ([`q6::step`]): per half `h` and position group `q`, 32 bytes each of `ql[64h +
//! 4q..]`, `ql[64h + 32 + 4q..]` and `qh[32h + 4q..]` (4 bytes per row). Reading the record
//! strictly in order matters: an earlier layout with three streams 256 bytes apart inside
//! each record ran at 4–7 GB/s from DRAM (the hardware prefetcher did not follow it). The
//! float step is `vec_dot`'s Q6_K one, `acc + (d_a·d)·isum`.
//!
//! Every output equals [`vec_dot`](crate::quant::dot::vec_dot) of the original row on the
//! same ISA bit for bit: the integer sums are exact on every path, and each lane performs
//! `vec_dot`'s Q4_K float step (`dall = d_a·d`, `dm = d_a·dmin`, `t = dall·isum − dm·summs`,
//! `acc = acc + t`, no fused multiply-add) block by block in block order, which is what
//! every `vec_dot` Q4_K path computes (Q6_K: likewise with its step). Rows past the last whole group stay in the plain
//! layout and go through [`gemm`](crate::quant::gemm).
//!
//! Several tokens: a group's records stay in L1 while the tokens pass in tiles of `TILE`
//! (6): each 32-byte load of codes and its unpacking (Q6_K: the 6-bit assembly) serve the
//! whole tile, each token keeping its own accumulators and performing the one-token kernel's
//! exact integer sums and float step (`x86::tile`); the last tile of a block takes the rest,
//! one token runs the one-token kernel. Tokens go in blocks of `TOKEN_BLOCK` (60) whose
//! activations stay in L2 while every group of the row range passes; for Q4_K each token's
//! offset sums `bsum_2s + bsum_2s+1` are made once per block (`pair_sums`), not per group.
//! Single thread, Zen 4, 16 to 512 tokens: Q4_K VNNI 268–315 GFLOP/s against the tiled
//! `gemm`'s 118–138 (one token at a time: 178), Q6_K VNNI 207–227 against 125–146 (was 120);
//! AVX2 and AVX-512 1.8–2.2× `gemm` for Q4_K, 1.0–1.2× for Q6_K.
//!
//! Paths: scalar reference; AVX2 (`pmaddubsw`, used for `Isa::Avx2` and `Isa::Avx512`, the
//! tiles of the latter compiled with AVX-512VL's 32 registers); AVX-512 VNNI (`vpdpbusd` on
//! 256-bit vectors: Zen 4 splits 512-bit ones anyway). AArch64 runs the scalar path (no NEON
//! kernel yet), so models keep the plain layout there ([`worth_repacking`]).

mod q8_0;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use q8_0::MAX_BLOCKS as Q8_0_MAX_BLOCKS;

use super::{
    as_blocks, gemm, BlockQ4K, BlockQ6K, BlockQ8K, BlockQ8_0, QuantError, QuantType, QuantizedActs,
    QK_K,
};
use crate::cpu::Isa;
use crate::hugemem::HugeBuf;
use crate::quant::kquants::scale_min_k4;
use std::ops::Range;
use std::sync::Arc;

/// Matrices of at least this many repacked bytes are repacked on several threads.
const PARALLEL_BYTES: usize = 4 << 20;

/// Rows per interleaved group.
pub const ROWS: usize = 8;

/// Bytes of one group's record for one super-block.
pub(crate) const RECORD: usize = 160 + 8 * 128;

/// Record offsets (module docs).
pub(crate) const D: usize = 0;
pub(crate) const DMIN: usize = 16;
pub(crate) const SCALES: usize = 32;
pub(crate) const MINS: usize = 96;
pub(crate) const CODES: usize = 160;

/// Q6_K's record (module docs): 1680 bytes, the size of the eight blocks.
pub(crate) mod q6 {
    pub(crate) const RECORD: usize = 16 + 128 + 1024 + 512;
    pub(crate) const D: usize = 0;
    pub(crate) const SCALES: usize = 16;
    pub(crate) const CODES: usize = 144;
    /// Offset of the 96 bytes that one step of the kernels reads: for half `h` and position
    /// group `q`, 32 bytes of `ql[32·2h..]`, of `ql[32(2h + 1)..]` and of `qh[32h..]`, each 4
    /// bytes per row, in the order they are consumed (a sequential stream from DRAM).
    pub(crate) const fn step(h: usize, q: usize) -> usize {
        CODES + 96 * (8 * h + q)
    }
}

/// Bytes of a record of `ty` (a repackable type).
fn record_bytes(ty: QuantType) -> usize {
    match ty {
        QuantType::Q6K => q6::RECORD,
        QuantType::Q8_0 => q8_0::RECORD,
        _ => RECORD,
    }
}

/// Weights per block (and record) of `ty` (a repackable type).
fn block_len(ty: QuantType) -> usize {
    if ty == QuantType::Q8_0 {
        32
    } else {
        QK_K
    }
}

/// A Q4_K, Q6_K or (short-row) Q8_0 matrix in the row-interleaved layout (module docs), plus the rows after the last
/// whole group of [`ROWS`] in the plain layout.
#[derive(Clone, Debug)]
pub struct Repacked {
    ty: QuantType,
    rows: usize,
    cols: usize,
    /// `rows / ROWS` groups of one record per block of a row, in huge-page backed memory
    /// (`hugemem`: every decoded token streams them): group `g` at `base + g·stride`. A
    /// matrix of its own has them back to back; a [`repack_pair`] half shares one buffer
    /// with its partner, the two matrices' groups alternating.
    groups: Arc<HugeBuf>,
    base: usize,
    stride: usize,
    /// The last `rows % ROWS` rows, as stored in the file.
    tail: Vec<u8>,
}

impl Repacked {
    /// The original weight type.
    pub fn ty(&self) -> QuantType {
        self.ty
    }
    /// Output rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Weights per row.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Bytes held (interleaved groups plus plain tail).
    pub fn bytes(&self) -> usize {
        self.n_groups() * self.group_bytes() + self.tail.len()
    }
    /// Bytes of one group's records.
    fn group_bytes(&self) -> usize {
        self.nb() * record_bytes(self.ty)
    }
    /// Group `g`'s records.
    fn group(&self, g: usize) -> &[u8] {
        &self.groups[self.base + g * self.stride..][..self.group_bytes()]
    }
    /// Whether `self` and `other` are the two halves of one [`repack_pair`].
    pub fn is_paired_with(&self, other: &Repacked) -> bool {
        Arc::ptr_eq(&self.groups, &other.groups) && self.base != other.base
    }
    /// Blocks (Q4_K, Q6_K: super-blocks) per row.
    fn nb(&self) -> usize {
        self.cols / block_len(self.ty)
    }
    /// Whole groups.
    fn n_groups(&self) -> usize {
        self.rows / ROWS
    }
}

/// Whether `isa` has SIMD kernels for the repacked layout (x86: AVX2, AVX-512, VNNI).
/// Elsewhere `repacked_gemm` runs the scalar reference, far slower than `gemm`'s SIMD paths
/// (NEON included), so callers should keep the plain layout there.
pub fn has_simd_path(isa: Isa) -> bool {
    cfg!(target_arch = "x86_64") && matches!(isa, Isa::Avx2 | Isa::Avx512 | Isa::Avx512Vnni)
}

/// Whether a `ty` matrix with rows of `cols` weights is worth repacking for products on
/// `isa` (the `repack` and `mla k_b` benchmark rows against [`gemm`]). Q4_K: every x86 SIMD
/// path. Q6_K: VNNI only (4–512 tokens 1.4–1.9×, one token in cache 1.8–2.7×, from DRAM
/// 1.26–1.52× on a quiet machine and 0.86–1.12× while other jobs loaded the memory); on AVX2
/// and AVX-512 without VNNI its one-token product from DRAM measured 0.75–1.09× the plain
/// one. Q8_0: rows of at most [`Q8_0_MAX_BLOCKS`] blocks on AVX2 and VNNI (`q8_0` docs).
pub fn worth_repacking(isa: Isa, ty: QuantType, cols: usize) -> bool {
    match ty {
        QuantType::Q4K => has_simd_path(isa),
        QuantType::Q6K => has_simd_path(isa) && isa == Isa::Avx512Vnni,
        QuantType::Q8_0 => q8_0::worth(isa, cols),
        _ => false,
    }
}

/// Repacks `n_rows` rows of `cols` weights of type `ty` (`rows`: their bytes, back to back,
/// any address) into the interleaved layout.
///
/// Errors: a type other than Q4_K, Q6_K and Q8_0 (Q8_0: rows of more than
/// [`Q8_0_MAX_BLOCKS`] blocks), `cols` not whole blocks, `rows` of the wrong length.
pub fn repack(
    ty: QuantType,
    rows: &[u8],
    n_rows: usize,
    cols: usize,
) -> Result<Repacked, QuantError> {
    let [w] = repack_into(ty, [rows], n_rows, cols)?;
    Ok(w)
}

/// Repacks two matrices of one type and shape (an MLP's gate and up projections, `a` and
/// `b`: each `n_rows` rows of `cols` weights) into one buffer where their groups alternate:
/// group `g` of `a`, then group `g` of `b`. A one-token product of the same rows of both
/// ([`repacked_gemm_pair`]) then reads one sequential stream instead of two: on Zen 4 from
/// DRAM, 384 rows of each of two 512×1024 Q4_K matrices ran at about 21 GB/s on one core,
/// 768 rows of one at about 23.5 GB/s. Each half alone still multiplies as [`repack`]'s
/// would, bit for bit (its groups a fixed stride apart).
///
/// Errors: as [`repack`]; Q8_0 is not paired.
pub fn repack_pair(
    ty: QuantType,
    a: &[u8],
    b: &[u8],
    n_rows: usize,
    cols: usize,
) -> Result<(Repacked, Repacked), QuantError> {
    if ty == QuantType::Q8_0 {
        return Err(QuantError::Unsupported { ty: ty.name() });
    }
    let [a, b] = repack_into(ty, [a, b], n_rows, cols)?;
    Ok((a, b))
}

/// `K` matrices of one type and shape repacked into one buffer, their groups alternating
/// (`K` = 1: [`repack`]).
fn repack_into<const K: usize>(
    ty: QuantType,
    srcs: [&[u8]; K],
    n_rows: usize,
    cols: usize,
) -> Result<[Repacked; K], QuantError> {
    let short_q8_0 = ty == QuantType::Q8_0 && cols <= 32 * q8_0::MAX_BLOCKS;
    if !matches!(ty, QuantType::Q4K | QuantType::Q6K) && !short_q8_0 {
        return Err(QuantError::Unsupported { ty: ty.name() });
    }
    let rb = ty.row_bytes(cols)?;
    let expected = rb.checked_mul(n_rows).ok_or(QuantError::TooLarge {
        ty: ty.name(),
        n: cols,
    })?;
    if let Some(rows) = srcs.iter().find(|r| r.len() != expected) {
        return Err(QuantError::ByteLength {
            ty: ty.name(),
            n: n_rows * cols,
            expected,
            got: rows.len(),
        });
    }
    let nb = cols / block_len(ty);
    let n_groups = n_rows / ROWS;
    let record = record_bytes(ty);
    let gb = nb * record;
    let total = K * n_groups * gb;
    let mut groups = HugeBuf::zeroed(total).map_err(|e| QuantError::Memory {
        bytes: total,
        why: e.to_string(),
    })?;
    // `dst`: the slots of groups `g0..` of every matrix (K groups per step).
    let fill = |g0: usize, dst: &mut [u8]| -> Result<(), QuantError> {
        for (g, slots) in dst.chunks_exact_mut(K * gb).enumerate() {
            for (rows, dst) in srcs.iter().zip(slots.chunks_exact_mut(gb)) {
                for (j, rec) in dst.chunks_exact_mut(record).enumerate() {
                    for r in 0..ROWS {
                        let row = &rows[(ROWS * (g0 + g) + r) * rb..][..rb];
                        match ty {
                            QuantType::Q6K => {
                                record_row_q6k(rec, r, &as_blocks::<BlockQ6K>(row)?[j])
                            }
                            QuantType::Q8_0 => {
                                q8_0::record_row(rec, r, &as_blocks::<BlockQ8_0>(row)?[j])
                            }
                            _ => record_row(rec, r, &as_blocks::<BlockQ4K>(row)?[j]),
                        }
                    }
                }
            }
        }
        Ok(())
    };
    // Large matrices are split over threads by groups (a load-time cost only).
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if groups.len() >= PARALLEL_BYTES && threads > 1 && nb > 0 {
        let per = n_groups.div_ceil(threads);
        std::thread::scope(|s| {
            let jobs: Vec<_> = groups
                .as_mut_slice()
                .chunks_mut(per * K * gb)
                .enumerate()
                .map(|(i, chunk)| s.spawn(move || fill(i * per, chunk)))
                .collect();
            jobs.into_iter()
                .try_for_each(|j| j.join().expect("repack worker panicked"))
        })?;
    } else if nb > 0 {
        fill(0, groups.as_mut_slice())?;
    }
    let groups = Arc::new(groups);
    Ok(std::array::from_fn(|i| Repacked {
        ty,
        rows: n_rows,
        cols,
        groups: groups.clone(),
        base: i * gb,
        stride: K * gb,
        tail: srcs[i][n_groups * ROWS * rb..].to_vec(),
    }))
}

/// One token's product by the same rows of the two halves of a [`repack_pair`]: `out_a[r −
/// rows.start]` and `out_b[…]` as [`repacked_gemm`] would write them, each group of `a` read
/// just before the same group of `b` (one stream). Matrices that are not a pair take two
/// [`repacked_gemm`] calls.
///
/// Errors: as [`repacked_gemm`].
pub fn repacked_gemm_pair(
    isa: Isa,
    (a, b): (&Repacked, &Repacked),
    rows: Range<usize>,
    act: &QuantizedActs,
    out_a: &mut [f32],
    out_b: &mut [f32],
) -> Result<(), QuantError> {
    let n = rows.len();
    if !a.is_paired_with(b) || n == 0 {
        repacked_gemm(isa, a, rows.clone(), std::slice::from_ref(act), out_a, n)?;
        return repacked_gemm(isa, b, rows, std::slice::from_ref(act), out_b, n);
    }
    super::dot::check_acts(
        a.ty,
        super::ActFormat::Q8K,
        std::slice::from_ref(act),
        a.cols,
    )?;
    if rows.end > a.rows {
        return Err(QuantError::Shape {
            what: format!("rows {rows:?} of a {}-row matrix", a.rows),
        });
    }
    super::dot::check_out(out_a, 1, n, n)?;
    super::dot::check_out(out_b, 1, n, n)?;
    let isa = if isa.is_available() { isa } else { Isa::Scalar };
    let split = a.n_groups() * ROWS;
    let grouped = rows.start.min(split)..rows.end.min(split);
    let act_blocks = act.q8k();
    for g in grouped.start / ROWS..grouped.end.div_ceil(ROWS) {
        let (first, last) = (ROWS * g, ROWS * g + ROWS);
        let (lo, hi) = (first.max(rows.start), last.min(rows.end));
        for (w, out) in [(a, &mut *out_a), (b, &mut *out_b)] {
            into_group(
                &mut out[lo - rows.start..hi - rows.start],
                lo - first,
                |o| group(isa, w.ty, w.group(g), act_blocks, o),
            );
        }
    }
    if rows.end > split {
        let from = rows.start.max(split);
        for (w, out) in [(a, out_a), (b, out_b)] {
            repacked_gemm(
                isa,
                w,
                from..rows.end,
                std::slice::from_ref(act),
                &mut out[from - rows.start..],
                n,
            )?;
        }
    }
    Ok(())
}

/// Writes row `r` of block `b` into its slots of a record.
fn record_row(rec: &mut [u8], r: usize, b: &BlockQ4K) {
    rec[D + 2 * r..D + 2 * r + 2].copy_from_slice(&b.d);
    rec[DMIN + 2 * r..DMIN + 2 * r + 2].copy_from_slice(&b.dmin);
    for s in 0..8 {
        let (sc, m) = scale_min_k4(s, &b.scales);
        rec[SCALES + 8 * s + r] = sc;
        rec[MINS + 16 * (s / 2) + 2 * r + s % 2] = m;
    }
    for c in 0..4 {
        for q in 0..8 {
            let at = CODES + 256 * c + 32 * q + 4 * r;
            rec[at..at + 4].copy_from_slice(&b.qs[32 * c + 4 * q..32 * c + 4 * q + 4]);
        }
    }
}

/// Q6_K: row `r` of block `b` into its slots of a Q6_K record: `d`, the 16 scales at
/// `SCALES + 8s + r`, then per step `(h, q)` ([`q6::step`]) 4 bytes of this row from each of
/// `ql[64h + 4q..]`, `ql[64h + 32 + 4q..]`, `qh[32h + 4q..]`.
fn record_row_q6k(rec: &mut [u8], r: usize, b: &BlockQ6K) {
    use q6::*;
    rec[D + 2 * r..D + 2 * r + 2].copy_from_slice(&b.d);
    for (s, &sc) in b.scales.iter().enumerate() {
        rec[SCALES + 8 * s + r] = sc as u8;
    }
    for h in 0..2 {
        for q in 0..8 {
            let at = step(h, q) + 4 * r;
            let (l0, l1, hh) = (64 * h + 4 * q, 64 * h + 32 + 4 * q, 32 * h + 4 * q);
            rec[at..at + 4].copy_from_slice(&b.ql[l0..l0 + 4]);
            rec[at + 32..at + 36].copy_from_slice(&b.ql[l1..l1 + 4]);
            rec[at + 64..at + 68].copy_from_slice(&b.qh[hh..hh + 4]);
        }
    }
}

/// `out[t·out_stride + (r − rows.start)] = Σ W[r]·A[t]` for the rows `r` in `rows` of `w`
/// and every activation row `t` of `acts` (each `w.cols()` long, Q8_K; Q8_0 for a Q8_0
/// matrix, whose tokens run one at a time over each group's records), on `isa` (an
/// unavailable one runs scalar). Each value equals `vec_dot(isa, w.ty(), row r, acts[t])` bit
/// for bit, whatever the range (a group cut by its ends is computed whole into a buffer).
/// Tokens run in tiles of `TILE` sharing each load of codes (module docs), so one call
/// should carry every token of the product.
///
/// Errors: activations not Q8_K or not `w.cols()` long; `rows` past `w.rows()`; `out` too
/// short.
pub fn repacked_gemm(
    isa: Isa,
    w: &Repacked,
    rows: Range<usize>,
    acts: &[QuantizedActs],
    out: &mut [f32],
    out_stride: usize,
) -> Result<(), QuantError> {
    if acts.is_empty() || rows.is_empty() {
        return Ok(());
    }
    let format = if w.ty == QuantType::Q8_0 {
        super::ActFormat::Q8_0
    } else {
        super::ActFormat::Q8K
    };
    super::dot::check_acts(w.ty, format, acts, w.cols)?;
    if rows.end > w.rows {
        return Err(QuantError::Shape {
            what: format!("rows {rows:?} of a {}-row matrix", w.rows),
        });
    }
    super::dot::check_out(out, acts.len(), rows.len(), out_stride)?;
    let isa = if isa.is_available() { isa } else { Isa::Scalar };
    let nb = w.nb();
    let split = w.n_groups() * ROWS;
    let grouped = rows.start.min(split)..rows.end.min(split);
    let mut buf = [[0.0f32; ROWS]; TILE];
    if w.ty == QuantType::Q8_0 {
        for (t, a) in acts.iter().enumerate() {
            let p = q8_0::Prepared::new(a);
            for g in grouped.start / ROWS..grouped.end.div_ceil(ROWS) {
                let recs = w.group(g);
                let (first, last) = (ROWS * g, ROWS * g + ROWS);
                let (lo, hi) = (first.max(rows.start), last.min(rows.end));
                into_group(
                    &mut out[t * out_stride + lo - rows.start..][..hi - lo],
                    lo - first,
                    |o| q8_0::group(isa, recs, &p, o),
                );
            }
        }
    } else {
        let mut pairs = Vec::new();
        // Token blocks keep their activations in L2 while every group passes over them; inside a
        // block each group's records (L1) meet the tokens `TILE` at a time (the last tile of a
        // block takes the rest).
        for (b, block) in acts.chunks(TOKEN_BLOCK).enumerate() {
            // Q4_K tiles: each token's per-block offset sums, made once for all groups.
            pairs.clear();
            if w.ty == QuantType::Q4K && block.len() > 1 {
                pairs.extend(block.iter().flat_map(|a| a.q8k().iter().map(pair_sums)));
            }
            for g in grouped.start / ROWS..grouped.end.div_ceil(ROWS) {
                let recs = w.group(g);
                let (first, last) = (ROWS * g, ROWS * g + ROWS);
                let (lo, hi) = (first.max(rows.start), last.min(rows.end));
                if let [a] = block {
                    let at = b * TOKEN_BLOCK * out_stride + lo - rows.start;
                    into_group(&mut out[at..at + hi - lo], lo - first, |o| {
                        group(isa, w.ty, recs, a.q8k(), o)
                    });
                    continue;
                }
                for (i, tokens) in block.chunks(TILE).enumerate() {
                    let o = &mut buf[..tokens.len()];
                    let p = pairs.get(i * TILE * nb..(i * TILE + tokens.len()) * nb);
                    group_tile(isa, w.ty, recs, tokens, p.unwrap_or(&[]), o);
                    for (k, o) in o.iter().enumerate() {
                        let t = b * TOKEN_BLOCK + i * TILE + k;
                        out[t * out_stride + lo - rows.start..][..hi - lo]
                            .copy_from_slice(&o[lo - first..hi - first]);
                    }
                }
            }
        }
    }
    if rows.end > split {
        let rb = w.ty.row_bytes(w.cols)?;
        let from = rows.start.max(split);
        let tail = &w.tail[(from - split) * rb..(rows.end - split) * rb];
        gemm(
            isa,
            w.ty,
            tail,
            acts,
            &mut out[from - rows.start..],
            out_stride,
        )?;
    }
    Ok(())
}

/// Runs a one-token group kernel for rows `first + skip..` of its group of eight, `dst` their
/// outputs: a whole group (`dst` eight long) writes straight into `dst`; a group cut by the
/// range's ends is computed into a buffer and its rows copied. (Copying every group through
/// a buffer was a `memcpy` call per eight rows, 2–3 % of a decoded token's samples.)
#[inline(always)]
fn into_group(dst: &mut [f32], skip: usize, kernel: impl FnOnce(&mut [f32; ROWS])) {
    match <&mut [f32; ROWS]>::try_from(&mut *dst) {
        Ok(whole) => kernel(whole),
        Err(_) => {
            let mut buf = [0.0f32; ROWS];
            kernel(&mut buf);
            let n = dst.len();
            dst.copy_from_slice(&buf[skip..skip + n]);
        }
    }
}

/// Tokens per activation block of [`repacked_gemm`] (whole tiles): 60 Q8_K rows of 2048
/// columns are 140 KB.
const TOKEN_BLOCK: usize = 10 * TILE;

/// Tokens per tile: each code load and its unpacking serve this many tokens. Measured on
/// Zen 4 (the `repack` benchmark rows, 16 and 64 tokens): 6 ahead of 4 and 5 by 1–8 % on
/// every path and type, 7 and 8 slower (more accumulators than registers).
const TILE: usize = 6;

/// `bsum_2s + bsum_2s+1` for s = 0..8 (|·| ≤ 2·16·128): the sums a Q4_K sub-block's offset
/// multiplies, i16 pairs `(2t, 2t + 1)` ready for `pmaddwd`/`vpdpwssd` against the record's
/// offset pairs.
fn pair_sums(a: &BlockQ8K) -> [i16; 8] {
    std::array::from_fn(|s| a.bsum(2 * s) + a.bsum(2 * s + 1))
}

/// One group's eight outputs against each of `acts` (at most `TILE` tokens; `pairs`: Q4_K's
/// [`pair_sums`] of their blocks, token after token, when more than one).
fn group_tile(
    isa: Isa,
    ty: QuantType,
    recs: &[u8],
    acts: &[QuantizedActs],
    pairs: &[[i16; 8]],
    out: &mut [[f32; ROWS]],
) {
    match acts.len() {
        1 => group(isa, ty, recs, acts[0].q8k(), &mut out[0]),
        2 => tile::<2>(isa, ty, recs, acts, pairs, out),
        3 => tile::<3>(isa, ty, recs, acts, pairs, out),
        4 => tile::<4>(isa, ty, recs, acts, pairs, out),
        5 => tile::<5>(isa, ty, recs, acts, pairs, out),
        6 => tile::<6>(isa, ty, recs, acts, pairs, out),
        n => unreachable!("a tile of {n} tokens"),
    }
}

/// `T` tokens at once: the code loads and their unpacking shared by the tokens.
fn tile<const T: usize>(
    isa: Isa,
    ty: QuantType,
    recs: &[u8],
    acts: &[QuantizedActs],
    pairs: &[[i16; 8]],
    out: &mut [[f32; ROWS]],
) {
    let a: [&[BlockQ8K]; T] = std::array::from_fn(|t| acts[t].q8k());
    let out: &mut [[f32; ROWS]; T] = (&mut out[..T]).try_into().expect("T outputs");
    debug_assert!(a.iter().all(|a| recs.len() == a.len() * record_bytes(ty)));
    debug_assert!(ty != QuantType::Q4K || pairs.len() == T * a[0].len());
    #[cfg(target_arch = "x86_64")]
    {
        use x86::tile as x;
        // SAFETY: as in `group`; every token's activations are `nb` blocks (checked by
        // `repacked_gemm`).
        match (isa, ty) {
            (Isa::Avx2, QuantType::Q6K) => return unsafe { x::avx2_q6k(recs, &a, out) },
            (Isa::Avx512, QuantType::Q6K) => return unsafe { x::avx512_q6k(recs, &a, out) },
            (Isa::Avx512Vnni, QuantType::Q6K) => return unsafe { x::vnni_q6k(recs, &a, out) },
            (Isa::Avx2 | Isa::Avx512 | Isa::Avx512Vnni, _) => {
                let nb = a[0].len();
                let p: [&[[i16; 8]]; T] = std::array::from_fn(|t| &pairs[t * nb..(t + 1) * nb]);
                // SAFETY: as above; `p[t]` is token t's `nb` pair sums (`repacked_gemm`).
                return unsafe {
                    match isa {
                        Isa::Avx2 => x::avx2(recs, &a, &p, out),
                        Isa::Avx512 => x::avx512(recs, &a, &p, out),
                        _ => x::vnni(recs, &a, &p, out),
                    }
                };
            }
            _ => {}
        }
    }
    // The scalar reference (and any ISA without a tile): one token at a time.
    for (a, o) in a.iter().zip(out) {
        group(isa, ty, recs, a, o);
    }
}

/// One group's eight outputs against one activation row (`recs`: its `a.len()` records).
fn group(isa: Isa, ty: QuantType, recs: &[u8], a: &[BlockQ8K], out: &mut [f32; ROWS]) {
    debug_assert_eq!(recs.len(), a.len() * record_bytes(ty));
    if ty == QuantType::Q6K {
        return match isa {
            // SAFETY: as below.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512 => unsafe { x86::avx2_q6k(recs, a, out) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => unsafe { x86::vnni_q6k(recs, a, out) },
            _ => scalar_q6k(recs, a, out),
        };
    }
    match isa {
        // SAFETY: `repacked_gemm` passes only available ISAs; each path's features are what
        // `Isa::is_available` tests for it. `recs` holds `a.len()` whole records.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 => unsafe { x86::avx2(recs, a, out) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => unsafe { x86::vnni(recs, a, out) },
        _ => scalar(recs, a, out),
    }
}

/// The reference: each row's exact integer sums from the interleaved bytes, then `vec_dot`'s
/// Q4_K float step, block by block.
pub(crate) fn scalar(recs: &[u8], a: &[BlockQ8K], out: &mut [f32; ROWS]) {
    let mut acc = [0.0f32; ROWS];
    for (rec, a) in recs.chunks_exact(RECORD).zip(a) {
        for (r, acc) in acc.iter_mut().enumerate() {
            let mut isum = 0i32;
            let mut summs = 0i32;
            for s in 0..8 {
                let (c, high) = (s / 2, s % 2);
                let mut dot = 0i32;
                for l in 0..32 {
                    let byte = rec[CODES + 256 * c + 32 * (l / 4) + 4 * r + l % 4];
                    let code = (byte >> (4 * high)) & 0x0f;
                    dot += code as i32 * a.qs[32 * s + l] as i32;
                }
                isum += rec[SCALES + 8 * s + r] as i32 * dot;
                let bsums = a.bsum(2 * s) as i32 + a.bsum(2 * s + 1) as i32;
                summs += rec[MINS + 16 * (s / 2) + 2 * r + s % 2] as i32 * bsums;
            }
            let d = f16(&rec[D + 2 * r..]);
            let dmin = f16(&rec[DMIN + 2 * r..]);
            // vec_dot's step (kquants::finish_min): two products, a difference, a sum.
            let (dall, dm) = (a.d() * d, a.d() * dmin);
            *acc += dall * isum as f32 - dm * summs as f32;
        }
    }
    *out = acc;
}

#[inline(always)]
fn f16(b: &[u8]) -> f32 {
    half::f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// The Q6_K reference: each row's exact `Σ_s sc_s·Σ_{i∈s} (u_i − 32)·a_i` from the
/// interleaved bytes, then `vec_dot`'s Q6_K step `acc + (d_a·d)·isum`, block by block.
pub(crate) fn scalar_q6k(recs: &[u8], a: &[BlockQ8K], out: &mut [f32; ROWS]) {
    use q6::*;
    let mut acc = [0.0f32; ROWS];
    for (rec, a) in recs.chunks_exact(RECORD).zip(a) {
        for (r, acc) in acc.iter_mut().enumerate() {
            let mut isum = 0i32;
            for i in 0..QK_K {
                // Half h, quarter t, l < 32: low nibble t/2 of ql[64h + 32(t%2) + l], bits
                // 2t..2t+2 of qh[32h + l].
                let (h, t, l) = (i / 128, (i % 128) / 32, i % 32);
                let at = step(h, l / 4) + 4 * r + l % 4;
                let lo = rec[at + 32 * (t % 2)] >> (4 * (t / 2)) & 0x0f;
                let hi = rec[at + 64] >> (2 * t) & 3;
                let q = (lo | (hi << 4)) as i32 - 32;
                let sc = rec[SCALES + 8 * (i / 16) + r] as i8 as i32;
                isum += sc * q * a.qs[i] as i32;
            }
            let d = f16(&rec[D + 2 * r..]);
            // vec_dot's step (kquants::finish): `(d_a·d)·isum`, then the sum.
            *acc += a.d() * d * isum as f32;
        }
    }
    *out = acc;
}

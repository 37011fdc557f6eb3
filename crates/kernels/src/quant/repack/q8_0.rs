//! Row-interleaved Q8_0 for short rows: MLA's `k_b` (`W_UK_hᵀ`, rows of `qk_nope_head_dim`
//! = 128 columns, 4 blocks), which llama.cpp's Q4_K_M files store as Q8_0 because 128 is not
//! a whole K-quant super-block.
//!
//! The plain one-token product finishes each row with a horizontal reduction, a gather of
//! its block scales and a horizontal float sum; with four blocks per row those cost more
//! than the dot products, and the `cargo bench … "mla k_b"` row ran at 28 GB/s in cache,
//! about the DRAM rate, so decode's attention step was bound by instructions. Here eight
//! rows are interleaved as for Q4_K (module docs of `repack`): block `j` of rows `8g..8g+8`
//! is one 272-byte record, the size of the eight blocks it replaces,
//!
//! ```text
//! bytes    0..16    d of rows 0..8 (f16, as stored)
//!         16..272   codes: byte 16 + 32q + 4r + b = qs[4q + b] of row r (q < 8, b < 4)
//! ```
//!
//! so each 32-byte load holds four codes of each row, the eight rows' exact sums build up in
//! the eight i32 lanes against broadcast activations, and the float step runs once per block
//! for all eight rows. VNNI's `vpdpbusd` multiplies unsigned by signed bytes: the codes go in
//! as `c + 128` (one `xor`), the accumulator starts at `−128·Σq` of the activation block, so
//! the lane ends at exactly `Σ c·q`. AVX2 uses the `|c|`, `sign(q, c)` trick of the plain
//! kernels.
//!
//! Every output equals [`vec_dot`](crate::quant::dot::vec_dot) of the original row on the
//! same ISA bit for bit: the block sums are exact, each term is `(d_w·d_a)·Σ`, and the terms
//! are added as the x86 `vec_dot` paths add them (four lanes over chunks of four blocks, the
//! lanes summed `(l0 + l2) + (l1 + l3)`, then any remaining blocks one by one). ISAs without
//! a kernel here (scalar, AVX-512 without VNNI, NEON) put each row back in the plain layout on
//! the stack and call `vec_dot`, so they are exact too; [`worth`] keeps such matrices plain.

use super::ROWS;
use crate::cpu::Isa;
use crate::quant::{dot::vec_dot, BlockQ8_0, QuantType, QuantizedActs};

/// Bytes of one group's record for one block: the eight 34-byte blocks.
pub(super) const RECORD: usize = 16 + ROWS * 32;

/// Offset of the codes in a record.
const CODES: usize = 16;

/// Longest rows (in 32-weight blocks) kept interleaved. Longer rows amortise their per-row
/// work over many blocks, and the plain layout's tiled many-token product (prefill) is faster
/// than one token at a time here.
pub const MAX_BLOCKS: usize = 8;

/// Whether Q8_0 rows of `cols` weights are worth interleaving for products on `isa`.
pub(super) fn worth(isa: Isa, cols: usize) -> bool {
    cfg!(target_arch = "x86_64")
        && matches!(isa, Isa::Avx2 | Isa::Avx512Vnni)
        && cols.is_multiple_of(32)
        && cols / 32 <= MAX_BLOCKS
}

/// Writes row `r` of block `b` into its slots of a record.
pub(super) fn record_row(rec: &mut [u8], r: usize, b: &BlockQ8_0) {
    rec[2 * r..2 * r + 2].copy_from_slice(&b.d);
    for q in 0..8 {
        for k in 0..4 {
            rec[CODES + 32 * q + 4 * r + k] = b.qs[4 * q + k] as u8;
        }
    }
}

/// Row `r` of a group (`recs`: its records) back in the plain layout: `out` holds
/// `recs.len() / RECORD` blocks.
fn plain_row(recs: &[u8], r: usize, out: &mut [u8]) {
    for (rec, blk) in recs.chunks_exact(RECORD).zip(out.chunks_exact_mut(34)) {
        blk[..2].copy_from_slice(&rec[2 * r..2 * r + 2]);
        for q in 0..8 {
            let at = CODES + 32 * q + 4 * r;
            blk[2 + 4 * q..6 + 4 * q].copy_from_slice(&rec[at..at + 4]);
        }
    }
}

/// One token's activations, ready for every group: per block its f32 scale and the VNNI
/// correction `−128·Σq` (made once per token, not per group).
// The scales and corrections serve the x86 kernels; other ISAs call `vec_dot`.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) struct Prepared<'a> {
    acts: &'a QuantizedActs,
    a: &'a [BlockQ8_0],
    da: [f32; MAX_BLOCKS],
    corr: [i32; MAX_BLOCKS],
}

impl<'a> Prepared<'a> {
    /// `acts` must be Q8_0 of at most [`MAX_BLOCKS`] blocks (`repacked_gemm` checked it).
    pub(super) fn new(acts: &'a QuantizedActs) -> Self {
        let a = acts.q8_0();
        assert!(a.len() <= MAX_BLOCKS, "short Q8_0 rows: {} blocks", a.len());
        let mut da = [0.0; MAX_BLOCKS];
        let mut corr = [0; MAX_BLOCKS];
        for ((d, c), b) in da.iter_mut().zip(&mut corr).zip(a) {
            *d = half::f16::from_le_bytes(b.d).to_f32();
            *c = -128 * b.qs.iter().map(|&v| v as i32).sum::<i32>();
        }
        Prepared { acts, a, da, corr }
    }
}

/// One group's eight outputs against one token (`recs`: its records, one per activation
/// block).
pub(super) fn group(isa: Isa, recs: &[u8], p: &Prepared<'_>, out: &mut [f32; ROWS]) {
    debug_assert_eq!(recs.len(), p.a.len() * RECORD);
    #[cfg(target_arch = "x86_64")]
    match isa {
        // SAFETY: `repacked_gemm` passes only available ISAs, whose features are what these
        // functions enable; `recs` holds one whole record per activation block.
        Isa::Avx2 => return unsafe { x86::avx2(recs, p, out) },
        Isa::Avx512Vnni => return unsafe { x86::vnni(recs, p, out) },
        _ => {}
    }
    // Any other ISA: each row back in the plain layout, then `vec_dot` itself.
    let mut row = [0u8; 34 * MAX_BLOCKS];
    let row = &mut row[..34 * p.a.len()];
    for (r, o) in out.iter_mut().enumerate() {
        plain_row(recs, r, row);
        // OK: the row is whole Q8_0 blocks, as many as the activations'.
        *o = vec_dot(isa, QuantType::Q8_0, row, p.acts).expect("whole blocks");
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::x86::{bcast4, load32};
    use super::{Prepared, CODES, RECORD, ROWS};
    use std::arch::x86_64::*;

    /// The eight rows' outputs: block `j`'s term `(d_w·d_a)·Σ` (`sum(j)` its exact sums)
    /// added in the x86 `vec_dot` order (module docs).
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn add_terms(
        recs: &[u8],
        p: &Prepared<'_>,
        out: &mut [f32; ROWS],
        sum: impl Fn(usize) -> __m256i,
    ) {
        let term = |j: usize| {
            // SAFETY: a record's first 16 bytes are the eight f16 scales; `recs` holds one
            // record per activation block (the caller's contract).
            let dw =
                _mm256_cvtph_ps(unsafe { _mm_loadu_si128(recs.as_ptr().add(j * RECORD).cast()) });
            let da = _mm256_set1_ps(p.da[j]);
            _mm256_mul_ps(_mm256_mul_ps(dw, da), _mm256_cvtepi32_ps(sum(j)))
        };
        let nb = p.a.len();
        let zero = _mm256_setzero_ps();
        let (mut a0, mut a1, mut a2, mut a3) = (zero, zero, zero, zero);
        for c in 0..nb / 4 {
            a0 = _mm256_add_ps(a0, term(4 * c));
            a1 = _mm256_add_ps(a1, term(4 * c + 1));
            a2 = _mm256_add_ps(a2, term(4 * c + 2));
            a3 = _mm256_add_ps(a3, term(4 * c + 3));
        }
        let mut acc = _mm256_add_ps(_mm256_add_ps(a0, a2), _mm256_add_ps(a1, a3));
        for j in nb / 4 * 4..nb {
            acc = _mm256_add_ps(acc, term(j));
        }
        // SAFETY: `out` is eight f32.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), acc) };
    }

    /// VNNI: codes `c + 128` against the activations, from `−128·Σq`, in four chains.
    ///
    /// # Safety
    ///
    /// The CPU must have AVX2, F16C and AVX-512 VNNI + VL; `recs` holds one record per
    /// activation block.
    #[target_feature(enable = "avx2,f16c,avx512f,avx512vl,avx512vnni")]
    pub(super) unsafe fn vnni(recs: &[u8], p: &Prepared<'_>, out: &mut [f32; ROWS]) {
        let flip = _mm256_set1_epi8(-128);
        // SAFETY: each record is RECORD bytes, 8 loads of 32 code bytes from CODES; each
        // activation block has 32 codes.
        unsafe {
            add_terms(recs, p, out, |j| {
                let rec = recs.as_ptr().add(j * RECORD + CODES);
                let q = p.a[j].qs.as_ptr();
                let mut s0 = _mm256_set1_epi32(p.corr[j]);
                let mut s1 = _mm256_setzero_si256();
                let mut s2 = _mm256_setzero_si256();
                let mut s3 = _mm256_setzero_si256();
                for k in 0..2 {
                    let c = |i: usize| _mm256_xor_si256(load32(rec.add(32 * (4 * k + i))), flip);
                    let b = |i: usize| bcast4(q.add(4 * (4 * k + i)));
                    s0 = _mm256_dpbusd_epi32(s0, c(0), b(0));
                    s1 = _mm256_dpbusd_epi32(s1, c(1), b(1));
                    s2 = _mm256_dpbusd_epi32(s2, c(2), b(2));
                    s3 = _mm256_dpbusd_epi32(s3, c(3), b(3));
                }
                _mm256_add_epi32(_mm256_add_epi32(s0, s1), _mm256_add_epi32(s2, s3))
            })
        }
    }

    /// AVX2: `pmaddubsw(|c|, sign(q, c))` (pairs at most 2·128·127 < 2^15), `pmaddwd` by ones.
    ///
    /// # Safety
    ///
    /// The CPU must have AVX2 and F16C; `recs` holds one record per activation block.
    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn avx2(recs: &[u8], p: &Prepared<'_>, out: &mut [f32; ROWS]) {
        let ones = _mm256_set1_epi16(1);
        // SAFETY: as in `vnni`.
        unsafe {
            add_terms(recs, p, out, |j| {
                let rec = recs.as_ptr().add(j * RECORD + CODES);
                let q = p.a[j].qs.as_ptr();
                let mut s = [_mm256_setzero_si256(); 2];
                for k in 0..8 {
                    let c = load32(rec.add(32 * k));
                    let p16 = _mm256_maddubs_epi16(
                        _mm256_sign_epi8(c, c),
                        _mm256_sign_epi8(bcast4(q.add(4 * k)), c),
                    );
                    s[k % 2] = _mm256_add_epi32(s[k % 2], _mm256_madd_epi16(p16, ones));
                }
                _mm256_add_epi32(s[0], s[1])
            })
        }
    }
}

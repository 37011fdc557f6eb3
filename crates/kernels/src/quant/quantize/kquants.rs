//! Q2_K…Q6_K super-blocks of 256 (`quantize_row_q2_K_ref` … `quantize_row_q6_K_ref`).
//!
//! Two steps per super-block. First each sub-block (16 or 32 weights) gets its own best scale
//! (and, for the types with offsets, minimum) from a small search:
//! - [`make_qx_quants`] (Q6_K): symmetric codes; tries scales `−(nmax + 0.1·k)/max` for
//!   k = −9…9 and keeps the one maximising `(Σw·x·l)² / Σw·l²` (the weighted least-squares fit of
//!   `x ≈ s·l`), with weights `w = x²`.
//! - [`make_q3_quants`] (Q3_K): symmetric codes, then up to 5 passes that move single codes
//!   when that improves the same least-squares score.
//! - [`make_qkx2_quants`] (Q2_K, Q4_K, Q5_K): asymmetric codes `x ≈ s·l − m`; tries `nstep + 1`
//!   scales around `nmax/(max − min)`, solving the 2×2 weighted least-squares system for (s, m)
//!   at each, and keeps the one with the least weighted error (absolute for Q2_K, squared
//!   otherwise).
//!
//! Then the sub-block scales (and minimums) are themselves quantized to 4, 6 or 8 bits against
//! an f16 super-scale, and every weight is re-quantized with the scale it will really be
//! decoded with. Layouts: [`crate::quant::kquants`].

use super::{f16_bytes, f16_value, nearest_int, GROUP_MAX_EPS};

/// Sub-block quantization of symmetric codes, `l ∈ [−nmax, nmax−1]` stored as `l + nmax` in
/// `L`; returns the scale. `rmse_type` 1 (weights x², the only one the reference quantizers
/// use without an importance matrix) searches 18 more scales; 0 returns the first.
fn make_qx_quants(x: &[f32], nmax: i32, l_out: &mut [i8], rmse_type: i32) -> f32 {
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out.iter_mut().for_each(|l| *l = 0);
        return 0.0;
    }
    let mut iscale = -(nmax as f32) / max;
    let clamp = |l: i32| l.clamp(-nmax, nmax - 1);
    if rmse_type == 0 {
        for (o, &v) in l_out.iter_mut().zip(x) {
            *o = (nmax + clamp(nearest_int(iscale * v))) as i8;
        }
        return 1.0 / iscale;
    }
    let weight = |v: f32| v * v;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (o, &v) in l_out.iter_mut().zip(x) {
        let l = clamp(nearest_int(iscale * v));
        *o = (l + nmax) as i8;
        let (w, lf) = (weight(v), l as f32);
        sumlx += w * v * lf;
        suml2 += w * lf * lf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &v in x {
            let lf = clamp(nearest_int(iscale * v)) as f32;
            let w = weight(v);
            sumlx += w * v * lf;
            suml2 += w * lf * lf;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (o, &v) in l_out.iter_mut().zip(x) {
                *o = (nmax + clamp(nearest_int(iscale * v))) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Sub-block quantization for Q3_K: symmetric codes refined one at a time (weights x²); `L`
/// gets `l + nmax`, or 0 everywhere for an all-zero group.
fn make_q3_quants(x: &[f32], nmax: i32, l_out: &mut [i8]) -> f32 {
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out.iter_mut().for_each(|l| *l = 0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let clamp = |l: i32| l.clamp(-nmax, nmax - 1);
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (o, &v) in l_out.iter_mut().zip(x) {
        let l = clamp(nearest_int(iscale * v));
        *o = l as i8;
        let w = v * v;
        sumlx += w * v * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    for _ in 0..5 {
        let mut changed = 0;
        for (o, &v) in l_out.iter_mut().zip(x) {
            let w = v * v;
            let li = *o as f32;
            let mut slx = sumlx - w * v * li;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * li * li;
                let new_l = clamp(nearest_int(v * sl2 / slx));
                if new_l != *o as i32 {
                    let nl = new_l as f32;
                    slx += w * v * nl;
                    sl2 += w * nl * nl;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *o = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed += 1;
                    }
                }
            }
        }
        if changed == 0 {
            break;
        }
    }
    for o in l_out.iter_mut() {
        *o += nmax as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Sub-block quantization with an offset: codes `l ∈ [0, nmax]` with `x ≈ scale·l − the_min`.
/// Returns `(scale, the_min)`; `the_min ≥ 0`. Searches `iscale = (rmin + rdelta·k + nmax) /
/// (max − min)` for k = 0…nstep, fitting (scale, min) by weighted least squares at each.
#[allow(clippy::too_many_arguments)] // The search's parameters, as ggml names them.
fn make_qkx2_quants(
    x: &[f32],
    weights: &[f32],
    nmax: i32,
    l_out: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out.iter_mut().for_each(|l| *l = 0);
        return (0.0, -min);
    }
    let err = |d: f32| if use_mad { d.abs() } else { d * d };
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l_out[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        best_error += weights[i] * err(diff);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    let mut laux = [0u8; 32];
    let laux = &mut laux[..n];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = l as u8;
            let (w, lf) = (weights[i], l as f32);
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * err(diff);
            }
            if cur_error < best_error {
                l_out.copy_from_slice(laux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// 2-bit codes of 256 weights packed 4 per byte: weight `128h + 32j + l` at bits `2j` of
/// byte `32h + l` (Q2_K's `qs`, Q3_K's low bits).
fn pack2(l: &[u8; 256], qs: &mut [u8]) {
    for h in 0..2 {
        for i in 0..32 {
            let b = 128 * h + i;
            qs[32 * h + i] = l[b] | (l[b + 32] << 2) | (l[b + 64] << 4) | (l[b + 96] << 6);
        }
    }
}

/// Q2_K: `scales: [u8; 16], qs: [u8; 64], d: f16, dmin: f16` (bytes 0, 16, 80, 82). 16
/// sub-blocks of 16 with 4-bit scale (low nibble) and 4-bit minimum (high nibble).
pub fn q2_k(x: &[f32], out: &mut [u8]) {
    let mut l = [0u8; 256];
    let mut scales = [0f32; 16];
    let mut mins = [0f32; 16];
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        let mut w = [0f32; 16];
        for (w, v) in w.iter_mut().zip(xs) {
            *w = v.abs();
        }
        let (s, m) = make_qkx2_quants(xs, &w, 3, &mut l[16 * j..16 * j + 16], -0.5, 0.1, 15, true);
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let sc = &mut [0u8; 16];
    if max_scale > 0.0 {
        let iscale = 15.0 / max_scale;
        for j in 0..16 {
            sc[j] = nearest_int(iscale * scales[j]) as u8;
        }
        out[80..82].copy_from_slice(&f16_bytes(max_scale / 15.0));
    } else {
        out[80..82].copy_from_slice(&f16_bytes(0.0));
    }
    if max_min > 0.0 {
        let iscale = 15.0 / max_min;
        for j in 0..16 {
            sc[j] |= (nearest_int(iscale * mins[j]) << 4) as u8;
        }
        out[82..84].copy_from_slice(&f16_bytes(max_min / 15.0));
    } else {
        out[82..84].copy_from_slice(&f16_bytes(0.0));
    }
    let (d_all, m_all) = (f16_value([out[80], out[81]]), f16_value([out[82], out[83]]));
    for (j, &s) in sc.iter().enumerate() {
        let d = d_all * (s & 0xf) as f32;
        if d == 0.0 {
            continue;
        }
        let dm = m_all * (s >> 4) as f32;
        for i in 16 * j..16 * j + 16 {
            l[i] = nearest_int((x[i] + dm) / d).clamp(0, 3) as u8;
        }
    }
    out[0..16].copy_from_slice(sc);
    pack2(&l, &mut out[16..80]);
}

/// Q3_K: `hmask: [u8; 32], qs: [u8; 64], scales: [u8; 12], d: f16` (bytes 0, 32, 96, 108).
/// 16 sub-blocks of 16 with signed 6-bit scales.
pub fn q3_k(x: &[f32], out: &mut [u8]) {
    let mut li = [0i8; 256];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut amax) = (0.0f32, 0.0f32);
    for j in 0..16 {
        scales[j] = make_q3_quants(&x[16 * j..16 * j + 16], 4, &mut li[16 * j..16 * j + 16]);
        if scales[j].abs() > amax {
            amax = scales[j].abs();
            max_scale = scales[j];
        }
    }
    let mut sc = [0u8; 12];
    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        for j in 0..16 {
            // ggml stores nearest_int into an int8 before clamping (values here fit).
            let l = (nearest_int(iscale * scales[j]) as i8).clamp(-32, 31) as i32 + 32;
            if j < 8 {
                sc[j] = (l & 0xf) as u8;
            } else {
                sc[j - 8] |= ((l & 0xf) << 4) as u8;
            }
            sc[8 + j % 4] |= ((l >> 4) << (2 * (j / 4))) as u8;
        }
        out[108..110].copy_from_slice(&f16_bytes(1.0 / iscale));
    } else {
        out[108..110].copy_from_slice(&f16_bytes(0.0));
    }
    let d_all = f16_value([out[108], out[109]]);
    for j in 0..16 {
        let low = if j < 8 { sc[j] & 0xf } else { sc[j - 8] >> 4 };
        let s = (low | (((sc[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) as i32 - 32;
        let d = d_all * s as f32;
        if d == 0.0 {
            continue;
        }
        for i in 16 * j..16 * j + 16 {
            li[i] = (nearest_int(x[i] / d).clamp(-4, 3) + 4) as i8;
        }
    }
    // Codes 4..7 set their high bit (weight j: bit j/32 of hmask[j % 32]) and keep 0..3.
    let mut l = [0u8; 256];
    let hmask = &mut out[0..32];
    hmask.fill(0);
    for j in 0..256 {
        let mut v = li[j] as u8;
        if v > 3 {
            hmask[j % 32] |= 1 << (j / 32);
            v -= 4;
        }
        l[j] = v;
    }
    pack2(&l, &mut out[32..96]);
    out[96..108].copy_from_slice(&sc);
}

/// Per-sub-block (scale, min) of 32 weights for Q4_K/Q5_K, weights `rms(x) + |x|`.
fn qkx2_subblocks(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    nstep: i32,
    l: &mut [u8; 256],
) -> ([f32; 8], [f32; 8]) {
    let (mut scales, mut mins) = ([0f32; 8], [0f32; 8]);
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        let mut w = [0f32; 32];
        for (w, v) in w.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (s, m) = make_qkx2_quants(
            xs,
            &w,
            nmax,
            &mut l[32 * j..32 * j + 32],
            rmin,
            0.1,
            nstep,
            false,
        );
        scales[j] = s;
        mins[j] = m;
    }
    (scales, mins)
}

/// Q4_K/Q5_K's 12 bytes of 6-bit scales and minimums, and the f16 `d`, `dmin`; then the codes
/// re-quantized against the stored scales (`l ∈ [0, nmax]`).
fn k4_scales(x: &[f32], nmax: i32, rmin: f32, nstep: i32, out: &mut [u8], l: &mut [u8; 256]) {
    let (scales, mins) = qkx2_subblocks(x, nmax, rmin, nstep, l);
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..8 {
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut sc = [0u8; 12];
    for j in 0..8 {
        // Stored into a uint8 before the cap, as ggml does (a negative value wraps, then caps).
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (ls & 0xf) | ((lm & 0xf) << 4);
            sc[j - 4] |= (ls >> 4) << 6;
            sc[j] |= (lm >> 4) << 6;
        }
    }
    out[0..2].copy_from_slice(&f16_bytes(max_scale / 63.0));
    out[2..4].copy_from_slice(&f16_bytes(max_min / 63.0));
    out[4..16].copy_from_slice(&sc);
    let (d_all, m_all) = (f16_value([out[0], out[1]]), f16_value([out[2], out[3]]));
    for j in 0..8 {
        let (s, m) = crate::quant::kquants::scale_min_k4(j, &sc);
        let d = d_all * s as f32;
        if d == 0.0 {
            continue;
        }
        let dm = m_all * m as f32;
        for i in 32 * j..32 * j + 32 {
            l[i] = nearest_int((x[i] + dm) / d).clamp(0, nmax) as u8;
        }
    }
}

/// Q4_K: `d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]` (bytes 0, 2, 4, 16).
pub fn q4_k(x: &[f32], out: &mut [u8]) {
    let mut l = [0u8; 256];
    k4_scales(x, 15, -1.0, 20, out, &mut l);
    for c in 0..4 {
        for i in 0..32 {
            out[16 + 32 * c + i] = l[64 * c + i] | (l[64 * c + 32 + i] << 4);
        }
    }
}

/// Q5_K: `d: f16, dmin: f16, scales: [u8; 12], qh: [u8; 32], qs: [u8; 128]` (bytes 0, 2, 4,
/// 16, 48); weight `64c + i`'s fifth bit is bit `2c` of `qh[i]`, `64c + 32 + i`'s bit `2c + 1`.
pub fn q5_k(x: &[f32], out: &mut [u8]) {
    let mut l = [0u8; 256];
    k4_scales(x, 31, -0.5, 15, out, &mut l);
    let mut qh = [0u8; 32];
    for c in 0..4 {
        for i in 0..32 {
            let (mut a, mut b) = (l[64 * c + i], l[64 * c + 32 + i]);
            if a > 15 {
                a -= 16;
                qh[i] |= 1 << (2 * c);
            }
            if b > 15 {
                b -= 16;
                qh[i] |= 2 << (2 * c);
            }
            out[48 + 32 * c + i] = a | (b << 4);
        }
    }
    out[16..48].copy_from_slice(&qh);
}

/// Q6_K: `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16` (bytes 0, 128, 192, 208).
/// 16 sub-blocks of 16 with signed 8-bit scales; 6-bit codes stored +32.
pub fn q6_k(x: &[f32], out: &mut [u8]) {
    let mut l = [0i8; 256];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut max_abs) = (0.0f32, 0.0f32);
    for ib in 0..16 {
        let s = make_qx_quants(
            &x[16 * ib..16 * ib + 16],
            32,
            &mut l[16 * ib..16 * ib + 16],
            1,
        );
        scales[ib] = s;
        if s.abs() > max_abs {
            max_abs = s.abs();
            max_scale = s;
        }
    }
    if max_abs < GROUP_MAX_EPS {
        out.fill(0);
        return;
    }
    let iscale = -128.0 / max_scale;
    out[208..210].copy_from_slice(&f16_bytes(1.0 / iscale));
    let mut sc = [0i8; 16];
    for (s, &v) in sc.iter_mut().zip(&scales) {
        *s = nearest_int(iscale * v).min(127) as i8;
    }
    let d_all = f16_value([out[208], out[209]]);
    for (j, &s) in sc.iter().enumerate() {
        let d = d_all * s as f32;
        if d == 0.0 {
            continue;
        }
        for i in 16 * j..16 * j + 16 {
            l[i] = (nearest_int(x[i] / d).clamp(-32, 31) + 32) as i8;
        }
    }
    for h in 0..2 {
        let lb = |k: usize| l[128 * h + k] as u8;
        for i in 0..32 {
            let (q1, q2, q3, q4) = (lb(i), lb(i + 32), lb(i + 64), lb(i + 96));
            out[64 * h + i] = (q1 & 0xf) | ((q3 & 0xf) << 4);
            out[64 * h + i + 32] = (q2 & 0xf) | ((q4 & 0xf) << 4);
            out[128 + 32 * h + i] =
                (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
        }
    }
    for (o, s) in out[192..208].iter_mut().zip(sc) {
        *o = s as u8;
    }
}

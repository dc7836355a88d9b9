//! The weight layout of the W4A16 tensor-core GEMM (`kernels/gemm_w4.cu`), written once at load
//! from compressed-tensors' pack-quantized tensors. Host code (no CUDA), so the shuffle is
//! unit-tested on any build.
//!
//! The kernel reads the weights as `mma.m16n8k16` B fragments: per k16 × n32 block of the
//! weight (64 words, 256 bytes), lane `l` reads the two words `2l`, `2l + 1`; word `h` holds the
//! 8 nibbles the lane needs for n8 tiles `2h` and `2h + 1`, arranged so that nibbles `i` and
//! `i + 4` become one bf16x2 register with a single `lop3` ([`position`] is the one definition).
//! Blocks run along n fastest, then k. N is padded to a multiple of 32 and K to a multiple of
//! 128 with nibble 8 (q = 0) and zero scales. Scales are stored transposed, `[ceil(Kp/G), Np]`,
//! so a tile's scales are one contiguous row; zero points likewise, as `−(136 + z)` (the
//! kernel's offset for `128 + nibble` → `q − z`).
//!
//! Act-order checkpoints (`weight_g_idx`): the columns are sorted by group index (stably), so
//! each group becomes a contiguous run of K, the weights are stored in that order and the
//! activations' columns are gathered with the same permutation before the GEMM (as vLLM's
//! Marlin does). A g_idx whose sorted groups are not runs of `group` columns is rejected.

use half::bf16;

/// Padding of N (one k16 × n32 block) and K (the widest K tile of the kernel).
pub const N_ALIGN: usize = 32;
pub const K_ALIGN: usize = 128;

/// The padded sizes (Np, Kp) of an [n, k] weight.
pub fn padded(n: usize, k: usize) -> (usize, usize) {
    (n.next_multiple_of(N_ALIGN), k.next_multiple_of(K_ALIGN))
}

/// Where weight (row `n`, column `k`) lives with `np` padded rows: (word index, nibble index).
pub fn position(np: usize, n: usize, k: usize) -> (usize, u32) {
    let (kt, kk) = (k / 16, k % 16);
    let (blk, nn) = (n / 32, n % 32);
    let (h, tile) = (nn / 16, (nn % 16) / 8);
    // mma B fragment: lane l holds n = l/4 of its n8 tile, k = 2(l%4) + {0, 1} (+8 for the
    // second register)
    let lane = (nn % 8) * 4 + (kk % 8) / 2;
    let reg = tile * 2 + kk / 8; // 0, 1: first tile's two registers; 2, 3: the second's
    let nib = reg + 4 * (kk % 2); // low half of register i ← nibble i, high ← i + 4
    (((kt * (np / 32) + blk) * 32 + lane) * 2 + h, nib as u32)
}

/// The shuffled words of an [n, k] weight whose nibble (q + 8) at (row, column) is `nib`.
pub fn shuffle(n: usize, k: usize, nib: impl Fn(usize, usize) -> u32 + Sync) -> Vec<u32> {
    use rayon::prelude::*;
    let (np, kp) = padded(n, k);
    let mut out = vec![0u32; np * kp / 8];
    let blocks_n = np / N_ALIGN;
    // a k16 × n32 block is 64 consecutive words ([`position`]): the blocks fill in parallel (one
    // thread over a 1.2B model's 1.07 G nibbles took ~8 s of every W4A16 load)
    out.par_chunks_mut(64).enumerate().for_each(|(b, words)| {
        let (kt, blk) = (b / blocks_n, b % blocks_n);
        for r in blk * 32..blk * 32 + 32 {
            for c in kt * 16..kt * 16 + 16 {
                let v = if r < n && c < k { nib(r, c) & 15 } else { 8 };
                let (w, i) = position(np, r, c);
                words[w - 64 * b] |= v << (4 * i);
            }
        }
    });
    out
}

/// The nibbles [n, k] back from [`shuffle`]'s words.
pub fn unshuffle(words: &[u32], n: usize, k: usize) -> Vec<u8> {
    let (np, _) = padded(n, k);
    let mut out = vec![0u8; n * k];
    for r in 0..n {
        for c in 0..k {
            let (w, i) = position(np, r, c);
            out[r * k + c] = ((words[w] >> (4 * i)) & 15) as u8;
        }
    }
    out
}

/// A W4A16 weight in the GEMM's layout, on the host.
#[derive(Debug, Clone)]
pub struct W4Tiles {
    /// shuffled nibbles, Np · Kp / 8 words
    pub q: Vec<u32>,
    /// [ceil(Kp / group), Np] scales (zero on padding)
    pub scales: Vec<bf16>,
    /// [ceil(Kp / group), Np] −(136 + zero point); None for symmetric weights
    pub zneg: Option<Vec<bf16>>,
    /// act-order: column j of the stored weight is column perm[j] of the checkpoint's
    pub perm: Option<Vec<u32>>,
    pub n: usize,
    pub k: usize,
    pub np: usize,
    pub group: usize,
}

/// The column order that makes act-order groups contiguous, or None where g_idx is already in
/// order (`g_idx[c] == c / group`); an error where sorted groups are not runs of `group`.
pub fn act_order(g_idx: &[usize], group: usize) -> Result<Option<Vec<u32>>, String> {
    if g_idx.iter().enumerate().all(|(c, &g)| g == c / group) {
        return Ok(None);
    }
    let mut perm: Vec<u32> = (0..g_idx.len() as u32).collect();
    perm.sort_by_key(|&c| g_idx[c as usize]); // stable: columns keep their order within a group
    if let Some(j) = perm
        .iter()
        .enumerate()
        .position(|(j, &c)| g_idx[c as usize] != j / group)
    {
        return Err(format!(
            "g_idx sorted by group has group {} at position {j}, not {}: groups must hold {group} columns each (the last may be shorter)",
            g_idx[perm[j] as usize],
            j / group
        ));
    }
    Ok(Some(perm))
}

impl W4Tiles {
    /// From compressed-tensors' tensors of one Linear: `packed` [n, ceil(k/8)] words (nibble i
    /// of word j = column 8j + i, stored q + 8), `scales` [n, groups] and `zeros` [n, groups] (q
    /// units; None = symmetric) as f32, `g_idx` [k] (act-order). The group is ceil(k / groups)
    /// (the last group may be shorter), as compressed-tensors' decompressor reads it.
    pub fn new(
        packed: &[u32],
        scales: &[f32],
        zeros: Option<&[f32]>,
        g_idx: Option<&[usize]>,
        n: usize,
        k: usize,
    ) -> Result<Self, String> {
        let words = k.div_ceil(8);
        if n == 0 || k == 0 || packed.len() != n * words {
            return Err(format!(
                "packed weights of {} words for [{n}, {k}] (expected {})",
                packed.len(),
                n * words
            ));
        }
        let groups = scales.len() / n;
        if groups == 0 || scales.len() != n * groups {
            return Err(format!("{} scales for {n} rows", scales.len()));
        }
        let group = k.div_ceil(groups);
        if !k.is_multiple_of(16) || !group.is_multiple_of(16) || (groups - 1) * group >= k {
            return Err(format!(
                "[{n}, {k}] with {groups} groups of {group}: the W4 GEMM needs in_features and the group size multiples of 16 (compressed-tensors' group 32/64/128 and per-channel on such shapes)"
            ));
        }
        if zeros.is_some_and(|z| z.len() != scales.len()) {
            return Err("zero points and scales differ in shape".into());
        }
        let perm = match g_idx {
            Some(g) if g.len() != k => return Err(format!("g_idx of {} entries for {k}", g.len())),
            Some(g) => act_order(g, group)?,
            None => None,
        };
        let col = |c: usize| perm.as_ref().map_or(c, |p| p[c] as usize);
        let q = shuffle(n, k, |r, c| {
            let c = col(c);
            (packed[r * words + c / 8] >> (4 * (c % 8))) & 15
        });
        let (np, kp) = padded(n, k);
        let rows = kp.div_ceil(group);
        let transpose = |v: &[f32], pad: f32, f: &dyn Fn(f32) -> f32| {
            let mut t = vec![bf16::from_f32(pad); rows * np];
            for r in 0..n {
                for g in 0..groups {
                    t[g * np + r] = bf16::from_f32(f(v[r * groups + g]));
                }
            }
            t
        };
        Ok(Self {
            q,
            scales: transpose(scales, 0.0, &|s| s),
            zneg: zeros.map(|z| transpose(z, -136.0, &|z| -(136.0 + z))),
            perm,
            n,
            k,
            np,
            group,
        })
    }
}

/// The rows of a stacked gate/up tensor (`n` rows: `n / 2` gates, then as many ups; any row
/// length) reordered to gate j, up j side by side (rows 2j, 2j + 1), the order in which the GEMM
/// gates in its epilogue (`kernels/gemm_w4.cu`). An error unless `n` is even and divides the
/// data into whole rows.
pub fn pair_rows<T: Copy>(v: &[T], n: usize) -> Result<Vec<T>, String> {
    if n == 0 || !n.is_multiple_of(2) || !v.len().is_multiple_of(n) {
        return Err(format!(
            "{} values cannot be {n} gate/up rows (an even number of whole rows)",
            v.len()
        ));
    }
    let (half, len) = (n / 2, v.len() / n);
    Ok((0..n)
        .flat_map(|r| {
            let src = r / 2 + (r % 2) * half;
            v[src * len..(src + 1) * len].iter().copied()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_rows_puts_gate_and_up_side_by_side() {
        // 3 gates (rows 0..3: values 10r..), 3 ups (rows 3..6), rows of two values
        let v: Vec<u32> = (0..6).flat_map(|r| [10 * r, 10 * r + 1]).collect();
        let p = pair_rows(&v, 6).unwrap();
        assert_eq!(p, [0, 1, 30, 31, 10, 11, 40, 41, 20, 21, 50, 51]);
        assert!(pair_rows(&v, 3).is_err(), "odd row count");
        assert!(pair_rows(&v[..11], 6).is_err(), "not whole rows");
        assert!(pair_rows::<u32>(&[], 0).is_err());
    }

    /// A deterministic nibble pattern with every value and no period aligned to the tiles.
    fn nibbles(n: usize, k: usize) -> Vec<u8> {
        (0..n * k)
            .map(|i| ((i * 2654435761usize) >> 7) as u8 & 15)
            .collect()
    }

    #[test]
    fn unshuffle_inverts_shuffle() {
        for (n, k) in [(32, 128), (64, 256), (40, 144), (96, 2064)] {
            let x = nibbles(n, k);
            let w = shuffle(n, k, |r, c| x[r * k + c] as u32);
            let (np, kp) = padded(n, k);
            assert_eq!(w.len(), np * kp / 8);
            assert_eq!(unshuffle(&w, n, k), x, "[{n}, {k}]");
        }
    }

    /// The kernel's reading, written out from the mma.m16n8k16 B-fragment definition (lane l:
    /// n = l/4, k = 2(l%4) + {0,1} in register 0, + 8 in register 1) and the dequantization's
    /// bit operations ((word >> 4i) & 0x000f000f → register i), must find every weight.
    #[test]
    fn fragments_hold_the_weights_the_mma_expects() {
        let (n, k) = (72, 272);
        let x = nibbles(n, k);
        let w = shuffle(n, k, |r, c| x[r * k + c] as u32);
        let (np, kp) = padded(n, k);
        let mut seen = 0;
        for kt in 0..kp / 16 {
            for blk in 0..np / 32 {
                for lane in 0..32 {
                    for h in 0..2 {
                        let word = w[((kt * (np / 32) + blk) * 32 + lane) * 2 + h];
                        for i in 0..4 {
                            let v = (word >> (4 * i)) & 0x000f_000f;
                            let tile = 2 * h + i / 2; // n8 tile inside the block
                            let row = blk * 32 + tile * 8 + lane / 4;
                            let kb = kt * 16 + (i % 2) * 8 + (lane % 4) * 2;
                            for (e, nib) in [(0, v & 15), (1, v >> 16)] {
                                let want = if row < n && kb + e < k {
                                    x[row * k + kb + e] as u32
                                } else {
                                    8
                                };
                                assert_eq!(nib, want, "row {row} col {}", kb + e);
                                seen += 1;
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(seen, np * kp);
    }

    #[test]
    fn tiles_from_checkpoint_packing() {
        let (n, k, group) = (40, 256, 128);
        let x = nibbles(n, k);
        // compressed-tensors packing: column 8j + i → word j, nibble i
        let words = k / 8;
        let mut packed = vec![0u32; n * words];
        for r in 0..n {
            for c in 0..k {
                packed[r * words + c / 8] |= (x[r * k + c] as u32) << (4 * (c % 8));
            }
        }
        let groups = k / group;
        let scales: Vec<f32> = (0..n * groups).map(|i| 0.5 + i as f32 / 64.0).collect();
        let zeros: Vec<f32> = (0..n * groups).map(|i| (i % 16) as f32 - 8.0).collect();
        let t = W4Tiles::new(&packed, &scales, Some(&zeros), None, n, k).unwrap();
        assert_eq!(unshuffle(&t.q, n, k), x);
        assert_eq!(t.np, 64);
        // row 3, group 1 at [1, 3] of the transposed scales
        assert_eq!(t.scales[t.np + 3], bf16::from_f32(scales[3 * groups + 1]));
        let z = zeros[3 * groups + 1];
        assert_eq!(t.zneg.as_ref().unwrap()[t.np + 3].to_f32(), -(136.0 + z));
        assert_eq!(t.scales[t.np + 50], bf16::ZERO); // padded row

        // act-order: groups given by g_idx, weights stored in sorted order
        let g_idx: Vec<usize> = (0..k).map(|c| (c * 7 % k) / group).collect();
        let t = W4Tiles::new(&packed, &scales, None, Some(&g_idx), n, k).unwrap();
        let perm = t.perm.as_ref().unwrap();
        let back = unshuffle(&t.q, n, k);
        for r in 0..n {
            for j in 0..k {
                assert_eq!(back[r * k + j], x[r * k + perm[j] as usize]);
                assert_eq!(g_idx[perm[j] as usize], j / group);
            }
        }
        // in-order g_idx needs no gather; groups of uneven size are refused
        let plain: Vec<usize> = (0..k).map(|c| c / group).collect();
        assert!(act_order(&plain, group).unwrap().is_none());
        let uneven: Vec<usize> = (0..k).map(|c| usize::from(c >= 100)).collect();
        assert!(act_order(&uneven, group).is_err());
        // K not a multiple of 16 is refused with a reason
        assert!(W4Tiles::new(&packed[..n * 2], &scales, None, None, n, 12).is_err());
    }
}

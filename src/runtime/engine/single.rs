//! The forward of a single row (batch-1 decoding): six launches per layer, the norms and the
//! SiLU gate folded into the GEMVs that consume them; on W4A16 weights whose gate/up the GEMM
//! gates in its epilogue, seven (the MLP on the tensor-core GEMM, its norm a launch of its own).

use candle_core::Result;
use half::bf16;

use super::weights::{Lin, Staged, Weights};
use super::DecodeEngine;
use crate::runtime::int4::W4Route;
use crate::runtime::launch::attention::{attn_rows, AttnRows};
use crate::runtime::launch::gemv::{gemv1x_bf16, gemv1x_w4, Dense, Prologue};
use crate::runtime::launch::norm_rope::{
    embed_rows, qk_norm_rope_store, rmsnorm_rows, QkNormRope, RmsNormRows,
};
use crate::runtime::launch::sampling::argmax_rows;
use crate::runtime::launch::Dev;

impl DecodeEngine {
    /// y = x · Wᵀ for one row, x built in shared memory by the GEMV's prologue.
    fn linear1(&self, lin: &Lin, x: &Prologue, y: Dev<bf16>) -> Result<()> {
        match &lin.w {
            Weights::Dense(w) | Weights::Emulated(w) => {
                let w = Dense {
                    w: self.d(w),
                    n: lin.n,
                    k: lin.k,
                };
                gemv1x_bf16(&self.dev, &w, x, y)
            }
            Weights::Int4(p) => gemv1x_w4(&self.dev, &p.view(&self.stream)?, x, y),
            Weights::Int8(_) | Weights::Fp8(_) => {
                candle_core::bail!("the decode engine loads no 8-bit (W8A8) Linears")
            }
        }
    }

    /// The forward of a single row; the residual alternates between two buffers (h: after the
    /// attention block's residual, h2: after the MLP's).
    pub(super) fn forward_one(&self) -> Result<()> {
        let c = &self.cfg;
        let (h, hd, hq, hkv) = (
            c.hidden_size,
            c.head_dim,
            c.num_attention_heads,
            c.num_key_value_heads,
        );
        let eps = c.rms_norm_eps as f32;
        let b = &self.buf;
        let (ids, pos, pad, ha, hb) = (
            self.d(&b.ids),
            self.d(&b.pos),
            self.d(&b.pad),
            self.d(&b.h),
            self.d(&b.h2),
        );
        let (qkv, q, att, o, gu) = (
            self.d(&b.qkv),
            self.d(&b.q),
            self.d(&b.att),
            self.d(&b.o),
            self.d(&b.gu),
        );
        let dev = &self.dev;
        let act = self.d(&b.act);
        let one_row = |x, w, out, accumulate: bool| RmsNormRows {
            x,
            w,
            out,
            rows: 1,
            n: h,
            eps,
            prev: accumulate.then_some(out),
            row_step: 1,
            row_off: 0,
            idx: None,
        };
        // the residual stream in two buffers: hs[input] holds a layer's input, hs[mid] the
        // attention block's residual (the same buffer where it is added in place)
        let hs = [ha, hb];
        let (mut input, mut mid) = (0, 1);
        embed_rows(dev, ids, self.d(&self.w.embed), ha, 1, h)?;
        self.mark("embed")?;
        for (i, l) in self.w.layers.iter().enumerate() {
            let x = match i {
                0 => Prologue::Plain(ha),
                // the previous layer's MLP residual: input = mid + norm(o), into the buffer
                // that is not the previous layer's `mid`
                _ => {
                    input = 1 - mid;
                    Prologue::NormResidual {
                        a: o,
                        w: self.d(&self.w.layers[i - 1].post_ff),
                        residual: hs[mid],
                        out: hs[input],
                        eps,
                    }
                }
            };
            self.linear1(&l.qkv, &x, qkv)?;
            self.mark("qkv GEMV (+ norm + residual)")?;
            let (k_cache, v_cache) = (self.d(&self.kc[i]), self.d(&self.vc[i]));
            let rope = QkNormRope {
                qkv,
                q_norm: self.d(&l.q_norm),
                k_norm: self.d(&l.k_norm),
                cos: self.d(&self.w.cos),
                sin: self.d(&self.w.sin),
                pos,
                pad,
                q_out: q,
                k_cache,
                v_cache,
                rows: 1,
                heads_q: hq,
                heads_kv: hkv,
                head_dim: hd,
                t: 1,
                capacity: self.capacity,
                eps,
                use_rope: l.use_rope,
            };
            qk_norm_rope_store(dev, &rope)?;
            self.mark("qk-norm + RoPE + cache write")?;
            let attn = AttnRows {
                q,
                k_cache,
                v_cache,
                pos,
                pad,
                out: att,
                rows: 1,
                heads_q: hq,
                heads_kv: hkv,
                head_dim: hd,
                t: 1,
                capacity: self.capacity,
                scale: 1.0 / (hd as f32).sqrt(),
            };
            attn_rows(dev, &attn)?;
            self.mark("attention")?;
            self.linear1(&l.o, &Prologue::Plain(att), o)?;
            self.mark("o GEMV")?;
            match &l.gate_up.w {
                // W4A16 stored as gate/up pairs, wide enough that one row runs on the GEMM: it
                // gates in its epilogue, and down follows on the GEMM where its route says so,
                // faster at one row than the GEMVs with their prologues (H200 sweep, 2026-12-01,
                // at one block per multiprocessor: gate/up 7.6 vs 9.6 µs, down 5.2 vs 6.9 before
                // the prologues), at the cost of one launch for the residual: input += norm(o)
                Weights::Int4(p) if p.gates_in_epilogue() && p.route(1) != W4Route::Gemv => {
                    mid = input;
                    rmsnorm_rows(dev, &one_row(o, self.d(&l.post_attn), hs[mid], true))?;
                    self.mark("norm + residual")?;
                    let gemm = self.gemm();
                    gemm.gated(&l.gate_up, hs[mid], gu, act, 1, Staged::default(), None)?;
                    self.mark("gate/up GEMM + SiLU · up")?;
                    gemm.linear(&l.down, act, o, 1)?;
                    self.mark("down GEMM")?;
                }
                _ => {
                    // the attention block's residual: mid = input + norm(o)
                    mid = 1 - input;
                    let x = Prologue::NormResidual {
                        a: o,
                        w: self.d(&l.post_attn),
                        residual: hs[input],
                        out: hs[mid],
                        eps,
                    };
                    self.linear1(&l.gate_up, &x, gu)?;
                    self.mark("gate/up GEMV (+ norm + residual)")?;
                    self.linear1(&l.down, &Prologue::SiluGate(gu), o)?;
                    self.mark("down GEMV (+ SiLU · up)")?;
                }
            }
        }
        let last_layer = self.w.layers.last().expect("at least one layer");
        // the last MLP residual, mid += norm(o), then the final norm
        rmsnorm_rows(dev, &one_row(o, self.d(&last_layer.post_ff), hs[mid], true))?;
        let last = self.d(&b.last);
        rmsnorm_rows(dev, &one_row(hs[mid], self.d(&self.w.norm), last, false))?;
        self.mark("last norm + residual, final norm")?;
        let head = Dense {
            w: self.d(self.w.head()),
            n: c.vocab_size,
            k: h,
        };
        let logits = self.d(&b.logits);
        self.gemm().dense(&head, last, logits, 1)?;
        self.mark("lm_head GEMV")?;
        argmax_rows(dev, logits, self.d(&b.next), 1, c.vocab_size)?;
        self.mark("argmax")
    }
}

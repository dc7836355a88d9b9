//! The forward of any number of rows (prefill chunks, batched decoding): one GEMV (one row)
//! or cuBLAS GEMM (more) per Linear, and the norms, RoPE, attention and SiLU as their own
//! launches (the SiLU in the gate/up GEMM's epilogue where the weights allow: W4A16, W8A8).

use candle_core::Result;

use super::weights::{Gemm, Staged};
use super::DecodeEngine;
use crate::runtime::launch::attention::{attn_rows, AttnRows};
use crate::runtime::launch::gemv::Dense;
use crate::runtime::launch::norm_rope::{
    embed_rows, qk_norm_rope_store, rmsnorm_rows, QkNormRope, RmsNormRows,
};
use crate::runtime::launch::sampling::argmax_rows;

impl DecodeEngine {
    /// The Linears' runner on this engine's stream and scratch.
    pub(super) fn gemm(&self) -> Gemm<'_> {
        Gemm {
            dev: &self.dev,
            blas: &self.blas,
            stream: &self.stream,
            scratch: &self.buf.scratch,
        }
    }

    /// One forward of `rows` = batch × `t` tokens whose ids and cache slots are already in
    /// `buf.ids` / `buf.pos` (row r = b·t + i); leaves the greedy pick of each sequence's last
    /// token in `buf.next`. Launches only: nothing here waits for the device.
    pub(super) fn forward_rows(&self, rows: usize, t: usize) -> Result<()> {
        if rows == 1 {
            return self.forward_one();
        }
        let c = &self.cfg;
        let (h, hd, hq, hkv) = (
            c.hidden_size,
            c.head_dim,
            c.num_attention_heads,
            c.num_key_value_heads,
        );
        let eps = c.rms_norm_eps as f32;
        let b = &self.buf;
        let (ids, pos, pad, hb) = (self.d(&b.ids), self.d(&b.pos), self.d(&b.pad), self.d(&b.h));
        let (qkv, q, att, o, gu, act) = (
            self.d(&b.qkv),
            self.d(&b.q),
            self.d(&b.att),
            self.d(&b.o),
            self.d(&b.gu),
            self.d(&b.act),
        );
        let dev = &self.dev;
        let gemm = self.gemm();
        embed_rows(dev, ids, self.d(&self.w.embed), hb, rows, h)?;
        self.mark("embed")?;
        // post-norm + residual: hb += bf16(rmsnorm(o) · w)
        let norm_residual = |w| RmsNormRows {
            x: o,
            w,
            out: hb,
            rows,
            n: h,
            eps,
            prev: Some(hb),
            row_step: 1,
            row_off: 0,
            idx: None,
        };
        // the input of the next q/k/v product as its producer left it (the embedding: bf16 only)
        let mut staged = Staged::default();
        for (i, l) in self.w.layers.iter().enumerate() {
            gemm.linear_staged(&l.qkv, hb, qkv, rows, staged)?;
            self.mark("qkv GEMV")?;
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
                rows,
                heads_q: hq,
                heads_kv: hkv,
                head_dim: hd,
                t,
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
                rows,
                heads_q: hq,
                heads_kv: hkv,
                head_dim: hd,
                t,
                capacity: self.capacity,
                scale: 1.0 / (hd as f32).sqrt(),
            };
            attn_rows(dev, &attn)?;
            self.mark("attention")?;
            gemm.linear(&l.o, att, o, rows)?;
            self.mark("o GEMV")?;
            let st = gemm.norm_residual(&norm_residual(self.d(&l.post_attn)), Some(&l.gate_up))?;
            self.mark("norm + residual")?;
            let st = gemm.gated(&l.gate_up, hb, gu, act, rows, st, Some(&l.down))?;
            self.mark("gate/up GEMM + SiLU · up")?;
            gemm.linear_staged(&l.down, act, o, rows, st)?;
            self.mark("down GEMV")?;
            let next = self.w.layers.get(i + 1).map(|n| &n.qkv);
            staged = gemm.norm_residual(&norm_residual(self.d(&l.post_ff)), next)?;
            self.mark("norm + residual")?;
        }
        let last = self.d(&b.last);
        // the final norm of each sequence's last token
        let final_norm = RmsNormRows {
            x: hb,
            w: self.d(&self.w.norm),
            out: last,
            rows: self.batch,
            n: h,
            eps,
            prev: None,
            row_step: t,
            row_off: t - 1,
            idx: None,
        };
        rmsnorm_rows(dev, &final_norm)?;
        self.mark("final norm")?;
        let head = Dense {
            w: self.d(self.w.head()),
            n: c.vocab_size,
            k: h,
        };
        let logits = self.d(&b.logits);
        gemm.dense(&head, last, logits, self.batch)?;
        self.mark("lm_head GEMV")?;
        argmax_rows(dev, logits, self.d(&b.next), self.batch, c.vocab_size)?;
        self.mark("argmax")
    }
}

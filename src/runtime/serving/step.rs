//! One step of the serving engine: the host builds the step's integer metadata (per token: id,
//! position, pool slot; per single token: its attention entry; per 64 queries of a prompt chunk:
//! a flash tile; the sampled rows; the block tables), copies it to fixed device sections, and
//! the forward runs over all the step's tokens at once. Decode-only steps are padded to a bucket
//! of rows and, from their second occurrence, replayed as CUDA graphs (the metadata lives at
//! fixed addresses, so a replay reads the new step's values).

use candle_core::cuda::cudarc::driver::sys;
use candle_core::Result;

use super::{ServingEngine, ServingLimits, StepSeq};
use crate::runtime::engine::weights::Staged;
use crate::runtime::launch::attention::{flash_paged, paged_decode, PagedPool};
use crate::runtime::launch::cuda_err;
use crate::runtime::launch::gemv::Dense;
use crate::runtime::launch::norm_rope::{
    embed_rows, qk_norm_rope_paged, rmsnorm_rows, QkNormRopePaged, RmsNormRows,
};
use crate::runtime::launch::sampling::argmax_rows;

/// Queries per flash tile (the kernel's BR).
const TILE: usize = 64;

/// Offsets (in i32) of the metadata sections in the device buffer, sized for the limits.
pub(super) struct Layout {
    pos: usize,
    slot: usize,
    dec: usize,
    tiles: usize,
    sample: usize,
    tables: usize,
    /// the longest table row the section holds for every sequence at once
    max_stride: usize,
    pub(super) len: usize,
}

impl Layout {
    pub(super) fn new(l: &ServingLimits) -> Self {
        let (r, s) = (l.max_rows, l.max_seqs);
        let max_tiles = r / TILE + s;
        let stride = l.max_model_len.div_ceil(l.block_size);
        let pos = 0;
        let slot = pos + r;
        let dec = slot + r;
        let tiles = dec + 3 * s;
        let sample = tiles + 5 * max_tiles;
        let tables = sample + s;
        Self {
            pos,
            slot,
            dec,
            tiles,
            sample,
            tables,
            max_stride: stride,
            len: tables + s * stride,
        }
    }
}

/// A step's metadata as built on the host.
#[derive(Default)]
struct Plan {
    ids: Vec<u32>,
    pos: Vec<i32>,
    slot: Vec<i32>,
    dec: Vec<i32>,
    tiles: Vec<i32>,
    sample: Vec<i32>,
    tables: Vec<i32>,
    /// table row length (entries), a power of two
    stride: usize,
    /// which input each sampled row answers
    sampled_by: Vec<usize>,
}

impl Plan {
    fn rows(&self) -> usize {
        self.ids.len()
    }
    fn n_dec(&self) -> usize {
        self.dec.len() / 3
    }
    fn n_tiles(&self) -> usize {
        self.tiles.len() / 5
    }
}

/// Rows a decode-only step of `n` sequences is padded to (one graph per bucket).
fn bucket(n: usize, max: usize) -> usize {
    n.next_power_of_two().min(max).max(n)
}

impl ServingEngine {
    /// Checks a step against the limits, the vocabulary and the pool, and lays it out.
    fn plan(&self, seqs: &[StepSeq]) -> Result<Plan> {
        let l = &self.limits;
        let bs = l.block_size;
        let rows: usize = seqs.iter().map(|s| s.tokens.len()).sum();
        if seqs.is_empty() || seqs.len() > l.max_seqs || rows > l.max_rows {
            candle_core::bail!(
                "serving engine: a step of {} sequences and {rows} tokens (limits: 1..={} sequences, {} tokens)",
                seqs.len(),
                l.max_seqs,
                l.max_rows
            );
        }
        let longest = seqs
            .iter()
            .map(|s| (s.start + s.tokens.len()).div_ceil(bs))
            .max()
            .unwrap_or(1);
        // a power of two (few graph shapes), within the section's room for every sequence
        let room = self.layout.max_stride;
        let mut p = Plan {
            stride: longest.next_power_of_two().max(8).min(room).max(longest),
            ..Plan::default()
        };
        for (i, s) in seqs.iter().enumerate() {
            let (t, end) = (s.tokens.len(), s.start + s.tokens.len());
            if t == 0 || end > l.max_model_len {
                candle_core::bail!(
                    "serving engine: sequence {i}: {t} tokens at {} (context {})",
                    s.start,
                    l.max_model_len
                );
            }
            if s.block_table.len() * bs < end
                || s.block_table.iter().any(|&b| b as usize >= self.num_blocks)
            {
                candle_core::bail!(
                    "serving engine: sequence {i}: its block table ({} blocks) does not cover {end} tokens inside a pool of {}",
                    s.block_table.len(),
                    self.num_blocks
                );
            }
            if let Some(&bad) = s
                .tokens
                .iter()
                .find(|&&x| x as usize >= self.cfg.vocab_size)
            {
                candle_core::bail!(
                    "serving engine: sequence {i}: token {bad} outside the vocabulary"
                );
            }
            let row0 = p.rows();
            for (k, &tok) in s.tokens.iter().enumerate() {
                let pos = s.start + k;
                p.ids.push(tok);
                p.pos.push(pos as i32);
                p.slot
                    .push((s.block_table[pos / bs] as usize * bs + pos % bs) as i32);
            }
            if t == 1 {
                p.dec.extend([row0 as i32, i as i32, end as i32]);
            } else {
                for q0 in (0..t).step_by(TILE) {
                    p.tiles.extend([row0, t, s.start, q0, i].map(|x| x as i32));
                }
            }
            if s.sample {
                p.sample.push((row0 + t - 1) as i32);
                p.sampled_by.push(i);
            }
            let mut row: Vec<i32> = s.block_table.iter().map(|&b| b as i32).collect();
            row.resize(p.stride, 0);
            p.tables.extend(row);
        }
        Ok(p)
    }

    /// Pads a decode-only plan to `rows` rows: padding rows write no KV (slot −1), attend to
    /// nothing (0 keys) and are sampled into outputs nobody reads.
    fn pad(p: &mut Plan, rows: usize) {
        for r in p.rows()..rows {
            p.ids.push(0);
            p.pos.push(0);
            p.slot.push(-1);
            p.dec.extend([r as i32, 0, 0]);
            p.sample.push(r as i32);
        }
    }

    /// Copies the plan into the fixed device sections.
    fn upload(&mut self, p: &Plan) -> Result<()> {
        let s = self.stream.clone();
        s.memcpy_htod(&p.ids, &mut self.buf.ids.slice_mut(..p.ids.len()))
            .map_err(cuda_err)?;
        let lay = &self.layout;
        for (off, v) in [
            (lay.pos, &p.pos),
            (lay.slot, &p.slot),
            (lay.dec, &p.dec),
            (lay.tiles, &p.tiles),
            (lay.sample, &p.sample),
            (lay.tables, &p.tables),
        ] {
            if !v.is_empty() {
                s.memcpy_htod(v, &mut self.buf.meta.slice_mut(off..off + v.len()))
                    .map_err(cuda_err)?;
            }
        }
        Ok(())
    }

    /// The forward of `rows` tokens with `n_dec` single-token entries, `n_tiles` flash tiles
    /// and `n_sample` sampled rows whose metadata is on the device; leaves the greedy picks in
    /// `buf.next`. Launches only.
    fn forward(
        &self,
        rows: usize,
        n_dec: usize,
        n_tiles: usize,
        n_sample: usize,
        stride: usize,
    ) -> Result<()> {
        let c = &self.cfg;
        let (h, hd, hq, hkv) = (
            c.hidden_size,
            c.head_dim,
            c.num_attention_heads,
            c.num_key_value_heads,
        );
        let eps = c.rms_norm_eps as f32;
        let (b, lay) = (&self.buf, &self.layout);
        let meta = self.d(&b.meta);
        let (pos, slot, dec, tiles, sample, tables) = (
            meta.skip(lay.pos),
            meta.skip(lay.slot),
            meta.skip(lay.dec),
            meta.skip(lay.tiles),
            meta.skip(lay.sample),
            meta.skip(lay.tables),
        );
        let (hb, qkv, q, att, o, gu, act) = (
            self.d(&b.h),
            self.d(&b.qkv),
            self.d(&b.q),
            self.d(&b.att),
            self.d(&b.o),
            self.d(&b.gu),
            self.d(&b.act),
        );
        let dev = &self.dev;
        let gemm = crate::runtime::engine::weights::Gemm {
            dev,
            blas: &self.blas,
            stream: &self.stream,
            scratch: &b.scratch,
        };
        embed_rows(dev, self.d(&b.ids), self.d(&self.w.embed), hb, rows, h)?;
        self.mark("embed")?;
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
            self.mark("qkv GEMM")?;
            let (k_pool, v_pool) = (self.d(&self.k_pool[i]), self.d(&self.v_pool[i]));
            let rope = QkNormRopePaged {
                qkv,
                q_norm: self.d(&l.q_norm),
                k_norm: self.d(&l.k_norm),
                cos: self.d(&self.w.cos),
                sin: self.d(&self.w.sin),
                pos,
                slot,
                q_out: q,
                k_pool,
                v_pool,
                rows,
                heads_q: hq,
                heads_kv: hkv,
                head_dim: hd,
                block_size: self.limits.block_size,
                eps,
                use_rope: l.use_rope,
            };
            qk_norm_rope_paged(dev, &rope)?;
            self.mark("qk-norm + RoPE + KV write")?;
            let pool = PagedPool {
                k: k_pool,
                v: v_pool,
                tables,
                stride,
                block_size: self.limits.block_size,
                heads_kv: hkv,
                head_dim: hd,
                window: l.window,
            };
            paged_decode(dev, &pool, q, att, dec, n_dec, hq, self.d(&b.part))?;
            self.mark("attention: single tokens")?;
            flash_paged(dev, &pool, q, att, tiles, n_tiles, hq)?;
            self.mark("attention: prompt chunks")?;
            gemm.linear(&l.o, att, o, rows)?;
            self.mark("o GEMM")?;
            let st = gemm.norm_residual(&norm_residual(self.d(&l.post_attn)), Some(&l.gate_up))?;
            self.mark("norm + residual")?;
            let st = gemm.gated(&l.gate_up, hb, gu, act, rows, st, Some(&l.down))?;
            self.mark("gate/up GEMM + SiLU · up")?;
            gemm.linear_staged(&l.down, act, o, rows, st)?;
            self.mark("down GEMM")?;
            let next = self.w.layers.get(i + 1).map(|n| &n.qkv);
            staged = gemm.norm_residual(&norm_residual(self.d(&l.post_ff)), next)?;
            self.mark("norm + residual")?;
        }
        if n_sample == 0 {
            return Ok(());
        }
        let last = self.d(&b.last);
        let final_norm = RmsNormRows {
            x: hb,
            w: self.d(&self.w.norm),
            out: last,
            rows: n_sample,
            n: h,
            eps,
            prev: None,
            row_step: 0,
            row_off: 0,
            idx: Some(sample),
        };
        rmsnorm_rows(dev, &final_norm)?;
        self.mark("final norm")?;
        let head = Dense {
            w: self.d(self.w.head()),
            n: c.vocab_size,
            k: h,
        };
        let logits = self.d(&b.logits);
        gemm.dense(&head, last, logits, n_sample)?;
        self.mark("lm_head")?;
        argmax_rows(dev, logits, self.d(&b.next), n_sample, c.vocab_size)?;
        self.mark("argmax")
    }

    fn mark(&self, label: &'static str) -> Result<()> {
        self.prof.mark(&self.stream, label)
    }

    /// The device time of one eager decoding step of `batch` sequences with `context` tokens
    /// each (their KV blocks taken from the pool in order; contents do not matter for timing):
    /// (what, ms, launches) summed over layers, in step order.
    pub fn profile_decode(
        &mut self,
        batch: usize,
        context: usize,
    ) -> Result<Vec<(String, f64, usize)>> {
        let bs = self.limits.block_size;
        let nb = context.div_ceil(bs);
        if context == 0 || batch * nb > self.num_blocks {
            candle_core::bail!(
                "profile: {batch} sequences of {context} tokens need {} blocks, the pool has {}",
                batch * nb,
                self.num_blocks
            );
        }
        let tables: Vec<Vec<u32>> = (0..batch)
            .map(|i| ((i * nb) as u32..((i + 1) * nb) as u32).collect())
            .collect();
        let token = [1u32];
        let seqs: Vec<StepSeq> = tables
            .iter()
            .map(|t| StepSeq {
                tokens: &token,
                start: context - 1,
                sample: true,
                block_table: t,
            })
            .collect();
        let p = self.plan(&seqs)?;
        self.upload(&p)?;
        self.synchronize()?;
        self.prof.arm(&self.stream)?;
        let launched = self.forward(p.rows(), p.n_dec(), 0, p.sample.len(), p.stride);
        if launched.is_err() {
            self.prof.disarm();
        }
        launched?;
        self.synchronize()?;
        self.prof.take()
    }

    /// Runs one scheduled step and returns, per sequence in order, its greedy next token where
    /// it samples. Returns when the step's work is done (the picks are read back).
    pub fn step(&mut self, seqs: &[StepSeq]) -> Result<Vec<Option<u32>>> {
        let mut p = self.plan(seqs)?;
        let decode_only = p.tiles.is_empty() && p.sample.len() == seqs.len();
        let n_sample = p.sample.len();
        if decode_only && self.use_graphs {
            let rows = bucket(p.rows(), self.limits.max_seqs.min(self.limits.max_rows));
            Self::pad(&mut p, rows);
            self.upload(&p)?;
            self.replay(rows, p.stride)?;
        } else {
            self.upload(&p)?;
            self.forward(p.rows(), p.n_dec(), p.n_tiles(), n_sample, p.stride)?;
            self.eager_steps += 1;
        }
        let mut next = vec![0u32; n_sample];
        if n_sample > 0 {
            self.stream
                .memcpy_dtoh(&self.buf.next.slice(..n_sample), &mut next)
                .map_err(cuda_err)?;
        }
        self.synchronize()?;
        let mut out = vec![None; seqs.len()];
        for (k, &i) in p.sampled_by.iter().enumerate() {
            out[i] = Some(next[k]);
        }
        Ok(out)
    }

    /// The logits behind the last step's first `n` picks, f32 [n, vocab].
    pub fn last_logits(&self, n: usize) -> Result<Vec<f32>> {
        let v = self.cfg.vocab_size;
        let mut out = vec![half::bf16::ZERO; n * v];
        if n > 0 {
            self.stream
                .memcpy_dtoh(&self.buf.logits.slice(..n * v), &mut out)
                .map_err(cuda_err)?;
        }
        Ok(out.into_iter().map(f32::from).collect())
    }

    /// A decode-only step of `rows` (padded) rows: eager the first time its shape is seen (so
    /// cuBLAS settles its workspaces outside a capture), captured the second, replayed after.
    fn replay(&mut self, rows: usize, stride: usize) -> Result<()> {
        let key = (rows, stride);
        match self.graphs.get(&key) {
            None => {
                self.forward(rows, rows, 0, rows, stride)?;
                self.graphs.insert(key, None);
                self.eager_steps += 1;
                return Ok(());
            }
            Some(None) => {
                self.stream
                    .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
                    .map_err(cuda_err)?;
                let launched = self.forward(rows, rows, 0, rows, stride);
                let g = self
                    .stream
                    .end_capture(sys::CUgraphInstantiate_flags(0))
                    .map_err(cuda_err);
                launched?;
                let g = g?.ok_or_else(|| {
                    candle_core::Error::Msg("CUDA graph capture produced no graph".into())
                })?;
                self.graphs.insert(key, Some(g));
            }
            Some(Some(_)) => {}
        }
        self.graphs[&key]
            .as_ref()
            .expect("captured above")
            .launch()
            .map_err(cuda_err)?;
        self.graph_steps += 1;
        Ok(())
    }
}

//! A greedy step after prefill: eager, profiled (a timing event after every piece of work) or
//! captured once as a CUDA graph and replayed.

use candle_core::cuda::cudarc::driver::sys;
use candle_core::Result;

use super::DecodeEngine;
use crate::runtime::launch::cuda_err;
use crate::runtime::launch::sampling::advance;

impl DecodeEngine {
    /// The work of one greedy step: the last picks become the inputs, one slot on, forward.
    fn step_launches(&self) -> Result<()> {
        let b = &self.buf;
        let (next, ids, pos) = (self.d(&b.next), self.d(&b.ids), self.d(&b.pos));
        advance(&self.dev, next, ids, pos, self.batch)?;
        self.mark("advance")?;
        self.forward_rows(self.batch, 1)
    }

    /// Runs one eager greedy step with a timing event after every piece of work and returns
    /// the device time per piece, summed over layers: (what, ms, launches), in step order.
    pub fn profile_step(&mut self) -> Result<Vec<(String, f64, usize)>> {
        if self.len == 0 {
            candle_core::bail!("decode engine: profile before prefill");
        }
        self.check_room(1)?;
        self.prof.arm(&self.stream)?;
        let launched = self.step_launches();
        if launched.is_err() {
            self.prof.disarm();
        }
        launched?;
        self.len += 1;
        self.synchronize()?;
        let out = self.prof.take()?;
        Ok(out)
    }

    /// Drops the captured step, so that the next graph step captures it again (after
    /// [`crate::runtime::set_programmatic_launch`] changed how its launches are made).
    pub fn recapture(&mut self) {
        self.graph = None;
    }

    /// Whether this engine's GPU can launch its kernels programmatically (Hopper and newer).
    pub fn programmatic_supported(&self) -> Result<bool> {
        crate::runtime::programmatic_supported(&self.dev)
    }

    /// One greedy step after [`prefill`](Self::prefill): feeds each sequence its last pick and
    /// returns the next. With `graph`, the step is captured as a CUDA graph the first time and
    /// replayed after.
    pub fn step(&mut self, graph: bool) -> Result<Vec<u32>> {
        if self.len == 0 {
            candle_core::bail!("decode engine: step before prefill");
        }
        self.check_room(1)?;
        if !graph {
            self.step_launches()?;
        } else {
            if self.graph.is_none() {
                self.stream
                    .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
                    .map_err(cuda_err)?;
                let launched = self.step_launches();
                let g = self
                    .stream
                    .end_capture(sys::CUgraphInstantiate_flags(0))
                    .map_err(cuda_err);
                launched?;
                self.graph = Some(g?.ok_or_else(|| {
                    candle_core::Error::Msg("CUDA graph capture produced no graph".into())
                })?);
            }
            self.graph
                .as_ref()
                .expect("captured")
                .launch()
                .map_err(cuda_err)?;
        }
        self.len += 1;
        self.read_next()
    }
}

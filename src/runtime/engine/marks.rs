//! Timing events between the launches of one step, for a per-kernel breakdown: while armed,
//! every `mark(label)` records an event after the work launched since the previous mark; the
//! device time between marks is summed per label.

use std::cell::RefCell;
use std::sync::Arc;

use candle_core::cuda::cudarc::driver::{sys, CudaEvent, CudaStream};
use candle_core::Result;

use crate::runtime::launch::cuda_err;

#[derive(Default)]
pub(crate) struct Marks(RefCell<Option<Vec<(&'static str, CudaEvent)>>>);

fn event(s: &Arc<CudaStream>) -> Result<CudaEvent> {
    s.record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
        .map_err(cuda_err)
}

impl Marks {
    /// Starts recording on `s`.
    pub(crate) fn arm(&self, s: &Arc<CudaStream>) -> Result<()> {
        *self.0.borrow_mut() = Some(vec![("start", event(s)?)]);
        Ok(())
    }

    /// Marks the end of the work launched since the previous mark (nothing unless armed).
    pub(crate) fn mark(&self, s: &Arc<CudaStream>, label: &'static str) -> Result<()> {
        if let Some(p) = self.0.borrow_mut().as_mut() {
            p.push((label, event(s)?));
        }
        Ok(())
    }

    /// Stops recording and returns (label, ms, launches) per label in first-seen order, once
    /// the stream has finished the work (the caller synchronises first).
    pub(crate) fn take(&self) -> Result<Vec<(String, f64, usize)>> {
        let marks = self.0.borrow_mut().take().unwrap_or_default();
        let mut out: Vec<(String, f64, usize)> = vec![];
        for w in marks.windows(2) {
            let ms = w[0].1.elapsed_ms(&w[1].1).map_err(cuda_err)? as f64;
            match out.iter_mut().find(|x| x.0 == w[1].0) {
                Some(x) => {
                    x.1 += ms;
                    x.2 += 1;
                }
                None => out.push((w[1].0.to_string(), ms, 1)),
            }
        }
        Ok(out)
    }

    /// Disarms without reading (after a failed launch).
    pub(crate) fn disarm(&self) {
        self.0.borrow_mut().take();
    }
}

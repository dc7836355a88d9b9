//! Peak device memory while a benchmark runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use candle_core::Device;

/// Peak device memory in use, sampled every 2 ms on a side thread (whole device: what
/// nvidia-smi shows, CUDA context included). CUDA only.
pub struct MemPeak {
    peak: Arc<AtomicU64>,
}

impl MemPeak {
    /// Starts sampling; None off CUDA.
    pub fn start(device: &Device) -> Option<Self> {
        #[cfg(feature = "cuda")]
        if let Device::Cuda(d) = device {
            let peak = Arc::new(AtomicU64::new(0));
            let (p, ctx) = (peak.clone(), d.cuda_stream().context().clone());
            std::thread::spawn(move || {
                if ctx.bind_to_thread().is_err() {
                    return;
                }
                use candle_core::cuda::cudarc::driver::result::mem_get_info;
                while let Ok((free, total)) = mem_get_info() {
                    p.fetch_max((total - free) as u64, Ordering::Relaxed);
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            });
            return Some(Self { peak });
        }
        let _ = device;
        None
    }

    /// GiB at the peak since the last call.
    pub fn take(&self) -> f64 {
        let b = self.peak.swap(0, Ordering::Relaxed);
        b as f64 / (1u64 << 30) as f64
    }
}

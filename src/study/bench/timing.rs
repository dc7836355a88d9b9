//! Warm-up and repeats around a measurement, summarised as [`Timing`] (median, min, max).

use std::time::Instant;

use candle_core::Device;

pub use crate::eval::Timing;
use crate::Result;

/// Runs `f` `warmup + repeats` times and summarises the values of the last `repeats` runs.
pub fn timed(warmup: usize, repeats: usize, mut f: impl FnMut() -> Result<f64>) -> Result<Timing> {
    let mut v = vec![];
    for run in 0..warmup + repeats {
        let x = f()?;
        if run >= warmup {
            v.push(x);
        }
    }
    Ok(Timing::from(v))
}

/// Milliseconds `f` takes, with the device synchronised before and after.
pub fn sync_ms(device: &Device, f: impl FnOnce() -> Result<()>) -> Result<f64> {
    device.synchronize()?;
    let t0 = Instant::now();
    f()?;
    device.synchronize()?;
    Ok(1e3 * t0.elapsed().as_secs_f64())
}

//! Loading the PTX of `kernels.cu` and launching its functions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::cuda::cudarc::driver::{
    sys, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda::{CudaDevice, DeviceId};
use candle_core::Result;

pub(crate) const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/kernels.ptx"));
const MODULE: &str = "exaone_compress_kernels";

pub(crate) fn cuda_err(e: impl std::error::Error + Send + Sync + 'static) -> candle_core::Error {
    candle_core::Error::Cuda(Box::new(e))
}

/// A kernel of `kernels.cu` by name (looked up once per device: launches are hot).
pub(crate) fn func(dev: &CudaDevice, name: &str) -> Result<CudaFunction> {
    type Cache = Mutex<HashMap<(DeviceId, String), CudaFunction>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let key = (dev.id(), name.to_string());
    if let Some(f) = cache.lock().expect("kernel cache").get(&key) {
        return Ok(f.clone());
    }
    let f = dev
        .get_or_load_custom_func(name, MODULE, PTX)?
        .into_cuda_function();
    cache.lock().expect("kernel cache").insert(key, f.clone());
    Ok(f)
}

/// Lets a kernel use more than the default 48 KiB of dynamic shared memory.
pub(crate) fn allow_smem(f: &CudaFunction, bytes: usize) -> Result<()> {
    if bytes > 48 * 1024 {
        f.set_attribute(
            sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            bytes as i32,
        )
        .map_err(cuda_err)?;
    }
    Ok(())
}

/// The raw device address of a buffer. The engine passes addresses rather than slices: its
/// buffers live as long as it does, it runs on one stream, and a captured graph must see the
/// same addresses on every replay.
pub(crate) fn addr<T>(s: &CudaSlice<T>, stream: &Arc<CudaStream>) -> u64 {
    let (p, _sync) = s.device_ptr(stream);
    p
}

/// One kernel argument.
pub(crate) enum Arg {
    P(u64),
    I(i32),
    F(f32),
    L(i64),
}

/// Launches `f` on `stream` with `args` (device addresses, i32, f32 or i64 values).
pub(crate) fn launch(
    stream: &Arc<CudaStream>,
    f: &CudaFunction,
    grid: (u32, u32, u32),
    block: u32,
    smem: usize,
    args: &[Arg],
) -> Result<()> {
    let mut b = stream.launch_builder(f);
    for a in args {
        match a {
            Arg::P(p) => b.arg(p),
            Arg::I(i) => b.arg(i),
            Arg::F(x) => b.arg(x),
            Arg::L(x) => b.arg(x),
        };
    }
    let cfg = LaunchConfig {
        grid_dim: grid,
        block_dim: (block, 1, 1),
        shared_mem_bytes: smem as u32,
    };
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}

//! Typed launchers of the runtime's CUDA kernels, one Rust file per `.cu` file of
//! `src/runtime/kernels/` (each built to its own PTX module by build.rs, loaded here as a module
//! of its own), plus the cuBLAS GEMMs (`gemm`).
//!
//! Every kernel has exactly one launcher: a function taking its arguments by name and type
//! (device buffers as [`Dev`], sizes as `usize`), which checks the kernel's preconditions that can
//! be checked on the host (sizes, divisibility, alignment, buffer lengths) and returns an error
//! instead of launching when one fails, then holds the one `unsafe` launch of that kernel with a
//! SAFETY comment naming what the kernel assumes. What cannot be checked on the host (values read
//! from device memory: token ids, cache positions) is named there too, as the caller's duty.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Mutex, OnceLock};

use candle_core::cuda::cudarc::driver::{
    sys, CudaFunction, CudaStream, DevicePtr, DeviceSlice, LaunchConfig,
};
use candle_core::cuda::{CudaDevice, DeviceId};
use candle_core::Result;

pub(crate) mod attention;
pub(crate) mod gemm;
pub(crate) mod gemm_lt;
pub(crate) mod gemm_q8;
pub(crate) mod gemm_w4;
pub(crate) mod gemv;
pub(crate) mod norm_rope;
pub(crate) mod quant;
pub(crate) mod sampling;

/// One PTX module: a `.cu` file of `src/runtime/kernels/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Module {
    Attention,
    GemmFp8,
    GemmQ8,
    GemmW4,
    Gemv,
    NormRope,
    Quant,
    Sampling,
}

impl Module {
    /// The module's PTX: built in, or — for kernel development — the file `<unit>.ptx` of the
    /// directory `EXAONE_COMPRESS_PTX_DIR` names, where there is one (read once, said on stderr,
    /// so that kernel variants can be timed on a GPU machine without rebuilding the binary).
    fn source(self) -> Result<&'static str> {
        type Loaded = Mutex<HashMap<Module, &'static str>>;
        static LOADED: OnceLock<Loaded> = OnceLock::new();
        let Some(dir) = std::env::var_os("EXAONE_COMPRESS_PTX_DIR") else {
            return Ok(self.ptx());
        };
        let loaded = LOADED.get_or_init(|| Mutex::new(HashMap::new()));
        let mut loaded = loaded.lock().expect("ptx overrides");
        if let Some(s) = loaded.get(&self) {
            return Ok(s);
        }
        let path = std::path::Path::new(&dir).join(format!("{}.ptx", self.unit()));
        let src: &'static str = if path.is_file() {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                candle_core::Error::Msg(format!("EXAONE_COMPRESS_PTX_DIR: {}: {e}", path.display()))
            })?;
            eprintln!(
                "note: kernels of {} from {} (EXAONE_COMPRESS_PTX_DIR), not the built-in PTX",
                self.unit(),
                path.display()
            );
            Box::leak(text.into_boxed_str())
        } else {
            self.ptx()
        };
        loaded.insert(self, src);
        Ok(src)
    }

    /// The `.cu` file's stem, which names its PTX.
    fn unit(self) -> &'static str {
        match self {
            Module::Attention => "attention",
            Module::GemmFp8 => "gemm_fp8",
            Module::GemmQ8 => "gemm_q8",
            Module::GemmW4 => "gemm_w4",
            Module::Gemv => "gemv",
            Module::NormRope => "norm_rope",
            Module::Quant => "quant",
            Module::Sampling => "sampling",
        }
    }

    fn ptx(self) -> &'static str {
        match self {
            Module::Attention => include_str!(concat!(env!("OUT_DIR"), "/attention.ptx")),
            Module::GemmFp8 => include_str!(concat!(env!("OUT_DIR"), "/gemm_fp8.ptx")),
            Module::GemmQ8 => include_str!(concat!(env!("OUT_DIR"), "/gemm_q8.ptx")),
            Module::GemmW4 => include_str!(concat!(env!("OUT_DIR"), "/gemm_w4.ptx")),
            Module::Gemv => include_str!(concat!(env!("OUT_DIR"), "/gemv.ptx")),
            Module::NormRope => include_str!(concat!(env!("OUT_DIR"), "/norm_rope.ptx")),
            Module::Quant => include_str!(concat!(env!("OUT_DIR"), "/quant.ptx")),
            Module::Sampling => include_str!(concat!(env!("OUT_DIR"), "/sampling.ptx")),
        }
    }

    /// The name candle registers the module under (distinct from candle's own modules).
    fn name(self) -> &'static str {
        match self {
            Module::Attention => "exaone_compress_attention",
            Module::GemmFp8 => "exaone_compress_gemm_fp8",
            Module::GemmQ8 => "exaone_compress_gemm_q8",
            Module::GemmW4 => "exaone_compress_gemm_w4",
            Module::Gemv => "exaone_compress_gemv",
            Module::NormRope => "exaone_compress_norm_rope",
            Module::Quant => "exaone_compress_quant",
            Module::Sampling => "exaone_compress_sampling",
        }
    }
}

pub(crate) fn cuda_err(e: impl std::error::Error + Send + Sync + 'static) -> candle_core::Error {
    candle_core::Error::Cuda(Box::new(e))
}

/// Kernel `name` of `module` on `dev` (looked up once per device: launches are hot).
pub(crate) fn func(dev: &CudaDevice, module: Module, name: &'static str) -> Result<CudaFunction> {
    type Cache = Mutex<HashMap<(DeviceId, Module, &'static str), CudaFunction>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let key = (dev.id(), module, name);
    if let Some(f) = cache.lock().expect("kernel cache").get(&key) {
        return Ok(f.clone());
    }
    if module == Module::GemmFp8 && !fp8_supported(&dev.cuda_stream())? {
        let (major, minor) = compute_capability(&dev.cuda_stream())?;
        candle_core::bail!(
            "{name}: this GPU (sm_{major}{minor}) lacks fp8 tensor-core instructions (sm_89+); FP8 runs dequantized to bf16"
        );
    }
    let f = dev
        .get_or_load_custom_func(name, module.name(), module.source()?)?
        .into_cuda_function();
    cache.lock().expect("kernel cache").insert(key, f.clone());
    Ok(f)
}

/// The compute capability (major, minor) of the device `stream` runs on.
pub(crate) fn compute_capability(stream: &CudaStream) -> Result<(i32, i32)> {
    stream.context().compute_capability().map_err(cuda_err)
}

/// Whether the device of `stream` has the fp8 (e4m3) tensor-core mma, compute capability 8.9
/// and up; the fp8 module (`Module::GemmFp8`, built for compute_89) loads only there.
pub(crate) fn fp8_supported(stream: &CudaStream) -> Result<bool> {
    Ok(compute_capability(stream)? >= (8, 9))
}

/// The device's number of streaming multiprocessors (the GEMMs size their grids by it).
pub(crate) fn sm_count(dev: &CudaDevice) -> Result<usize> {
    let n = dev
        .cuda_stream()
        .context()
        .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .map_err(cuda_err)?;
    Ok(n.max(1) as usize)
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

/// A launch configuration: `block` threads in x, `smem` bytes of dynamic shared memory.
pub(crate) fn config(grid: (u32, u32, u32), block: u32, smem: usize) -> Result<LaunchConfig> {
    Ok(LaunchConfig {
        grid_dim: grid,
        block_dim: (block, 1, 1),
        shared_mem_bytes: u32::try_from(smem)
            .map_err(|_| candle_core::Error::Msg(format!("{smem} bytes of shared memory")))?,
    })
}

/// `v` as a kernel's `int` argument (an error where it does not fit).
pub(crate) fn int(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| candle_core::Error::Msg(format!("kernel argument {what} = {v} exceeds i32")))
}

/// `v` as a grid dimension (an error where it does not fit).
pub(crate) fn dim(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v)
        .map_err(|_| candle_core::Error::Msg(format!("grid dimension {what} = {v} exceeds u32")))
}

/// Fails with the kernel's name and the rule broken unless `cond` holds.
macro_rules! require {
    ($kernel:expr, $cond:expr, $($msg:tt)+) => {
        if !$cond {
            let rule = format!($($msg)+);
            candle_core::bail!("{}: {} (needs {})", $kernel, rule, stringify!($cond));
        }
    };
}
pub(crate) use require;

/// A device buffer as a kernel sees it: the address of `len` elements of `T`, borrowed from the
/// slice (or view) it points into, so it cannot outlive it. Launchers take these instead of
/// slices because the decode engine passes the same addresses on every step (a captured CUDA
/// graph replays them) and runs on one stream; taking the address records no cross-stream event
/// (as candle's own launches record none on a single stream either).
pub(crate) struct Dev<'a, T> {
    addr: u64,
    len: usize,
    _buf: PhantomData<&'a [T]>,
}

impl<T> Clone for Dev<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Dev<'_, T> {}

impl<'a, T> Dev<'a, T> {
    /// The whole of `buf`, addressed for `stream`.
    pub(crate) fn new<B: DevicePtr<T>>(buf: &'a B, stream: &CudaStream) -> Self {
        let (addr, _sync) = buf.device_ptr(stream);
        Self {
            addr,
            len: DeviceSlice::len(buf),
            _buf: PhantomData,
        }
    }

    /// The buffer from element `n` on (an empty one past the end).
    pub(crate) fn skip(self, n: usize) -> Self {
        let n = n.min(self.len);
        Self {
            addr: self.addr + (n * std::mem::size_of::<T>()) as u64,
            len: self.len - n,
            _buf: PhantomData,
        }
    }

    pub(crate) fn addr(self) -> u64 {
        self.addr
    }

    pub(crate) fn len(self) -> usize {
        self.len
    }

    /// Whether the address is a multiple of `bytes` (vector loads need 8 or 16).
    pub(crate) fn aligned(self, bytes: u64) -> bool {
        self.addr.is_multiple_of(bytes)
    }
}

/// The address of an optional buffer, null where absent (the kernels test for null).
pub(crate) fn or_null<T>(b: Option<Dev<'_, T>>) -> u64 {
    b.map_or(0, |b| b.addr)
}

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
    sys, CudaFunction, CudaSlice, CudaStream, CudaView, DevicePtr, DeviceSlice, DriverError,
    LaunchConfig,
};
use candle_core::cuda::{CudaDType, CudaDevice, CudaStorage, DeviceId};
use candle_core::op::BackpropOp;
use candle_core::{Layout, Result, Shape, Storage, Tensor};

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
    /// Hopper's warpgroup-MMA tiles of the W8A8 GEMM (compute capability 9.0 only)
    GemmQ8Wgmma,
    GemmW4,
    /// Hopper's warpgroup-MMA tiles of the W4A16 GEMM (compute capability 9.0 only)
    GemmW4Wgmma,
    Gemv,
    NormRope,
    Quant,
    Sampling,
}

impl Module {
    /// The module's PTX for a GPU of compute capability 9.0 and up (`hopper`: the build's
    /// compute_90 PTX, whose kernels wait for their predecessor with `griddepcontrol`) or below
    /// (compute_80 — gemm_fp8: compute_89). For kernel development, the file `<unit>.ptx` (on
    /// Hopper `<unit>.sm90.ptx` first) of the directory `EXAONE_COMPRESS_PTX_DIR` names replaces
    /// it where there is one (read once, said on stderr), so that kernel variants can be timed
    /// on a GPU machine without rebuilding the binary.
    fn source(self, hopper: bool) -> Result<&'static str> {
        type Loaded = Mutex<HashMap<(Module, bool), &'static str>>;
        static LOADED: OnceLock<Loaded> = OnceLock::new();
        let Some(dir) = std::env::var_os("EXAONE_COMPRESS_PTX_DIR") else {
            return Ok(self.ptx(hopper));
        };
        let loaded = LOADED.get_or_init(|| Mutex::new(HashMap::new()));
        let mut loaded = loaded.lock().expect("ptx overrides");
        if let Some(s) = loaded.get(&(self, hopper)) {
            return Ok(s);
        }
        let dir = std::path::Path::new(&dir);
        let names = [
            format!("{}.sm90.ptx", self.unit()),
            format!("{}.ptx", self.unit()),
        ];
        let path = names[usize::from(!hopper)..]
            .iter()
            .map(|n| dir.join(n))
            .find(|p| p.is_file());
        let src: &'static str = match path {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    candle_core::Error::Msg(format!(
                        "EXAONE_COMPRESS_PTX_DIR: {}: {e}",
                        path.display()
                    ))
                })?;
                eprintln!(
                    "note: kernels of {} from {} (EXAONE_COMPRESS_PTX_DIR), not the built-in PTX",
                    self.unit(),
                    path.display()
                );
                Box::leak(text.into_boxed_str())
            }
            None => self.ptx(hopper),
        };
        loaded.insert((self, hopper), src);
        Ok(src)
    }

    /// The `.cu` file's stem, which names its PTX.
    fn unit(self) -> &'static str {
        match self {
            Module::Attention => "attention",
            Module::GemmFp8 => "gemm_fp8",
            Module::GemmQ8 => "gemm_q8",
            Module::GemmQ8Wgmma => "gemm_q8_wgmma",
            Module::GemmW4 => "gemm_w4",
            Module::GemmW4Wgmma => "gemm_w4_wgmma",
            Module::Gemv => "gemv",
            Module::NormRope => "norm_rope",
            Module::Quant => "quant",
            Module::Sampling => "sampling",
        }
    }

    fn ptx(self, hopper: bool) -> &'static str {
        macro_rules! ptx {
            ($unit:literal) => {
                if hopper {
                    include_str!(concat!(env!("OUT_DIR"), "/", $unit, ".sm90.ptx"))
                } else {
                    include_str!(concat!(env!("OUT_DIR"), "/", $unit, ".ptx"))
                }
            };
        }
        match self {
            Module::Attention => ptx!("attention"),
            Module::GemmFp8 => ptx!("gemm_fp8"),
            Module::GemmQ8 => ptx!("gemm_q8"),
            Module::GemmQ8Wgmma => ptx!("gemm_q8_wgmma"),
            Module::GemmW4 => ptx!("gemm_w4"),
            Module::GemmW4Wgmma => ptx!("gemm_w4_wgmma"),
            Module::Gemv => ptx!("gemv"),
            Module::NormRope => ptx!("norm_rope"),
            Module::Quant => ptx!("quant"),
            Module::Sampling => ptx!("sampling"),
        }
    }

    /// The name candle registers the module under (distinct from candle's own modules, and
    /// per PTX flavour: a process could load both only on two GPUs of different generations).
    fn name(self, hopper: bool) -> String {
        let flavour = if hopper { "_sm90" } else { "" };
        format!("exaone_compress_{}{flavour}", self.unit())
    }
}

pub(crate) fn cuda_err(e: impl std::error::Error + Send + Sync + 'static) -> candle_core::Error {
    candle_core::Error::Cuda(Box::new(e))
}

/// A loaded kernel and whether it may be launched programmatically: on Hopper, a kernel whose
/// PTX entry waits for its predecessor (`griddepcontrol.wait`, `kernels/common.cuh`) is launched
/// with the programmatic-serialization attribute, so its blocks start while the kernel before it
/// finishes (its launch latency and weight loads overlap that kernel's tail) unless
/// [`set_programmatic_launch`] turned that off.
#[derive(Clone)]
pub(crate) struct Kernel {
    f: CudaFunction,
    waits: bool,
}

impl Kernel {
    /// A launch of this kernel on `stream`; arguments follow with [`Launch::arg`].
    pub(crate) fn builder<'a>(&'a self, stream: &'a CudaStream) -> Launch<'a> {
        Launch {
            kernel: self,
            stream,
            args: Vec::with_capacity(16),
        }
    }
}

/// Whether programmatic launches are on: `EXAONE_COMPRESS_PDL=0` turns them off for a process
/// (to time the same binary without them); [`set_programmatic_launch`] sets it at run time.
fn pdl_switch() -> &'static std::sync::atomic::AtomicBool {
    static ON: OnceLock<std::sync::atomic::AtomicBool> = OnceLock::new();
    ON.get_or_init(|| {
        let off = std::env::var("EXAONE_COMPRESS_PDL").is_ok_and(|v| v.trim() == "0");
        std::sync::atomic::AtomicBool::new(!off)
    })
}

/// Turns programmatic dependent launches (Hopper) on or off for the launches that follow; a
/// captured CUDA graph keeps the launches it captured.
pub fn set_programmatic_launch(on: bool) {
    pdl_switch().store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether launches on a GPU that has them are programmatic now (see [`Kernel`]).
pub fn programmatic_launch() -> bool {
    pdl_switch().load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether kernels launched on `dev` can be programmatic (compute capability 9.0 and up): there
/// the modules' compute_90 PTX is loaded.
pub fn programmatic_supported(dev: &CudaDevice) -> Result<bool> {
    Ok(compute_capability(&dev.cuda_stream())? >= (9, 0))
}

/// One kernel launch being assembled: the kernel, its stream and pointers to its arguments,
/// which must outlive the launch call (as cudarc's own builder requires).
pub(crate) struct Launch<'a> {
    kernel: &'a Kernel,
    stream: &'a CudaStream,
    args: Vec<*mut std::ffi::c_void>,
}

impl<'a> Launch<'a> {
    /// The next kernel argument, by reference (a device address `u64`, an `i32`, an `f32`, …).
    pub(crate) fn arg<T: Copy>(&mut self, v: &'a T) -> &mut Self {
        self.args.push(v as *const T as *mut std::ffi::c_void);
        self
    }

    /// Launches the kernel (programmatically where [`Kernel`] says so).
    ///
    /// # Safety
    /// The arguments must be the kernel's, in order and of its types, and `cfg` must give it
    /// the threads and shared memory it assumes: each launcher's SAFETY comment says how.
    pub(crate) unsafe fn launch(
        &mut self,
        cfg: LaunchConfig,
    ) -> std::result::Result<(), DriverError> {
        self.stream.context().bind_to_thread()?;
        // SAFETY: a zeroed attribute value is valid (a plain C union of integers and structs of
        // integers); the one member set is the one `id` names.
        let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
        attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attr.value.programmaticStreamSerializationAllowed = 1;
        let programmatic = self.kernel.waits && programmatic_launch();
        let c = sys::CUlaunchConfig {
            gridDimX: cfg.grid_dim.0,
            gridDimY: cfg.grid_dim.1,
            gridDimZ: cfg.grid_dim.2,
            blockDimX: cfg.block_dim.0,
            blockDimY: cfg.block_dim.1,
            blockDimZ: cfg.block_dim.2,
            sharedMemBytes: cfg.shared_mem_bytes,
            hStream: self.stream.cu_stream(),
            attrs: &mut attr,
            numAttrs: u32::from(programmatic),
        };
        // SAFETY: `c` and `attr` live across the call; the argument pointers point at values
        // borrowed for 'a (see `arg`); the caller vouches for the arguments and `cfg`.
        unsafe {
            sys::cuLaunchKernelEx(
                &c,
                self.kernel.f.cu_function(),
                self.args.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        }
        .result()
    }
}

/// Kernel `name` of `module` on `dev` (looked up once per device: launches are hot). On a GPU
/// of compute capability 9.0 or more the module's compute_90 PTX is loaded (see [`Kernel`]).
pub(crate) fn func(dev: &CudaDevice, module: Module, name: &'static str) -> Result<Kernel> {
    type Cache = Mutex<HashMap<(DeviceId, Module, &'static str), Kernel>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let key = (dev.id(), module, name);
    if let Some(f) = cache.lock().expect("kernel cache").get(&key) {
        return Ok(f.clone());
    }
    let stream = dev.cuda_stream();
    if module == Module::GemmFp8 && !fp8_supported(&stream)? {
        let (major, minor) = compute_capability(&stream)?;
        candle_core::bail!(
            "{name}: this GPU (sm_{major}{minor}) lacks fp8 tensor-core instructions (sm_89+); FP8 runs dequantized to bf16"
        );
    }
    if matches!(module, Module::GemmQ8Wgmma | Module::GemmW4Wgmma) && !wgmma_supported(&stream)? {
        let (major, minor) = compute_capability(&stream)?;
        candle_core::bail!(
            "{name}: built for sm_90a (Hopper's warpgroup MMA); this GPU is sm_{major}{minor}"
        );
    }
    let hopper = programmatic_supported(dev)?;
    let src = module.source(hopper)?;
    let f = dev
        .get_or_load_custom_func(name, &module.name(hopper), src)?
        .into_cuda_function();
    let k = Kernel {
        f,
        waits: hopper && crate::runtime::ptx::entry_waits(src, name),
    };
    cache.lock().expect("kernel cache").insert(key, k.clone());
    Ok(k)
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

/// Whether the device of `stream` runs sm_90a code (the warpgroup MMA of `Module::GemmQ8Wgmma`
/// and `Module::GemmW4Wgmma`): compute capability exactly 9.0 (H100, H200; sm_90a code runs on
/// no later GPU).
pub(crate) fn wgmma_supported(stream: &CudaStream) -> Result<bool> {
    Ok(compute_capability(stream)? == (9, 0))
}

/// Whether the warpgroup-MMA tiles (W8A8 and W4A16) are used on the device of `stream`: where
/// it runs them, unless `EXAONE_COMPRESS_WGMMA=0` (read once per process; for A/B timing of the
/// same binary).
pub(crate) fn wgmma_on(stream: &CudaStream) -> Result<bool> {
    static OFF: OnceLock<bool> = OnceLock::new();
    let off =
        *OFF.get_or_init(|| std::env::var("EXAONE_COMPRESS_WGMMA").is_ok_and(|v| v.trim() == "0"));
    Ok(!off && wgmma_supported(stream)?)
}

/// A device attribute of `dev` (negative values read as 0).
fn attribute(dev: &CudaDevice, a: sys::CUdevice_attribute) -> Result<usize> {
    let n = dev.cuda_stream().context().attribute(a).map_err(cuda_err)?;
    Ok(n.max(0) as usize)
}

/// The device's number of streaming multiprocessors (the GEMMs size their grids by it).
pub(crate) fn sm_count(dev: &CudaDevice) -> Result<usize> {
    let n = attribute(
        dev,
        sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
    )?;
    Ok(n.max(1))
}

/// The most shared memory one block may use on `dev` once a kernel opts in ([`allow_smem`]):
/// 227 KiB on Hopper and the A100, 99 KiB on Ada (the L4).
pub(crate) fn max_smem_per_block(dev: &CudaDevice) -> Result<usize> {
    use sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN as OPTIN;
    attribute(dev, OPTIN)
}

/// Lets a kernel use more than the default 48 KiB of dynamic shared memory.
pub(crate) fn allow_smem(k: &Kernel, bytes: usize) -> Result<()> {
    if bytes > 48 * 1024 {
        k.f.set_attribute(
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

    /// No buffer: address 0 (null to a kernel), no elements.
    pub(crate) fn none() -> Self {
        Self {
            addr: 0,
            len: 0,
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

/// The CUDA slice of a contiguous tensor of `T`, from its offset on.
pub(crate) fn cuda_view<'a, T: CudaDType>(s: &'a Storage, l: &Layout) -> Result<CudaView<'a, T>> {
    match s {
        Storage::Cuda(c) if l.is_contiguous() => {
            Ok(c.as_cuda_slice::<T>()?.slice(l.start_offset()..))
        }
        _ => candle_core::bail!("expected a contiguous CUDA tensor"),
    }
}

/// A tensor of `shape` owning the device buffer `s`.
pub(crate) fn cuda_tensor<T: CudaDType>(
    s: CudaSlice<T>,
    dev: &CudaDevice,
    shape: impl Into<Shape>,
) -> Tensor {
    let st = Storage::Cuda(CudaStorage::wrap_cuda_slice(s, dev.clone()));
    Tensor::from_storage(st, shape, BackpropOp::none(), false)
}

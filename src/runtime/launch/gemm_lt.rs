//! The fp8 (e4m3) W8A8 GEMM through cuBLASLt with row-wise ("outer vector") scaling:
//! y[m, n] = bf16(sx[m] · sw[n] · Σ q[m, ·] · W[n, ·]), the per-token activation scale and the
//! per-channel weight scale applied by cuBLASLt's own epilogue. On Hopper this runs the fp8
//! warpgroup MMA that our `mma.sync` tiles (`gemm_q8`) cannot issue; cuBLASLt 12.9+ offers the
//! scaling mode on sm_90 and later only, so [`Fp8Lt::probe`] tries it once and callers keep our
//! tiles where it is refused (e.g. the L4's sm_89).
//!
//! Accumulation is cuBLASLt's fast mode (`CUBLASLT_MATMUL_DESC_FAST_ACCUM`: the fp8 MMA's own
//! accumulator, not promoted to f32 every few K steps), as vLLM's Hopper fp8 GEMMs run it (CUTLASS's
//! `KernelTmaWarpSpecialized…FP8FastAccum` schedules in every `sm90_fp8_config`), so the speed
//! and the numerics measured here are the serving engine's. `EXAONE_COMPRESS_FP8_FAST_ACCUM=0`
//! turns it off for a process (to time the same binary both ways); `runtime::check`'s tolerance
//! holds either way (`reports/gemm_sweep/w8a8_checks.log`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::cuda::cudarc::cublaslt::{result as lt, sys};
use candle_core::cuda::cudarc::driver::{CudaSlice, CudaStream, DevicePtr};
use candle_core::Result;
use half::bf16;

use super::{cuda_err, require, Dev};

/// Workspace cuBLASLt may use (NVIDIA's recommendation for Hopper).
const WORKSPACE: usize = 32 << 20;

/// A cuBLASLt handle bound to one stream, its workspace and the algorithm chosen per shape.
pub(crate) struct Fp8Lt {
    handle: sys::cublasLtHandle_t,
    workspace: CudaSlice<u8>,
    stream: Arc<CudaStream>,
    algos: Mutex<HashMap<(usize, usize, usize), sys::cublasLtMatmulAlgo_t>>,
    fast_accum: bool,
}

// SAFETY: a cuBLASLt handle is not tied to a thread (cuBLASLt's functions may be called from
// several host threads with one handle); every call here builds its own descriptors, enqueues on
// the one stream the workspace belongs to (so the workspace is used in stream order), and the
// algorithm cache sits behind a mutex.
unsafe impl Send for Fp8Lt {}
unsafe impl Sync for Fp8Lt {}

impl Drop for Fp8Lt {
    fn drop(&mut self) {
        // SAFETY: created by create_handle in `new`, destroyed once here.
        let _ = unsafe { lt::destroy_handle(self.handle) };
    }
}

impl std::fmt::Debug for Fp8Lt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fp8Lt")
    }
}

/// Owners of the cuBLASLt descriptors one call creates, destroyed on every path out.
struct Desc(sys::cublasLtMatmulDesc_t);
struct Layout(sys::cublasLtMatrixLayout_t);
struct Pref(sys::cublasLtMatmulPreference_t);
impl Drop for Desc {
    fn drop(&mut self) {
        // SAFETY: created once by create_matmul_desc, destroyed once.
        let _ = unsafe { lt::destroy_matmul_desc(self.0) };
    }
}
impl Drop for Layout {
    fn drop(&mut self) {
        // SAFETY: as Desc.
        let _ = unsafe { lt::destroy_matrix_layout(self.0) };
    }
}
impl Drop for Pref {
    fn drop(&mut self) {
        // SAFETY: as Desc.
        let _ = unsafe { lt::destroy_matmul_pref(self.0) };
    }
}

fn lt_err(what: &str, e: lt::CublasError) -> candle_core::Error {
    candle_core::Error::Msg(format!("cuBLASLt fp8 GEMM: {what}: {e}"))
}

impl Fp8Lt {
    fn new(stream: &Arc<CudaStream>) -> Result<Self> {
        let handle = lt::create_handle().map_err(|e| lt_err("create handle", e))?;
        // SAFETY: uninitialised scratch that only cuBLASLt writes and reads.
        let workspace = unsafe { stream.alloc::<u8>(WORKSPACE) }.map_err(cuda_err)?;
        Ok(Self {
            handle,
            workspace,
            stream: stream.clone(),
            algos: Mutex::new(HashMap::new()),
            fast_accum: std::env::var("EXAONE_COMPRESS_FP8_FAST_ACCUM")
                .map_or(true, |v| v.trim() != "0"),
        })
    }

    /// A handle on `stream` if this GPU and cuBLASLt run the row-wise scaled fp8 GEMM (one small
    /// product is run and waited for), else why not.
    pub(crate) fn probe(stream: &Arc<CudaStream>) -> std::result::Result<Self, String> {
        let try_it = || -> Result<Self> {
            let me = Self::new(stream)?;
            let (m, n, k) = (16, 64, 64);
            let q = stream.alloc_zeros::<u8>(m * k).map_err(cuda_err)?;
            let w = stream.alloc_zeros::<u8>(n * k).map_err(cuda_err)?;
            let sx = stream.alloc_zeros::<f32>(m).map_err(cuda_err)?;
            let sw = stream.alloc_zeros::<f32>(n).map_err(cuda_err)?;
            let y = stream.alloc_zeros::<bf16>(m * n).map_err(cuda_err)?;
            me.gemm(
                Dev::new(&q, stream),
                Dev::new(&w, stream),
                Dev::new(&sx, stream),
                Dev::new(&sw, stream),
                Dev::new(&y, stream),
                m,
                n,
                k,
            )?;
            stream.synchronize().map_err(cuda_err)?;
            Ok(me)
        };
        try_it().map_err(|e| e.to_string())
    }

    /// [`Fp8Lt::probe`], printing `refused: why` on stderr where it is refused.
    pub(crate) fn probe_or_say(stream: &Arc<CudaStream>, refused: &str) -> Option<Self> {
        Self::probe(stream)
            .map_err(|why| eprintln!("{refused}: {why}"))
            .ok()
    }

    /// y[m, n] = bf16(sx[m] · sw[n] · q[m, k] · W[n, k]ᵀ) for e4m3 q and W (as bytes), on this
    /// handle's stream (the one the buffers are used on). k % 16 == 0.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn gemm(
        &self,
        q: Dev<u8>,
        w: Dev<u8>,
        sx: Dev<f32>,
        sw: Dev<f32>,
        y: Dev<bf16>,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<()> {
        const K: &str = "gemm_fp8_lt";
        require!(
            K,
            k.is_multiple_of(16) && n.is_multiple_of(8),
            "k {k} % 16, n {n} % 8: cuBLASLt's fp8 alignment"
        );
        require!(
            K,
            q.len() >= m * k && w.len() >= n * k,
            "operands [{m}, {k}] and [{n}, {k}]"
        );
        require!(K, sx.len() >= m && sw.len() >= n, "scales");
        require!(K, y.len() >= m * n, "output of {} values", y.len());
        require!(
            K,
            q.aligned(16) && w.aligned(16) && y.aligned(16) && sx.aligned(16) && sw.aligned(16),
            "16-byte aligned buffers"
        );
        if m == 0 {
            return Ok(());
        }
        use sys::cublasLtMatmulDescAttributes_t as A;
        use sys::cudaDataType_t as T;
        let desc = Desc(
            lt::create_matmul_desc(sys::cublasComputeType_t::CUBLAS_COMPUTE_32F, T::CUDA_R_32F)
                .map_err(|e| lt_err("descriptor", e))?,
        );
        let set = |attr: A, ptr: *const std::ffi::c_void, size: usize| {
            // SAFETY: `ptr` points at a live value of `size` bytes of the type `attr` takes.
            unsafe { lt::set_matmul_desc_attribute(desc.0, attr, ptr, size) }
                .map_err(|e| lt_err("descriptor attribute", e))
        };
        let op_t: i32 = 1; // CUBLAS_OP_T (cublasOperation_t is an int)
        let fast = i8::from(self.fast_accum); // the attribute is an int8_t flag
        let mode = sys::cublasLtMatmulMatrixScale_t::CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
        // column-major: A = W as [k, n] (op T → [n, k]) scaled per its n rows, B = q as [k, m]
        // scaled per its m columns, D = yᵀ [n, m]
        let (swp, sxp) = (sw.addr(), sx.addr());
        let mode_p = &mode as *const _ as *const std::ffi::c_void;
        for (attr, ptr, size) in [
            (A::CUBLASLT_MATMUL_DESC_TRANSA, &op_t as *const _ as _, 4),
            (
                A::CUBLASLT_MATMUL_DESC_FAST_ACCUM,
                &fast as *const _ as _,
                1,
            ),
            (A::CUBLASLT_MATMUL_DESC_A_SCALE_MODE, mode_p, 4),
            (A::CUBLASLT_MATMUL_DESC_B_SCALE_MODE, mode_p, 4),
            (
                A::CUBLASLT_MATMUL_DESC_A_SCALE_POINTER,
                &swp as *const _ as _,
                8,
            ),
            (
                A::CUBLASLT_MATMUL_DESC_B_SCALE_POINTER,
                &sxp as *const _ as _,
                8,
            ),
        ] {
            set(attr, ptr, size)?;
        }
        let layout = |t: T, rows: usize, cols: usize, ld: usize| {
            lt::create_matrix_layout(t, rows as u64, cols as u64, ld as i64)
                .map(Layout)
                .map_err(|e| lt_err("layout", e))
        };
        let a = layout(T::CUDA_R_8F_E4M3, k, n, k)?;
        let b = layout(T::CUDA_R_8F_E4M3, k, m, k)?;
        let d = layout(T::CUDA_R_16BF, n, m, n)?;
        let algo = {
            let mut algos = self.algos.lock().expect("algorithm cache");
            match algos.get(&(m, n, k)) {
                Some(a) => *a,
                None => {
                    let pref = Pref(lt::create_matmul_pref().map_err(|e| lt_err("preference", e))?);
                    // SAFETY: a live preference and a usize value, as the attribute takes.
                    unsafe {
                        lt::set_matmul_pref_attribute(
                            pref.0,
                            sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                            &WORKSPACE as *const usize as _,
                            8,
                        )
                    }
                    .map_err(|e| lt_err("preference attribute", e))?;
                    // SAFETY: every descriptor is live and describes the call below.
                    let h = unsafe {
                        lt::get_matmul_algo_heuristic(
                            self.handle,
                            desc.0,
                            a.0,
                            b.0,
                            d.0,
                            d.0,
                            pref.0,
                        )
                    }
                    .map_err(|e| lt_err("no algorithm", e))?;
                    algos.insert((m, n, k), h.algo);
                    h.algo
                }
            }
        };
        let (alpha, beta) = (1f32, 0f32);
        let (ws, _guard) = self.workspace.device_ptr(&self.stream);
        // SAFETY: A reads n·k bytes of W, B m·k bytes of q, D writes m·n bf16 of y, the scales
        // n and m f32 — all inside their buffers (checked), 16-byte aligned as cuBLASLt's fp8
        // kernels need; C is D with beta 0 (not read). The workspace is this handle's own, of
        // the size the algorithm was chosen for, used on the stream it was allocated on.
        unsafe {
            lt::matmul(
                self.handle,
                desc.0,
                &alpha as *const f32 as _,
                &beta as *const f32 as _,
                w.addr() as _,
                a.0,
                q.addr() as _,
                b.0,
                y.addr() as _,
                d.0,
                y.addr() as _,
                d.0,
                &algo,
                ws as _,
                WORKSPACE,
                self.stream.cu_stream() as _,
            )
        }
        .map_err(|e| lt_err("matmul", e))
    }
}

#!/usr/bin/env python3
"""Ablations of the W4A16 GEMM's main loop (src/runtime/kernels/gemm_w4.cu), each with one part
removed, built to PTX in .gpu/ptx/<name>/gemm_w4.ptx for scripts/gpu/ptx_variants.sh (results
are wrong by design: only their times mean something). Needs nvcc (../shared/tools/cuda/env.sh).

    python3 scripts/w4_ablations.py            # then, on the GPU machine:
    EXAONE_W4_MS=1,16 SKIP_ENGINE=1 bash scripts/gpu/ptx_variants.sh
"""
import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
KERNELS = ROOT / "src/runtime/kernels"

MMA = '''    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));'''
WAIT = "        cp_wait<STAGES - 2>();\n        __syncthreads();  // stage t landed"
LOAD = "            if (nx < nt) ld.load(sbase + (nx % STAGES) * C::STAGE, t0 + nx);"
DEQ = '''        uint32_t v = and_or(q >> (4 * i), NIB_MASK, EXP128);  // 128 + nib i, 128 + nib i+4
        b[i] = fma2(fma2(v, ONE2, zn[i >> 1]), s[i >> 1], NEG0);'''

ABLATIONS = {
    # the tensor-core product replaced by a cheap use of its operands
    "nomma": [(MMA, "    c[0] += __uint_as_float((b0 ^ a[0]) & 0x3fffffffu);\n"
                    "    c[1] += __uint_as_float((b1 ^ a[1]) & 0x3fffffffu);")],
    # no global -> shared copies after the pipeline's prologue
    "noload": [(LOAD, LOAD.replace("nx < nt", "nx < 0"))],
    # the weight words used as they are, no dequantization
    "nodeq": [(DEQ, "        b[i] = (q >> (4 * i)) ^ s[i >> 1];")],
    # every stage waited for at once: no copy overlaps the math
    "wait0": [(WAIT, WAIT.replace("STAGES - 2", "0"))],
    # no barrier per K tile (races: timing only)
    "nosync": [(WAIT, "        cp_wait<STAGES - 2>();\n        // stage t landed")],
}


def main() -> int:
    src = (KERNELS / "gemm_w4.cu").read_text()
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(KERNELS / "common.cuh", tmp)
        for name, edits in ABLATIONS.items():
            text = src
            for old, new in edits:
                if old not in text:
                    print(f"{name}: gemm_w4.cu no longer has the code this ablation edits", file=sys.stderr)
                    return 1
                text = text.replace(old, new)
            cu = pathlib.Path(tmp) / f"{name}.cu"
            cu.write_text(text)
            out = ROOT / ".gpu/ptx" / name
            out.mkdir(parents=True, exist_ok=True)
            subprocess.run(["nvcc", "--ptx", "-arch=compute_80", "-O3", "-std=c++17", "-diag-suppress", "177",
                            "-o", str(out / "gemm_w4.ptx"), str(cu)], check=True)
            print(f"{name}: {out / 'gemm_w4.ptx'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

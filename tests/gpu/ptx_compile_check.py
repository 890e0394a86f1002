"""Compile every numba-CUDA kernel of itnet_np.gpu to PTX for sm_90 with numba-cuda's NVVM, without a
device: the simulator runs the kernels as Python and type-checks nothing, so this is how a CPU-only
machine checks that they type, compile, and keep float32 free of float64 instructions.

Not collected by pytest. Needs the numba-cuda package (not numba's bundled numba.cuda), its CUDA
bindings, libnvvm and libnvrtc, e.g.:

    pip install --target /tmp/nbcuda --no-deps numba-cuda "cuda-bindings==13.*" cuda-core \\
        cuda-pathfinder nvidia-cuda-nvrtc
    NBCUDA=/tmp/nbcuda CUDA_HOME=/usr/local/cuda-13.0 LD_LIBRARY_PATH=/tmp/nbcuda/nvidia/cu13/lib \\
        python tests/gpu/ptx_compile_check.py

Prints one line per kernel and dtype with its count of .f64 instructions; exits 1 when a float32
kernel has any.
"""
import importlib
import os
import site
import sys
import types

import numpy as np

if os.environ.get("NBCUDA"):
    site.addsitedir(os.environ["NBCUDA"])      # processes numba-cuda's redirector .pth


def _compile_only():
    """Let the kernel factories build without a device: device functions target sm_90."""
    from numba import cuda
    from numba.cuda import dispatcher
    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
    for name in ("_cuda", "attention_forward", "attention_backward", "mlp_forward", "mlp_backward", "linear_scan",
                 "stencil"):
        importlib.import_module("itnet_np.gpu." + name).require_device = lambda: cuda


def main():
    _compile_only()
    from itnet_np.gpu import (
        attention_backward,
        attention_forward,
        linear_scan,
        mlp_backward,
        mlp_forward,
        stencil,
    )
    from numba import cuda
    from numba import types as nt
    bad = False
    for dtype in (np.float32, np.float64):
        dt = nt.float32 if dtype == np.float32 else nt.float64
        f4, f3, f2, f1 = (nt.Array(dt, n, "C") for n in (4, 3, 2, 1))
        b4, i1 = nt.Array(nt.boolean, 4, "C"), nt.Array(nt.int64, 1, "C")
        sup = (b4, nt.boolean, f4, nt.boolean, f1, nt.boolean, nt.boolean, nt.int64, i1, i1, nt.boolean, nt.int64)
        common = (f4, f4, f4, f4, f3, f3, dt) + sup
        msup = (nt.int64, b4, nt.boolean, nt.boolean, nt.int64, i1, i1, nt.boolean, nt.int64)
        margs = (f3, f3, f3, f3, f2, f2, f1, f4, f3)
        dq, dkv = attention_backward.kernels(np.dtype(dtype), 8, 4)
        query, source = mlp_backward.kernels(np.dtype(dtype), 8, 2, 2, 3, 1)
        cases = [("attention forward", attention_forward.kernel(np.dtype(dtype), 8, 4),
                  (f4, f4, f4, dt) + sup + (f4, f3)),
                 ("attention dq", dq, common + (f4, f4, nt.boolean, f3)),
                 ("attention dkv", dkv, common + (f4, f4)),
                 ("mlp forward", mlp_forward.kernel(np.dtype(dtype), 8, 2, 2, 3, 1), margs + msup + (f4, f3)),
                 ("mlp query", query, margs + (f4, f3, f3) + msup + (f3, f3, f2)),
                 ("mlp source", source, margs + (f4, f3, f3) + msup + (f3, f3, f4, f3))]
        local, carry, fix = linear_scan.kernels(np.dtype(dtype))
        cases += [("scan local", local, (f2, f2, f2, f2, f2, nt.boolean)), ("scan carry", carry, (f2, f2, f2)),
                  ("scan fix", fix, (f2, f2, f2, nt.boolean))]
        i3 = nt.Array(nt.int64, 3, "C")
        fwd, bwd = stencil.kernels(np.dtype(dtype), 5)
        cases += [("stencil forward", fwd, (i3, f2, f3, f4, f4)),
                  ("stencil backward", bwd, (i3, f2, f3, f4, f4, f3, f3, f4, nt.boolean))]
        for name, kernel, args in cases:
            ptx, _ = cuda.compile_ptx(kernel.py_func, nt.void(*args), cc=(9, 0))
            f64 = ptx.count(".f64")
            bad |= dtype == np.float32 and f64 > 0
            print(f"{np.dtype(dtype).name:8s} {name:18s} PTX {len(ptx):7d} chars, {f64} .f64 instructions")
    for dtype, nbt in ((np.complex64, nt.complex64), (np.complex128, nt.complex128)):   # the decay scan's modes
        c2 = nt.Array(nbt, 2, "C")
        for name, kernel, args in zip(("scan local", "scan carry", "scan fix"), linear_scan.kernels(np.dtype(dtype)),
                                      ((c2, c2, c2, c2, c2, nt.boolean), (c2, c2, c2), (c2, c2, c2, nt.boolean))):
            ptx, _ = cuda.compile_ptx(kernel.py_func, nt.void(*args), cc=(9, 0))
            f64 = ptx.count(".f64")
            bad |= dtype == np.complex64 and f64 > 0
            print(f"{np.dtype(dtype).name:10s} {name:16s} PTX {len(ptx):7d} chars, {f64} .f64 instructions")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

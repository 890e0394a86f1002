"""GPU kernels for itnet-np, installed as ``itnet_np.gpu`` (the source lives in the top-level ``gpu/``).

numba-CUDA kernels, one per file, each with its launch wrapper and the dense reference it must match:

    attention_forward.py   tiled attention forward, online softmax, log-sum-exp saved
    attention_backward.py  FlashAttention-2 backward: dq by query blocks, dk / dv by source blocks
    mlp_forward.py         the MLP-kernel transform (factorised first layer), per-head online softmax
    mlp_backward.py        its backward: query / source kernels, weight gradients by block reductions
    linear_scan.py         chunked parallel scan of h_t = a_t h_{t-1} + u_t (real or complex)
    attention.py, mlp.py   the calls with the CPU kernels' signatures (checks, then launches)
    selective_scan.py, decay_scan.py   SelectiveKernel / DecayKernel scans on linear_scan
    stencil.py             the banded StencilKernel: a gather over the taps, its backward by atomics
    engine_ops.py          the kernels as engine primitives (one graph node per call)
    plan.py                the 'cuda' backend of the planner contract (transform/planner.py)
    _cuda.py               shared: the lazy numba.cuda import, kernel cache, device functions

CUDA C++ kernels on tensor cores (mma.sync, float16 / bfloat16 with float32 accumulation), compiled
at run time by NVRTC through CuPy's RawModule (_rawmodule.py), with their Python wrappers:

    attention_mma.cu       FlashAttention-2 forward and backward: cp.async double buffering,
                           swizzled shared memory, causal / window tiles skipped
    attention_cupy.py      its tile choice, argument checks, launches, the engine op cupy_attention
    mlp_mma.cu             the MLP kernel forward and backward (the bilinear first layer as products)
    mlp_cupy.py            its tile choice, argument checks, launches, the engine op cupy_mlp
    plan_cupy.py           the 'cupy' backend of the planner: float16 CuPy data (asked before 'cuda')
    _rawmodule.py          loading the *.cu files: one RawModule per instantiation, cached

Arrays are CuPy arrays on a GPU; under numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1) the same
wrappers run on NumPy arrays, which is how CI tests them (tests/gpu). Without numba-cuda or a device
every entry point raises ConfigError naming the ``gpu`` extra. Importing this package, or
``itnet_np.gpu.plan``, imports neither CuPy nor numba.cuda.
"""

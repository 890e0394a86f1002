"""Chunked parallel scan of a first-order linear recurrence on the GPU (numba-CUDA):

    h_t = a_t h_{t-1} + u_t   (t = 0..N-1, h_{-1} = 0),   or in reverse (t = N-1..0, h_N = 0)

for R independent rows, arrays (N, R) time-major (neighbouring threads read neighbouring rows at the
same t: coalesced). Three launches, O(N R) work, O(R N / L) extra memory (L = CHUNK):
    local:  one thread per (row, chunk) scans its chunk from 0, keeping the chunk's product P and end E;
    carry:  one thread per row runs over the chunks, carry_c = P_c carry_{c-1} + E_c (the state
            entering each chunk);
    fix:    one thread per (row, chunk) adds (a_{first} ... a_t) carry to its chunk's states.
Real or complex dtypes (the diagonal SSM's complex modes). Dense reference it must match: the
sequential loop (tests/gpu/sim_gpu_scan.py, and the CPU scans in transform/fused/scan_numba.py).
"""
import numpy as np

from ._cuda import TILE, cached, numba_cuda, require_device

cuda = numba_cuda()   # the kernels' `cuda` global (see _cuda.numba_cuda)
CHUNK = 64


@cached
def kernels(dtype):
    """The compiled (local, carry, fix) launches for ``dtype``."""
    require_device()
    f = np.dtype(dtype).type
    zero, one = f(0), f(1)
    L = CHUNK

    @cuda.jit(device=True)
    def step(t0, s, n, reverse):
        """The s-th time index of the chunk starting at t0 in scan order (-1 past the end)."""
        t = t0 + s
        if t >= n:
            return -1
        return n - 1 - t if reverse else t

    @cuda.jit
    def local(a, u, h, prod, end, reverse):
        n, rows = a.shape
        r = cuda.blockIdx.x * TILE + cuda.threadIdx.x
        c = cuda.blockIdx.y
        if r >= rows:
            return
        acc, p = zero, one
        for s in range(L):
            t = step(c * L, s, n, reverse)
            if t < 0:
                break
            acc = a[t, r] * acc + u[t, r]
            p = p * a[t, r]
            h[t, r] = acc
        prod[c, r], end[c, r] = p, acc

    @cuda.jit
    def carry(prod, end, start):
        chunks, rows = prod.shape
        r = cuda.blockIdx.x * TILE + cuda.threadIdx.x
        if r >= rows:
            return
        acc = zero
        for c in range(chunks):
            start[c, r] = acc
            acc = prod[c, r] * acc + end[c, r]

    @cuda.jit
    def fix(a, h, start, reverse):
        n, rows = a.shape
        r = cuda.blockIdx.x * TILE + cuda.threadIdx.x
        c = cuda.blockIdx.y
        if r >= rows or c == 0:
            return
        cin, q = start[c, r], one
        for s in range(L):
            t = step(c * L, s, n, reverse)
            if t < 0:
                break
            q = q * a[t, r]
            h[t, r] += q * cin

    return local, carry, fix


def linear_scan(a, u, reverse=False):
    """h (N, R) with h_t = a_t h_{t-1} + u_t (reverse: h_t = a_t h_{t+1} + u_t), a, u (N, R) of one
    float or complex dtype, NumPy (simulator) or CuPy arrays."""
    from itnet_np.autograd.backend import xp_of
    xp = xp_of(a)
    a, u = xp.ascontiguousarray(a), xp.ascontiguousarray(u)
    if a.shape != u.shape or a.ndim != 2 or a.dtype != u.dtype:
        from itnet_np.errors import ShapeError
        raise ShapeError(f"linear_scan: a and u must share one (N, R) shape and dtype, got {a.shape} "
                         f"{a.dtype} and {u.shape} {u.dtype}")
    n, rows = a.shape
    h = xp.empty_like(u)
    if n == 0 or rows == 0:
        return h
    chunks = -(-n // CHUNK)
    prod, end, start = (xp.empty((chunks, rows), a.dtype) for _ in range(3))
    local, carry, fix = kernels(a.dtype)
    grid = -(-rows // TILE)
    local[(grid, chunks), TILE](a, u, h, prod, end, bool(reverse))
    carry[grid, TILE](prod, end, start)
    fix[(grid, chunks), TILE](a, h, start, bool(reverse))
    return h

/* The MLP-kernel integral transform on tensor cores: forward and backward, float16 / bfloat16 data,
float32 accumulation, through mma.sync.aligned.m16n8k16 (inline PTX). Wrapper: gpu/mlp_cupy.py.

THE OPERATOR (the same as itnet_np.transform.fused.mlp_numba, the dense reference)
    pre_ijk = a_ik + b_jk + sum_r W_kr x_ir y_jr      a (B,N,K) b (B,M,K) x (B,N,R) y (B,M,R) W (K,R)
    s^h_ij  = sum_k W2_hk act(pre_ijk) + b2_h         W2 (H,K) b2 (H,)   act: relu gelu_tanh silu tanh
    'softmax': out^h_i = sum_S w_j e^{s^h_ij} v^h_j / l^h_i,  l^h_i = sum_S w_j e^{s^h_ij},
               stats^h_i = log l^h_i (-inf when l = 0, and then out = 0)
    'sum':     out^h_i = sum_S w_j s^h_ij v^h_j / Z^h_i,  Z^h_i = sum_S w_j s^h_ij (out = 0 where Z = 0)
    'none':    out^h_i = sum_S w_j s^h_ij v^h_j,          stats^h_i = Z^h_i
S(i) = {j : lo_i <= j < hi_i}: all of [0, M), j <= i when causal, |i - j| <= window when window >= 0.
v (B,H,M,DV), w (B,HW,M) with HW = 1 (shared by the heads) or H. Stats are float32.

THE FACTORISATION (why tensor cores apply)
For one hidden unit k the bilinear term is a matrix product: sum_r W_kr x_ir y_jr = [(X diag W_k) Y^T]_ij,
so for a 16 x 16 block of pairs (rows i, columns j) the pre-activations of unit k are one m16n8k16
product per 16 columns of r and per 8 columns j, started from the accumulator c_ij = a_ik + b_jk.
The A operand X diag W_k is rebuilt per k from x (kept in registers) and W_k (shared memory) with
one packed multiply per register (rounded once to the data type: relative error <= u per term). The
activation runs on the float32 accumulators, the second layer is H register FMAs per pair and unit,
s^h += W2_hk act(pre_k), so the scores of all heads for the block are ready after the k loop. The
values are then one more tensor-core product per head: out^h += P^h V^h, the 16 x 16 block of
weights P^h converted from accumulator layout to A-operand layout in registers (see LAYOUTS).
Per pair: 2 K R tensor-core flops, K activations, 2 H K CUDA-core flops, 2 H DV tensor-core flops.
The CUDA-core part (activation + second layer) dominates: this kernel is not bound by the tensor
cores, which remove the K R bilinear term and the value sum from the CUDA cores.

ONLINE SOFTMAX (per head and query row, over 16-column chunks; FlashAttention-2's recurrence)
    m' = max(m, max_j s_ij),  alpha = e^{m - m'},  l' = alpha l + sum_j w_j e^{s_ij - m'},
    acc' = alpha acc + sum_j w_j e^{s_ij - m'} v_j;     at the end out = acc / l, stats = m + log l.
The shift used is m' or 0 when m' = -inf (a row with nothing seen yet), so e^{-inf - shift} = 0.
Each thread keeps partial l for its own columns (every quad lane applies the same alpha) and the
quad's partials are summed once at the end. 'sum' / 'none' accumulate p = w s with no shift.
NaN scores: fmaxf ignores a NaN in the running max (the CPU kernel propagates it); the NaN still
reaches l and out through p.

BACKWARD (FlashAttention-2 style: the pair blocks are recomputed from the saved stats, nothing of
size N x M is stored). With P the normalised weights (softmax: w e^{s - stats}; sum: w s / Z; none:
w s), dP^h_ij = dout^h_i . v^h_j and D^h_i = dout^h_i . out^h_i (0 for 'none', computed by the
wrapper):
    dv^h_j   = sum_i P^h_ij dout^h_i
    g^h_ij   = dL/ds^h_ij:  softmax w e (dP - D);  sum w (dP - D) / Z;  none w dP
    gw^h_ij  = dL/dw_j:     softmax e (dP - D);    sum s (dP - D) / Z;  none s dP   (dw_j = sum_ih gw)
    db2_h    = sum_ij g^h_ij,            dW2_hk = sum_ij g^h_ij act(pre_ijk)
    dpre_ijk = act'(pre_ijk) sum_h W2_hk g^h_ij
    da_ik    = sum_j dpre_ijk,           db_jk  = sum_i dpre_ijk
    dx_ir    = sum_k W_kr T^k_ir,  T^k = dPre^k Y        (dPre^k the N x M matrix of unit k)
    dy_jr    = sum_k W_kr U^k_jr,  U^k = dPre^kT X
    dW_kr    = sum_j y_jr U^k_jr   (= sum_ij dpre_ijk x_ir y_jr)
(Derivation: pre is linear in a, b, x, y, W; s is linear in W2, b2 given act; the chain rule through
the normalisation gives g as for attention: softmax dL/ds_ij = P_ij (dP_ij - D_i), 'sum' differentiates
(sum w s v) / (sum w s) in s and in w, 'none' is bilinear.)
One kernel per source block (source-major, like FlashAttention-2's key blocks): a CTA owns 16 WARPS
sources, a warp 16 of them, and walks the query rows of the band in tiles. Per 16 x 16 pair block a
warp computes (rows j, columns i) pass 1: pre, act, s^h for all k (A = Y, B = (X diag W_k)^T: the
products x_ir W_kr are rounded exactly as in the forward, so the recomputed scores are the forward's
up to float32 summation order); then P, dP = V dOut^T (tensor cores), g, gw, dv += P dOut (P in rows j);
pass 2 (pre recomputed per k): act, act', dpre, then U^k = dPre^kT X and T^k = dPre^k Y on the tensor
cores; the transposed block dPre^k (rows i) comes from dPre^kT by movmatrix (LAYOUTS).
  source side (db, dy, dv, dw): accumulated per warp over the query tiles (registers, db in
      shared memory), written once at the end: no atomics.
  query side (da, dx): float32 atomics (red.global.add) into zeroed (B,N,K) / (B,N,R) buffers, once
      per pair block and unit group; the wrapper casts them to the data type.
  weights (dW, dW2, db2): warp reductions (shuffles) into shared float32 sums (shared atomics between
      the warps), then one row of partial sums per CTA in global memory, summed by the wrapper
      (deterministic, no global atomics on the few shared addresses).
  da and db ride on the tensor cores: an extra 8-column B operand E_c (ones in column c = k mod 8)
      makes column c of an 8-column accumulator collect sum_i dpre_ijk (resp. sum_j) for 8
      consecutive units k; the accumulator is flushed every 8 units.

SUPPORT
causal and window on the index grid; a CTA (a warp) skips every source tile (16-column chunk)
outside its band [lo(first row), hi(last row)), which is exact because lo and hi are nondecreasing
in i; pairs inside a visited chunk are masked per element. Masks (other than the band) and per-row
ranges are not supported (the wrapper refuses them).

LAYOUTS (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"; groupID g = lane >> 2,
threadID_in_group q = lane & 3; a register holds two 16-bit elements, the lower column/row index in
its low half)
    A (16 x 16, row-major): a[0] = A[g][2q, 2q+1]     a[1] = A[g+8][2q, 2q+1]
                            a[2] = A[g][2q+8, 2q+9]   a[3] = A[g+8][2q+8, 2q+9]
    B (16 x 8, "col"):      b[0] = B[2q, 2q+1][g]     b[1] = B[2q+8, 2q+9][g]
    C, D (16 x 8, float32): c[0] = C[g][2q]  c[1] = C[g][2q+1]  c[2] = C[g+8][2q]  c[3] = C[g+8][2q+1]
Accumulator -> A operand (FlashAttention-2's trick): two 16 x 8 accumulators covering columns 0-7 and
8-15 give the A operand of the 16 x 16 block: a = {pack(c0[0], c0[1]), pack(c0[2], c0[3]),
pack(c1[0], c1[1]), pack(c1[2], c1[3])}.
movmatrix.sync.aligned.m8n8.trans.b16 (PTX ISA, "Warp-level matrix transpose instruction: movmatrix"):
the input 8 x 8 matrix is held as thread lane -> M[g][2q, 2q+1]; the output holds the transpose in the
same layout, lane -> M[2q][g], M[2q+1][g]. The four 8 x 8 blocks of an A operand (a[0] rows 0-7 /
cols 0-7, a[1] rows 8-15 / cols 0-7, a[2] rows 0-7 / cols 8-15, a[3] rows 8-15 / cols 8-15) give the
A operand of the transposed block as {mm(a[0]), mm(a[2]), mm(a[1]), mm(a[3])}.
No ldmatrix: fragments are read with 32-bit (pairs contiguous in memory) or two 16-bit (pairs along
the strided dimension) shared loads. The probe kernel mlp_mma_probe runs mma, the accumulator -> A
conversion and movmatrix on known data, so a GPU test checks these layouts before the kernels.

SHARED MEMORY (dynamic, one block, offsets in fwd_smem / bwd_smem, mirrored in gpu/mlp_cupy.py)
Tiles of 16-bit rows use a pitch of width + 8 elements: with width a multiple of 16 the pitch is an
odd multiple of 16 bytes, so the 8 rows a quad-group reads in one 32-bit fragment load fall on 8
distinct 4-bank groups and the load is conflict-free (padding instead of an XOR swizzle: the tiles
are small and padding keeps the index arithmetic readable). Float32 arrays (W2, b2, w, stats) are read
by all lanes at one address (broadcast) or by lane-distinct addresses.
    forward:  W (K, R+8) | W2 (H, K) f32 | b2 (H) f32 | a (16 WARPS, K+8) | y (COLS, R+8) | b (COLS, K+8)
              | v (H, COLS, DV+8) | w (H, COLS) f32                          (each region 16-byte aligned)
    backward: W | W2 | b2 | b (16 WARPS, K+8) | v (H, 16 WARPS, DV+8) | y (16 WARPS, R+8) | db (WARPS, 16, K) f32
              | x (ROWS, R+8) | a (ROWS, K+8) | dout (H, ROWS, DV+8) | stats, D (H, ROWS) f32
              | dW (K, R) f32 | dW2 (H, K) f32 | db2 (H) f32
Tiles are loaded synchronously (16-byte vector loads, zero rows past N or M, two barriers per tile);
no cp.async pipeline: the kernel is bound by the activations on the CUDA cores, not by the loads.

LAUNCH
forward:  grid (ceil(N / (16 WARPS)), B), block 32 WARPS (WARPS <= 4), dynamic smem fwd_smem(...).total;
          COLS (source columns per tile, a multiple of 16) is a run-time argument.
backward: grid (ceil(M / (16 WARPS)), B), block 32 WARPS, smem bwd_smem(...).total; ROWS (query rows
          per tile, a multiple of 16) is a run-time argument.
Template arguments: T (__half or __nv_bfloat16), R in {16, 32, 64} and (H, DV) in {(1, 64), (2, 32),
(4, 16)}: they size the register arrays (ITNET_INSTANTIATE below). K is a run-time argument (a multiple
of 16: it sizes only shared memory and loop counts). The wrapper pads smaller sizes with zeros (exact:
act(0) = 0 for the four activations and zero rows/columns add nothing).
Requirements: sm_80 or newer (mma.sync m16n8k16 with bf16, fma.rn.bf16x2; movmatrix needs sm_75 and
PTX ISA 7.8, i.e. CUDA 11.8 or newer).

HOST EMULATION (ITNET_HOST_EMULATION)
The same source compiles as C++ on the CPU: each CUDA thread becomes a fiber (ucontext), barriers and
the warp-wide instructions (mma, movmatrix, shuffles) are emulated from the layouts above, shared
memory is poisoned with NaN before each block. With ITNET_EMULATION_MAIN it is a command-line program
the tests drive (tests/gpu/test_cupy_mlp.py): it checks every index and every barrier of the kernels
on a machine without a GPU, but not the hardware's own reading of the layouts (the probe does that).
*/

#if defined(ITNET_HOST_EMULATION)
// ---------------------------------------------------------------------------------------------
// Host emulation of the few CUDA features the kernels use (see the docstring).
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__
#define ITNET_HD
using std::max;
using std::min;

struct __half { unsigned short bits; };
struct __nv_bfloat16 { unsigned short bits; };
struct uint4 { unsigned x, y, z, w; };

namespace emu {
struct Dim { unsigned x = 1, y = 1, z = 1; };
struct Barrier { int count = 0; unsigned long gen = 0; };
struct Slot { int op; unsigned u[4]; unsigned b[2]; float f[4]; };
struct Fiber { ucontext_t ctx; std::vector<char> stack; Dim tid; bool done = false; };
struct State {
    Dim block, grid, bdim;
    std::vector<Fiber> fibers;
    int current = 0;
    ucontext_t sched;
    std::vector<unsigned char> smem;
    Barrier block_bar;
    std::vector<Barrier> warp_bar;
    std::vector<Slot> slots;
    std::function<void()> body;
    unsigned long events = 0;
};
inline State& st() { static State s; return s; }
inline void yield() { State& s = st(); swapcontext(&s.fibers[s.current].ctx, &s.sched); }
inline void wait(Barrier& b, int n) {
    unsigned long gen = b.gen;
    if (++b.count == n) { b.count = 0; ++b.gen; ++st().events; return; }
    while (b.gen == gen) yield();
}
inline void entry() { State& s = st(); s.body(); s.fibers[s.current].done = true; ++s.events; }
// Run body() as one block of bdim.x threads, to completion; abort on a deadlock.
inline void run_block(Dim block, Dim grid, Dim bdim, size_t smem, std::function<void()> body) {
    State& s = st();
    s.block = block; s.grid = grid; s.bdim = bdim; s.body = body;
    const int n = bdim.x;
    if (n % 32) { fprintf(stderr, "emu: block size %d is not a multiple of 32\n", n); abort(); }
    s.smem.assign(smem + 16, 0xFF);       // poison: 0xFFFF is a float16 / bfloat16 NaN, 0xFFFFFFFF a float NaN
    s.block_bar = Barrier();
    s.warp_bar.assign(n / 32, Barrier());
    s.slots.assign(n, Slot());
    s.fibers.clear();
    s.fibers.resize(n);
    for (int t = 0; t < n; ++t) {
        Fiber& f = s.fibers[t];
        f.tid.x = t;
        f.stack.resize(1 << 19);
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack.data();
        f.ctx.uc_stack.ss_size = f.stack.size();
        f.ctx.uc_link = &s.sched;
        makecontext(&f.ctx, entry, 0);
    }
    for (;;) {
        unsigned long before = s.events;
        bool live = false;
        for (int t = 0; t < n; ++t) {
            if (s.fibers[t].done) continue;
            live = true;
            s.current = t;
            swapcontext(&s.sched, &s.fibers[t].ctx);
        }
        if (!live) break;
        if (s.events == before) { fprintf(stderr, "emu: deadlock (a barrier that not every thread reaches)\n"); abort(); }
    }
}
inline void launch(Dim grid, Dim bdim, size_t smem, std::function<void()> body) {
    for (unsigned by = 0; by < grid.y; ++by)
        for (unsigned bx = 0; bx < grid.x; ++bx) {
            Dim blk; blk.x = bx; blk.y = by; blk.z = 0;
            run_block(blk, grid, bdim, smem, body);
        }
}
inline Dim& thread_index() { State& s = st(); return s.fibers[s.current].tid; }
inline int lane() { return thread_index().x & 31; }
inline Slot* warp_slots() { return &st().slots[(thread_index().x >> 5) * 32]; }
inline void warp_barrier() { wait(st().warp_bar[thread_index().x >> 5], 32); }
// Deposit this lane's operands, wait for the warp, and check that every lane runs the same op.
inline Slot* exchange(int op, const Slot& mine) {
    Slot* s = warp_slots();
    s[lane()] = mine;
    s[lane()].op = op;
    warp_barrier();
    for (int l = 0; l < 32; ++l)
        if (s[l].op != op) { fprintf(stderr, "emu: lanes of one warp run different warp instructions\n"); abort(); }
    return s;
}
// float <-> 16-bit patterns, round to nearest even
inline float bits_f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
inline uint32_t f_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
inline unsigned short f2h(float f) {
    uint32_t x = f_bits(f), sign = (x >> 16) & 0x8000u, ax = x & 0x7FFFFFFFu;
    if (ax >= 0x7F800000u) return sign | (ax > 0x7F800000u ? 0x7E00u : 0x7C00u);
    if (ax >= 0x477FF000u) return sign | 0x7C00u;                  // >= 65520 rounds to inf
    if (ax < 0x38800000u) {                                        // below 2^-14: subnormal or zero
        float scaled = bits_f(ax) * 16777216.0f;                   // in units of 2^-24, exact
        return sign | (unsigned short)std::nearbyint(scaled);
    }
    uint32_t h = ((((ax >> 23) - 112u) << 10) | ((ax & 0x7FFFFFu) >> 13)), rest = ax & 0x1FFFu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h += 1;
    return sign | h;
}
inline float h2f(unsigned short h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
    if (e == 0x1F) return bits_f(sign | 0x7F800000u | (m << 13));
    if (e == 0) { float v = m * (1.0f / 16777216.0f); return sign ? -v : v; }
    return bits_f(sign | ((e + 112u) << 23) | (m << 13));
}
inline unsigned short f2bf(float f) {
    uint32_t x = f_bits(f);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) return (unsigned short)((x >> 16) | 0x40u);
    return (unsigned short)((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}
inline float bf2f(unsigned short b) { return bits_f((uint32_t)b << 16); }
}  // namespace emu

#define threadIdx (emu::thread_index())
#define blockIdx (emu::st().block)
#define blockDim (emu::st().bdim)
#define gridDim (emu::st().grid)
inline void __syncthreads() { emu::wait(emu::st().block_bar, (int)emu::st().bdim.x); }
inline void __syncwarp() { emu::warp_barrier(); }
inline float atomicAdd(float* p, float v) { float old = *p; *p = old + v; return old; }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
#define ITNET_DYNAMIC_SMEM (emu::st().smem.data())

#else
// ---------------------------------------------------------------------------------------------
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define ITNET_HD __host__ __device__
extern __shared__ __align__(16) unsigned char itnet_mlp_smem[];
#define ITNET_DYNAMIC_SMEM (itnet_mlp_smem)
#endif

#define ITNET_DEV __device__ __forceinline__

#if defined(ITNET_HOST_EMULATION)
inline float neg_inf() { return -HUGE_VALF; }
#else
ITNET_DEV float neg_inf() { return __int_as_float(0xff800000); }
#endif

// ---------------------------------------------------------------------------------------------
// The data type's operations on packed pairs (one 32-bit register = two 16-bit elements, low half
// first) and the tensor-core product D += A B (m16n8k16, float32 accumulators).
template <typename T> struct Prec;

template <> struct Prec<__half> {
    static constexpr unsigned ONE2 = 0x3C003C00u;      // (1, 1)
    ITNET_DEV static float lo(unsigned u) { return elem((unsigned short)(u & 0xFFFFu)); }
    ITNET_DEV static float hi(unsigned u) { return elem((unsigned short)(u >> 16)); }
#if defined(ITNET_HOST_EMULATION)
    static float elem(unsigned short h) { return emu::h2f(h); }
    static unsigned short round(float f) { return emu::f2h(f); }
#else
    ITNET_DEV static float elem(unsigned short h) { return __half2float(__ushort_as_half(h)); }
    ITNET_DEV static unsigned short round(float f) { return __half_as_ushort(__float2half_rn(f)); }
#endif
    ITNET_DEV static unsigned pack(float l, float h) { return round(l) | ((unsigned)round(h) << 16); }
    // (a.lo b.lo, a.hi b.hi), each product rounded once: the exact product of two 11-bit
    // significands fits a float, so the emulation (float multiply, then round) is exact too.
    ITNET_DEV static unsigned mul2(unsigned a, unsigned b) {
#if defined(ITNET_HOST_EMULATION)
        return pack(lo(a) * lo(b), hi(a) * hi(b));
#else
        unsigned d;
        asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(0x80008000u));
        return d;
#endif
    }
    ITNET_DEV static void mma(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1);
};

template <> struct Prec<__nv_bfloat16> {
    static constexpr unsigned ONE2 = 0x3F803F80u;
    ITNET_DEV static float lo(unsigned u) { return elem((unsigned short)(u & 0xFFFFu)); }
    ITNET_DEV static float hi(unsigned u) { return elem((unsigned short)(u >> 16)); }
#if defined(ITNET_HOST_EMULATION)
    static float elem(unsigned short h) { return emu::bf2f(h); }
    static unsigned short round(float f) { return emu::f2bf(f); }
#else
    ITNET_DEV static float elem(unsigned short h) { return __uint_as_float((unsigned)h << 16); }
    ITNET_DEV static unsigned short round(float f) { return __bfloat16_as_ushort(__float2bfloat16_rn(f)); }
#endif
    ITNET_DEV static unsigned pack(float l, float h) { return round(l) | ((unsigned)round(h) << 16); }
    ITNET_DEV static unsigned mul2(unsigned a, unsigned b) {
#if defined(ITNET_HOST_EMULATION)
        return pack(lo(a) * lo(b), hi(a) * hi(b));
#else
        unsigned d;   // fma.rn.bf16x2 needs sm_80 (mul.rn.bf16x2 would need sm_90)
        asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(0x80008000u));
        return d;
#endif
    }
    ITNET_DEV static void mma(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1);
};

#if defined(ITNET_HOST_EMULATION)
namespace emu {
// D += A B for the warp, from the fragment layouts of the docstring.
template <typename T>
void mma(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    Slot mine;
    for (int e = 0; e < 4; ++e) { mine.u[e] = a[e]; mine.f[e] = d[e]; }
    mine.b[0] = b0; mine.b[1] = b1;
    Slot* s = exchange(1, mine);
    float A[16][16], B[16][8];
    for (int l = 0; l < 32; ++l) {
        const int g = l >> 2, q = l & 3;
        const int ar[4] = {g, g + 8, g, g + 8}, ac[4] = {2 * q, 2 * q, 2 * q + 8, 2 * q + 8};
        for (int e = 0; e < 4; ++e) {
            A[ar[e]][ac[e]] = Prec<T>::lo(s[l].u[e]);
            A[ar[e]][ac[e] + 1] = Prec<T>::hi(s[l].u[e]);
        }
        for (int e = 0; e < 2; ++e) {
            B[2 * q + 8 * e][g] = Prec<T>::lo(s[l].b[e]);
            B[2 * q + 8 * e + 1][g] = Prec<T>::hi(s[l].b[e]);
        }
    }
    const int g = lane() >> 2, q = lane() & 3;
    for (int e = 0; e < 4; ++e) {
        const int row = g + 8 * (e >> 1), col = 2 * q + (e & 1);
        double acc = d[e];
        for (int k = 0; k < 16; ++k) acc += (double)A[row][k] * (double)B[k][col];
        d[e] = (float)acc;
    }
    warp_barrier();
}
}  // namespace emu
inline void Prec<__half>::mma(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    emu::mma<__half>(d, a, b0, b1);
}
inline void Prec<__nv_bfloat16>::mma(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    emu::mma<__nv_bfloat16>(d, a, b0, b1);
}
// lane -> M[2q][g], M[2q+1][g] of the 8 x 8 matrix held as lane -> M[g][2q, 2q+1]
inline unsigned transpose8x8(unsigned a) {
    emu::Slot mine;
    mine.u[0] = a;
    emu::Slot* s = emu::exchange(2, mine);
    const int g = emu::lane() >> 2, q = emu::lane() & 3;
    // M[r][c] lives in lane 4 r + c / 2, half c % 2
    auto elem = [&](int r, int c) -> unsigned { unsigned u = s[4 * r + c / 2].u[0]; return (c & 1) ? u >> 16 : u & 0xFFFFu; };
    const unsigned d = elem(2 * q, g) | (elem(2 * q + 1, g) << 16);
    emu::warp_barrier();
    return d;
}
inline float lane_xor(float v, int mask) {
    emu::Slot mine;
    mine.f[0] = v;
    emu::Slot* s = emu::exchange(3, mine);
    const float r = s[emu::lane() ^ mask].f[0];
    emu::warp_barrier();
    return r;
}
#else
ITNET_DEV void Prec<__half>::mma(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
ITNET_DEV void Prec<__nv_bfloat16>::mma(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
ITNET_DEV unsigned transpose8x8(unsigned a) {
    unsigned d;
    asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;" : "=r"(d) : "r"(a));
    return d;
}
ITNET_DEV float lane_xor(float v, int mask) { return __shfl_xor_sync(0xffffffffu, v, mask); }
#endif

// ---------------------------------------------------------------------------------------------
// Small shared helpers.
ITNET_DEV unsigned ld32(const unsigned short* p) { return *reinterpret_cast<const unsigned*>(p); }
ITNET_DEV unsigned pair16(unsigned short lo, unsigned short hi) { return lo | ((unsigned)hi << 16); }
ITNET_HD constexpr int align16(int bytes) { return (bytes + 15) / 16 * 16; }

// [lo, hi): the sources of query row i (hi <= lo: none).
ITNET_DEV int band_lo(int i, int window) { return window >= 0 ? max(0, i - window) : 0; }
ITNET_DEV int band_hi(int i, int M, int causal, int window) {
    int hi = M;
    if (causal) hi = min(hi, i + 1);
    if (window >= 0) hi = min(hi, i + window + 1);
    return hi;
}

// rows [row0, row0 + rows) of a row-major global array with `width` 16-bit columns (width % 8 == 0)
// into shared rows of pitch `pitch`; rows outside [0, nvalid) become zeros. 16-byte vector copies.
ITNET_DEV void load_rows(unsigned short* dst, int pitch, const unsigned short* src, int width, int row0, int rows,
                         int nvalid, int tid, int nthreads) {
    const int vecs = width / 8;
    for (int e = tid; e < rows * vecs; e += nthreads) {
        const int r = e / vecs, c = (e - r * vecs) * 8, gr = row0 + r;
        uint4 val = {0u, 0u, 0u, 0u};
        if (gr >= 0 && gr < nvalid) val = *reinterpret_cast<const uint4*>(src + (long long)gr * width + c);
        *reinterpret_cast<uint4*>(dst + r * pitch + c) = val;
    }
}

// Activation codes as itnet_np.transform.fused._tiles.ACTIVATIONS: 0 relu, 1 gelu_tanh, 2 silu, 3 tanh.
// gelu_tanh(x) = x sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3);  tanh(x) = 2 sigmoid(2x) - 1.
ITNET_DEV float sigmoid(float z) { return __fdividef(1.0f, 1.0f + __expf(-z)); }
ITNET_DEV float act_value(int code, float x) {
    if (code == 0) return fmaxf(x, 0.0f);
    if (code == 1) return x * sigmoid(1.5957691216057308f * (x + 0.044715f * x * x * x));
    if (code == 2) return x * sigmoid(x);
    return 2.0f * sigmoid(2.0f * x) - 1.0f;
}
// act(x) and act'(x); relu'(0) = 0.
ITNET_DEV void act_both(int code, float x, float& f, float& df) {
    if (code == 0) { f = fmaxf(x, 0.0f); df = x > 0.0f ? 1.0f : 0.0f; return; }
    if (code == 1) {
        const float c = 0.7978845608028654f, a3 = 0.044715f;
        const float t = 2.0f * sigmoid(2.0f * c * (x + a3 * x * x * x)) - 1.0f;     // tanh(u)
        f = 0.5f * x * (1.0f + t);
        df = 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * c * (1.0f + 3.0f * a3 * x * x);
        return;
    }
    if (code == 2) { const float sg = sigmoid(x); f = x * sg; df = sg * (1.0f + x * (1.0f - sg)); return; }
    const float t = 2.0f * sigmoid(2.0f * x) - 1.0f;
    f = t;
    df = 1.0f - t * t;
}

// c ? a : b on two registers, as bit operations: a ternary on array elements can compile to a selected
// address, which sends the array to local memory.
#if defined(ITNET_HOST_EMULATION)
inline float pick(bool c, float a, float b) { return c ? a : b; }
#else
ITNET_DEV float pick(bool c, float a, float b) {
    const int m = -static_cast<int>(c);
    return __int_as_float((__float_as_int(a) & m) | (__float_as_int(b) & ~m));
}
#endif

// Sum NV values per lane over the lanes that differ in the bits of masks top, top/2, ... (NM masks),
// halving the values kept at each stage while more than one is left: at a stage with n values, the
// lane whose mask bit is set keeps the upper n/2 (and sends the lower ones to its partner), so a
// stage costs n/2 shuffles instead of n. Afterwards v[0 .. NF) (NF = max(1, NV >> NM)) hold the
// totals of the original indices offset + s; `writer` is false on all but one of the lanes that
// hold the same totals (stages with one value left sum plainly, leaving two lanes with the result).
template <int NV, int NM, int STAGE = 0>
ITNET_DEV void lane_reduce(float (&v)[NV], int lane, int top, int& offset, bool& writer) {
    if constexpr (STAGE == 0) {
        offset = 0;
        writer = true;
    }
    if constexpr (STAGE < NM) {
        constexpr int n = NV >> STAGE;                 // values left (a constant: the loops unroll)
        const int mask = top >> STAGE;
        const bool upper = (lane & mask) != 0;
        if constexpr (n >= 2) {
#pragma unroll
            for (int s = 0; s < n / 2; ++s) {
                const float lo = v[s], hi = v[s + n / 2];
                v[s] = pick(upper, hi, lo) + lane_xor(pick(upper, lo, hi), mask);
            }
            if (upper) offset += n / 2;
        } else {
            v[0] += lane_xor(v[0], mask);
            if (upper) writer = false;
        }
        lane_reduce<NV, NM, STAGE + 1>(v, lane, top, offset, writer);
    }
}

// ---------------------------------------------------------------------------------------------
// Shared-memory layouts (byte offsets); gpu/mlp_cupy.py mirrors them (forward_shared_bytes,
// backward_shared_bytes) and the tests compare the two through the host emulation.
struct FwdSmem { int W, W2, b2, a, y, b, v, w, total; };
template <int R, int H, int DV>
ITNET_HD constexpr FwdSmem fwd_smem(int K, int warps, int cols) {
    FwdSmem s{};
    int o = 0;
    s.W = o;  o += align16(K * (R + 8) * 2);
    s.W2 = o; o += align16(H * K * 4);
    s.b2 = o; o += align16(H * 4);
    s.a = o;  o += align16(16 * warps * (K + 8) * 2);
    s.y = o;  o += align16(cols * (R + 8) * 2);
    s.b = o;  o += align16(cols * (K + 8) * 2);
    s.v = o;  o += align16(H * cols * (DV + 8) * 2);
    s.w = o;  o += align16(H * cols * 4);
    s.total = o;
    return s;
}

struct BwdSmem { int W, W2, b2, b, v, y, db, x, a, dout, lse, dd, dW, dW2, db2, total; };
template <int R, int H, int DV>
ITNET_HD constexpr BwdSmem bwd_smem(int K, int warps, int rows) {
    BwdSmem s{};
    int o = 0;
    s.W = o;    o += align16(K * (R + 8) * 2);
    s.W2 = o;   o += align16(H * K * 4);
    s.b2 = o;   o += align16(H * 4);
    s.b = o;    o += align16(16 * warps * (K + 8) * 2);
    s.v = o;    o += align16(H * 16 * warps * (DV + 8) * 2);
    s.y = o;    o += align16(16 * warps * (R + 8) * 2);
    s.db = o;   o += align16(warps * 16 * K * 4);
    s.x = o;    o += align16(rows * (R + 8) * 2);
    s.a = o;    o += align16(rows * (K + 8) * 2);
    s.dout = o; o += align16(H * rows * (DV + 8) * 2);
    s.lse = o;  o += align16(H * rows * 4);
    s.dd = o;   o += align16(H * rows * 4);
    s.dW = o;   o += align16(K * R * 4);
    s.dW2 = o;  o += align16(H * K * 4);
    s.db2 = o;  o += align16(H * 4);
    s.total = o;
    return s;
}

// The constants every kernel loads first: W (K, R) into 16-bit rows of pitch R + 8, W2, b2.
template <int R, int H>
ITNET_DEV void load_weights(unsigned short* Ws, float* W2s, float* b2s, const unsigned short* W, const float* W2,
                            const float* b2, int K, int tid, int nthreads) {
    for (int e = tid; e < K * R; e += nthreads) Ws[(e / R) * (R + 8) + e % R] = W[e];
    for (int e = tid; e < H * K; e += nthreads) W2s[e] = W2[e];
    for (int e = tid; e < H; e += nthreads) b2s[e] = b2[e];
}

// ---------------------------------------------------------------------------------------------
// Forward. Warp w of the CTA owns query rows i_w .. i_w + 15; thread (g, q) holds the accumulator
// elements of rows i_w + g and i_w + g + 8 (C layout), so its softmax state is m[h][r], l[h][r] with
// r = 0 for row g and r = 1 for row g + 8.
template <typename T, int R, int H, int DV>
__global__ void __launch_bounds__(128, 1)
mlp_mma_forward(const T* __restrict__ a_, const T* __restrict__ b_, const T* __restrict__ x_, const T* __restrict__ y_,
                const T* __restrict__ W_, const float* __restrict__ W2, const float* __restrict__ b2,
                const T* __restrict__ v_, const float* __restrict__ w, T* __restrict__ out_,
                float* __restrict__ stats, int N, int M, int K, int hw, int act, int mode, int causal, int window, int cols) {
    using P = Prec<T>;
    constexpr int RC = R / 16, RP = R + 8, VP = DV + 8, ND = DV / 8;
    const int KP = K + 8;
    const unsigned short* a = reinterpret_cast<const unsigned short*>(a_);
    const unsigned short* b = reinterpret_cast<const unsigned short*>(b_);
    const unsigned short* x = reinterpret_cast<const unsigned short*>(x_);
    const unsigned short* y = reinterpret_cast<const unsigned short*>(y_);
    const unsigned short* W = reinterpret_cast<const unsigned short*>(W_);
    const unsigned short* v = reinterpret_cast<const unsigned short*>(v_);
    unsigned short* out = reinterpret_cast<unsigned short*>(out_);

    const int tid = threadIdx.x, nthreads = blockDim.x, warps = nthreads / 32;
    const int warp = tid / 32, lane = tid % 32, g = lane >> 2, q = lane & 3;
    const int bi = blockIdx.y, i_cta = blockIdx.x * 16 * warps, i_w = i_cta + 16 * warp;
    const FwdSmem L = fwd_smem<R, H, DV>(K, warps, cols);
    unsigned char* smem = ITNET_DYNAMIC_SMEM;
    unsigned short* Ws = reinterpret_cast<unsigned short*>(smem + L.W);
    float* W2s = reinterpret_cast<float*>(smem + L.W2);
    float* b2s = reinterpret_cast<float*>(smem + L.b2);
    unsigned short* as = reinterpret_cast<unsigned short*>(smem + L.a);
    unsigned short* ys = reinterpret_cast<unsigned short*>(smem + L.y);
    unsigned short* bs = reinterpret_cast<unsigned short*>(smem + L.b);
    unsigned short* vs = reinterpret_cast<unsigned short*>(smem + L.v);
    float* wsm = reinterpret_cast<float*>(smem + L.w);

    load_weights<R, H>(Ws, W2s, b2s, W, W2, b2, K, tid, nthreads);
    load_rows(as, KP, a + (long long)bi * N * K, K, i_cta, 16 * warps, N, tid, nthreads);

    // x rows i_w + g, i_w + g + 8 as A fragments of the 16-column chunks c of r (registers).
    const int r0 = i_w + g, r1 = r0 + 8;
    unsigned xf[RC > 0 ? RC : 1][4];
#pragma unroll
    for (int c = 0; c < RC; ++c) {
        const unsigned short* x0 = x + ((long long)bi * N + r0) * R + 16 * c + 2 * q;
        const unsigned short* x1 = x + ((long long)bi * N + r1) * R + 16 * c + 2 * q;
        xf[c][0] = r0 < N ? ld32(x0) : 0u;
        xf[c][1] = r1 < N ? ld32(x1) : 0u;
        xf[c][2] = r0 < N ? ld32(x0 + 8) : 0u;
        xf[c][3] = r1 < N ? ld32(x1 + 8) : 0u;
    }
    // this thread's two rows: sources [lo, hi); a row past N has none
    const int lo[2] = {band_lo(r0, window), band_lo(r1, window)};
    const int hi[2] = {r0 < N ? band_hi(r0, M, causal, window) : -1, r1 < N ? band_hi(r1, M, causal, window) : -1};

    float o[H][ND][4], m[H][2], l[H][2];
#pragma unroll
    for (int h = 0; h < H; ++h) {
#pragma unroll
        for (int r = 0; r < 2; ++r) { m[h][r] = neg_inf(); l[h][r] = 0.0f; }
#pragma unroll
        for (int nd = 0; nd < ND; ++nd)
#pragma unroll
            for (int e = 0; e < 4; ++e) o[h][nd][e] = 0.0f;
    }

    // the CTA's and the warp's source bands (lo, hi nondecreasing in i)
    const int jlo = band_lo(i_cta, window), jhi = band_hi(min(i_cta + 16 * warps, N) - 1, M, causal, window);
    const bool has_rows = i_w < N;
    const int wlo = band_lo(i_w, window), whi = has_rows ? band_hi(min(i_w + 15, N - 1), M, causal, window) : 0;

    for (int j0 = (jlo / 16) * 16; j0 < jhi; j0 += cols) {
        __syncthreads();                                   // the previous tile is consumed (and the constants are in)
        load_rows(ys, RP, y + (long long)bi * M * R, R, j0, cols, M, tid, nthreads);
        load_rows(bs, KP, b + (long long)bi * M * K, K, j0, cols, M, tid, nthreads);
        for (int h = 0; h < H; ++h)
            load_rows(vs + h * cols * VP, VP, v + ((long long)bi * H + h) * M * DV, DV, j0, cols, M, tid, nthreads);
        for (int e = tid; e < hw * cols; e += nthreads) {
            const int hh = e / cols, t = e - hh * cols, j = j0 + t;
            wsm[hh * cols + t] = j < M ? w[((long long)bi * hw + hh) * M + j] : 0.0f;
        }
        __syncthreads();
        if (!has_rows) continue;
        for (int cc = 0; cc < cols; cc += 16) {
            const int jc = j0 + cc;
            if (jc >= whi || jc + 16 <= wlo) continue;     // chunk outside the warp's band (warp-uniform)

            // pass over the hidden units: s^h = b2_h + sum_k W2_hk act(pre_k)
            float s[H][2][4];
#pragma unroll
            for (int h = 0; h < H; ++h)
#pragma unroll
                for (int nt = 0; nt < 2; ++nt)
#pragma unroll
                    for (int e = 0; e < 4; ++e) s[h][nt][e] = b2s[h];
#pragma unroll 1
            for (int k = 0; k < K; ++k) {
                float pre[2][4];
                const float a0 = P::elem(as[(16 * warp + g) * KP + k]), a1 = P::elem(as[(16 * warp + g + 8) * KP + k]);
#pragma unroll
                for (int nt = 0; nt < 2; ++nt) {
                    const int col = cc + 8 * nt + 2 * q;                       // tile-local source of c[0]
                    const float b0 = P::elem(bs[col * KP + k]), b1 = P::elem(bs[(col + 1) * KP + k]);
                    pre[nt][0] = a0 + b0; pre[nt][1] = a0 + b1; pre[nt][2] = a1 + b0; pre[nt][3] = a1 + b1;
                }
#pragma unroll
                for (int c = 0; c < RC; ++c) {
                    const unsigned w01 = ld32(Ws + k * RP + 16 * c + 2 * q), w89 = ld32(Ws + k * RP + 16 * c + 8 + 2 * q);
                    const unsigned A[4] = {P::mul2(xf[c][0], w01), P::mul2(xf[c][1], w01), P::mul2(xf[c][2], w89),
                                           P::mul2(xf[c][3], w89)};
#pragma unroll
                    for (int nt = 0; nt < 2; ++nt) {                           // B = y^T: B[r][j] = y[j][r]
                        const unsigned short* yrow = ys + (cc + 8 * nt + g) * RP + 16 * c + 2 * q;
                        P::mma(pre[nt], A, ld32(yrow), ld32(yrow + 8));
                    }
                }
#pragma unroll
                for (int nt = 0; nt < 2; ++nt)
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const float hv = act_value(act, pre[nt][e]);
#pragma unroll
                        for (int h = 0; h < H; ++h) s[h][nt][e] += W2s[h * K + k] * hv;
                    }
            }

            bool ok[2][4];
#pragma unroll
            for (int nt = 0; nt < 2; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int j = jc + 8 * nt + 2 * q + (e & 1), r = e >> 1;
                    ok[nt][e] = j < M && j >= lo[r] && j < hi[r];
                }
#pragma unroll
            for (int h = 0; h < H; ++h) {
                const float* wrow = wsm + (hw > 1 ? h : 0) * cols + cc + 2 * q;
                float p[2][4];
                if (mode == 0) {
                    float mx[2] = {neg_inf(), neg_inf()};
#pragma unroll
                    for (int nt = 0; nt < 2; ++nt)
#pragma unroll
                        for (int e = 0; e < 4; ++e)
                            if (ok[nt][e]) mx[e >> 1] = fmaxf(mx[e >> 1], s[h][nt][e]);
                    float shift[2], alpha[2];
#pragma unroll
                    for (int r = 0; r < 2; ++r) {
                        mx[r] = fmaxf(mx[r], lane_xor(mx[r], 1));
                        mx[r] = fmaxf(mx[r], lane_xor(mx[r], 2));
                        const float mnew = fmaxf(m[h][r], mx[r]);
                        shift[r] = mnew == neg_inf() ? 0.0f : mnew;
                        alpha[r] = __expf(m[h][r] - shift[r]);
                        m[h][r] = mnew;
                        l[h][r] *= alpha[r];
                    }
#pragma unroll
                    for (int nd = 0; nd < ND; ++nd)
#pragma unroll
                        for (int e = 0; e < 4; ++e) o[h][nd][e] *= alpha[e >> 1];
#pragma unroll
                    for (int nt = 0; nt < 2; ++nt)
#pragma unroll
                        for (int e = 0; e < 4; ++e)
                            p[nt][e] = ok[nt][e] ? wrow[8 * nt + (e & 1)] * __expf(s[h][nt][e] - shift[e >> 1]) : 0.0f;
                } else {
#pragma unroll
                    for (int nt = 0; nt < 2; ++nt)
#pragma unroll
                        for (int e = 0; e < 4; ++e) p[nt][e] = ok[nt][e] ? wrow[8 * nt + (e & 1)] * s[h][nt][e] : 0.0f;
                }
#pragma unroll
                for (int nt = 0; nt < 2; ++nt)
#pragma unroll
                    for (int e = 0; e < 4; ++e) l[h][e >> 1] += p[nt][e];
                // out^h += P^h V^h: P from the accumulator layout, B[j][c] = v[j][c] (pairs along j)
                const unsigned A[4] = {P::pack(p[0][0], p[0][1]), P::pack(p[0][2], p[0][3]), P::pack(p[1][0], p[1][1]),
                                       P::pack(p[1][2], p[1][3])};
                const unsigned short* vt = vs + h * cols * VP + (cc + 2 * q) * VP + g;
#pragma unroll
                for (int nd = 0; nd < ND; ++nd) {
                    const unsigned short* vc = vt + 8 * nd;
                    P::mma(o[h][nd], A, pair16(vc[0], vc[VP]), pair16(vc[8 * VP], vc[9 * VP]));
                }
            }
        }
    }

    // the quad's partial sums, then out = acc / l (or acc), stats
#pragma unroll
    for (int h = 0; h < H; ++h)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            l[h][r] += lane_xor(l[h][r], 1);
            l[h][r] += lane_xor(l[h][r], 2);
        }
#pragma unroll
    for (int h = 0; h < H; ++h)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const int row = r ? r1 : r0;
            if (row >= N) continue;
            float st, inv;
            if (mode == 0) {
                const bool good = l[h][r] != 0.0f;
                st = good ? m[h][r] + __logf(l[h][r]) : neg_inf();
                inv = good ? __fdividef(1.0f, l[h][r]) : 0.0f;
            } else {
                st = l[h][r];
                inv = mode == 2 ? 1.0f : (l[h][r] != 0.0f ? __fdividef(1.0f, l[h][r]) : 0.0f);
            }
            const long long base = ((long long)bi * H + h) * N + row;
            if (q == 0) stats[base] = st;
#pragma unroll
            for (int nd = 0; nd < ND; ++nd)
                *reinterpret_cast<unsigned*>(out + base * DV + 8 * nd + 2 * q) =
                    P::pack(o[h][nd][2 * r] * inv, o[h][nd][2 * r + 1] * inv);
        }
}

// ---------------------------------------------------------------------------------------------
// Backward (see the docstring). Warp w owns sources j_w .. j_w + 15; thread (g, q) holds the
// accumulator elements of sources j_w + g, j_w + g + 8 (rows) and queries i = ic + 8 nt + 2q (+1)
// (columns) of the current 16 x 16 block.
template <typename T, int R, int H, int DV>
__global__ void __launch_bounds__(128, 1)
mlp_mma_backward(const T* __restrict__ a_, const T* __restrict__ b_, const T* __restrict__ x_, const T* __restrict__ y_,
                 const T* __restrict__ W_, const float* __restrict__ W2, const float* __restrict__ b2,
                 const T* __restrict__ v_, const float* __restrict__ w, const T* __restrict__ dout_,
                 const float* __restrict__ stats, const float* __restrict__ dd,
                 float* __restrict__ da, float* __restrict__ dx, T* __restrict__ db_, T* __restrict__ dy_,
                 T* __restrict__ dv_, float* __restrict__ dw, float* __restrict__ wpart,
                 int N, int M, int K, int hw, int act, int mode, int causal, int window, int rows) {
    using P = Prec<T>;
    constexpr int RC = R / 16, RN = R / 8, RP = R + 8, VP = DV + 8, DC = DV / 16, ND = DV / 8;
    const int KP = K + 8;
    const unsigned short* a = reinterpret_cast<const unsigned short*>(a_);
    const unsigned short* b = reinterpret_cast<const unsigned short*>(b_);
    const unsigned short* x = reinterpret_cast<const unsigned short*>(x_);
    const unsigned short* y = reinterpret_cast<const unsigned short*>(y_);
    const unsigned short* W = reinterpret_cast<const unsigned short*>(W_);
    const unsigned short* v = reinterpret_cast<const unsigned short*>(v_);
    const unsigned short* dout = reinterpret_cast<const unsigned short*>(dout_);
    unsigned short* db = reinterpret_cast<unsigned short*>(db_);
    unsigned short* dy = reinterpret_cast<unsigned short*>(dy_);
    unsigned short* dv = reinterpret_cast<unsigned short*>(dv_);

    const int tid = threadIdx.x, nthreads = blockDim.x, warps = nthreads / 32;
    const int warp = tid / 32, lane = tid % 32, g = lane >> 2, q = lane & 3;
    const int bi = blockIdx.y, j_cta = blockIdx.x * 16 * warps, j_w = j_cta + 16 * warp;
    const BwdSmem L = bwd_smem<R, H, DV>(K, warps, rows);
    unsigned char* smem = ITNET_DYNAMIC_SMEM;
    unsigned short* Ws = reinterpret_cast<unsigned short*>(smem + L.W);
    float* W2s = reinterpret_cast<float*>(smem + L.W2);
    float* b2s = reinterpret_cast<float*>(smem + L.b2);
    unsigned short* bs = reinterpret_cast<unsigned short*>(smem + L.b);
    unsigned short* vs = reinterpret_cast<unsigned short*>(smem + L.v);
    unsigned short* ys = reinterpret_cast<unsigned short*>(smem + L.y);
    float* dbs = reinterpret_cast<float*>(smem + L.db) + warp * 16 * K;         // this warp's (16, K) db sums
    unsigned short* xs = reinterpret_cast<unsigned short*>(smem + L.x);
    unsigned short* as = reinterpret_cast<unsigned short*>(smem + L.a);
    unsigned short* dos = reinterpret_cast<unsigned short*>(smem + L.dout);
    float* lses = reinterpret_cast<float*>(smem + L.lse);
    float* dds = reinterpret_cast<float*>(smem + L.dd);
    float* dWs = reinterpret_cast<float*>(smem + L.dW);
    float* dW2s = reinterpret_cast<float*>(smem + L.dW2);
    float* db2s = reinterpret_cast<float*>(smem + L.db2);

    load_weights<R, H>(Ws, W2s, b2s, W, W2, b2, K, tid, nthreads);
    load_rows(bs, KP, b + (long long)bi * M * K, K, j_cta, 16 * warps, M, tid, nthreads);
    load_rows(ys, RP, y + (long long)bi * M * R, R, j_cta, 16 * warps, M, tid, nthreads);
    for (int h = 0; h < H; ++h)
        load_rows(vs + h * 16 * warps * VP, VP, v + ((long long)bi * H + h) * M * DV, DV, j_cta, 16 * warps, M, tid,
                  nthreads);
    for (int e = tid; e < warps * 16 * K; e += nthreads) reinterpret_cast<float*>(smem + L.db)[e] = 0.0f;
    for (int e = tid; e < K * R; e += nthreads) dWs[e] = 0.0f;
    for (int e = tid; e < H * K; e += nthreads) dW2s[e] = 0.0f;
    for (int e = tid; e < H; e += nthreads) db2s[e] = 0.0f;

    // this warp's y rows (shared memory, zeros past M): as A fragments of the 16-column chunks c of r
    // (rows j = g, g + 8), and as B operands of the products with dPre^k (B[j][r] = y[j][r]: rows
    // j = 2q, 2q + 1 (+8), column r = 8 nr + g). Read per use, not kept: registers are the limit here.
    const int s0 = j_w + g, s1 = s0 + 8;
    const unsigned short* yw = ys + 16 * warp * RP;
    auto y_a = [&](int c, unsigned (&A)[4]) {
        const unsigned short* y0 = yw + g * RP + 16 * c + 2 * q;
        A[0] = ld32(y0); A[1] = ld32(y0 + 8 * RP); A[2] = ld32(y0 + 8); A[3] = ld32(y0 + 8 * RP + 8);
    };
    // Hidden unit k's pre-activations for the warp's 16 source rows j and the 16 query columns
    // il0 .. il0 + 15 of the tile (C fragments, rows j, columns i): a_ik + b_jk + sum_r x_ir W_kr y_jr, the
    // bilinear term on the tensor cores as y (A, rows j) times (X diag W_k)^T (B: B[r][i] = x[i][r] W_kr).
    // Passes 1 and 2 below both recompute them (nothing per pair is stored).
    auto pre_activation = [&](int k, int il0, float (&pre)[2][4]) {
        const float b0 = P::elem(bs[(16 * warp + g) * KP + k]), b1 = P::elem(bs[(16 * warp + g + 8) * KP + k]);
#pragma unroll
        for (int nt = 0; nt < 2; ++nt) {
            const int col = il0 + 8 * nt + 2 * q;
            const float a0 = P::elem(as[col * KP + k]), a1 = P::elem(as[(col + 1) * KP + k]);
            pre[nt][0] = b0 + a0; pre[nt][1] = b0 + a1; pre[nt][2] = b1 + a0; pre[nt][3] = b1 + a1;
        }
#pragma unroll
        for (int c = 0; c < RC; ++c) {
            const unsigned w01 = ld32(Ws + k * RP + 16 * c + 2 * q), w89 = ld32(Ws + k * RP + 16 * c + 8 + 2 * q);
            unsigned A[4];
            y_a(c, A);
#pragma unroll
            for (int nt = 0; nt < 2; ++nt) {
                const unsigned short* xrow = xs + (il0 + 8 * nt + g) * RP + 16 * c + 2 * q;
                P::mma(pre[nt], A, P::mul2(ld32(xrow), w01), P::mul2(ld32(xrow + 8), w89));
            }
        }
    };
    auto y_b = [&](int nr, int half) {
        const unsigned short* yc = yw + (8 * half + 2 * q) * RP + 8 * nr + g;
        return pair16(yc[0], yc[RP]);
    };

    float dvacc[H][ND][4], dyacc[RN > 0 ? RN : 1][4], gwacc[H][2], db2acc[H];
#pragma unroll
    for (int h = 0; h < H; ++h) {
        db2acc[h] = 0.0f;
        gwacc[h][0] = gwacc[h][1] = 0.0f;
#pragma unroll
        for (int nd = 0; nd < ND; ++nd)
#pragma unroll
            for (int e = 0; e < 4; ++e) dvacc[h][nd][e] = 0.0f;
    }
#pragma unroll
    for (int nr = 0; nr < RN; ++nr)
#pragma unroll
        for (int e = 0; e < 4; ++e) dyacc[nr][e] = 0.0f;

    // the query rows that see any of the CTA's sources, and the warp's rows
    const int j_last = min(j_cta + 16 * warps, M) - 1;
    const int ilo = max(causal ? j_cta : 0, window >= 0 ? j_cta - window : 0);
    const int ihi = window >= 0 ? min(N, j_last + window + 1) : N;
    const bool has_cols = j_w < M;
    const int wj_last = min(j_w + 15, M - 1);

    for (int it0 = (ilo / 16) * 16; it0 < ihi; it0 += rows) {
        __syncthreads();                               // the previous tile is consumed (and the constants are in)
        load_rows(xs, RP, x + (long long)bi * N * R, R, it0, rows, N, tid, nthreads);
        load_rows(as, KP, a + (long long)bi * N * K, K, it0, rows, N, tid, nthreads);
        for (int h = 0; h < H; ++h)
            load_rows(dos + h * rows * VP, VP, dout + ((long long)bi * H + h) * N * DV, DV, it0, rows, N, tid, nthreads);
        for (int e = tid; e < H * rows; e += nthreads) {
            const int h = e / rows, t = e - h * rows, i = it0 + t;
            const bool in = i < N;
            lses[e] = in ? stats[((long long)bi * H + h) * N + i] : 0.0f;
            dds[e] = in ? dd[((long long)bi * H + h) * N + i] : 0.0f;
        }
        __syncthreads();
        if (!has_cols) continue;
        for (int il0 = 0; il0 < rows; il0 += 16) {
            const int ic = it0 + il0;
            if (ic >= N) break;
            // skip blocks outside the band: lo(ic) > last source or hi(ic + 15) <= first source
            if (band_lo(ic, window) > wj_last || band_hi(min(ic + 15, N - 1), M, causal, window) <= j_w) continue;

            bool ok[2][4];
#pragma unroll
            for (int nt = 0; nt < 2; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int i = ic + 8 * nt + 2 * q + (e & 1), j = (e >> 1) ? s1 : s0;
                    ok[nt][e] = i < N && j < M && j >= band_lo(i, window) && j < band_hi(i, M, causal, window);
                }

            // pass 1: s^h for the block (rows j, columns i)
            float gs[H][2][4];
#pragma unroll
            for (int h = 0; h < H; ++h)
#pragma unroll
                for (int nt = 0; nt < 2; ++nt)
#pragma unroll
                    for (int e = 0; e < 4; ++e) gs[h][nt][e] = b2s[h];
#pragma unroll 1
            for (int k = 0; k < K; ++k) {
                float pre[2][4];
                pre_activation(k, il0, pre);
#pragma unroll
                for (int nt = 0; nt < 2; ++nt)
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const float hv = act_value(act, pre[nt][e]);
#pragma unroll
                        for (int h = 0; h < H; ++h) gs[h][nt][e] += W2s[h * K + k] * hv;
                    }
            }

            // P, dP, g (stored over s), gw, db2, dv
#pragma unroll
            for (int h = 0; h < H; ++h) {
                float dP[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
                const unsigned short* vrow0 = vs + (h * 16 * warps + 16 * warp + g) * VP + 2 * q;
#pragma unroll
                for (int c = 0; c < DC; ++c) {                 // dP = V dOut^T: A = v rows j, B[c][i] = dout[i][c]
                    const unsigned short* vr = vrow0 + 16 * c;
                    const unsigned A[4] = {ld32(vr), ld32(vr + 8 * VP), ld32(vr + 8), ld32(vr + 8 * VP + 8)};
#pragma unroll
                    for (int nt = 0; nt < 2; ++nt) {
                        const unsigned short* dr = dos + (h * rows + il0 + 8 * nt + g) * VP + 16 * c + 2 * q;
                        P::mma(dP[nt], A, ld32(dr), ld32(dr + 8));
                    }
                }
                const float* wrow = w + ((long long)bi * hw + (hw > 1 ? h : 0)) * M;
                const float wj[2] = {s0 < M ? wrow[s0] : 0.0f, s1 < M ? wrow[s1] : 0.0f};
                float p[2][4];
#pragma unroll
                for (int nt = 0; nt < 2; ++nt)
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const int il = il0 + 8 * nt + 2 * q + (e & 1);
                        const float st = lses[h * rows + il], D = dds[h * rows + il], sv = gs[h][nt][e];
                        const float wv = wj[e >> 1], dpv = dP[nt][e];
                        float pv = 0.0f, gv = 0.0f, gwv = 0.0f;
                        if (mode == 0) {
                            if (ok[nt][e] && st != neg_inf()) {
                                const float ev = __expf(sv - st);
                                gwv = ev * (dpv - D); gv = wv * gwv; pv = wv * ev;
                            }
                        } else if (mode == 1) {
                            if (ok[nt][e] && st != 0.0f) {
                                const float rz = __fdividef(1.0f, st), gz = (dpv - D) * rz;
                                gwv = sv * gz; gv = wv * gz; pv = wv * sv * rz;
                            }
                        } else if (ok[nt][e]) {
                            gwv = sv * dpv; gv = wv * dpv; pv = wv * sv;
                        }
                        p[nt][e] = pv;
                        gs[h][nt][e] = gv;
                        gwacc[h][e >> 1] += gwv;
                        db2acc[h] += gv;
                    }
                // dv^h += P^h dOut^h: A = P (rows j, columns i), B[i][c] = dout[i][c] (pairs along i)
                const unsigned A[4] = {P::pack(p[0][0], p[0][1]), P::pack(p[0][2], p[0][3]), P::pack(p[1][0], p[1][1]),
                                       P::pack(p[1][2], p[1][3])};
                const unsigned short* dc = dos + (h * rows + il0 + 2 * q) * VP + g;
#pragma unroll
                for (int nd = 0; nd < ND; ++nd) {
                    const unsigned short* d0 = dc + 8 * nd;
                    P::mma(dvacc[h][nd], A, pair16(d0[0], d0[VP]), pair16(d0[8 * VP], d0[9 * VP]));
                }
            }

            // pass 2: per unit k, dpre = act'(pre) sum_h W2_hk g^h, then its products
            float dxacc[RN > 0 ? RN : 1][4];
#pragma unroll
            for (int nr = 0; nr < RN; ++nr)
#pragma unroll
                for (int e = 0; e < 4; ++e) dxacc[nr][e] = 0.0f;
            for (int k0 = 0; k0 < K; k0 += 8) {
                float dacc[4] = {0.0f, 0.0f, 0.0f, 0.0f}, dbacc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll 1
                for (int kk = 0; kk < 8; ++kk) {
                    const int k = k0 + kk;
                    float pre[2][4];
                    pre_activation(k, il0, pre);
                    float dpre[2][4], w2part[H];
#pragma unroll
                    for (int h = 0; h < H; ++h) w2part[h] = 0.0f;
#pragma unroll
                    for (int nt = 0; nt < 2; ++nt)
#pragma unroll
                        for (int e = 0; e < 4; ++e) {
                            float f, df, gsum = 0.0f;
                            act_both(act, pre[nt][e], f, df);
#pragma unroll
                            for (int h = 0; h < H; ++h) {
                                gsum += W2s[h * K + k] * gs[h][nt][e];
                                w2part[h] += gs[h][nt][e] * f;
                            }
                            dpre[nt][e] = df * gsum;
                        }
                    // dW2[:, k]: the warp's sum
                    int off;
                    bool wr;
                    lane_reduce<H, 5>(w2part, lane, 16, off, wr);
                    if (wr) atomicAdd(&dW2s[off * K + k], w2part[0]);

                    // U^k = dPre^kT X (rows j), and db through the ones column kk of E
                    const unsigned A[4] = {P::pack(dpre[0][0], dpre[0][1]), P::pack(dpre[0][2], dpre[0][3]),
                                           P::pack(dpre[1][0], dpre[1][1]), P::pack(dpre[1][2], dpre[1][3])};
                    const unsigned E = g == kk ? P::ONE2 : 0u;
                    P::mma(dbacc, A, E, E);
                    if constexpr (RN > 0) {
                        float wpart[RN > 0 ? 2 * RN : 1];
#pragma unroll
                        for (int nr = 0; nr < RN; ++nr) {
                            float U[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                            const unsigned short* xc = xs + (il0 + 2 * q) * RP + 8 * nr + g;   // B[i][r] = x[i][r]
                            P::mma(U, A, pair16(xc[0], xc[RP]), pair16(xc[8 * RP], xc[9 * RP]));
                            const int r = 8 * nr + 2 * q;
                            const float W0 = P::elem(Ws[k * RP + r]), W1 = P::elem(Ws[k * RP + r + 1]);
                            dyacc[nr][0] += W0 * U[0]; dyacc[nr][1] += W1 * U[1];
                            dyacc[nr][2] += W0 * U[2]; dyacc[nr][3] += W1 * U[3];
                            // y at the accumulator positions (rows g, g + 8; columns r, r + 1) from shared memory
                            const unsigned yg = ld32(yw + g * RP + r), yg8 = ld32(yw + (g + 8) * RP + r);
                            wpart[2 * nr] = P::lo(yg) * U[0] + P::lo(yg8) * U[2];
                            wpart[2 * nr + 1] = P::hi(yg) * U[1] + P::hi(yg8) * U[3];
                        }
                        // dW[k, :]: sum over the warp's rows j (lanes that differ in g: masks 16, 8, 4)
                        lane_reduce<(RN > 0 ? 2 * RN : 1), 3>(wpart, lane, 16, off, wr);
                        constexpr int NF = (2 * RN) >> 3 > 0 ? (2 * RN) >> 3 : 1;
#pragma unroll
                        for (int s = 0; s < NF; ++s) {
                            const int vi = off + s, r = 8 * (vi >> 1) + 2 * q + (vi & 1);
                            if (wr) atomicAdd(&dWs[k * R + r], wpart[s]);
                        }
                    }

                    // T^k = dPre^k Y (rows i): the transposed block by movmatrix, and da through E
                    const unsigned At[4] = {transpose8x8(A[0]), transpose8x8(A[2]), transpose8x8(A[1]),
                                            transpose8x8(A[3])};
                    P::mma(dacc, At, E, E);
#pragma unroll
                    for (int nr = 0; nr < RN; ++nr) {
                        float Tk[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                        P::mma(Tk, At, y_b(nr, 0), y_b(nr, 1));
                        const int r = 8 * nr + 2 * q;
                        const float W0 = P::elem(Ws[k * RP + r]), W1 = P::elem(Ws[k * RP + r + 1]);
                        dxacc[nr][0] += W0 * Tk[0]; dxacc[nr][1] += W1 * Tk[1];
                        dxacc[nr][2] += W0 * Tk[2]; dxacc[nr][3] += W1 * Tk[3];
                    }
                }
                // flush the 8 units k0 .. k0 + 7: column n of dacc / dbacc is unit k0 + n
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int kcol = k0 + 2 * q + (e & 1), rr = g + 8 * (e >> 1);
                    dbs[rr * K + kcol] += dbacc[e];                       // lane-private entries: no race
                    const int i = ic + rr;
                    if (i < N) atomicAdd(&da[((long long)bi * N + i) * K + kcol], dacc[e]);
                }
            }
#pragma unroll
            for (int nr = 0; nr < RN; ++nr)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int i = ic + g + 8 * (e >> 1), r = 8 * nr + 2 * q + (e & 1);
                    if (i < N) atomicAdd(&dx[((long long)bi * N + i) * R + r], dxacc[nr][e]);
                }
        }
    }

    // source-side results of this warp
#pragma unroll
    for (int h = 0; h < H; ++h) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            gwacc[h][r] += lane_xor(gwacc[h][r], 1);
            gwacc[h][r] += lane_xor(gwacc[h][r], 2);
        }
        int off;
        bool wr;
        float one[1] = {db2acc[h]};
        lane_reduce<1, 5>(one, lane, 16, off, wr);
        if (wr) atomicAdd(&db2s[h], one[0]);
    }
    __syncwarp();
    if (has_cols) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const int j = r ? s1 : s0;
            if (j >= M) continue;
            if (q == 0) {
                if (hw > 1) {
#pragma unroll
                    for (int h = 0; h < H; ++h) dw[((long long)bi * hw + h) * M + j] = gwacc[h][r];
                } else {
                    float tot = 0.0f;
#pragma unroll
                    for (int h = 0; h < H; ++h) tot += gwacc[h][r];
                    dw[(long long)bi * M + j] = tot;
                }
            }
#pragma unroll
            for (int h = 0; h < H; ++h)
#pragma unroll
                for (int nd = 0; nd < ND; ++nd)
                    *reinterpret_cast<unsigned*>(dv + (((long long)bi * H + h) * M + j) * DV + 8 * nd + 2 * q) =
                        P::pack(dvacc[h][nd][2 * r], dvacc[h][nd][2 * r + 1]);
#pragma unroll
            for (int nr = 0; nr < RN; ++nr)
                *reinterpret_cast<unsigned*>(dy + ((long long)bi * M + j) * R + 8 * nr + 2 * q) =
                    P::pack(dyacc[nr][2 * r], dyacc[nr][2 * r + 1]);
        }
        for (int e = lane; e < 16 * K; e += 32) {
            const int rr = e / K, k = e - rr * K, j = j_w + rr;
            if (j < M) db[((long long)bi * M + j) * K + k] = P::round(dbs[e]);
        }
    }
    __syncthreads();
    // this CTA's weight-gradient partial sums: [dW (K R) | dW2 (H K) | db2 (H)]
    float* part = wpart + ((long long)blockIdx.y * gridDim.x + blockIdx.x) * (K * R + H * K + H);
    for (int e = tid; e < K * R; e += nthreads) part[e] = dWs[e];
    for (int e = tid; e < H * K; e += nthreads) part[K * R + e] = dW2s[e];
    for (int e = tid; e < H; e += nthreads) part[K * R + H * K + e] = db2s[e];
}

// ---------------------------------------------------------------------------------------------
// Probe of the layouts (one warp): D = A B with A (16, 16) and B (16, 8) row-major 16-bit inputs read
// by the documented A / B layouts and written by the C layout; At = A^T through the accumulator ->
// A-operand conversion of (A B_e) (B_e the 16 x 8 halves of the identity) and movmatrix.
template <typename T>
__global__ void mlp_mma_probe(const T* A_, const T* B_, float* D, T* At_) {
    using P = Prec<T>;
    const unsigned short* A = reinterpret_cast<const unsigned short*>(A_);
    const unsigned short* B = reinterpret_cast<const unsigned short*>(B_);
    unsigned short* At = reinterpret_cast<unsigned short*>(At_);
    const int lane = threadIdx.x % 32, g = lane >> 2, q = lane & 3;
    const unsigned a[4] = {ld32(A + g * 16 + 2 * q), ld32(A + (g + 8) * 16 + 2 * q), ld32(A + g * 16 + 2 * q + 8),
                           ld32(A + (g + 8) * 16 + 2 * q + 8)};
    float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    P::mma(d, a, pair16(B[(2 * q) * 8 + g], B[(2 * q + 1) * 8 + g]), pair16(B[(2 * q + 8) * 8 + g], B[(2 * q + 9) * 8 + g]));
    for (int e = 0; e < 4; ++e) D[(g + 8 * (e >> 1)) * 8 + 2 * q + (e & 1)] = d[e];
    // A I as two 16 x 8 accumulators (columns 0-7, 8-15), back to an A operand, transposed
    float c[2][4];
    for (int nt = 0; nt < 2; ++nt) {
        for (int e = 0; e < 4; ++e) c[nt][e] = 0.0f;
        // identity columns 8 nt .. 8 nt + 7: B[k][n] = (k == 8 nt + n)
        const unsigned b0 = pair16(2 * q == 8 * nt + g ? P::round(1.0f) : 0, 2 * q + 1 == 8 * nt + g ? P::round(1.0f) : 0);
        const unsigned b1 = pair16(2 * q + 8 == 8 * nt + g ? P::round(1.0f) : 0, 2 * q + 9 == 8 * nt + g ? P::round(1.0f) : 0);
        P::mma(c[nt], a, b0, b1);
    }
    const unsigned back[4] = {P::pack(c[0][0], c[0][1]), P::pack(c[0][2], c[0][3]), P::pack(c[1][0], c[1][1]),
                              P::pack(c[1][2], c[1][3])};
    const unsigned t[4] = {transpose8x8(back[0]), transpose8x8(back[2]), transpose8x8(back[1]), transpose8x8(back[3])};
    const int rows[4] = {g, g + 8, g, g + 8}, cols[4] = {2 * q, 2 * q, 2 * q + 8, 2 * q + 8};
    for (int e = 0; e < 4; ++e) {
        At[rows[e] * 16 + cols[e]] = (unsigned short)(t[e] & 0xFFFFu);
        At[rows[e] * 16 + cols[e] + 1] = (unsigned short)(t[e] >> 16);
    }
}

// ---------------------------------------------------------------------------------------------
// The supported shapes (gpu/mlp_cupy.py: SUPPORTED_R, SUPPORTED_K, HEAD_WIDTHS), instantiated so
// that nvcc type-checks and compiles every body without a GPU (CI: nvcc -DITNET_INSTANTIATE).
#if defined(ITNET_INSTANTIATE) && !defined(ITNET_HOST_EMULATION)
#define ITNET_MLP_PAIR(T, R, H, DV)                                                                              \
    template __global__ void mlp_mma_forward<T, R, H, DV>(const T*, const T*, const T*, const T*, const T*,       \
        const float*, const float*, const T*, const float*, T*, float*, int, int, int, int, int, int, int, int, int); \
    template __global__ void mlp_mma_backward<T, R, H, DV>(const T*, const T*, const T*, const T*, const T*,      \
        const float*, const float*, const T*, const float*, const T*, const float*, const float*, float*, float*, \
        T*, T*, T*, float*, float*, int, int, int, int, int, int, int, int, int);
#define ITNET_MLP_HEADS(T, R) \
    ITNET_MLP_PAIR(T, R, 1, 64) ITNET_MLP_PAIR(T, R, 2, 32) ITNET_MLP_PAIR(T, R, 4, 16)
#define ITNET_MLP_ALL(T) ITNET_MLP_HEADS(T, 16) ITNET_MLP_HEADS(T, 32) ITNET_MLP_HEADS(T, 64)
ITNET_MLP_ALL(__half)
ITNET_MLP_ALL(__nv_bfloat16)
template __global__ void mlp_mma_probe<__half>(const __half*, const __half*, float*, __half*);
template __global__ void mlp_mma_probe<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*, float*, __nv_bfloat16*);
#endif

// ---------------------------------------------------------------------------------------------
// The host-emulation driver (tests/gpu/test_cupy_mlp.py builds it with g++ for one shape at a time):
//   prog sizes K WARPS COLS ROWS         -> "forward_bytes backward_bytes"
//   prog probe DIR                       A.bin (16x16), B.bin (16x8) -> D.bin (f32), At.bin
//   prog forward DIR B N M K HW ACT MODE CAUSAL WINDOW WARPS COLS
//        a b x y W v (16-bit), W2 b2 w (f32)  -> out.bin (16-bit), lse.bin (f32)
//   prog backward DIR B N M K HW ACT MODE CAUSAL WINDOW WARPS ROWS
//        the forward's inputs and dout (16-bit), stats dd (f32) -> da dx dw wpart (f32), db dy dv (16-bit)
// Outputs start poisoned (NaN), except da and dx, which the kernel accumulates into (zeros).
#if defined(ITNET_HOST_EMULATION) && defined(ITNET_EMULATION_MAIN)
#include <string>
#ifndef EMU_T
#define EMU_T __half
#endif
#ifndef EMU_R
#define EMU_R 16
#endif
#ifndef EMU_H
#define EMU_H 2
#endif
#ifndef EMU_DV
#define EMU_DV 32
#endif

namespace emu_main {
template <typename E>
std::vector<E> read(const std::string& dir, const char* name, size_t count) {
    std::vector<E> v(count);
    FILE* f = fopen((dir + "/" + name).c_str(), "rb");
    if (!f) { fprintf(stderr, "cannot open %s/%s\n", dir.c_str(), name); exit(2); }
    const size_t got = count ? fread(v.data(), sizeof(E), count, f) : 0;
    fclose(f);
    if (got != count) { fprintf(stderr, "%s: expected %zu elements, read %zu\n", name, count, got); exit(2); }
    return v;
}
template <typename E>
void write(const std::string& dir, const char* name, const std::vector<E>& v) {
    FILE* f = fopen((dir + "/" + name).c_str(), "wb");
    if (!f) { fprintf(stderr, "cannot write %s/%s\n", dir.c_str(), name); exit(2); }
    if (!v.empty()) fwrite(v.data(), sizeof(E), v.size(), f);
    fclose(f);
}
}  // namespace emu_main

int main(int argc, char** argv) {
    using namespace emu_main;
    using T = EMU_T;
    constexpr int R = EMU_R, H = EMU_H, DV = EMU_DV;
    if (argc < 2) { fprintf(stderr, "usage: see gpu/mlp_mma.cu\n"); return 2; }
    const std::string cmd = argv[1];
    if (cmd == "sizes" && argc == 6) {
        const int K = atoi(argv[2]), warps = atoi(argv[3]), cols = atoi(argv[4]), rows = atoi(argv[5]);
        printf("%d %d\n", fwd_smem<R, H, DV>(K, warps, cols).total, bwd_smem<R, H, DV>(K, warps, rows).total);
        return 0;
    }
    if (cmd == "probe" && argc == 3) {
        const std::string dir = argv[2];
        auto A = read<unsigned short>(dir, "A.bin", 256);
        auto B = read<unsigned short>(dir, "B.bin", 128);
        std::vector<float> D(128, NAN);
        std::vector<unsigned short> At(256, 0xFFFF);
        emu::Dim grid, block;
        block.x = 32;
        emu::launch(grid, block, 0, [&] {
            mlp_mma_probe<T>(reinterpret_cast<const T*>(A.data()), reinterpret_cast<const T*>(B.data()), D.data(),
                             reinterpret_cast<T*>(At.data()));
        });
        write(dir, "D.bin", D);
        write(dir, "At.bin", At);
        return 0;
    }
    if ((cmd != "forward" && cmd != "backward") || argc != 14) { fprintf(stderr, "bad arguments\n"); return 2; }
    const std::string dir = argv[2];
    const int B = atoi(argv[3]), N = atoi(argv[4]), M = atoi(argv[5]), K = atoi(argv[6]), hw = atoi(argv[7]);
    const int act = atoi(argv[8]), mode = atoi(argv[9]), causal = atoi(argv[10]), window = atoi(argv[11]);
    const int warps = atoi(argv[12]), tile = atoi(argv[13]);
    auto a = read<unsigned short>(dir, "a.bin", (size_t)B * N * K);
    auto b = read<unsigned short>(dir, "b.bin", (size_t)B * M * K);
    auto x = read<unsigned short>(dir, "x.bin", (size_t)B * N * R);
    auto y = read<unsigned short>(dir, "y.bin", (size_t)B * M * R);
    auto W = read<unsigned short>(dir, "W.bin", (size_t)K * R);
    auto W2 = read<float>(dir, "W2.bin", (size_t)H * K);
    auto b2 = read<float>(dir, "b2.bin", (size_t)H);
    auto v = read<unsigned short>(dir, "v.bin", (size_t)B * H * M * DV);
    auto w = read<float>(dir, "w.bin", (size_t)B * hw * M);
    const T* ap = reinterpret_cast<const T*>(a.data());
    const T* bp = reinterpret_cast<const T*>(b.data());
    const T* xp = reinterpret_cast<const T*>(x.data());
    const T* yp = reinterpret_cast<const T*>(y.data());
    const T* Wp = reinterpret_cast<const T*>(W.data());
    const T* vp = reinterpret_cast<const T*>(v.data());
    emu::Dim block;
    block.x = 32 * warps;
    if (cmd == "forward") {
        std::vector<unsigned short> out((size_t)B * H * N * DV, 0xFFFF);
        std::vector<float> lse((size_t)B * H * N, NAN);
        emu::Dim grid;
        grid.x = (N + 16 * warps - 1) / (16 * warps);
        grid.y = B;
        emu::launch(grid, block, fwd_smem<R, H, DV>(K, warps, tile).total, [&] {
            mlp_mma_forward<T, R, H, DV>(ap, bp, xp, yp, Wp, W2.data(), b2.data(), vp, w.data(),
                                         reinterpret_cast<T*>(out.data()), lse.data(), N, M, K, hw, act, mode, causal,
                                         window, tile);
        });
        write(dir, "out.bin", out);
        write(dir, "lse.bin", lse);
        return 0;
    }
    auto dout = read<unsigned short>(dir, "dout.bin", (size_t)B * H * N * DV);
    auto stats = read<float>(dir, "stats.bin", (size_t)B * H * N);
    auto dd = read<float>(dir, "dd.bin", (size_t)B * H * N);
    emu::Dim grid;
    grid.x = (M + 16 * warps - 1) / (16 * warps);
    grid.y = B;
    std::vector<float> da((size_t)B * N * K, 0.0f), dx((size_t)B * N * R, 0.0f), dw((size_t)B * hw * M, NAN);
    std::vector<float> wpart((size_t)grid.x * grid.y * (K * R + H * K + H), NAN);
    std::vector<unsigned short> db((size_t)B * M * K, 0xFFFF), dy((size_t)B * M * R, 0xFFFF);
    std::vector<unsigned short> dv((size_t)B * H * M * DV, 0xFFFF);
    emu::launch(grid, block, bwd_smem<R, H, DV>(K, warps, tile).total, [&] {
        mlp_mma_backward<T, R, H, DV>(ap, bp, xp, yp, Wp, W2.data(), b2.data(), vp, w.data(),
                                      reinterpret_cast<const T*>(dout.data()), stats.data(), dd.data(), da.data(),
                                      dx.data(), reinterpret_cast<T*>(db.data()), reinterpret_cast<T*>(dy.data()),
                                      reinterpret_cast<T*>(dv.data()), dw.data(), wpart.data(), N, M, K, hw, act, mode,
                                      causal, window, tile);
    });
    write(dir, "da.bin", da);
    write(dir, "dx.bin", dx);
    write(dir, "db.bin", db);
    write(dir, "dy.bin", dy);
    write(dir, "dv.bin", dv);
    write(dir, "dw.bin", dw);
    write(dir, "wpart.bin", wpart);
    return 0;
}
#endif

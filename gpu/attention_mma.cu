// attention_mma.cu: FlashAttention-2 on tensor cores (mma.sync), forward and backward, for float16 and
// bfloat16 inputs with float32 accumulation. Loaded by gpu/attention_cupy.py through _rawmodule (NVRTC,
// one instantiation per name expression); compiled standalone by nvcc with -DITNET_INSTANTIATE in CI.
//
//   attention_forward<T, D, BR, BC, STAGES>    out, lse from q, k, v              grid (ceil(N / BR), B H)
//   attention_backward_delta<T, D>             D_i = dout_i . out_i               one warp per row
//   attention_backward<T, D, BR, BC, STAGES>   dk, dv; dq added to a float32 buffer  grid (ceil(M / BC), B H)
//   attention_dq_cast<T>                       the float32 dq buffer -> T
//
// T is an element tag (f16 or bf16; every array holds 16-bit patterns), D the head dim (64, 128), BR x BC
// the (query rows x key rows) tile, STAGES the shared-memory buffers of the streamed operand (1 or 2).
// Arrays are row-major and contiguous: q, out, dout (B H, N, D), k, v (B H, M, D), lse, D (B H, N).
//
// ---- The math (per batch item and head) --------------------------------------------------------------
// x_ij = scale q_i . k_j on the support S(i) = {j < M : j <= i if causal, |i - j| <= window if window >= 0}
// (causal is top-left aligned, also for N != M: the package's index band, support.SupportPlan.index_band).
//   out_i = sum_{j in S(i)} e^{x_ij} v_j / l_i,  l_i = sum_{j in S(i)} e^{x_ij},  lse_i = ln l_i
// and an empty S(i) gives out_i = 0, lse_i = -inf.
// Forward, online softmax in base 2 (e^x = 2^(x log2 e); log2 e is folded into the scale, so one FMUL per
// logit): over the key tiles t of the row's band, with y = x log2 e,
//   m_t = max(m_{t-1}, max_j y_j),  alpha = 2^(m_{t-1} - m_t),  p_j = 2^(y_j - m_t),
//   l_t = alpha l_{t-1} + sum_j p_j,  o_t = alpha o_{t-1} + sum_j p_j v_j,
// then out = o / l and lse = (m + log2 l) ln 2. Until a row has seen a key, m = -inf; it then subtracts 0
// instead (p = 2^-inf = 0, alpha = 0 on the first tile that sees it), so no inf - inf appears.
// Backward (FlashAttention-2, nothing N x M stored): P_ij = 2^(y_ij - lse_i log2 e) recomputed from q, k
// and the saved lse; with D_i = dout_i . out_i (its own kernel),
//   dv_j += P_ij dout_i,  dP_ij = dout_i . v_j,  dS_ij = P_ij (dP_ij - D_i),
//   dk_j += scale dS_ij q_i,  dq_i += scale dS_ij k_j.
// One CTA owns a key tile: dk, dv stay in registers over all its query tiles; dq rows are shared by every
// key tile, so each CTA adds its part to a float32 buffer with atomicAdd (then cast to T).
//
// ---- The support: tiles skipped, elements masked ---------------------------------------------------
// key_range(i) = [lo_i, hi_i) is S(i); both ends grow with i. A forward CTA visits only the key tiles
// meeting [lo_{i0}, hi_{i_last}); a backward CTA only the query tiles meeting the keys' ranges
// (query_range). A tile wholly inside every row's range (tile_inside, uniform over the CTA) skips the
// per-element test; the others set y = -inf (forward) or P = 0 (backward, by a select: 2^(y - lse) is inf
// on an empty row) outside the range. Rows >= N and keys >= M are loaded as zeros (cp.async with source
// size 0), masked, and never stored.
//
// ---- Warps and mma.sync fragments ----------------------------------------------------------------------
// Forward: BR / 16 warps, warp w owns query rows 16 w .. 16 w + 15 of the tile: S = Q K^T (16 x BC),
// then O += P V (16 x D), O and the row statistics in registers. Backward: BC / 16 warps (BR = BC), warp w
// owns keys 16 w .. 16 w + 15: S^T = K Q^T and dP^T = V dO^T (16 x BR), dV += P^T dO, dK += dS^T Q
// (16 x D); then dS^T goes to shared memory and warp w computes dQ rows 16 w .. 16 w + 15 of the query
// tile = dS K over the BC keys, in passes of 32 columns (atomics). For D = 128 the BR query columns go in
// two slices, so that S^T and dP^T of one slice (16 registers each) sit beside dK and dV (64 each).
// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32 (PTX ISA, "Matrix Fragments for
// mma.m16n8k16 with floating point type"), lane = 4 groupID + tig (threadID_in_group), two 16-bit
// elements per 32-bit register with the lower column (or row, for B) in the low half:
//   A (16 x 16, row-major): a0 a1 = A[groupID][2 tig, +1],  a2 a3 = A[groupID + 8][2 tig, +1],
//                           a4 a5 = A[groupID][2 tig + 8, +9], a6 a7 = A[groupID + 8][2 tig + 8, +9]
//   B (16 x 8, "col"):      b0 b1 = B[2 tig, +1][groupID],    b2 b3 = B[2 tig + 8, +9][groupID]
//   C, D (16 x 8, f32):     c0 c1 = C[groupID][2 tig, +1],    c2 c3 = C[groupID + 8][2 tig, +1]
// So the C fragments of two adjacent 8-column blocks 2 kk, 2 kk + 1 of S (or S^T, dS^T) are, rounded to
// 16 bits and packed in pairs, exactly the A fragment of the 16-wide k-step kk of the next product
// (P V, P^T dO, dS^T Q): {c0c1 of 2kk, c2c3 of 2kk, c0c1 of 2kk+1, c2c3 of 2kk+1}; P never leaves the
// registers. Like FlashAttention-2, P and dS are rounded to T for the tensor-core products while the
// row sums l and the factors of dS use the float32 values.
//
// ---- ldmatrix -------------------------------------------------------------------------------------------
// ldmatrix.sync.aligned.m8n8.x4{.trans}.shared.b16 (PTX ISA, "Warp-level matrix load instruction:
// ldmatrix"): lanes 8 i .. 8 i + 7 give the addresses of the 8 rows (16 bytes each) of matrix i; register i
// of lane l receives row l / 4, elements 2 (l % 4) and 2 (l % 4) + 1 of matrix i, and with .trans elements
// (2 (l % 4), l / 4) and (2 (l % 4) + 1, l / 4), i.e. of the transposed matrix. With the operands stored
// row-major in shared memory (rows = the tile's points, 8 elements per 16-byte chunk), two lane patterns
// serve every product (struct Lanes):
//   rowwise: lane l reads row 16 blk + (l & 7) + 8 ((l >> 3) & 1), chunk 2 step + (l >> 4). Without
//     .trans this is the A fragment of rows 16 blk .. (Q in the forward, K and V in the backward, k-step
//     = step); with .trans the B fragments of two 8-column blocks 2 step, 2 step + 1 when the stored rows
//     are the k index (V in O += P V; dO in dV += P^T dO; Q in dK += dS^T Q; K in dQ += dS K).
//   colwise: lane l reads row 16 blk + (l & 7) + 8 (l >> 4), chunk 2 step + ((l >> 3) & 1), without
//     .trans: the B fragments of the two 8-column blocks 2 blk, 2 blk + 1 when the stored rows are the n
//     index (K in S = Q K^T; Q in S^T = K Q^T; dO in dP^T = V dO^T), k-step = step.
//   dQ's A operand (dS, 16 queries x 16 keys) is read .trans from dS^T (rows = keys): lane l reads key row
//     16 kk + (l & 7) + 8 (l >> 4), chunk 2 w + ((l >> 3) & 1).
//
// ---- Shared memory and swizzle -----------------------------------------------------------------------
// Forward:  [Q tile BR x D | STAGES x (K tile BC x D | V tile BC x D)]; a warp's Q rows stage its output
//           rows at the end (16-byte global stores).
// Backward: [K BC x D | V BC x D | STAGES x (Q BR x D | dO BR x D | lse BR float | D BR float) | dS^T BC x BR];
//           the warps' K, V rows stage dK, dV at the end.
// (attention_cupy.forward_shared_bytes / backward_shared_bytes; the CPU emulator checks them.) Every
// 16-bit tile is stored with its 16-byte chunk c of row r at chunk c ^ (r & 7) of that row (swz): an
// ldmatrix phase reads one 16-byte chunk from each of 8 consecutive rows at one logical chunk, which the
// XOR spreads over the 8 distinct 16-byte bank groups of a 128-byte line, so the loads are free of bank
// conflicts for D = 64 (rows of 128 bytes) and D = 128 (256 bytes) alike; so are the cp.async writes (8
// lanes fill one row's 8 chunks) and the 4-byte fragment stores (lanes of one groupID hit one chunk, the 8
// groupIDs 8 different chunks).
//
// ---- The cp.async pipeline ---------------------------------------------------------------------------
// cp.async.cg.shared.global (16 bytes, L2 only) for tiles and cp.async.ca (4 bytes) for lse, D; one
// cp.async.commit_group per tile; cp.async.wait_group N waits for all but the newest N groups (PTX ISA,
// "Data Movement and Conversion Instructions: cp.async, cp.async.commit_group, cp.async.wait_group").
// Forward, STAGES = 2: groups {Q}, {K, V tile 0}; wait_group 1 (Q landed), Q fragments to registers; for
// each tile t: issue tile t + 1 into the other buffer, commit, wait_group 1 (tile t landed), barrier,
// compute, barrier (every warp done with buffer t & 1 before iteration t + 1 refills it). The last tile
// waits with wait_group 0. STAGES = 1 loads the next tile after the second barrier instead. The backward
// streams (Q, dO, lse, D) the same way beside the resident K, V; its second barrier sits after dS^T is
// written (dQ reads every warp's rows), and a last barrier before the K, V rows stage dK, dV.
//
// ---- No headers -------------------------------------------------------------------------------------
// The file includes nothing: conversions are cvt.rn.{f16,bf16}(x2).f32 / cvt.f32.f16 (PTX ISA "cvt",
// round to nearest even), so NVRTC needs no include path (CuPy's bundled cuda_fp16.h / a toolkit's
// cuda_bf16.h have failed under NVRTC on some CuPy / CUDA combinations). Under ITNET_HOST_EMULATION the
// inline assembly is replaced by the CPU emulator of tests/gpu/test_cupy_attention.py.

// Element types of the kernel templates (tags: every array holds 16-bit patterns, `elem`).
struct f16 {};    // IEEE binary16: 1 sign, 5 exponent, 10 mantissa bits
struct bf16 {};   // bfloat16: 1 sign, 8 exponent, 7 mantissa bits (the top half of a float32)
typedef unsigned short elem;

namespace flash {

#define FLASH_DEVICE __device__ __forceinline__

FLASH_DEVICE float log2e() { return 1.4426950408889634f; }   // exp(x) = 2^(x log2 e)
FLASH_DEVICE float ln2() { return 0.6931471805599453f; }     // ln(y) = log2(y) ln 2
FLASH_DEVICE float neg_inf() { return __int_as_float(0xff800000); }

// Plain structs rather than CUDA's vector types, so that the file needs no header under NVRTC.
struct Pair { float lo, hi; };                      // two unpacked elements
struct Range { int lo, hi; };                       // [lo, hi)
struct alignas(16) Chunk { unsigned w[4]; };        // 16 bytes (8 elements), one 128-bit load / store

// Conversions of element type T: pack(lo, hi) rounds two floats to nearest-even and packs them in one
// 32-bit register, lo in the low half (the lower column, as the mma fragments hold pairs); unpack is
// its inverse (exact); from_float rounds one float.
template <typename T> struct Elem;

// ---------------------------------------------------------------------------- PTX wrappers
#ifdef ITNET_HOST_EMULATION     // the CPU test harness supplies these, written from the PTX ISA's text
#include ITNET_HOST_EMULATION
#else
template <> struct Elem<f16> {
    // cvt.rn.f16x2.f32 d, a, b puts a in the upper half of d and b in the lower one
    static FLASH_DEVICE unsigned pack(float lo, float hi) {
        unsigned r;
        asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
        return r;
    }
    static FLASH_DEVICE Pair unpack(unsigned u) {
        Pair p;
        asm("cvt.f32.f16 %0, %1;" : "=f"(p.lo) : "h"(static_cast<elem>(u & 0xFFFFu)));
        asm("cvt.f32.f16 %0, %1;" : "=f"(p.hi) : "h"(static_cast<elem>(u >> 16)));
        return p;
    }
    static FLASH_DEVICE elem from_float(float x) {
        elem r;
        asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(x));
        return r;
    }
};

template <> struct Elem<bf16> {
    static FLASH_DEVICE unsigned pack(float lo, float hi) {
        unsigned r;
        asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
        return r;
    }
    static FLASH_DEVICE Pair unpack(unsigned u) {             // a bfloat16 is the top half of a float32
        return Pair{__uint_as_float(u << 16), __uint_as_float(u & 0xFFFF0000u)};
    }
    static FLASH_DEVICE elem from_float(float x) {
        elem r;
        asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(x));
        return r;
    }
};

// 2^x by the special-function unit (PTX ex2.approx.ftz.f32: ex2(-inf) = +0, relative error ~2^-22).
FLASH_DEVICE float ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// D = A B + D for one 16x8x16 tile (fragments: see the layout section of the header comment).
template <typename T> FLASH_DEVICE void mma(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1);

template <> FLASH_DEVICE void mma<f16>(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <> FLASH_DEVICE void mma<bf16>(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Four 8x8 matrices of 16-bit elements from shared memory; lanes 8i..8i+7 give the row addresses of
// matrix i, register r[i] receives this lane's piece of matrix i.
FLASH_DEVICE void ldmatrix_x4(unsigned (&r)[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr) : "memory");
}

FLASH_DEVICE void ldmatrix_x4_trans(unsigned (&r)[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr) : "memory");
}

// Asynchronous global -> shared copies (L2 only for 16 bytes, .ca for 4); src_bytes = 0 writes zeros.
FLASH_DEVICE void cp_async16(unsigned dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;"
                 :: "r"(dst), "l"(__cvta_generic_to_global(src)), "r"(valid ? 16 : 0) : "memory");
}

FLASH_DEVICE void cp_async4(unsigned dst, const void* src, bool valid) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;"
                 :: "r"(dst), "l"(__cvta_generic_to_global(src)), "r"(valid ? 4 : 0) : "memory");
}

FLASH_DEVICE void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }

template <int N> FLASH_DEVICE void cp_async_wait() { asm volatile("cp.async.wait_group %0;" :: "n"(N) : "memory"); }
#endif  // ITNET_HOST_EMULATION

// One step of a double-buffered tile loop: with two stages and a tile after t, start copying tile t + 1
// into the other stage and wait only for tile t's group; otherwise wait for every group. Then a
// barrier, so that tile t is in shared memory for the whole block.
template <int STAGES, class Load>
FLASH_DEVICE void next_tile_ready(int t, int t_hi, int stage, Load& load) {
    if (STAGES == 2 && t + 1 < t_hi) {
        load(t + 1, stage ^ 1);
        cp_async_commit();
        cp_async_wait<1>();
    } else {
        cp_async_wait<0>();
    }
    __syncthreads();
}

// ---------------------------------------------------------------------------- shared-memory tiles
// Byte offset of 16-byte chunk `chunk` of row `row` in a tile whose rows hold CH chunks: the chunk
// index XOR the row's low three bits, so 8 consecutive rows read at one logical chunk land in 8
// different 16-byte bank groups.
template <int CH> FLASH_DEVICE unsigned swz(int row, int chunk) {
    static_assert(CH % 8 == 0, "the swizzle needs rows of at least 8 chunks (128 bytes)");
    return static_cast<unsigned>(row * CH + (chunk ^ (row & 7))) * 16u;
}

// The per-lane part of one ldmatrix.x4 access pattern over a swizzled tile of CH chunks per row: the
// lane reads row 16 blk + lrow and chunk 2 step + lbit (lrow in 0..15, lbit in {0, 1} fixed per lane;
// blk, step compile-time after unrolling). Since 16 blk is a multiple of 8, (row & 7) = (lrow & 7) and
// the XOR touches only the low three bits of the chunk, so the address is one of four lane offsets
// plus a constant: the compiler keeps four registers per pattern instead of one per (blk, step).
template <int CH> struct Lanes {
    unsigned off[4];
    FLASH_DEVICE Lanes(int lrow, int lbit) {
        #pragma unroll
        for (int c = 0; c < 4; ++c) off[c] = static_cast<unsigned>(lrow * CH + ((2 * c + lbit) ^ (lrow & 7))) * 16u;
    }
    FLASH_DEVICE unsigned at(unsigned tile, int blk, int step) const {
        return tile + off[step & 3] + (step >> 2) * 128u + static_cast<unsigned>(blk * 16 * CH * 16);
    }
};

// Rows row0 .. row0 + ROWS - 1 of a (rows, D) row-major global matrix into a swizzled tile by cp.async
// (16 bytes per copy, consecutive threads on consecutive chunks); rows >= nrows are filled with zeros.
template <int ROWS, int D, int NT>
FLASH_DEVICE void load_rows(unsigned tile, const elem* base, int row0, int nrows, int tid) {
    constexpr int CH = D / 8;
    static_assert((ROWS * CH) % NT == 0, "whole copies per thread");
    #pragma unroll
    for (int it = 0; it < ROWS * CH / NT; ++it) {
        const int c = tid + it * NT, r = c / CH, ch = c % CH, row = row0 + r;
        const bool ok = row < nrows;
        cp_async16(tile + swz<CH>(r, ch), base + static_cast<size_t>(ok ? row : 0) * D + ch * 8, ok);
    }
}

// A warp's 16 x D float accumulator (C fragments; its rows groupID times mul0, rows groupID + 8 times
// mul1), rounded to T, into rows row0 .. row0 + 15 of a swizzled tile (generic pointer `tile`), then those
// rows to global rows grow0 + r < nrows with 16-byte stores.
template <typename T, int D>
FLASH_DEVICE void store_rows(const float (&acc)[D / 8][4], float mul0, float mul1, unsigned char* tile,
                             int row0, elem* dst, int grow0, int nrows, int lane) {
    constexpr int CH = D / 8;
    const int g = lane >> 2, t4 = lane & 3;
    #pragma unroll
    for (int nb = 0; nb < D / 8; ++nb) {
        *reinterpret_cast<unsigned*>(tile + swz<CH>(row0 + g, nb) + 4 * t4) =
            Elem<T>::pack(acc[nb][0] * mul0, acc[nb][1] * mul0);
        *reinterpret_cast<unsigned*>(tile + swz<CH>(row0 + g + 8, nb) + 4 * t4) =
            Elem<T>::pack(acc[nb][2] * mul1, acc[nb][3] * mul1);
    }
    __syncwarp();
    #pragma unroll
    for (int it = 0; it < 16 * CH / 32; ++it) {
        const int c = lane + 32 * it, r = c / CH, ch = c % CH;
        if (grow0 + r < nrows)
            *reinterpret_cast<Chunk*>(dst + static_cast<size_t>(grow0 + r) * D + ch * 8) =
                *reinterpret_cast<const Chunk*>(tile + swz<CH>(row0 + r, ch));
    }
}

// The support of query i as a key range [lo, hi): j < m, j <= i when causal, |i - j| <= window when
// window >= 0 (an empty range when lo >= hi).
FLASH_DEVICE Range key_range(int i, int m, int causal, int window) {
    int lo = 0, hi = m;
    if (causal) hi = min(hi, i + 1);
    if (window >= 0) {
        lo = max(lo, i - window);
        hi = min(hi, i + window + 1);
    }
    return Range{lo, hi};
}

// The same support seen from key j: the queries i in [lo, hi) with j in the key range of i (i < n).
FLASH_DEVICE Range query_range(int j, int n, int m, int causal, int window) {
    int lo = causal ? j : 0, hi = j < m ? n : 0;
    if (window >= 0) {
        lo = max(lo, j - window);
        hi = min(hi, j + window + 1);
    }
    return Range{lo, hi};
}

// Whether every (i, j) of rows i0 .. i0 + R - 1 (all < n) and keys j0 .. j0 + C - 1 is in the support
// (no per-element mask needed for that tile).
FLASH_DEVICE bool tile_inside(int i0, int R, int n, int j0, int C, int m, int causal, int window) {
    return i0 + R <= n && j0 + C <= m && (!causal || j0 + C - 1 <= i0)
           && (window < 0 || (i0 + R - 1 - j0 <= window && j0 + C - 1 - i0 <= window));
}

}  // namespace flash

// ================================================================================ forward
template <typename T, int D, int BR, int BC, int STAGES>
__global__ void __launch_bounds__(BR * 2)
attention_forward(const elem* __restrict__ q, const elem* __restrict__ k, const elem* __restrict__ v,
                  elem* __restrict__ out, float* __restrict__ lse, int n, int m, float scale_log2,
                  int causal, int window) {
    using namespace flash;
    static_assert(BR % 16 == 0 && BC % 16 == 0 && D % 16 == 0 && (STAGES == 1 || STAGES == 2), "tile shape");
    constexpr int NT = BR * 2, CH = D / 8;                  // BR / 16 warps of 32 threads
    constexpr unsigned TILE_Q = BR * D * 2, TILE_KV = BC * D * 2;
    extern __shared__ __align__(128) unsigned char smem[];
    const unsigned sQ = static_cast<unsigned>(__cvta_generic_to_shared(smem));

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
    // causal: the last query tiles see the most keys; launching them first shortens the tail
    const int i0 = (causal ? gridDim.x - 1 - blockIdx.x : blockIdx.x) * BR;
    const size_t bh = blockIdx.y;
    const elem* qh = q + bh * n * D;
    const elem* kh = k + bh * m * D;
    const elem* vh = v + bh * m * D;
    elem* oh = out + bh * n * D;
    float* lh = lse + bh * n;

    // the key tiles meeting the supports of rows i0 .. i_last (both ends of a range grow with i); the
    // others are skipped
    const int jlo = key_range(i0, m, causal, window).lo;
    const int jhi = key_range(min(i0 + BR, n) - 1, m, causal, window).hi;
    const int t_lo = jlo / BC, t_hi = jhi > jlo ? (jhi + BC - 1) / BC : t_lo;
    if (t_lo >= t_hi) {                                    // every row here has an empty support
        for (int c = tid; c < BR * CH; c += NT)
            if (i0 + c / CH < n)
                *reinterpret_cast<Chunk*>(oh + static_cast<size_t>(i0 + c / CH) * D + (c % CH) * 8) =
                    Chunk{};
        for (int r = tid; r < BR; r += NT)
            if (i0 + r < n) lh[i0 + r] = neg_inf();
        return;
    }

    auto kv_tile = [&](int stage) { return sQ + TILE_Q + stage * 2 * TILE_KV; };
    auto load_kv = [&](int t, int stage) {
        load_rows<BC, D, NT>(kv_tile(stage), kh, t * BC, m, tid);
        load_rows<BC, D, NT>(kv_tile(stage) + TILE_KV, vh, t * BC, m, tid);
    };
    load_rows<BR, D, NT>(sQ, qh, i0, n, tid);
    cp_async_commit();
    load_kv(t_lo, 0);
    cp_async_commit();
    cp_async_wait<1>();                                    // the Q tile has landed
    __syncthreads();

    // this warp's 16 query rows as A fragments, one per 16-wide step along d
    const Lanes<CH> rowwise((lane & 7) + ((lane >> 3) & 1) * 8, lane >> 4);   // A, and B from .trans
    const Lanes<CH> colwise((lane & 7) + (lane >> 4) * 8, (lane >> 3) & 1);   // B without .trans
    unsigned qf[D / 16][4];
    #pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) ldmatrix_x4(qf[ks], rowwise.at(sQ, warp, ks));

    float o[D / 8][4];
    #pragma unroll
    for (int nb = 0; nb < D / 8; ++nb) o[nb][0] = o[nb][1] = o[nb][2] = o[nb][3] = 0.f;
    float mrow[2] = {neg_inf(), neg_inf()}, lrow[2] = {0.f, 0.f};   // running max (log2 units), sum
    const int row0 = i0 + warp * 16 + g, row1 = row0 + 8;

    for (int t = t_lo; t < t_hi; ++t) {
        const int stage = STAGES == 2 ? (t - t_lo) & 1 : 0;
        next_tile_ready<STAGES>(t, t_hi, stage, load_kv);     // prefetch the next tile, wait for this one
        const unsigned sK = kv_tile(stage), sV = sK + TILE_KV;

        // S = Q K^T (16 x BC per warp)
        float s[BC / 8][4];
        #pragma unroll
        for (int nb = 0; nb < BC / 8; ++nb) s[nb][0] = s[nb][1] = s[nb][2] = s[nb][3] = 0.f;
        #pragma unroll
        for (int ks = 0; ks < D / 16; ++ks) {
            #pragma unroll
            for (int np = 0; np < BC / 16; ++np) {
                unsigned b[4];
                ldmatrix_x4(b, colwise.at(sK, np, ks));
                mma<T>(s[2 * np], qf[ks], b[0], b[1]);
                mma<T>(s[2 * np + 1], qf[ks], b[2], b[3]);
            }
        }

        // logits in log2 units, masked outside the support; row maxima over the quad
        const int j0 = t * BC;
        #pragma unroll
        for (int nb = 0; nb < BC / 8; ++nb)
            #pragma unroll
            for (int e = 0; e < 4; ++e) s[nb][e] *= scale_log2;
        if (!tile_inside(i0, BR, 1 << 30, j0, BC, m, causal, window)) {   // uniform over the CTA
            // element (nb, e) is key j0 + 2 t4 + nb * 8 + (e & 1) of row row0 (e < 2) or row1
            const Range band[2] = {key_range(row0, m, causal, window), key_range(row1, m, causal, window)};
            #pragma unroll
            for (int nb = 0; nb < BC / 8; ++nb)
                #pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int j = j0 + 2 * t4 + nb * 8 + (e & 1);
                    if (j < band[e >> 1].lo || j >= band[e >> 1].hi) s[nb][e] = neg_inf();
                }
        }
        float mx[2] = {neg_inf(), neg_inf()};
        #pragma unroll
        for (int nb = 0; nb < BC / 8; ++nb)
            #pragma unroll
            for (int e = 0; e < 4; ++e) mx[e >> 1] = fmaxf(mx[e >> 1], s[nb][e]);
        float alpha[2], base[2];
        #pragma unroll
        for (int r = 0; r < 2; ++r) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
            const float mnew = fmaxf(mrow[r], mx[r]);
            base[r] = mnew == neg_inf() ? 0.f : mnew;      // a row with nothing seen yet keeps p = 0
            alpha[r] = ex2(mrow[r] - base[r]);              // 0 on the first tile that sees the row
            mrow[r] = mnew;
        }

        // P = 2^(S - m), its row sums (this thread's columns only; the quad is summed at the end)
        float psum[2] = {0.f, 0.f};
        #pragma unroll
        for (int nb = 0; nb < BC / 8; ++nb) {
            #pragma unroll
            for (int e = 0; e < 4; ++e) {
                s[nb][e] = ex2(s[nb][e] - base[e >> 1]);
                psum[e >> 1] += s[nb][e];
            }
        }
        #pragma unroll
        for (int r = 0; r < 2; ++r) lrow[r] = lrow[r] * alpha[r] + psum[r];
        #pragma unroll
        for (int nb = 0; nb < D / 8; ++nb) {
            o[nb][0] *= alpha[0]; o[nb][1] *= alpha[0];
            o[nb][2] *= alpha[1]; o[nb][3] *= alpha[1];
        }

        // O += P V: P's C fragments are the A fragments of this product (k = keys)
        #pragma unroll
        for (int kk = 0; kk < BC / 16; ++kk) {
            const unsigned a[4] = {Elem<T>::pack(s[2 * kk][0], s[2 * kk][1]), Elem<T>::pack(s[2 * kk][2], s[2 * kk][3]),
                                   Elem<T>::pack(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                   Elem<T>::pack(s[2 * kk + 1][2], s[2 * kk + 1][3])};
            #pragma unroll
            for (int dp = 0; dp < D / 16; ++dp) {
                unsigned b[4];
                ldmatrix_x4_trans(b, rowwise.at(sV, kk, dp));
                mma<T>(o[2 * dp], a, b[0], b[1]);
                mma<T>(o[2 * dp + 1], a, b[2], b[3]);
            }
        }
        __syncthreads();                                   // every warp is done with this stage
        if (STAGES == 1 && t + 1 < t_hi) {
            load_kv(t + 1, 0);
            cp_async_commit();
        }
    }

    // O / l and the log-sum-exp ln(sum_j e^{x_ij}) = (m + log2 l) ln 2; empty rows: 0 and -inf
    float inv[2];
    #pragma unroll
    for (int r = 0; r < 2; ++r) {
        lrow[r] += __shfl_xor_sync(0xffffffffu, lrow[r], 1);
        lrow[r] += __shfl_xor_sync(0xffffffffu, lrow[r], 2);
        inv[r] = lrow[r] > 0.f ? 1.f / lrow[r] : 0.f;
    }
    if (t4 == 0) {
        if (row0 < n) lh[row0] = lrow[0] > 0.f ? (mrow[0] + log2f(lrow[0])) * ln2() : neg_inf();
        if (row1 < n) lh[row1] = lrow[1] > 0.f ? (mrow[1] + log2f(lrow[1])) * ln2() : neg_inf();
    }
    // the warp's own Q rows in shared memory stage its output rows (16-byte global stores)
    store_rows<T, D>(o, inv[0], inv[1], smem, warp * 16, oh, i0 + warp * 16, n, lane);
}

// ================================================================================ backward
// D_i = sum_c dO_ic O_ic (float32), one warp per row.
template <typename T, int D>
__global__ void __launch_bounds__(128)
attention_backward_delta(const elem* __restrict__ out, const elem* __restrict__ dout, float* __restrict__ delta,
                         long long rows) {
    using namespace flash;
    const long long row = static_cast<long long>(blockIdx.x) * 4 + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;                               // uniform per warp
    const unsigned* o2 = reinterpret_cast<const unsigned*>(out + row * D);
    const unsigned* d2 = reinterpret_cast<const unsigned*>(dout + row * D);
    float acc = 0.f;
    #pragma unroll
    for (int c = lane; c < D / 2; c += 32) {
        const Pair a = Elem<T>::unpack(o2[c]), b = Elem<T>::unpack(d2[c]);
        acc += a.lo * b.lo + a.hi * b.hi;
    }
    #pragma unroll
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if (lane == 0) delta[row] = acc;
}

// One CTA per (key tile of BC rows, batch x head); warp w owns keys 16w .. 16w + 15 of the tile for
// dK, dV, and query rows 16w .. 16w + 15 of each query tile for dQ (BR = BC = 16 x warps).
template <typename T, int D, int BR, int BC, int STAGES>
__global__ void __launch_bounds__(BC * 2)
attention_backward(const elem* __restrict__ q, const elem* __restrict__ k, const elem* __restrict__ v,
                   const elem* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ delta,
                   float* __restrict__ dq_acc, elem* __restrict__ dk, elem* __restrict__ dv, int n, int m, float scale,
                   float scale_log2, int causal, int window) {
    using namespace flash;
    static_assert(BR == BC && BC % 16 == 0 && D % 32 == 0 && (STAGES == 1 || STAGES == 2), "tile shape");
    constexpr int NT = BC * 2, CH = D / 8, CHS = BR / 8, QSPLIT = D > 64 ? 2 : 1;
    constexpr unsigned TILE_KV = BC * D * 2, TILE_Q = BR * D * 2, VEC = BR * 4;
    constexpr unsigned STAGE = 2 * TILE_Q + 2 * VEC;        // Q, dO, lse, delta of one query tile
    extern __shared__ __align__(128) unsigned char smem[];
    const unsigned sK = static_cast<unsigned>(__cvta_generic_to_shared(smem)), sV = sK + TILE_KV;
    const unsigned sdS = sK + 2 * TILE_KV + STAGES * STAGE;

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
    const int j0 = blockIdx.x * BC;
    const size_t bh = blockIdx.y;
    const elem* qh = q + bh * n * D;
    const elem* doh = dout + bh * n * D;
    const float* lh = lse + bh * n;
    const float* dh = delta + bh * n;
    float* dqh = dq_acc + bh * n * D;

    // the query tiles meeting the supports of keys j0 .. j_last; the others are skipped
    const int ilo = query_range(j0, n, m, causal, window).lo;
    const int ihi = query_range(min(j0 + BC, m) - 1, n, m, causal, window).hi;
    const int t_lo = ilo / BR, t_hi = ihi > ilo ? (ihi + BR - 1) / BR : t_lo;

    auto stage_base = [&](int stage) { return sK + 2 * TILE_KV + stage * STAGE; };
    auto load_q = [&](int t, int stage) {
        const unsigned base = stage_base(stage);
        load_rows<BR, D, NT>(base, qh, t * BR, n, tid);
        load_rows<BR, D, NT>(base + TILE_Q, doh, t * BR, n, tid);
        for (int r = tid; r < BR; r += NT) {
            const bool ok = t * BR + r < n;
            cp_async4(base + 2 * TILE_Q + 4 * r, lh + (ok ? t * BR + r : 0), ok);
            cp_async4(base + 2 * TILE_Q + VEC + 4 * r, dh + (ok ? t * BR + r : 0), ok);
        }
    };

    float dka[D / 8][4], dva[D / 8][4];
    #pragma unroll
    for (int nb = 0; nb < D / 8; ++nb)
        #pragma unroll
        for (int e = 0; e < 4; ++e) dka[nb][e] = dva[nb][e] = 0.f;

    if (t_lo < t_hi) {
        load_rows<BC, D, NT>(sK, k + bh * m * D, j0, m, tid);
        load_rows<BC, D, NT>(sV, v + bh * m * D, j0, m, tid);
        load_q(t_lo, 0);
        cp_async_commit();
    }
    const int krow = warp * 16;                            // this warp's keys in the tile
    const Lanes<CH> rowwise((lane & 7) + ((lane >> 3) & 1) * 8, lane >> 4);   // A, and B from .trans
    const Lanes<CH> colwise((lane & 7) + (lane >> 4) * 8, (lane >> 3) & 1);   // B without .trans
    // acc = X_w Y^T (16 keys x the QB query columns of slice h, C fragments): the warp's 16 rows of X
    // (K or V, rows = keys) against the slice's rows of Y (Q or dO, rows = queries): S^T = K_w Q^T and
    // dP^T = V_w dO^T.
    // a = the A fragment of k-step kk (16 queries) of a 16 x QB block held as C fragments (P^T, dS^T):
    // the C fragments of 8-column blocks 2 kk, 2 kk + 1, rounded to T and packed in pairs.
    auto pack_a = [&](auto& c, int kk, unsigned (&a)[4]) {
        a[0] = Elem<T>::pack(c[2 * kk][0], c[2 * kk][1]);
        a[1] = Elem<T>::pack(c[2 * kk][2], c[2 * kk][3]);
        a[2] = Elem<T>::pack(c[2 * kk + 1][0], c[2 * kk + 1][1]);
        a[3] = Elem<T>::pack(c[2 * kk + 1][2], c[2 * kk + 1][3]);
    };
    // acc (16 keys x D) += a Y[16 queries of chunk row block qb] (Y = dO for dV, Q for dK; .trans loads).
    auto add_times_queries = [&](float (&acc)[D / 8][4], const unsigned (&a)[4], unsigned sY, int qb) {
        #pragma unroll
        for (int dp = 0; dp < D / 16; ++dp) {
            unsigned b[4];
            ldmatrix_x4_trans(b, rowwise.at(sY, qb, dp));
            mma<T>(acc[2 * dp], a, b[0], b[1]);
            mma<T>(acc[2 * dp + 1], a, b[2], b[3]);
        }
    };
    auto keys_times_queries = [&](auto& acc, unsigned sX, unsigned sY, int h) {
        constexpr int KB = BR / QSPLIT / 16;
        #pragma unroll
        for (int nb = 0; nb < 2 * KB; ++nb) acc[nb][0] = acc[nb][1] = acc[nb][2] = acc[nb][3] = 0.f;
        #pragma unroll
        for (int ks = 0; ks < D / 16; ++ks) {
            unsigned a[4];
            ldmatrix_x4(a, rowwise.at(sX, warp, ks));
            #pragma unroll
            for (int np = 0; np < KB; ++np) {
                unsigned b[4];
                ldmatrix_x4(b, colwise.at(sY, h * KB + np, ks));
                mma<T>(acc[2 * np], a, b[0], b[1]);
                mma<T>(acc[2 * np + 1], a, b[2], b[3]);
            }
        }
    };
    for (int t = t_lo; t < t_hi; ++t) {
        const int stage = STAGES == 2 ? (t - t_lo) & 1 : 0;
        next_tile_ready<STAGES>(t, t_hi, stage, load_q);
        const unsigned sQ = stage_base(stage), sdO = sQ + TILE_Q;
        const float* Ls = reinterpret_cast<const float*>(smem + (sQ - sK) + 2 * TILE_Q);
        const float* Ds = Ls + BR;
        const int i0 = t * BR;

        const Range band[2] = {query_range(j0 + krow + g, n, m, causal, window),
                              query_range(j0 + krow + g + 8, n, m, causal, window)};
        const bool inside = tile_inside(i0, BR, n, j0, BC, m, causal, window);   // uniform over the CTA
        unsigned char* ds = smem + (sdS - sK);
        // The query columns in QSPLIT slices of QB: live per slice are S^T and dP^T (QB / 2 registers
        // each) beside the dK, dV accumulators (D / 2 each); K_w and V_w fragments reload per slice.
        #pragma unroll
        for (int h = 0; h < QSPLIT; ++h) {
            constexpr int QB = BR / QSPLIT, NB = QB / 8, KB = QB / 16;
            // S^T = K_w Q^T (16 keys x QB queries per warp)
            float st[NB][4];
            keys_times_queries(st, sK, sQ, h);
            // P^T = exp(x - lse) recomputed; element (nb, e): key krow + g (+ 8 for e >= 2), query column
            // c = h QB + nb 8 + 2 t4 + (e & 1); 0 outside the support (a select: p may be inf there)
            #pragma unroll
            for (int nb = 0; nb < NB; ++nb)
                #pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int c = h * QB + nb * 8 + 2 * t4 + (e & 1);
                    const float p = ex2(st[nb][e] * scale_log2 - Ls[c] * log2e());
                    st[nb][e] = inside || (i0 + c >= band[e >> 1].lo && i0 + c < band[e >> 1].hi) ? p : 0.f;
                }
            // dV_w += P^T dO (k = queries)
            #pragma unroll
            for (int kk = 0; kk < KB; ++kk) {
                unsigned a[4];
                pack_a(st, kk, a);
                add_times_queries(dva, a, sdO, h * KB + kk);
            }
            // dP^T = V_w dO^T, then dS^T = P^T (dP^T - D_i)
            float dpt[NB][4];
            keys_times_queries(dpt, sV, sdO, h);
            #pragma unroll
            for (int nb = 0; nb < NB; ++nb)
                #pragma unroll
                for (int e = 0; e < 4; ++e) st[nb][e] *= dpt[nb][e] - Ds[h * QB + nb * 8 + 2 * t4 + (e & 1)];
            // dK_w += dS^T Q (k = queries); dS^T to shared memory (rows = keys, columns = queries) for dQ
            #pragma unroll
            for (int kk = 0; kk < KB; ++kk) {
                unsigned a[4];
                pack_a(st, kk, a);
                add_times_queries(dka, a, sQ, h * KB + kk);
                const int chunk = 2 * (h * KB + kk);        // 16 query columns = chunks chunk, chunk + 1
                *reinterpret_cast<unsigned*>(ds + swz<CHS>(krow + g, chunk) + 4 * t4) = a[0];
                *reinterpret_cast<unsigned*>(ds + swz<CHS>(krow + g + 8, chunk) + 4 * t4) = a[1];
                *reinterpret_cast<unsigned*>(ds + swz<CHS>(krow + g, chunk + 1) + 4 * t4) = a[2];
                *reinterpret_cast<unsigned*>(ds + swz<CHS>(krow + g + 8, chunk + 1) + 4 * t4) = a[3];
            }
        }
        __syncthreads();                                   // dS^T of every warp is in shared memory

        // dQ rows 16w .. 16w + 15 of this query tile += scale dS K (k = the BC keys), D / 32 passes of
        // 32 columns, added to the float32 buffer by atomics (other key tiles add to the same rows)
        unsigned adq[BC / 16][4];
        #pragma unroll
        for (int kk = 0; kk < BC / 16; ++kk)
            ldmatrix_x4_trans(adq[kk], sdS + swz<CHS>(kk * 16 + (lane & 7) + (lane >> 4) * 8, 2 * warp + ((lane >> 3) & 1)));
        const int qi0 = i0 + warp * 16 + g, qi1 = qi0 + 8;
        #pragma unroll
        for (int c0 = 0; c0 < D; c0 += 32) {
            float acc[4][4];
            #pragma unroll
            for (int nb = 0; nb < 4; ++nb) acc[nb][0] = acc[nb][1] = acc[nb][2] = acc[nb][3] = 0.f;
            #pragma unroll
            for (int kk = 0; kk < BC / 16; ++kk) {
                #pragma unroll
                for (int dp = 0; dp < 2; ++dp) {
                    unsigned b[4];
                    ldmatrix_x4_trans(b, rowwise.at(sK, kk, c0 / 16 + dp));
                    mma<T>(acc[2 * dp], adq[kk], b[0], b[1]);
                    mma<T>(acc[2 * dp + 1], adq[kk], b[2], b[3]);
                }
            }
            #pragma unroll
            for (int nb = 0; nb < 4; ++nb) {
                const int col = c0 + nb * 8 + 2 * t4;
                if (qi0 < n) {
                    atomicAdd(dqh + static_cast<size_t>(qi0) * D + col, acc[nb][0] * scale);
                    atomicAdd(dqh + static_cast<size_t>(qi0) * D + col + 1, acc[nb][1] * scale);
                }
                if (qi1 < n) {
                    atomicAdd(dqh + static_cast<size_t>(qi1) * D + col, acc[nb][2] * scale);
                    atomicAdd(dqh + static_cast<size_t>(qi1) * D + col + 1, acc[nb][3] * scale);
                }
            }
        }
        // No barrier here: after the one above, the warps read only sK and dS^T; the next writes of dS^T
        // come after the next iteration's first barrier, and this stage's Q, dO, lse, D are not read again.
        if (STAGES == 1 && t + 1 < t_hi) {
            load_q(t + 1, 0);
            cp_async_commit();
        }
    }
    __syncthreads();                                       // all dQ reads of sK done: K, V rows now stage dK, dV

    // dK = scale dS^T Q and dV through the warp's own K / V rows in shared memory (16-byte stores)
    store_rows<T, D>(dka, scale, scale, smem, krow, dk + bh * m * D, j0 + krow, m, lane);
    store_rows<T, D>(dva, 1.f, 1.f, smem + TILE_KV, krow, dv + bh * m * D, j0 + krow, m, lane);
}

// float32 dQ accumulator -> T
template <typename T>
__global__ void attention_dq_cast(const float* __restrict__ src, elem* __restrict__ dst, long long size) {
    for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < size;
         i += static_cast<long long>(gridDim.x) * blockDim.x)
        dst[i] = flash::Elem<T>::from_float(src[i]);
}

#ifdef ITNET_INSTANTIATE
// Every (element type, head dim, tile) the wrapper (attention_cupy.py: FORWARD_TILES, BACKWARD_TILES) may
// launch, so that a standalone nvcc compile type-checks and assembles each template body.
#define ITNET_FLASH(T, D)                                                                                         \
    template __global__ void attention_forward<T, D, 128, 64, 2>(const elem*, const elem*, const elem*, elem*,   \
                                                                 float*, int, int, float, int, int);             \
    template __global__ void attention_forward<T, D, 64, 64, 2>(const elem*, const elem*, const elem*, elem*,    \
                                                                float*, int, int, float, int, int);              \
    template __global__ void attention_forward<T, D, 64, 64, 1>(const elem*, const elem*, const elem*, elem*,    \
                                                                float*, int, int, float, int, int);              \
    template __global__ void attention_backward<T, D, 64, 64, 2>(const elem*, const elem*, const elem*,          \
                                                                 const elem*, const float*, const float*,        \
                                                                 float*, elem*, elem*, int, int, float, float,   \
                                                                 int, int);                                      \
    template __global__ void attention_backward<T, D, 64, 64, 1>(const elem*, const elem*, const elem*,          \
                                                                 const elem*, const float*, const float*,        \
                                                                 float*, elem*, elem*, int, int, float, float,   \
                                                                 int, int);                                      \
    template __global__ void attention_backward_delta<T, D>(const elem*, const elem*, float*, long long);
ITNET_FLASH(f16, 64)
ITNET_FLASH(f16, 128)
ITNET_FLASH(bf16, 64)
ITNET_FLASH(bf16, 128)
template __global__ void attention_dq_cast<f16>(const float*, elem*, long long);
template __global__ void attention_dq_cast<bf16>(const float*, elem*, long long);
#undef ITNET_FLASH
#endif  // ITNET_INSTANTIATE

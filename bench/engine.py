"""Engine benchmark: per-op overhead, an MLP training step and a transformer-block training step.

Runs itnet-np and, when installed, HIPS autograd and torch (CPU) in the same process, on the same
data, and reports time ratios (itnet / peer; < 1 means itnet is faster).

    python bench/engine.py [--quick] [--json bench/results/engine.json]

Measurements
- chain: 1000 tiny ops (alternating * and +) on a float64 vector of shape (8,), forward and
  backward, reported in microseconds per op;
- mlp: one SGD training step (forward, cross-entropy, backward, update) of 784-256-10, batch 128;
- block: one Adam-free SGD step of a pre-LayerNorm transformer block (d=128, 4 heads, MLP 4d with
  tanh-GELU), N=128 tokens, batch 16, float32; itnet-np runs it twice, with its fused CPU kernels
  (nn/functional/_cpu_kernels.py) and with the plain NumPy passes they replace;
- pieces (--pieces): each fused kernel of the block step against its NumPy reference and torch's
  op, on the block's shapes.
"""
import argparse
import math
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import log, machine, markdown_table, timeit

from itnet_np.io import write_json

CHAIN = 1000


def chain_loss(x):
    """The chain measurement's computation: CHAIN tiny ops (alternating * and +) on x, then the sum.
    Every framework runs this same code on its own array type."""
    y = x
    for _ in range(CHAIN // 2):
        y = y * 1.0001
        y = y + 0.001
    return y.sum()


def eager_chain(x):
    """(fwd, bwd) of the chain for a define-by-run tensor ``x`` (itnet-np, torch): fwd records the
    graph, bwd is ``loss.backward()``."""
    state = {}

    def fwd():
        state["loss"] = chain_loss(x)

    def bwd():
        state["loss"].backward()

    return fwd, bwd


# ----------------------------------------------------------------------------- itnet-np
def itnet_chain():
    import itnet_np as itn
    return eager_chain(itn.tensor(np.linspace(0.1, 0.8, 8), requires_grad=True))


def itnet_mlp(data):
    import itnet_np as itn
    F = itn.nn.functional
    X, y, params = data
    W = [itn.tensor(p, requires_grad=True) for p in params]

    def step():
        h = F.relu(X @ W[0].T + W[1])
        logits = h @ W[2].T + W[3]
        loss = F.cross_entropy(logits, y)
        for p in W:
            p.grad = None
        loss.backward()
        for p in W:
            p.data -= 0.01 * p.grad.data
        return loss

    return step


def itnet_block(data, kernels=True):
    import itnet_np as itn
    from itnet_np.nn.functional import _fast
    F = itn.nn.functional
    X, params = data
    P = {k: itn.tensor(v, requires_grad=True) for k, v in params.items()}
    B, N, D = X.shape
    H = 4
    dh = D // H

    def step():
        _fast.ENABLED = kernels
        h = F.layer_norm(X, (D,), P["ln1_w"], P["ln1_b"])
        qkv = F.linear(h, P["w_qkv"], P["b_qkv"])
        qkv = qkv.reshape(B, N, 3, H, dh).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = F.softmax(q @ k.swapaxes(-1, -2) * (1.0 / math.sqrt(dh)), axis=-1)
        o = (att @ v).transpose(0, 2, 1, 3).reshape(B, N, D)
        x1 = X + F.linear(o, P["w_o"], P["b_o"])
        h2 = F.layer_norm(x1, (D,), P["ln2_w"], P["ln2_b"])
        m = F.linear(F.gelu(F.linear(h2, P["w_1"], P["b_1"]), approximate="tanh"), P["w_2"], P["b_2"])
        loss = ((x1 + m) ** 2).mean()
        for p in P.values():
            p.grad = None
        loss.backward()
        for p in P.values():
            p.data -= 0.01 * p.grad.data
        return loss

    return step


# ----------------------------------------------------------------------------- HIPS autograd
def hips_chain():
    import autograd
    x = np.linspace(0.1, 0.8, 8)
    state = {}

    def fwd():
        state["vjp"], _ = autograd.make_vjp(chain_loss)(x)

    def bwd():
        state["vjp"](1.0)

    return fwd, bwd


def hips_mlp(data):
    import autograd
    import autograd.numpy as anp
    from autograd.scipy.special import logsumexp
    X, y, params = data
    W = [p.copy() for p in params]
    onehot = np.eye(10, dtype=X.dtype)[y]

    def loss_fn(W):
        h = anp.maximum(anp.dot(X, W[0].T) + W[1], 0.0)
        logits = anp.dot(h, W[2].T) + W[3]
        return -anp.mean(anp.sum(onehot * (logits - logsumexp(logits, axis=1, keepdims=True)), axis=1))

    g = autograd.grad(loss_fn)

    def step():
        grads = g(W)
        for p, gp in zip(W, grads, strict=True):
            p -= 0.01 * gp

    return step


def hips_block(data):
    import autograd
    import autograd.numpy as anp
    X, params = data
    P = {k: v.copy() for k, v in params.items()}
    B, N, D = X.shape
    H, dh = 4, D // 4

    def ln(x, w, b, eps=1e-5):
        mu = anp.mean(x, axis=-1, keepdims=True)
        var = anp.mean((x - mu) ** 2, axis=-1, keepdims=True)
        return (x - mu) / anp.sqrt(var + eps) * w + b

    def softmax(s):
        e = anp.exp(s - anp.max(s, axis=-1, keepdims=True))
        return e / anp.sum(e, axis=-1, keepdims=True)

    def gelu(x):
        return 0.5 * x * (1 + anp.tanh(0.7978845608028654 * (x + 0.044715 * x ** 3)))

    def loss_fn(P):
        h = ln(X, P["ln1_w"], P["ln1_b"])
        qkv = anp.dot(h, P["w_qkv"].T) + P["b_qkv"]
        qkv = anp.transpose(anp.reshape(qkv, (B, N, 3, H, dh)), (2, 0, 3, 1, 4))
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = softmax(anp.matmul(q, anp.swapaxes(k, -1, -2)) / math.sqrt(dh))
        o = anp.reshape(anp.transpose(anp.matmul(att, v), (0, 2, 1, 3)), (B, N, D))
        x1 = X + anp.dot(o, P["w_o"].T) + P["b_o"]
        h2 = ln(x1, P["ln2_w"], P["ln2_b"])
        m = anp.dot(gelu(anp.dot(h2, P["w_1"].T) + P["b_1"]), P["w_2"].T) + P["b_2"]
        return anp.mean((x1 + m) ** 2)

    g = autograd.grad(loss_fn)

    def step():
        grads = g(P)
        for k in P:
            P[k] -= 0.01 * grads[k]

    return step


# ----------------------------------------------------------------------------- torch
def torch_chain():
    import torch
    return eager_chain(torch.tensor(np.linspace(0.1, 0.8, 8), requires_grad=True))


def torch_mlp(data):
    import torch
    import torch.nn.functional as F
    X, y, params = data
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    W = [torch.tensor(p, requires_grad=True) for p in params]

    def step():
        h = F.relu(Xt @ W[0].T + W[1])
        loss = F.cross_entropy(h @ W[2].T + W[3], yt)
        for p in W:
            p.grad = None
        loss.backward()
        with torch.no_grad():
            for p in W:
                p -= 0.01 * p.grad

    return step


def torch_block(data):
    import torch
    import torch.nn.functional as F
    X, params = data
    Xt = torch.from_numpy(X)
    P = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    B, N, D = X.shape
    H, dh = 4, D // 4

    def step():
        h = F.layer_norm(Xt, (D,), P["ln1_w"], P["ln1_b"])
        qkv = F.linear(h, P["w_qkv"], P["b_qkv"]).reshape(B, N, 3, H, dh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh), dim=-1)
        o = (att @ v).permute(0, 2, 1, 3).reshape(B, N, D)
        x1 = Xt + F.linear(o, P["w_o"], P["b_o"])
        h2 = F.layer_norm(x1, (D,), P["ln2_w"], P["ln2_b"])
        m = F.linear(F.gelu(F.linear(h2, P["w_1"], P["b_1"]), approximate="tanh"), P["w_2"], P["b_2"])
        loss = ((x1 + m) ** 2).mean()
        for p in P.values():
            p.grad = None
        loss.backward()
        with torch.no_grad():
            for p in P.values():
                p -= 0.01 * p.grad

    return step


# ----------------------------------------------------------------------------- driver
def make_data(seed=0):
    rng = np.random.default_rng(seed)
    f32 = np.float32
    mlp = (rng.standard_normal((128, 784)).astype(f32), rng.integers(0, 10, 128),
           [(rng.standard_normal((256, 784)) / 28).astype(f32), np.zeros(256, f32),
            (rng.standard_normal((10, 256)) / 16).astype(f32), np.zeros(10, f32)])
    D = 128
    params = {"ln1_w": np.ones(D, f32), "ln1_b": np.zeros(D, f32), "ln2_w": np.ones(D, f32),
              "ln2_b": np.zeros(D, f32),
              "w_qkv": (rng.standard_normal((3 * D, D)) / math.sqrt(D)).astype(f32), "b_qkv": np.zeros(3 * D, f32),
              "w_o": (rng.standard_normal((D, D)) / math.sqrt(D)).astype(f32), "b_o": np.zeros(D, f32),
              "w_1": (rng.standard_normal((4 * D, D)) / math.sqrt(D)).astype(f32), "b_1": np.zeros(4 * D, f32),
              "w_2": (rng.standard_normal((D, 4 * D)) / math.sqrt(4 * D)).astype(f32), "b_2": np.zeros(D, f32)}
    block = (rng.standard_normal((16, 128, D)).astype(f32), params)
    return mlp, block


def available(name):
    try:
        __import__(name)
        return True
    except ImportError:
        return False


# ----------------------------------------------------------------------------- kernel pieces
def pieces(data, rep):
    """Median ms of each fused kernel of the block step, of its NumPy reference (kernels off) and
    of torch's op, on the block's shapes: {piece: {"kernel": ms, "numpy": ms, "torch": ms}}."""
    import importlib

    from itnet_np.nn.functional import _fast
    A, S, N = (importlib.import_module("itnet_np.nn.functional." + m)
               for m in ("activations", "softmax", "normalization"))
    X, params = data
    B, T, D = X.shape
    rng = np.random.default_rng(1)
    f32 = np.float32
    u = rng.standard_normal((B, T, 4 * D)).astype(f32)       # MLP hidden pre-activation
    s = rng.standard_normal((B, 4, T, T)).astype(f32)        # attention logits
    w, b = params["ln1_w"] + 0.5, params["ln1_b"] + 0.1
    gu, gs, gx = (rng.standard_normal(a.shape).astype(f32) for a in (u, s, X))
    y = S._softmax(s, 3)
    cases = {
        "gelu fwd": (lambda: A._gelu(u, "tanh"), ("gelu", u)),
        "gelu bwd": (lambda: A._gelu_tanh_grad_raw(gu, u), ("gelu_bwd", gu, u)),
        "softmax fwd": (lambda: S._softmax(s, 3), ("softmax", s)),
        "softmax bwd": (lambda: S._softmax_vjp(gs, y, s, 3), ("softmax_bwd", gs, y)),
        "layer_norm fwd": (lambda: N._layer_norm(X, w, b, (2,), 1e-5), ("layer_norm", X, w, b)),
        "layer_norm bwd (dx, dw, db)": (lambda: (N._layer_norm_dx(gx, None, X, w, b, (2,), 1e-5),
                                                 N._layer_norm_dweight(gx, None, X, w, b, (2,), 1e-5),
                                                 N.sum_rows(gx, (D,))), ("layer_norm_bwd", gx, X, w, b)),
    }
    torch_ops = _torch_pieces() if available("torch") else {}
    out = {}
    for name, (fn, (key, *arrays)) in cases.items():
        r = {}
        for label, on in (("numpy", False), ("kernel", True)):
            _fast.ENABLED = on
            r[label] = timeit(fn, repeat=rep)[0] * 1e3
        _fast.ENABLED = True
        if key in torch_ops:
            r["torch"] = timeit(torch_ops[key](*arrays), repeat=rep)[0] * 1e3
        out[name] = r
    return out


def _torch_pieces():
    import torch
    F = torch.nn.functional
    t = torch.from_numpy
    return {
        "gelu": lambda u: lambda: F.gelu(t(u), approximate="tanh"),
        "gelu_bwd": lambda g, u: lambda: torch.ops.aten.gelu_backward(t(g), t(u), approximate="tanh"),
        "softmax": lambda s: lambda: torch.softmax(t(s), -1),
        "softmax_bwd": lambda g, y: lambda: torch.ops.aten._softmax_backward_data(t(g), t(y), -1,
                                                                                  torch.float32),
        "layer_norm": lambda x, w, b: lambda: F.layer_norm(t(x), (x.shape[-1],), t(w), t(b)),
        "layer_norm_bwd": lambda g, x, w, b: _torch_ln_bwd(torch, t(g), t(x), t(w), t(b)),
    }


def _torch_ln_bwd(torch, g, x, w, b):
    n = (x.shape[-1],)
    _, mean, rstd = torch.ops.aten.native_layer_norm(x, n, w, b, 1e-5)
    return lambda: torch.ops.aten.native_layer_norm_backward(g, x, n, mean, rstd, w, b, [True, True, True])


# ----------------------------------------------------------------------------- driver
def block_steps(impls, data, rounds, per_round=5):
    """(median, min) step time (ms) of each block implementation over ``rounds`` rounds; in each
    round every implementation runs ``per_round`` timed steps in a row after one untimed step. Rounds spread a
    change of load on the machine over all implementations alike, while the consecutive steps keep
    one framework's idle threads (OpenMP, OpenBLAS spin for a while after each call) out of the
    next framework's timings."""
    steps = {name: make(data) for name, make in impls.items()}
    for fn in steps.values():  # warm-up (and the kernels' first compilation)
        for _ in range(3):
            fn()
    samples = {name: [] for name in steps}
    for _ in range(rounds):
        for name, fn in steps.items():
            fn()
            for _ in range(per_round):
                t0 = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(v) * 1e3, min(v) * 1e3) for name, v in samples.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    ap.add_argument("--only", default="chain,mlp,block",
                    help="comma-separated measurements among chain, mlp, block, pieces "
                         "(default: the first three)")
    ap.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "engine.json"))
    args = ap.parse_args(argv)
    only = set(args.only.split(","))
    rep = 5 if args.quick else 30
    if available("torch"):
        import torch
        torch.set_num_threads(os.cpu_count() or 1)
    mlp_data, block_data = make_data()
    frameworks = {"itnet-np": (itnet_chain, itnet_mlp, itnet_block)}
    if available("autograd"):
        frameworks["HIPS autograd"] = (hips_chain, hips_mlp, hips_block)
    if available("torch"):
        frameworks["torch"] = (torch_chain, torch_mlp, torch_block)
    load = [os.getloadavg()[0]]
    results = {name: {} for name in frameworks}
    for name, (chain, mlp, _) in frameworks.items():
        r = results[name]
        if "chain" in only:
            log(f"[{name}] chain")
            fwd, bwd = chain()
            fwd_only, bwd_only = [], []
            for _ in range(rep + 2):
                t0 = time.perf_counter()
                fwd()
                t1 = time.perf_counter()
                bwd()
                fwd_only.append(t1 - t0)
                bwd_only.append(time.perf_counter() - t1)
            r["chain_fwd_us_per_op"] = min(fwd_only) / CHAIN * 1e6
            r["chain_bwd_us_per_op"] = min(bwd_only) / CHAIN * 1e6
        if "mlp" in only:
            log(f"[{name}] mlp step")
            r["mlp_step_ms"] = timeit(mlp(mlp_data), repeat=rep)[0] * 1e3
    if "block" in only:
        log("transformer block step, all frameworks in rounds")
        impls = {name: fw[2] for name, fw in frameworks.items()}
        impls["itnet-np, NumPy passes"] = lambda data: itnet_block(data, kernels=False)
        for name, (median, best) in block_steps(impls, block_data, 2 if args.quick else 6).items():
            results.setdefault(name, {}).update(block_step_ms=median, block_step_min_ms=best)
    rows = []
    ours = results["itnet-np"]
    for name, r in results.items():
        ratios = [f"{key.split('_')[0]} {ours[key] / r[key]:.2f}" for key in
                  ("chain_fwd_us_per_op", "chain_bwd_us_per_op", "mlp_step_ms", "block_step_ms")
                  if name != "itnet-np" and key in r and key in ours]
        rows.append([name + (f" (itnet/peer: {', '.join(ratios)})" if ratios else ""),
                     f"{r['chain_fwd_us_per_op']:.2f} / {r['chain_bwd_us_per_op']:.2f} µs"
                     if "chain_fwd_us_per_op" in r else "",
                     f"{r['mlp_step_ms']:.2f} ms" if "mlp_step_ms" in r else "",
                     f"{r['block_step_ms']:.1f} / {r['block_step_min_ms']:.1f} ms"
                     if "block_step_ms" in r else ""])
    print(markdown_table(["framework", "tiny-op fwd / bwd", "MLP step (median)", "block step (median / min)"],
                         rows))
    out = {"machine": machine(), "results": results}
    if "pieces" in only:
        log("block pieces: fused kernel, NumPy reference, torch")
        out["pieces_ms"] = pieces(block_data, rep)
        print(markdown_table(["piece", "NumPy passes", "fused kernel", "torch"],
                             [[k, f"{v['numpy']:.2f} ms", f"{v['kernel']:.2f} ms",
                               f"{v['torch']:.2f} ms" if "torch" in v else ""]
                              for k, v in out["pieces_ms"].items()]))
    load.append(os.getloadavg()[0])
    out["load_average_1min"] = load
    print(f"load average (1 min) at start / end: {load[0]:.2f} / {load[1]:.2f}")
    write_json(args.json, out)
    log(f"wrote {args.json}")


if __name__ == "__main__":
    main()

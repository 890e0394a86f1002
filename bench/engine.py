"""Engine benchmark: per-op overhead, an MLP training step and a transformer-block training step.

Runs itnet-np and, when installed, HIPS autograd and torch (CPU) in the same process, on the same
data, and reports time ratios (itnet / peer; < 1 means itnet is faster).

    python bench/engine.py [--quick] [--json bench/results/engine.json]

Measurements
- chain: 1000 tiny ops (alternating * and +) on a float64 vector of shape (8,), forward and
  backward, reported in microseconds per op;
- mlp: one SGD training step (forward, cross-entropy, backward, update) of 784-256-10, batch 128;
- block: one Adam-free SGD step of a pre-LayerNorm transformer block (d=128, 4 heads, MLP 4d with
  tanh-GELU), N=128 tokens, batch 16, float32.
"""
import argparse
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import log, machine, markdown_table, timeit  # noqa: E402
from itnet_np.io import write_json  # noqa: E402

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


def itnet_block(data):
    import itnet_np as itn
    F = itn.nn.functional
    X, params = data
    P = {k: itn.tensor(v, requires_grad=True) for k, v in params.items()}
    B, N, D = X.shape
    H = 4
    dh = D // H

    def step():
        h = F.layer_norm(X, (D,), P["ln1_w"], P["ln1_b"])
        qkv = h @ P["w_qkv"].T + P["b_qkv"]
        qkv = qkv.reshape(B, N, 3, H, dh).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = F.softmax(q @ k.swapaxes(-1, -2) * (1.0 / math.sqrt(dh)), axis=-1)
        o = (att @ v).transpose(0, 2, 1, 3).reshape(B, N, D)
        x1 = X + o @ P["w_o"].T + P["b_o"]
        h2 = F.layer_norm(x1, (D,), P["ln2_w"], P["ln2_b"])
        m = F.gelu(h2 @ P["w_1"].T + P["b_1"], approximate="tanh") @ P["w_2"].T + P["b_2"]
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
        qkv = (h @ P["w_qkv"].T + P["b_qkv"]).reshape(B, N, 3, H, dh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh), dim=-1)
        o = (att @ v).permute(0, 2, 1, 3).reshape(B, N, D)
        x1 = Xt + o @ P["w_o"].T + P["b_o"]
        h2 = F.layer_norm(x1, (D,), P["ln2_w"], P["ln2_b"])
        m = F.gelu(h2 @ P["w_1"].T + P["b_1"], approximate="tanh") @ P["w_2"].T + P["b_2"]
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    ap.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "engine.json"))
    args = ap.parse_args(argv)
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
    results = {}
    for name, (chain, mlp, block) in frameworks.items():
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
        r = {"chain_fwd_us_per_op": min(fwd_only) / CHAIN * 1e6, "chain_bwd_us_per_op": min(bwd_only) / CHAIN * 1e6}
        log(f"[{name}] mlp step")
        r["mlp_step_ms"] = timeit(mlp(mlp_data), repeat=rep)[0] * 1e3
        log(f"[{name}] transformer block step")
        r["block_step_ms"] = timeit(block(block_data), repeat=max(3, rep // 3))[0] * 1e3
        results[name] = r
    ours = results["itnet-np"]
    rows = []
    for name, r in results.items():
        ratio = "" if name == "itnet-np" else " (itnet/peer: fwd {:.2f}, bwd {:.2f}, mlp {:.2f}, block {:.2f})".format(
            ours["chain_fwd_us_per_op"] / r["chain_fwd_us_per_op"], ours["chain_bwd_us_per_op"] / r["chain_bwd_us_per_op"],
            ours["mlp_step_ms"] / r["mlp_step_ms"], ours["block_step_ms"] / r["block_step_ms"])
        rows.append([name + ratio, f"{r['chain_fwd_us_per_op']:.2f} / {r['chain_bwd_us_per_op']:.2f} µs",
                     f"{r['mlp_step_ms']:.2f} ms", f"{r['block_step_ms']:.1f} ms"])
    table = markdown_table(["framework", "tiny-op fwd / bwd", "MLP step (median)", "block step (median)"], rows)
    print(table)
    write_json(args.json, {"machine": machine(), "results": results})
    log(f"wrote {args.json}")


if __name__ == "__main__":
    main()

"""Implementations measured by bench/operator.py, one builder per (group, implementation).

``build(spec) -> (fn, extract, info)``: ``fn()`` runs one repetition (forward, or forward plus
backward, per ``spec['mode']``) and returns its result; ``extract(result)`` turns that result into a
NumPy array used to cross-check implementations (forward: the output; forward+backward: the gradient
of the first input, q or x); ``info`` says which code path ran. A builder that cannot run raises
:class:`Skip` with the reason.

Attention, per head: y_i = sum_j softmax_j(q_i . k_j / sqrt(d) over S(i)) v_j, S(i) = {j <= i} when
causal, q, k, v (B, H, N, d). MLP kernel (the ITNet kernel with inputs dp, f_i, f_j, softmax, uniform
quadrature, 1-D positions p_i = i / (N - 1)):

    pre_ijk = b1_k + W1dp_k (p_i - p_j) + W1fi_k . f_i + W1fj_k . f_j,   s^h_ij = W2_h . silu(pre_ij) + b2_h
    y_i = W_O concat_h( sum_j softmax_j(s^h_ij) W_V^h f_j ) + b,   f (B, N, C), W_V (H d, C), W_O (C, H d)

Every implementation of a group gets the same arrays (``inputs(spec)``), so their outputs agree.
"""
import math

import numpy as np


class Skip(Exception):
    """This implementation cannot run this case (reason in the message)."""


def _rng(spec):
    return np.random.default_rng(spec["N"] * 1009 + spec["H"])


def inputs(spec):
    """The arrays every implementation of spec's group uses (deterministic in the shape)."""
    dt = np.dtype(spec["dtype"])
    rng = _rng(spec)
    if spec["group"] == "attention":
        B, H, N, d = spec["B"], spec["H"], spec["N"], spec["d"]
        q, k, v, dout = (rng.standard_normal((B, H, N, d)).astype(dt) for _ in range(4))
        return {"q": q, "k": k, "v": v, "dout": dout}
    B, N, C, H, K, d = spec["B"], spec["N"], spec["C"], spec["H"], spec["hidden"], spec["d"]
    Z = 1 + 2 * C                                   # pair features: dp (1) | f_i (C) | f_j (C)
    return {"f": rng.standard_normal((B, N, C)).astype(dt),
            "pos": np.linspace(0.0, 1.0, N).astype(dt).reshape(N, 1),
            "W1": (rng.standard_normal((K, Z)) / math.sqrt(Z)).astype(dt),
            "b1": (0.1 * rng.standard_normal(K)).astype(dt),
            "W2": (rng.standard_normal((H, K)) / math.sqrt(K)).astype(dt),
            "b2": (0.1 * rng.standard_normal(H)).astype(dt),
            "W_V": (rng.standard_normal((H * d, C)) / math.sqrt(C)).astype(dt),
            "W_O": (rng.standard_normal((C, H * d)) / math.sqrt(H * d)).astype(dt),
            "b": (0.1 * rng.standard_normal(C)).astype(dt),
            "dy": rng.standard_normal((B, N, C)).astype(dt)}


def build(spec):
    table = {("attention", "itnet-fused"): _att_itnet_sdpa, ("attention", "itnet-fused-raw"): _att_raw,
             ("attention", "itnet-dense"): _att_dense, ("attention", "torch"): _att_torch,
             ("attention", "numpy"): _att_numpy,
             ("mlp", "itnet-fused"): _mlp_module, ("mlp", "itnet-fused-raw"): _mlp_raw,
             ("mlp", "itnet-dense"): _mlp_module, ("mlp", "torch-eager"): _mlp_torch}
    key = (spec["group"], spec["impl"])
    if key not in table:
        raise Skip(f"no implementation {spec['impl']!r} for group {spec['group']!r}")
    return table[key](spec, inputs(spec))


def _require_numba_backend():
    from itnet_np.transform import available_backends
    if "numba" not in available_backends():
        raise Skip("the transform backend 'numba' is not registered yet (itnet_np.transform.fused)")


def _grads_none(*tensors):
    for t in tensors:
        t.grad = None


def _np(t):
    return np.asarray(t.data if hasattr(t, "data") and not isinstance(t, np.ndarray) else t)


# ----------------------------------------------------------------------------- attention
def _sdpa_entry():
    """The engine entry point (exported from itnet_np.transform, or still only in its module)."""
    import importlib
    for where in ("itnet_np.transform", "itnet_np.transform.sdpa"):
        try:
            return importlib.import_module(where).scaled_dot_product_attention
        except (ImportError, AttributeError):
            pass
    return None


def _att_engine_tensors(spec, x):
    import itnet_np as itn
    grad = spec["mode"] == "fwdbwd"
    return [itn.tensor(x[n], requires_grad=grad) for n in "qkv"], itn.tensor(x["dout"])


def _att_engine(spec, x, forward, info):
    """fn for an engine-level attention ``forward(q, k, v) -> Tensor`` (fwd under no_grad)."""
    import itnet_np as itn
    (q, k, v), dout = _att_engine_tensors(spec, x)
    if spec["mode"] == "fwd":
        def fn():
            with itn.no_grad():
                return forward(q, k, v)
        return fn, _np, info

    def fn():
        _grads_none(q, k, v)
        forward(q, k, v).backward(dout)
        return q.grad
    return fn, _np, info


def _att_itnet_sdpa(spec, x):
    sdpa = _sdpa_entry()
    if sdpa is None:
        raise Skip("itnet_np.transform.scaled_dot_product_attention does not exist yet")
    _require_numba_backend()
    causal = spec["causal"]
    return _att_engine(spec, x, lambda q, k, v: sdpa(q, k, v, is_causal=causal, backend="numba"),
                       {"path": "itnet_np.transform.scaled_dot_product_attention(backend='numba')"})


def _att_raw(spec, x):
    from itnet_np.transform.fused import attention_backward, attention_forward
    q, k, v, dout = x["q"], x["k"], x["v"], x["dout"]
    scale, causal = 1.0 / math.sqrt(spec["d"]), spec["causal"]
    info = {"path": "itnet_np.transform.fused.attention_forward/backward on raw arrays"}
    if spec["mode"] == "fwd":
        return (lambda: attention_forward(q, k, v, scale, causal=causal)[0]), _np, info

    def fn():
        out, stats = attention_forward(q, k, v, scale, causal=causal)
        return attention_backward(q, k, v, out, stats, dout, scale, causal=causal)[0]
    return fn, _np, info


def _att_dense(spec, x):
    sdpa, causal = _sdpa_entry(), spec["causal"]
    if sdpa is not None:
        return _att_engine(spec, x, lambda q, k, v: sdpa(q, k, v, is_causal=causal, backend="dense"),
                           {"path": "itnet_np.transform.scaled_dot_product_attention(backend='dense')"})
    import itnet_np as itn
    from itnet_np.nn import functional as F
    N, scale = spec["N"], 1.0 / math.sqrt(spec["d"])
    keep = np.tri(N, N, dtype=bool) if causal else None

    def forward(q, k, v):
        s = itn.matmul(q, itn.swapaxes(k, -1, -2)) * scale
        if keep is not None:
            s = itn.where(keep, s, -np.inf)
        return itn.matmul(F.softmax(s, axis=-1), v)
    return _att_engine(spec, x, forward, {"path": "engine ops: softmax(q k^T / sqrt(d) [+ causal]) v"})


def _att_torch(spec, x):
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        raise Skip("torch is not installed") from None
    causal = spec["causal"]
    grad = spec["mode"] == "fwdbwd"
    q, k, v = (torch.from_numpy(x[n]).requires_grad_(grad) for n in "qkv")
    dout = torch.from_numpy(x["dout"])
    info = {"path": "torch.nn.functional.scaled_dot_product_attention (CPU)",
            "torch_threads": torch.get_num_threads()}
    if not grad:
        def fn():
            with torch.no_grad():
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return fn, lambda r: r.numpy(), info

    def fn():
        _grads_none(q, k, v)
        F.scaled_dot_product_attention(q, k, v, is_causal=causal).backward(dout)
        return q.grad
    return fn, lambda r: r.numpy(), info


def _att_numpy(spec, x):
    if spec["mode"] != "fwd":
        raise Skip("the naive NumPy implementation is forward only")
    q, k, v = x["q"], x["k"], x["v"]
    N, scale, causal = spec["N"], 1.0 / math.sqrt(spec["d"]), spec["causal"]

    def fn():
        s = q @ k.swapaxes(-1, -2)
        s *= scale
        if causal:
            np.copyto(s, -np.inf, where=~np.tri(N, N, dtype=bool))
        s -= s.max(axis=-1, keepdims=True)
        np.exp(s, out=s)
        s /= s.sum(axis=-1, keepdims=True)
        return s @ v
    return fn, _np, {"path": "numpy: softmax(q k^T / sqrt(d)) v, in-place where possible"}


# ----------------------------------------------------------------------------- MLP kernel
def _mlp_module(spec, x):
    """IntegralTransform(MLPKernel) with backend 'numba' (itnet-fused) or 'dense' (itnet-dense)."""
    import itnet_np as itn
    from itnet_np.errors import ConfigError
    from itnet_np.transform import IntegralTransform, MLPKernel
    backend = "numba" if spec["impl"] == "itnet-fused" else "dense"
    if backend == "numba":
        _require_numba_backend()
    C, H, K, d, dt = spec["C"], spec["H"], spec["hidden"], spec["d"], np.dtype(spec["dtype"])
    kernel = MLPKernel(C, heads=H, hidden=K, inputs=("dp", "fi", "fj"), position_dim=1,
                       activation="silu", dtype=dt)
    try:
        op = IntegralTransform(C, C, kernel, embed_dim=H * d, normalization="softmax",
                               backend=backend, dtype=dt)
    except ConfigError as e:
        raise Skip(f"IntegralTransform(backend={backend!r}): {e}") from None
    W1 = np.zeros_like(x["W1"])
    for name, sl in (("dp", slice(0, 1)), ("fi", slice(1, 1 + C)), ("fj", slice(1 + C, 1 + 2 * C))):
        W1[:, kernel.layout[name]] = x["W1"][:, sl]
    for p, value in ((kernel.W1, W1), (kernel.b1, x["b1"]), (kernel.W2, x["W2"]), (kernel.b2, x["b2"]),
                     (op.W_V, x["W_V"]), (op.W_O, x["W_O"]), (op.b, x["b"])):
        if tuple(p.data.shape) != value.shape:
            raise Skip(f"parameter layout changed: {tuple(p.data.shape)} vs {value.shape}")
        p.data = value.copy()
    params = list(op.parameters())
    grad = spec["mode"] == "fwdbwd"
    f, pos, dy = itn.tensor(x["f"], requires_grad=grad), x["pos"], itn.tensor(x["dy"])
    info = {"path": f"IntegralTransform(MLPKernel, normalization='softmax', backend={backend!r})"}
    if not grad:
        def fn():
            with itn.no_grad():
                return op(f, positions=pos)
        return fn, _np, info

    def fn():
        _grads_none(f, *params)
        op(f, positions=pos).backward(dy)
        return f.grad
    return fn, _np, info


def _mlp_raw(spec, x):
    """Per-point projections in NumPy, the pair part in mlp_forward/mlp_backward, chain rule by hand."""
    from itnet_np.transform.fused import mlp_backward, mlp_forward
    B, N, C, H, d = spec["B"], spec["N"], spec["C"], spec["H"], spec["d"]
    f, pos, dy = x["f"], x["pos"], x["dy"]
    W1, b1, W2, b2, W_V, W_O, b = (x[n] for n in ("W1", "b1", "W2", "b2", "W_V", "W_O", "b"))
    Wdp, Wfi, Wfj = W1[:, :1], W1[:, 1:1 + C], W1[:, 1 + C:]
    K, dt = W1.shape[0], f.dtype
    xr, yr, Wr = np.zeros((B, N, 0), dt), np.zeros((B, N, 0), dt), np.zeros((K, 0), dt)
    w = np.ones((B, N), dt)
    kw = {"act": "silu", "normalization": "softmax"}

    def forward():
        pd = pos @ Wdp.T                                                # (N, K)
        a = b1 + pd + f @ Wfi.T
        bb = f @ Wfj.T - pd
        v = np.ascontiguousarray((f @ W_V.T).reshape(B, N, H, d).transpose(0, 2, 1, 3))
        out, stats = mlp_forward(a, bb, xr, yr, Wr, W2, b2, v, w, **kw)
        merged = out.transpose(0, 2, 1, 3).reshape(B, N, H * d)
        return (a, bb, v, out, stats, merged), merged @ W_O.T + b

    info = {"path": "numpy projections + itnet_np.transform.fused.mlp_forward/backward"}
    if spec["mode"] == "fwd":
        return (lambda: forward()[1]), _np, info

    def fn():
        (a, bb, v, out, stats, merged), _ = forward()
        grads = {"W_O": np.einsum("bnc,bne->ce", dy, merged), "b": dy.sum((0, 1))}
        dout = np.ascontiguousarray((dy @ W_O).reshape(B, N, H, d).transpose(0, 2, 1, 3))
        g = mlp_backward(a, bb, xr, yr, Wr, W2, b2, v, w, out, stats, dout, **kw)
        dv = g["v"].transpose(0, 2, 1, 3).reshape(B, N, H * d)
        da, db = g["a"], g["b"]
        grads.update(W_V=np.einsum("bne,bnc->ec", dv, f), W2=g["W2"], b2=g["b2"], b1=da.sum((0, 1)),
                     Wdp=(da - db).sum(0).T @ pos, Wfi=np.einsum("bnk,bnc->kc", da, f),
                     Wfj=np.einsum("bnk,bnc->kc", db, f))
        grads["f"] = dv @ W_V + da @ Wfi + db @ Wfj
        return grads["f"]
    return fn, _np, info


def _mlp_torch(spec, x):
    """Eager torch: builds the (B, N, M, K) pre-activation pair tensor, as a plain port would."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        raise Skip("torch is not installed") from None
    B, N, C, H, d = spec["B"], spec["N"], spec["C"], spec["H"], spec["d"]
    grad = spec["mode"] == "fwdbwd"
    t = {n: torch.from_numpy(x[n].copy()).requires_grad_(grad and n not in ("pos", "dy"))
         for n in ("f", "pos", "W1", "b1", "W2", "b2", "W_V", "W_O", "b", "dy")}

    def forward():
        W1 = t["W1"]
        pd = t["pos"] @ W1[:, :1].T
        a = t["b1"] + pd + t["f"] @ W1[:, 1:1 + C].T                   # (B, N, K)
        bb = t["f"] @ W1[:, 1 + C:].T - pd                               # (B, M, K)
        act = F.silu(a[:, :, None, :] + bb[:, None, :, :])              # (B, N, M, K)
        s = torch.einsum("bnmk,hk->bhnm", act, t["W2"]) + t["b2"][None, :, None, None]
        v = (t["f"] @ t["W_V"].T).reshape(B, N, H, d).transpose(1, 2)
        out = torch.softmax(s, dim=-1) @ v                               # (B, H, N, d)
        return out.transpose(1, 2).reshape(B, N, H * d) @ t["W_O"].T + t["b"]

    info = {"path": "torch eager, (B, N, M, K) pair tensor", "torch_threads": torch.get_num_threads()}
    if not grad:
        def fn():
            with torch.no_grad():
                return forward()
        return fn, lambda r: r.numpy(), info
    leaves = [v for v in t.values() if v.requires_grad]

    def fn():
        _grads_none(*leaves)
        forward().backward(t["dy"])
        return t["f"].grad
    return fn, lambda r: r.numpy(), info

"""Matrix products.

matmul: out = x @ y with NumPy's rules (1-D operands are promoted then squeezed, batch dims
broadcast). VJP: dx = g @ y^T, dy = x^T @ g, written for every rank combination.
"""
import functools

import numpy as np

from ..backend import xp_of
from ..primitive import primitive
from ._util import raw


def _mT(a):
    from .shape import swapaxes
    return swapaxes(a, -1, -2)


def _flat_rows(x, y):
    """True when x is (..., K) with more than one leading axis and y is a plain (K, M) matrix: then
    x @ y is one (rows, K) @ (K, M) GEMM instead of a batch of small ones (and y's gradient one
    GEMM instead of a batch of products summed over the batch)."""
    return y.ndim == 2 and x.ndim > 2


def _matmul(x, y):
    try:
        if _flat_rows(x, y):
            return (x.reshape(-1, x.shape[-1]) @ y).reshape(x.shape[:-1] + (y.shape[-1],))
        return np.matmul(x, y)
    except ValueError:
        raise _mismatch(x, y) from None


def _mismatch(x, y):
    """The ShapeError for x @ y, in plain words instead of NumPy's gufunc signature."""
    from ...errors import ShapeError
    xs, ys = tuple(np.shape(x)), tuple(np.shape(y))
    if not xs or not ys:
        why = "matmul needs operands with at least one dimension (use * for scalars)"
    else:
        k_x, k_y = xs[-1], ys[-2] if len(ys) > 1 else ys[-1]
        why = (f"the last axis of x ({k_x}) must equal the {'second-to-last' if len(ys) > 1 else 'only'} "
               f"axis of y ({k_y})") if k_x != k_y else (
            f"the batch dimensions {xs[:-2]} and {ys[:-2]} do not broadcast")
    return ShapeError(f"matmul: x of shape {xs} and y of shape {ys} do not multiply: {why}")


def _matmul_dx(g, out, x, y):
    if y.ndim == 1:
        return g[..., None] * y if x.ndim > 1 else g * y
    if x.ndim == 1:
        return matmul(y, g[..., None])[..., 0]
    return matmul(g, _mT(y))


def _matmul_dy(g, out, x, y):
    if x.ndim == 1:
        return x[:, None] * g[..., None, :] if y.ndim > 1 else g * x
    if y.ndim == 1:
        return matmul(_mT(x), g[..., None])[..., 0]
    if _flat_rows(x, y):
        from .shape import reshape
        return matmul(_mT(reshape(x, (-1, x.shape[-1]))), reshape(g, (-1, g.shape[-1])))
    return matmul(_mT(x), g)


matmul = primitive(_matmul, "matmul").defvjp(_matmul_dx, _matmul_dy)


# ----- einsum ---------------------------------------------------------------------------------
_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


@functools.lru_cache(maxsize=512)
def _parse(subscripts, shapes):
    """Explicit labels for every axis: (labels per input, output labels, size per label, unused letters).

    '...' becomes one label per broadcast axis (right-aligned across operands, as NumPy
    broadcasts), drawn from the letters the subscripts do not use. Without '->' the output is
    the broadcast axes followed by the labels used exactly once, sorted (NumPy's implicit mode).
    """
    from ...errors import ShapeError
    spec = subscripts.replace(" ", "")
    ins, arrow, out = spec.partition("->")
    terms = ins.split(",")
    if len(terms) != len(shapes):
        raise ShapeError(f"einsum: subscripts {subscripts!r} name {len(terms)} operands, got {len(shapes)}")
    free = [c for c in _LETTERS if c not in spec]
    # Number of axes each operand's '...' stands for (len(term) counts the three dots).
    n_dots = [len(shape) - len(term) + 3 if "..." in term else 0 for term, shape in zip(terms, shapes)]
    n_ell = max(n_dots, default=0)
    ell = free[:n_ell]
    labels, sizes = [], {}
    for term, shape, k in zip(terms, shapes, n_dots):
        head, _, tail = term.partition("...")
        lab = list(head) + ell[n_ell - k:] + list(tail) if "..." in term else list(term)
        if len(lab) != len(shape):
            raise ShapeError(f"einsum: term {term!r} has {len(lab)} labels for an operand of shape {shape}")
        for c, s in zip(lab, shape):
            if s != 1 and sizes.get(c, 1) not in (1, s):
                raise ShapeError(f"einsum {subscripts!r}: label {c!r} has length {sizes[c]} in one operand and "
                                 f"{s} in another (operand shapes {list(shapes)}); lengths must match or be 1")
            sizes[c] = s if sizes.get(c, 1) == 1 else sizes[c]
        labels.append(lab)
    if arrow:
        head, _, tail = out.partition("...")
        out_labels = list(head) + ell + list(tail) if "..." in out else list(out)
    else:
        once = sorted(c for c in set(ins) if c.isalpha() and ins.count(c) == 1)
        out_labels = ell + once
    return tuple(map(tuple, labels)), tuple(out_labels), sizes, tuple(free[n_ell:])


def _einsum(*operands, subscripts):
    xp = xp_of(operands[0])
    return xp.einsum(subscripts, *operands, optimize=len(operands) > 2)


def _einsum_vjp(g, out, needs, *operands, subscripts):
    """One gradient per operand that needs one (``_einsum_grad``); None elsewhere."""
    return [_einsum_grad(k, g, operands, subscripts) if needed else None for k, needed in enumerate(needs)]


def _einsum_grad(k, g, operands, subscripts):
    """dL/d operand_k = einsum of g with the other operands, onto operand k's labels.

    Four cases need more than swapping g in for operand k:
    - a label repeated within operand k ('ii->i'): its second occurrence gets a fresh label tied
      to the first by an identity matrix, so the gradient lands on the diagonal only;
    - a label of operand k found nowhere else ('ij->i'): the gradient is constant along it, given
      by a ones vector;
    - an axis operand k broadcasts (length 1 against a longer one): the einsum sums over it and a
      reshape restores the length-1 axis;
    - a label whose every other occurrence is broadcast (length 1; 'i,i->' with shapes (1,), (3,)):
      the gradient is constant along it, and is broadcast to operand k's length.
    """
    from .shape import broadcast_to, reshape
    x = raw(operands[k])
    xp = xp_of(x)
    labels, out_labels, sizes, fresh = _parse(subscripts, tuple(tuple(o.shape) for o in operands))
    fresh = list(fresh)
    terms = ["".join(out_labels)] + ["".join(lab) for j, lab in enumerate(labels) if j != k]
    args = [g] + [o for j, o in enumerate(operands) if j != k]
    target, seen = [], set()
    for c, n in zip(labels[k], x.shape):
        if c in seen:
            f = fresh.pop(0)
            terms.append(c + f)
            args.append(xp.eye(n, dtype=x.dtype))
            target.append(f)
        elif n == 1 and sizes[c] != 1:
            continue
        else:
            seen.add(c)
            target.append(c)
    present = set("".join(terms))
    for c in target:
        if c not in present:
            terms.append(c)
            args.append(xp.ones(sizes[c], dtype=x.dtype))
    gk = einsum(",".join(terms) + "->" + "".join(target), *args)
    kept = tuple(n for c, n in zip(labels[k], x.shape) if not (n == 1 and sizes[c] != 1))
    if tuple(gk.shape) != kept:
        gk = broadcast_to(gk, kept)
    return gk if len(target) == x.ndim else reshape(gk, x.shape)


_einsum_p = primitive(_einsum, "einsum").defvjp_all(_einsum_vjp)


def einsum(subscripts, *operands):
    """Einstein summation, ``numpy.einsum(subscripts, *operands)``, differentiable in every operand.

    Supports explicit ('ij,jk->ik') and implicit ('ij,jk') outputs, '...' broadcasting and labels
    repeated within an operand (diagonals: 'ii->i', traces: 'ii->'). Contractions of more than two
    operands use NumPy's optimized contraction order.
    """
    _parse(subscripts, tuple(tuple(getattr(o, "shape", ())) for o in operands))  # ShapeError early
    return _einsum_p(*operands, subscripts=subscripts)

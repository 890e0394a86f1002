"""Embedding lookup: out[..., :] = weight[indices[...], :].

The gradient scatters g back into weight's rows and *adds* where an index repeats (the getitem
op's VJP does this with scatter_add), which is what training an embedding table needs.
"""
from ...autograd.backend import xp_of
from ...autograd.ops import getitem
from ...autograd.ops._util import raw
from ...errors import ConfigError, DTypeError, ShapeError, describe


def embedding(indices, weight):
    """Rows of ``weight`` (num_embeddings, dim) picked by integer ``indices`` of any shape.

    Returns shape indices.shape + (dim,). Indices must lie in [0, num_embeddings).
    """
    w = raw(weight)
    if w.ndim != 2:
        raise ShapeError(f"embedding: weight must be (num_embeddings, dim), got shape {tuple(w.shape)}")
    idx = raw(indices)
    if not hasattr(idx, "dtype"):
        idx = xp_of(w).asarray(idx)
    if idx.dtype.kind not in "iu":
        raise DTypeError(f"embedding: indices must be integers, got {describe(idx)}")
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= w.shape[0]):
        raise ConfigError(
            f"embedding: indices must lie in [0, {w.shape[0]}) for a weight of shape {tuple(w.shape)}, "
            f"got values in [{int(idx.min())}, {int(idx.max())}]")
    return getitem(weight, idx)

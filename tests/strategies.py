"""Shared hypothesis strategies: shapes, mutually broadcastable shapes, axes and float64 arrays."""
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

small_shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)
nonempty_shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)


def broadcastable_shapes(num_shapes=2):
    """A tuple of ``num_shapes`` shapes that broadcast together (and their result shape)."""
    return hnp.mutually_broadcastable_shapes(num_shapes=num_shapes, min_dims=0, max_dims=3, max_side=4)


def arrays(shape, low=-3.0, high=3.0, dtype=np.float64):
    """Finite float arrays with bounded magnitude, so exp/log/softplus stay well conditioned."""
    return hnp.arrays(dtype, shape, elements=st.floats(low, high, allow_nan=False, width=64))


def positive_arrays(shape, low=0.2, high=3.0):
    return arrays(shape, low, high)


@st.composite
def shape_and_axis(draw, min_dims=1):
    """(shape, axis, keepdims) with axis None, an int (maybe negative) or a tuple of ints."""
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=3, min_side=1, max_side=4))
    nd = len(shape)
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        axis = None
    elif kind == "int":
        axis = draw(st.integers(-nd, nd - 1))
    else:
        axis = tuple(draw(st.lists(st.integers(0, nd - 1), min_size=1, max_size=nd, unique=True)))
    return shape, axis, draw(st.booleans())


def assert_inputs_unchanged(before, after):
    for b, a in zip(before, after):
        np.testing.assert_array_equal(b, a)

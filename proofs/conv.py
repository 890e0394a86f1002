"""Conv1d / Conv2d (PyTorch semantics) are ITNet layers: hard positional kernels, one head per tap
(docs/theory.md §2).

**The conventional layer** (torch.nn.functional.conv1d; x (B, C_in, L), weight W (C_out, C_in/G, K)):

    out[n, o, i] = b[o] + sum_{c < C_in/G} sum_{a < K} W[o, c, a] x[n, g(o) C_in/G + c, s i + d a - P_l]

cross-correlation (no flip), g(o) = floor(o / (C_out/G)), x := 0 outside [0, L), and
L_out = floor((L + P_l + P_r - d (K - 1) - 1) / s) + 1. ``padding='same'`` means P_l = floor(d (K-1)/2),
P_r = d (K-1) - P_l (the extra zero on the right, PyTorch's rule), stride 1 only; 'valid' means 0.

**The ITNet layer.** Sources are the input samples, p_j = j for j < L, f_j = x[:, :, j]; queries are the
*anchors* q_i = s i - P_l for i < L_out (query features unused). Uniform quadrature, no
normalisation, full support (the 2-D hat MLP below uses a window), and one head per tap a with the
hard kernel and value/output maps

    K^a(q_i, p_j) = 1[p_j - q_i = d a],    W_V^a = I_{C_in},    W_O^a = What[:, :, a],

where What[:, :, a] (C_out, C_in) is W[:, :, a] placed block-diagonally over the groups (zero across
groups). Then y_i = sum_a What_a x[:, q_i + d a] + b, which is the formula above: stride is the
spacing of the anchors, padding their origin, dilation the spacing of the taps. **Zero padding comes
for free**: an anchor whose tap lands outside [0, L) finds no source there, the sum just has no term;
the input is never padded. 2-D is the same with p = (row, col), a = (a1, a2), d, s, P per axis. This is
Cordonnier et al.'s MHSA-as-convolution construction at alpha = infinity (docs/theory.md §6): the softmax of
-alpha ||delta - Delta_h||^2 tends to exactly this indicator. Exact for every configuration.

Two constructions of the indicator (``kernel=``):

- ``'stencil'``: a StencilKernel over the offsets o_a = d a with the identity table (H = K taps).
- ``'mlp'``: an MLPKernel on the pair input dp = q_i - p_j (its convention: query minus source, so the
  tap sits at dp = -o_a), one ReLU hidden layer and one output head per tap, built from *hat units*.
  For an integer u and centre c,

      hat_c(u) = relu(u - c + 1) - 2 relu(u - c) + relu(u - c - 1) = max(0, 1 - |u - c|) = 1[u = c]

  (u <= c - 1: all terms 0; u = c: 1; u >= c + 1: (u-c+1) - 2(u-c) + (u-c-1) = 0). So head a uses 3
  hidden units with W1 rows r, biases -c_a + 1, -c_a, -c_a - 1, and W2 = (1, -2, 1), b2 = 0, where
  u = r . dp is an integer *code* of the offset and c_a = -r . o_a. Every operation on the way
  (integer positions, integer weights, sums of integers in float64) is exact, so the scores are
  exactly 0 or 1. 1-D: r = (1,), exact on all of Z, full support. 2-D: a one-hidden-layer net needs a
  code that is injective on the offsets it can see; we take the balanced mixed-radix code
  u = (2w + 1) dp_row + dp_col with w = max_axis d (k - 1), which is injective on the box
  |dp|_inf <= w (both digits lie in [-w, w]), and restrict the support to that box (window=w, a local
  CKConv-style support). Every tap satisfies |o_a|_inf <= w, so nothing the conv needs is cut, and
  the construction does not depend on the input size. (The offsets seen must be bounded somewhere:
  the hats need integer codes, and an integer code r . dp is never injective on all of Z^2, since
  dp = (r_2, -r_1) codes to 0; tests/proofs/test_conv.py shows the collisions without the window.)

**Gradients.** The layer keeps the *conventional* weight and bias (Parameters when given as ndarrays,
the given Tensors otherwise). The operator's W_V, W_O and b are empty slots of its IntegralTransform,
filled at every call by ``functional_call``: W_O derived from W (block-diagonal placement: one einsum
with a constant identity over groups), b from the bias, W_V a constant stack of identities; so
backward reaches x, W and b. The kernel's own parameters (table, or the hat MLP) stay Parameters of
the layer: it is a trainable ITNet layer that *starts* as the conv.

**Reverse map.** :func:`extract_conv_weights` probes any layer with unit impulses e_{c, j} (one batch
item per input channel and tap, at an anchor whose receptive field lies inside the probe) plus one
zero input; the zero input gives b, the impulse at tap a of channel c gives W[o, c', a] + b[o].

Pitfalls: cross-correlation, not convolution; 'same' puts the odd zero on the right; 'same' with
stride > 1 is an error (as in PyTorch); the MLP hat kernel is exact only on integer offsets.

Proof: tests/proofs/test_conv.py (forward and gradients vs itnet_np.proofs.reference.conv1d_ref /
conv2d_ref and torch, exact kernel matrices, round trips, error messages); suite entries ``conv*``.
"""
import numpy as np

from itnet_np.autograd import ops
from itnet_np.autograd.backend import xp_of
from itnet_np.autograd.engine import no_grad
from itnet_np.autograd.ops._util import raw
from itnet_np.autograd.tensor import Tensor
from itnet_np.errors import ConfigError, ShapeError
from itnet_np.nn.module import Module, functional_call
from itnet_np.transform import IntegralTransform, MLPKernel, StencilKernel, conv_offsets, grid_positions

from . import _common

__all__ = ["ConvAsITNet", "conv1d_as_itnet", "conv2d_as_itnet", "extract_conv_weights", "hat_kernel"]

KERNELS = ("stencil", "mlp")


def _ints(value, dims, name, fn, minimum=1):
    """An int or a length-``dims`` sequence of ints -> tuple of ints (each >= minimum)."""
    if isinstance(value, (int, np.integer)):
        value = (int(value),) * dims
    try:
        value = tuple(int(v) for v in value)
    except TypeError:
        raise ConfigError(f"{fn}: {name} must be an int or {dims} ints, got {value!r}") from None
    if len(value) != dims or min(value) < minimum:
        raise ConfigError(f"{fn}: {name} must be an int or {dims} ints, each >= {minimum}, got {value!r}")
    return value


def _pads(padding, kernel_size, dilation, stride, fn):
    """((P_l, P_r), ...) per axis from an int, ints, 'same' (torch rule) or 'valid'."""
    if isinstance(padding, str):
        if padding == "valid":
            return tuple((0, 0) for _ in kernel_size)
        if padding != "same":
            raise ConfigError(f"{fn}: padding must be an int, a tuple of ints, 'same' or 'valid', "
                              f"got {padding!r}")
        if any(s != 1 for s in stride):
            raise ConfigError(f"{fn}: padding='same' is not supported for strided convolutions "
                              f"(got stride {stride}); PyTorch raises too")
        totals = [d * (k - 1) for k, d in zip(kernel_size, dilation)]
        return tuple((t // 2, t - t // 2) for t in totals)
    return tuple((p, p) for p in _ints(padding, len(kernel_size), "padding", fn, minimum=0))


def hat_kernel(offsets, in_features, dtype=None):
    """An MLPKernel (inputs=('dp',), ReLU) whose head a is exactly 1[p_j - q_i = offsets[a]] on
    integer offsets (see the module docstring); returns (kernel, window) with window None in 1-D and
    w = max |offset| in D >= 2 (the support the code is injective on)."""
    offsets = np.asarray(offsets, dtype=np.int64).reshape(len(offsets), -1)
    taps, dims = offsets.shape
    w = int(np.abs(offsets).max())
    radix = np.array([(2 * w + 1) ** (dims - 1 - k) for k in range(dims)], dtype=np.int64)
    centres = -(offsets @ radix)                        # dp = q - p = -o, coded
    kernel = MLPKernel(in_features, heads=taps, hidden=3 * taps, inputs=("dp",), position_dim=dims,
                       query_features=1, activation="relu", dtype=dtype)
    dt = kernel.W1.dtype
    kernel.W1.data[...] = np.repeat(radix[None, :], 3 * taps, axis=0).astype(dt)
    kernel.b1.data[...] = (-np.repeat(centres, 3) + np.tile([1, 0, -1], taps)).astype(dt)
    kernel.W2.data[...] = np.kron(np.eye(taps), [[1.0, -2.0, 1.0]]).astype(dt) + 0.0   # + 0.0: no negative zeros from kron
    kernel.b2.data[...] = 0.0
    return kernel, (w if dims > 1 else None)


class ConvAsITNet(Module):
    """A Conv1d/Conv2d as an IntegralTransform (built by :func:`conv1d_as_itnet` / :func:`conv2d_as_itnet`).

    ``layer(x)``: x (B, C_in, *spatial) -> (B, C_out, *spatial_out). Attributes: ``weight``
    (C_out, C_in/G, *k), ``bias`` (C_out,) or None, ``transform`` (the IntegralTransform),
    ``kernel_size``, ``stride``, ``dilation``, ``pads`` ((P_l, P_r) per axis), ``padding``, ``groups``,
    ``in_channels``, ``out_channels``, ``spatial_dims``, ``kind``.
    """

    def __init__(self, weight, bias, stride, padding, dilation, groups, kernel, dims, in_channels, fn):
        super().__init__()
        if kernel not in KERNELS:
            raise ConfigError(f"{fn}: kernel must be one of {KERNELS}, got {kernel!r}")
        shape = tuple(getattr(weight, "shape", np.shape(weight)))
        kdesc = "K" if dims == 1 else "kh, kw"
        if len(shape) != dims + 2 or min(shape, default=0) < 1:
            raise ShapeError(f"{fn}: weight must have shape (C_out, C_in/groups, {kdesc}), got shape {shape}")
        groups = int(groups)
        c_out, cin_g, ksize = shape[0], shape[1], shape[2:]
        if groups < 1 or c_out % groups:
            raise ConfigError(f"{fn}: out_channels={c_out} (weight shape {shape}) must be divisible by "
                              f"groups={groups}")
        if in_channels is not None and (in_channels % groups or in_channels // groups != cin_g):
            raise ConfigError(f"{fn}: in_channels={in_channels} must be divisible by groups={groups} and "
                              f"equal groups * weight.shape[1] = {groups * cin_g}; weight shape {shape} is "
                              f"expected to be ({c_out}, {in_channels}/{groups}, {kdesc})")
        if bias is not None and tuple(getattr(bias, "shape", np.shape(bias))) != (c_out,):
            raise ShapeError(f"{fn}: bias must have shape ({c_out},), got shape "
                             f"{tuple(getattr(bias, 'shape', np.shape(bias)))}")
        self.fn, self.kind, self.spatial_dims, self.groups = fn, kernel, dims, groups
        self.kernel_size, self.out_channels, self.in_channels = ksize, c_out, groups * cin_g
        self.stride = _ints(stride, dims, "stride", fn)
        self.dilation = _ints(dilation, dims, "dilation", fn)
        self.padding = padding
        self.pads = _pads(padding, ksize, self.dilation, self.stride, fn)
        self.weight = _common.weight(weight, "weight", fn)
        self.bias = _common.weight(bias, "bias", fn)
        dtype = self.weight.dtype
        offsets = conv_offsets(ksize, self.dilation)    # (T, D), source minus query
        taps, window = offsets.shape[0], None
        if kernel == "stencil":
            kern = StencilKernel(offsets, dtype=dtype)
        else:
            kern, window = hat_kernel(offsets, self.in_channels, dtype)
        # W_V, W_O and b are functions of the conv weight, not free parameters: empty slots that
        # every call fills (maps()); the kernel's own parameters stay.
        transform = IntegralTransform(self.in_channels, c_out, kern, query_features=1,
                                      embed_dim=taps * self.in_channels, window=window,
                                      bias=bias is not None, dtype=dtype)
        self.transform = _common.template(transform, "W_V", "W_O", *(("b",) if bias is not None else ()))

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding!r}, dilation={self.dilation}, "
                f"groups={self.groups}, bias={self.bias is not None}, kernel={self.kind!r}")

    def output_size(self, spatial):
        """Output sizes floor((n + P_l + P_r - d (k - 1) - 1) / s) + 1 per axis."""
        return tuple((n + pl + pr - d * (k - 1) - 1) // s + 1 for n, (pl, pr), d, k, s
                     in zip(spatial, self.pads, self.dilation, self.kernel_size, self.stride))

    def output_map(self):
        """W_O (C_out, T C_in): column block a is W[:, :, a] placed block-diagonally over groups."""
        G, T = self.groups, int(np.prod(self.kernel_size))
        w = ops.reshape(self.weight, (G, self.out_channels // G, self.in_channels // G, T))
        blocks = ops.einsum("goct,gh->gothc", w, xp_of(raw(self.weight)).eye(G, dtype=self.weight.dtype))
        return ops.reshape(blocks, (self.out_channels, T * self.in_channels))

    def maps(self):
        """The transform's maps derived from the conv weights (names as functional_call takes them):
        W_V^a = I (a constant), W_O = :meth:`output_map`, b = bias."""
        xp, T = xp_of(raw(self.weight)), int(np.prod(self.kernel_size))
        out = {"W_V": xp.tile(xp.eye(self.in_channels, dtype=self.weight.dtype), (T, 1)),
               "W_O": self.output_map()}
        if self.bias is not None:
            out["b"] = self.bias
        return out

    def _operands(self, x):
        """(query features, query anchors, sources, source positions, output sizes) for x."""
        shape = tuple(x.shape)
        if len(shape) != self.spatial_dims + 2 or shape[1] != self.in_channels:
            axes = "L" if self.spatial_dims == 1 else "H, W"
            raise ShapeError(f"{self.fn}: x must have shape (B, {self.in_channels}, {axes}), "
                             f"got shape {shape}")
        B, spatial = shape[0], shape[2:]
        out = self.output_size(spatial)
        if min(out) < 1:
            raise ShapeError(f"{self.fn}: input size {spatial} is too small for kernel {self.kernel_size} "
                             f"with dilation {self.dilation}, stride {self.stride} and padding "
                             f"{self.pads} (output size {out}, expected >= 1)")
        data = x.data if isinstance(x, Tensor) else x
        xp, dtype = xp_of(data), data.dtype
        anchors = grid_positions(out, spacing=self.stride, origin=[-pl for pl, _ in self.pads], dtype=dtype)
        positions = grid_positions(spatial, dtype=dtype)
        perm = (0,) + tuple(range(2, self.spatial_dims + 2)) + (1,)
        source = ops.reshape(ops.transpose(x, perm), (B, -1, self.in_channels))
        query = xp.zeros((B, anchors.shape[0], 1), dtype)
        return query, xp.asarray(anchors), source, xp.asarray(positions), out

    def kernel_matrix(self, x):
        """The operator's A (B, T, N_out, M): head a, anchor i, source j (exactly 0/1 here)."""
        q, anchors, source, positions, _ = self._operands(x)
        return self.transform.kernel_matrix(q, anchors, source, positions)

    def forward(self, x):
        q, anchors, source, positions, out = self._operands(x)
        y = functional_call(self.transform, self.maps(), q, positions=anchors, source=source,
                            source_positions=positions)
        y = ops.reshape(y, (x.shape[0],) + out + (self.out_channels,))
        return ops.transpose(y, (0, self.spatial_dims + 1) + tuple(range(1, self.spatial_dims + 1)))


def conv1d_as_itnet(weight, bias=None, stride=1, padding=0, dilation=1, groups=1, kernel="stencil",
                    in_channels=None):
    """The ITNet layer equal to torch.nn.functional.conv1d(x, weight, bias, stride, padding, dilation,
    groups) for x (B, C_in, L): weight (C_out, C_in/groups, K), bias (C_out,) or None (arrays become
    Parameters; Tensors are kept so gradients reach them); padding int, 'same' or 'valid';
    kernel 'stencil' or 'mlp' (hat MLP, see module docstring). Returns a :class:`ConvAsITNet`."""
    return ConvAsITNet(weight, bias, stride, padding, dilation, groups, kernel, 1, in_channels,
                       "conv1d_as_itnet")


def conv2d_as_itnet(weight, bias=None, stride=1, padding=0, dilation=1, groups=1, kernel="stencil",
                    in_channels=None):
    """As :func:`conv1d_as_itnet` for torch.nn.functional.conv2d: x (B, C_in, H, W), weight
    (C_out, C_in/groups, kh, kw); stride, dilation, padding ints or pairs (or 'same' / 'valid')."""
    return ConvAsITNet(weight, bias, stride, padding, dilation, groups, kernel, 2, in_channels,
                       "conv2d_as_itnet")


def extract_conv_weights(layer, in_channels, kernel_size, dilation=None, groups=None, stride=None,
                         padding=None, dtype=np.float64):
    """(weight, bias) of a conv-like ``layer`` read off its impulse responses.

    ``layer`` maps (B, C_in, *spatial) -> (B, C_out, *spatial_out) affinely (an ITNet conv layer, a
    trained one, or anything with the same contract). dilation, groups, stride, padding default to
    the layer's attributes of those names (else 1, 1, 1, 0); kernel_size is an int (1-D, unless the
    layer says spatial_dims=2) or a tuple. Probes: one zero input (its response at an interior anchor
    i0 is b) and, per input channel c and tap a, the unit impulse at p = s i0 - P_l + d a, whose
    response at i0 is W[o, c - g C_in/G, a] + b[o] for o in c's group g. Returns weight
    (C_out, C_in/groups, *k) and bias (C_out,) (zeros for a layer without bias) as ndarrays.
    """
    fn = "extract_conv_weights"
    dims = len(kernel_size) if np.iterable(kernel_size) else getattr(layer, "spatial_dims", 1)
    ksize = _ints(kernel_size, dims, "kernel_size", fn)
    dil = _ints(dilation if dilation is not None else getattr(layer, "dilation", 1), dims, "dilation", fn)
    stride = _ints(stride if stride is not None else getattr(layer, "stride", 1), dims, "stride", fn)
    groups = int(groups if groups is not None else getattr(layer, "groups", 1))
    pads = _pads(padding if padding is not None else getattr(layer, "padding", 0), ksize, dil, stride, fn)
    if groups < 1 or in_channels % groups:
        raise ConfigError(f"{fn}: in_channels={in_channels} must be divisible by groups={groups}")
    i0 = tuple(-(-pl // s) for (pl, _), s in zip(pads, stride))           # first anchor s i0 - P_l >= 0
    start = tuple(s * i - pl for i, (pl, _), s in zip(i0, pads, stride))
    spatial = tuple(st + d * (k - 1) + 1 for st, d, k in zip(start, dil, ksize))
    taps = conv_offsets(ksize, dil)                                       # (T, D)
    T = taps.shape[0]
    probes = np.zeros((in_channels * T + 1,) + (in_channels,) + spatial, dtype)
    for c in range(in_channels):
        for a in range(T):
            probes[(c * T + a, c) + tuple(np.add(start, taps[a]))] = 1.0
    with no_grad():
        y = layer(probes)
    y = np.asarray(y.data if isinstance(y, Tensor) else y)
    resp = y[(slice(None), slice(None)) + i0]                             # (C_in T + 1, C_out)
    bias, c_out = resp[-1], resp.shape[1]
    if c_out % groups:
        raise ConfigError(f"{fn}: the layer has {c_out} output channels, not divisible by groups={groups}")
    G, cin_g, cout_g = groups, in_channels // groups, c_out // groups
    resp = (resp[:-1] - bias).reshape(G, cin_g, T, G, cout_g)             # (h, c', a, g, o')
    weight = np.einsum("gctgo->goct", resp).reshape((c_out, cin_g) + ksize)
    return weight, bias

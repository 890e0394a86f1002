"""LowRankKernel: a finite feature-map kernel, the kernel of linear attention, and the learned low-rank
factorisation of ITNet's kernel.

    s^h_ij = phi^h(z_i) . psi^h(z_j)        (rank r = feature_dim per head)

    z_x = [ p_x (D) | sin(w p_x), cos(w p_x) (2F) | f_x (C) ]     (``inputs`` picks which appear)
    phi^h(z) = fmap(W_q^h g_q(z) + b_q^h),   g_q(z) = z  (hidden=None)  or  act(U_q z + c_q)  (a small MLP)

and psi likewise with W_k, U_k, c_k and ``key_feature_map``. The default (inputs=('f',), hidden=None)
is linear attention's phi(W_q f_i): fmap named in itnet_np.nn.functional.activations.ACTIVATIONS,
e.g. 'elu+1' (Katharopoulos et al. 2020). With positions, Fourier features and a hidden layer, phi
and psi see what the MLPKernel sees, so a trained MLPKernel can be distilled into one
(transform/lowrank/distill.py): cos(w (p_x - p_y)) = cos(w p_x) cos(w p_y) + sin(w p_x) sin(w p_y)
is exactly rank 2 in these features.

Because the score is a rank-r inner product, sum_j w_j s_ij v_j = phi_i . (sum_j psi_j w_j v_j^T) is
evaluated in O((N + M) r d) by the 'lowrank' backend (transform/lowrank/plan.py; prefix sums for
causal and other band supports, the ratio for 'sum'); the dense backend forms the scores. Under
'softmax' the score is a logit and e^(phi . psi) has no rank-r form: for attention-like
normalisation use 'sum' with positive feature maps (phi, psi > 0, e.g. 'elu+1', 'exp', 'softplus'),
which is linear attention's (and the Performer's) form of softmax.
"""
from ...autograd import ops
from ...errors import ConfigError
from ...nn.functional.activations import get_activation
from .._config import flag, integer, number, optional_integer
from .base import (
    Kernel,
    Projection,
    check_features,
    generator,
    new_parameter,
    query_key_parameters,
    split_heads,
)

INPUTS = ("p", "fourier", "f")


class LowRankKernel(Kernel):
    """``LowRankKernel(in_features, heads=1, feature_dim=None, query_features=None,
    feature_map='elu+1', key_feature_map=None, bias=False, inputs=('f',), hidden=None,
    activation='tanh', position_dim=1, fourier=0, frequencies=None, frequency_scale=1.0, rng=None,
    dtype=None)``.

    Parameters ``W_q`` (H r, Zq) and ``W_k`` (H r, Zk) (Z = the input width, or ``hidden``), rows
    grouped by head, ``b_q``, ``b_k`` (H r,) when bias (zeros at init); with ``hidden``: ``U_q``
    (hidden, Zq), ``c_q`` (hidden,), ``U_k``, ``c_k``; with 'fourier' the buffer ``frequencies``
    (F, D) ~ N(0, frequency_scale^2) unless ``frequencies`` are given (e.g. an MLPKernel's, to distil
    it). r defaults to in_features // heads (at least 1);
    key_feature_map defaults to feature_map.
    """

    def __init__(self, in_features, heads=1, feature_dim=None, query_features=None,
                 feature_map="elu+1", key_feature_map=None, bias=False, inputs=("f",), hidden=None,
                 activation="tanh", position_dim=1, fourier=0, frequencies=None, frequency_scale=1.0, rng=None,
                 dtype=None):
        super().__init__(heads)
        name = "LowRankKernel"
        rng = generator(rng, name)
        self.in_features = integer(name, "in_features", in_features)
        self.query_features = optional_integer(name, "query_features", query_features) or self.in_features
        self.feature_dim = optional_integer(name, "feature_dim", feature_dim) or max(self.in_features // self.heads, 1)
        self.feature_map_name, self.phi = get_activation(feature_map, "LowRankKernel feature_map")
        self.key_feature_map_name, self.psi = get_activation(
            feature_map if key_feature_map is None else key_feature_map, "LowRankKernel key_feature_map")
        inputs = (inputs,) if isinstance(inputs, str) else tuple(inputs)
        if not inputs or any(i not in INPUTS for i in inputs) or len(set(inputs)) != len(inputs):
            raise ConfigError(f"{name}: inputs must be a non-empty subset of {INPUTS} (no repeats), got {inputs}")
        self.inputs = tuple(i for i in INPUTS if i in inputs)
        self.hidden = optional_integer(name, "hidden", hidden)
        bias = flag(name, "bias", bias)
        width = self.heads * self.feature_dim
        if self.inputs == ("f",) and self.hidden is None:       # linear attention's phi(W_q f_i)
            query_key_parameters(self, width, rng, dtype, bias)
            return
        if "p" in self.inputs or "fourier" in self.inputs:
            self.position_dim = integer(name, "position_dim", position_dim)
        D = self.position_dim or 0
        F = 0
        if "fourier" in self.inputs:
            if frequencies is None:
                F = integer(name, "fourier", fourier)
                scale = number(name, "frequency_scale", frequency_scale, minimum=0.0)
                frequencies = rng.normal(0.0, scale, size=(F, D))
            shape = getattr(frequencies, "shape", None)
            if shape is None or len(shape) != 2 or shape[1] != D or not shape[0]:
                raise ConfigError(f"{name}: frequencies must be (F, {D}) with F >= 1, got {frequencies!r:.60}")
            F = shape[0]
            self.register_buffer("frequencies", new_parameter(shape, rng, dtype, value=frequencies).data)
        shared = D * ("p" in self.inputs) + 2 * F
        widths = [shared + self.query_features * ("f" in self.inputs), shared + self.in_features * ("f" in self.inputs)]
        if self.hidden is not None:
            self.activation_name, self.activation = get_activation(activation, f"{name} activation")
            self.U_q = new_parameter((self.hidden, widths[0]), rng, dtype, fan_in=widths[0])
            self.c_q = new_parameter((self.hidden,), rng, dtype, fan_in=widths[0])
            self.U_k = new_parameter((self.hidden, widths[1]), rng, dtype, fan_in=widths[1])
            self.c_k = new_parameter((self.hidden,), rng, dtype, fan_in=widths[1])
            widths = [self.hidden, self.hidden]
        self.W_q = new_parameter((width, widths[0]), rng, dtype, fan_in=widths[0])
        self.W_k = new_parameter((width, widths[1]), rng, dtype, fan_in=widths[1])
        self.b_q = new_parameter((width,), rng, dtype) if bias else None
        self.b_k = new_parameter((width,), rng, dtype) if bias else None

    def extra_repr(self):
        return (f"in_features={self.in_features}, heads={self.heads}, feature_dim={self.feature_dim}, "
                f"feature_map={self.feature_map_name!r}, inputs={self.inputs}, hidden={self.hidden}")

    def _inputs(self, points):
        """z (B, n, Z) of the module docstring."""
        f = points.features
        lead = tuple(f.shape[:2])
        parts = []
        if "p" in self.inputs:
            parts.append(ops.broadcast_to(points.positions, lead + (points.positions.shape[-1],)))
        if "fourier" in self.inputs:
            angle = ops.matmul(points.positions, ops.transpose(self.frequencies))
            parts += [ops.broadcast_to(ops.sin(angle), lead + (angle.shape[-1],)),
                      ops.broadcast_to(ops.cos(angle), lead + (angle.shape[-1],))]
        if "f" in self.inputs:
            parts.append(f)
        return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)

    def hidden_features(self, points, side):
        """The hidden layer act(U z + c) (B, n, hidden) of ``side`` 'query' or 'source' (needs ``hidden``)."""
        if self.hidden is None:
            raise ConfigError("LowRankKernel.hidden_features: this kernel has no hidden layer (hidden=None)")
        if side not in ("query", "source"):
            raise ConfigError(f"LowRankKernel.hidden_features: side must be 'query' or 'source', got {side!r}")
        U, c = (self.U_q, self.c_q) if side == "query" else (self.U_k, self.c_k)
        return self.activation(ops.matmul(self._inputs(points), ops.transpose(U)) + c)

    def _features(self, points, weight, bias, fmap, side):
        z = self._inputs(points) if self.hidden is None else self.hidden_features(points, side)
        return fmap(split_heads(z, weight, bias, self.heads, self.feature_dim))

    def project(self, query, source):
        check_features(self, query, self.query_features, "query")
        check_features(self, source, self.in_features, "source")
        return Projection({"phi": self._features(query, self.W_q, self.b_q, self.phi, "query")},
                          {"psi": self._features(source, self.W_k, self.b_k, self.psi, "source")})

    def scores(self, proj):
        return ops.einsum("bnhr,bmhr->bhnm", proj.query["phi"], proj.source["psi"])


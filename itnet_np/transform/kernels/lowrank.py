"""LowRankKernel: a finite feature-map kernel, the kernel of linear attention.

    s^h_ij = phi(W_q^h f_i + b_q^h) . psi(W_k^h f_j + b_k^h)        (rank r = feature_dim per head)

phi, psi are named activations (itnet_np.nn.functional.activations.ACTIVATIONS), e.g. 'elu+1'
(Katharopoulos et al. 2020), or callables. With normalization='sum' and a causal support this is
causal linear attention; because the score is a rank-r inner product, sum_j s_ij v_j =
phi_i . (sum_j psi_j v_j^T) can be evaluated in O((N + M) r d) (prefix sums when causal); the dense
backend forms the scores.
"""
from ...autograd import ops
from ...nn.functional.activations import get_activation
from .._config import flag, integer, optional_integer
from .base import Kernel, Projection, check_features, generator, query_key_parameters, split_heads


class LowRankKernel(Kernel):
    """``LowRankKernel(in_features, heads=1, feature_dim=None, query_features=None,
    feature_map='elu+1', key_feature_map=None, bias=False, rng=None, dtype=None)``.

    Parameters ``W_q`` (H r, Cq), ``W_k`` (H r, Cs), rows grouped by head, and ``b_q``, ``b_k``
    (H r,) when bias (zeros at init); r defaults to in_features // heads (at least 1).
    key_feature_map defaults to feature_map.
    """

    def __init__(self, in_features, heads=1, feature_dim=None, query_features=None,
                 feature_map="elu+1", key_feature_map=None, bias=False, rng=None, dtype=None):
        super().__init__(heads)
        name = "LowRankKernel"
        rng = generator(rng, name)
        self.in_features = integer(name, "in_features", in_features)
        self.query_features = optional_integer(name, "query_features", query_features) or self.in_features
        self.feature_dim = optional_integer(name, "feature_dim", feature_dim) or max(self.in_features // self.heads, 1)
        self.feature_map_name, self.phi = get_activation(feature_map, "LowRankKernel feature_map")
        self.key_feature_map_name, self.psi = get_activation(
            feature_map if key_feature_map is None else key_feature_map, "LowRankKernel key_feature_map")
        query_key_parameters(self, self.heads * self.feature_dim, rng, dtype, flag(name, "bias", bias))

    def extra_repr(self):
        return (f"in_features={self.in_features}, heads={self.heads}, feature_dim={self.feature_dim}, "
                f"feature_map={self.feature_map_name!r}")

    def _features(self, f, weight, bias, fmap):
        return fmap(split_heads(f, weight, bias, self.heads, self.feature_dim))

    def project(self, query, source):
        check_features(self, query, self.query_features, "query")
        check_features(self, source, self.in_features, "source")
        return Projection({"phi": self._features(query.features, self.W_q, self.b_q, self.phi)},
                          {"psi": self._features(source.features, self.W_k, self.b_k, self.psi)})

    def scores(self, proj):
        return ops.einsum("bnhr,bmhr->bhnm", proj.query["phi"], proj.source["psi"])

"""Suite checks for :mod:`itnet_np.proofs.linear_attention`: the LowRankKernel transform equals
recurrent linear attention."""
from itnet_np.verify import Measurement, directional_gradient_error, max_abs, reduction

from ..linear_attention import linear_attention_as_itnet
from ..reference import linear_attention_layer_ref


@reduction("linear attention = RNN")
def _verify_linear_attention(rng):
    """ITNet LowRankKernel (elu+1, 'sum', causal) == recurrent linear attention (eps = 0), with biases."""
    n_batch, L, C, H, r, dv = (int(v) for v in rng.integers(1, [2, 10, 4, 3, 3, 3], endpoint=True))
    shapes = {"q_weight": (H * r, C), "k_weight": (H * r, C), "v_weight": (H * dv, C),
              "out_weight": (C, H * dv), "q_bias": (H * r,), "k_bias": (H * r,), "v_bias": (H * dv,),
              "out_bias": (C,)}
    names = [n for n in shapes if "weight" in n or rng.random() < 0.5]
    inputs = [rng.standard_normal((n_batch, L, C))] + [rng.standard_normal(shapes[n]) for n in names]

    def itnet(x, *ws):
        return linear_attention_as_itnet(num_heads=H, **dict(zip(names, ws)))(x)

    def reference(x, *ws):
        return linear_attention_layer_ref(x, dict(zip(names, ws)), H)
    return Measurement(forward=max_abs(itnet(*inputs), reference(*inputs)),
                       gradient=directional_gradient_error(itnet, reference, inputs, rng))

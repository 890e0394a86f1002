"""ITNetConfig: the sizes and kernel choices of an ITNet backbone, named sizes and the ablations.

The paper's MLP kernel sees, for a query point i and a source point j (see
itnet_np.transform.kernels.mlp):

    dp = p_i - p_j (D),  dist2 = ||dp||^2 (1),  fourier = [sin(w dp), cos(w dp)] (2F),
    prod = (P f_i) * (Q f_j) (f_i ⊙ f_j after a projection, rank C),   fi, fj = the features themselves

``ABLATIONS`` names the variants of the paper's kernel-input table: the full kernel, each input
removed in turn, and the pure-content / pure-position kernels. With the default full set
(dp, dist2, fourier, prod) removing 'prod' leaves the position-only kernel, so 'no_prod' and
'position_only' have the same inputs; both names are kept to match the table's rows.
"""
import dataclasses

from ..errors import ConfigError
from ..transform.kernels.mlp import INPUTS

FULL = ("dp", "dist2", "fourier", "prod")
SOURCES = ("norm", "stream")
ABLATIONS = {
    "full": FULL,
    "no_prod": ("dp", "dist2", "fourier"),
    "no_dp": ("dist2", "fourier", "prod"),
    "no_dist2": ("dp", "fourier", "prod"),
    "no_fourier": ("dp", "dist2", "prod"),
    "content_only": ("prod", "fi", "fj"),
    "position_only": ("dp", "dist2", "fourier"),
}


@dataclasses.dataclass(frozen=True)
class ITNetConfig:
    """Sizes of an ITNet backbone.

    width C (feature width through the blocks), depth (number of blocks), heads H (divides C),
    kernel_hidden K (hidden units of the MLP kernel), fourier F (frequencies, used when 'fourier' is
    an input), frequency_scale (std of the random frequencies; positions live in [0, 1]),
    kernel_inputs (a subset of transform.kernels.mlp.INPUTS, or a name in ABLATIONS), ffn_mult (the
    feed-forward hidden width is ffn_mult * C), dropout, backend ('auto', 'dense', 'numba', ...).

    source: what each block integrates over. 'norm' (pre-norm, the default): the sources f_j are
    LN(x_j), as the queries. 'stream': the sources are the residual stream x_j itself (queries stay
    LN(x_i)), so y_i = sum_j a_ij V x_j is linear in the stream: a block can pass an amplitude such
    as the mean of an input function on exactly, which LN's per-point rescaling distorts. The
    operator tasks use it. final_norm: LN before the head (True) or the stream itself (False).
    """

    width: int = 32
    depth: int = 2
    heads: int = 2
    kernel_hidden: int = 16
    fourier: int = 8
    frequency_scale: float = 6.0
    kernel_inputs: tuple = FULL
    ffn_mult: int = 2
    dropout: float = 0.0
    backend: str = "auto"
    source: str = "norm"
    final_norm: bool = True

    def __post_init__(self):
        inputs = self.kernel_inputs
        if isinstance(inputs, str):
            if inputs not in ABLATIONS:
                raise ConfigError(f"ITNetConfig: kernel_inputs {inputs!r} is not an ablation name; "
                                  f"choose one of {sorted(ABLATIONS)} or give a tuple from {INPUTS}")
            inputs = ABLATIONS[inputs]
        inputs = tuple(inputs)
        if not inputs or any(i not in INPUTS for i in inputs) or len(set(inputs)) != len(inputs):
            raise ConfigError(f"ITNetConfig: kernel_inputs must be a non-empty subset of {INPUTS}, "
                              f"got {self.kernel_inputs!r}")
        object.__setattr__(self, "kernel_inputs", inputs)
        for name in ("width", "depth", "heads", "kernel_hidden", "ffn_mult"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"ITNetConfig: {name} must be an int >= 1, got {value!r}")
        if isinstance(self.fourier, bool) or not isinstance(self.fourier, int) or self.fourier < 0:
            raise ConfigError(f"ITNetConfig: fourier must be an int >= 0, got {self.fourier!r}")
        if "fourier" in inputs and self.fourier < 1:
            raise ConfigError("ITNetConfig: kernel_inputs include 'fourier' but fourier=0")
        if self.width % self.heads:
            raise ConfigError(f"ITNetConfig: width={self.width} is not divisible by heads={self.heads}")
        if self.source not in SOURCES:
            raise ConfigError(f"ITNetConfig: source must be one of {SOURCES}, got {self.source!r}")
        if not isinstance(self.final_norm, bool):
            raise ConfigError(f"ITNetConfig: final_norm must be a bool, got {self.final_norm!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"ITNetConfig: dropout must be in [0, 1), got {self.dropout!r}")

    @classmethod
    def named(cls, size, **overrides):
        """A named size ('tiny', 'small', 'base'), with any field overridden by keyword."""
        if size not in SIZES:
            raise ConfigError(f"ITNetConfig.named: unknown size {size!r}; choose one of {sorted(SIZES)}")
        return cls(**{**SIZES[size], **overrides})

    def ablation(self, name):
        """This configuration with the kernel inputs of ``ABLATIONS[name]``."""
        return dataclasses.replace(self, kernel_inputs=name)


SIZES = {
    "tiny": {"width": 16, "depth": 1, "heads": 2, "kernel_hidden": 8, "fourier": 4},
    "small": {"width": 32, "depth": 2, "heads": 4, "kernel_hidden": 16, "fourier": 8},
    "base": {"width": 64, "depth": 4, "heads": 4, "kernel_hidden": 32, "fourier": 16},
}

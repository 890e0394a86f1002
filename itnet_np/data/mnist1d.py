"""MNIST-1D (Greydanus 2020): ten 1-D "digit" templates, randomly warped and noised, 40 samples each.

The recipe, in the paper's order, for one example of class c (template T_c of 12 values):

1. pad: append p zeros, p uniform in {36, ..., 60}, to T_c + 1e-8 (the offset keeps the signal
   nonzero, so step 4 can tell it from the padding);
2. dilate: resample the 12 + p values linearly onto 72 = 12 + 60 points spanning the same interval;
3. scale by 1 + 0.4 (u - 1/2) and translate: roll right by k, k uniform in {0, ..., 47};
4. noise: where the signal is exactly 0 (the padding) put correlated noise, Gaussian-smoothed
   (sigma = 2 samples) iid N(0, 0.25^2); then add iid N(0, 0.02^2) everywhere;
5. shear: subtract a (s - 1/2) ramp with s going linearly from -1/2 to 1/2, a = 0.75 (u - 1/2);
6. resample linearly onto 40 points; finally the whole data set is standardised (one mean and one
   standard deviation over all examples and positions).

Classes are balanced (num_samples / 10 each) and split per class (``test_fraction``, default 0.2:
4000 train / 1000 test). Published test accuracies: logistic regression 32%, MLP 68%, CNN 94%,
GRU 91%.

Shapes: x (N, 40) float32, y (N,) int64, positions (40, 1) float32 = linspace(0, 1, 40).
"""
import numpy as np
from scipy.ndimage import gaussian_filter1d

from ..errors import ConfigError
from .base import Dataset, check_float, check_int, stratified_split

# The ten hand-designed templates of the paper (digit shapes drawn as 1-D curves).
_RAW = np.array([
    [5, 6, 6.5, 6.75, 7, 7, 7, 7, 6.75, 6.5, 6, 5],
    [5, 3, 3, 3.4, 3.8, 4.2, 4.6, 5, 5.4, 5.8, 5, 5],
    [5, 6, 6.5, 6.5, 6, 5.25, 4.75, 4, 3.5, 3.5, 4, 5],
    [5, 6, 6.5, 6.5, 6, 5, 5, 6, 6.5, 6.5, 6, 5],
    [5, 4.4, 3.8, 3.2, 2.6, 2.6, 5, 5, 5, 5, 5, 5],
    [5, 3, 3, 3, 3, 5, 6, 6.5, 6.5, 6, 4.5, 5],
    [5, 4, 3.5, 3.25, 3, 3, 3, 3, 3.25, 3.5, 4, 5],
    [5, 7, 7, 6.6, 6.2, 5.8, 5.4, 5, 4.6, 4.2, 5, 5],
    [5, 4, 3.5, 3.5, 4, 5, 5, 4, 3.5, 3.5, 4, 5],
    [5, 4, 3.5, 3.5, 4, 5, 5, 5, 5, 4.7, 4.3, 5],
])

RECIPE = {"padding": (36, 60), "scale_coeff": 0.4, "max_translation": 48, "corr_noise_scale": 0.25,
          "iid_noise_scale": 0.02, "shear_scale": 0.75, "length": 40}


def templates():
    """(10, 12) float64: each raw template standardised (zero mean, unit std), shifted to start
    at 0, divided by 6."""
    x = _RAW - _RAW.mean(axis=1, keepdims=True)
    x = x / x.std(axis=1, keepdims=True)
    return (x - x[:, :1]) / 6.0


def draw(rng, n, recipe=RECIPE):
    """The random choices of n examples (a dict of arrays, one row per example), in a fixed order."""
    low, high = recipe["padding"]
    fine = 12 + high
    return {"pad": rng.integers(low, high + 1, size=n),
            "scale": 1 + recipe["scale_coeff"] * (rng.random(n) - 0.5),
            "shift": rng.integers(0, recipe["max_translation"], size=n),
            "corr": recipe["corr_noise_scale"] * rng.standard_normal((n, fine)),
            "iid": recipe["iid_noise_scale"] * rng.standard_normal((n, fine)),
            "shear": recipe["shear_scale"] * (rng.random(n) - 0.5)}


def _resample(values, lengths, m):
    """Row i's first lengths[i] values, linearly resampled onto m points over the same interval."""
    f = np.linspace(0.0, 1.0, m)[None, :] * (lengths[:, None] - 1)
    i0 = np.minimum(np.floor(f).astype(np.int64), lengths[:, None] - 2)
    w = f - i0
    left = np.take_along_axis(values, i0, axis=1)
    right = np.take_along_axis(values, i0 + 1, axis=1)
    return left * (1 - w) + right * w


def render(labels, draws, recipe=RECIPE):
    """Steps 1-6 of the recipe (before the data-set standardisation): (n, length) float64."""
    n = len(labels)
    t = templates()
    fine = draws["corr"].shape[1]
    padded = np.zeros((n, fine))
    padded[:, :t.shape[1]] = t[labels] + 1e-8
    x = _resample(padded, t.shape[1] + draws["pad"], fine) * draws["scale"][:, None]
    cols = (np.arange(fine)[None, :] - draws["shift"][:, None]) % fine
    x = np.take_along_axis(x, cols, axis=1)
    corr = gaussian_filter1d(draws["corr"], 2.0, axis=1, mode="reflect")
    x = np.where(x != 0, x, corr) + draws["iid"]
    x = x - draws["shear"][:, None] * np.linspace(-0.5, 0.5, fine)[None, :]
    return _resample(x, np.full(n, fine), recipe["length"])


def make_mnist1d(num_samples=5000, test_fraction=0.2, seed=42, padding=(36, 60), scale_coeff=0.4,
                 max_translation=48, corr_noise_scale=0.25, iid_noise_scale=0.02, shear_scale=0.75,
                 length=40):
    """Generate MNIST-1D (see the module docstring; the defaults are the published RECIPE)."""
    num_samples = check_int("num_samples", num_samples, 20)
    test_fraction = check_float("test_fraction", test_fraction)
    if test_fraction >= 1:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if not isinstance(padding, (tuple, list)) or len(padding) != 2:
        raise ConfigError(f"padding must be (low, high), got {padding!r}")
    low = check_int("padding[0]", padding[0], 0)
    recipe = {"padding": (low, check_int("padding[1]", padding[1], low)),
              "scale_coeff": check_float("scale_coeff", scale_coeff, positive=False),
              "max_translation": check_int("max_translation", max_translation, 1),
              "corr_noise_scale": check_float("corr_noise_scale", corr_noise_scale, positive=False),
              "iid_noise_scale": check_float("iid_noise_scale", iid_noise_scale, positive=False),
              "shear_scale": check_float("shear_scale", shear_scale, positive=False),
              "length": check_int("length", length, 2)}
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), num_samples // 10)
    x = render(labels, draw(rng, len(labels), recipe), recipe)
    x = (x - x.mean()) / x.std()
    train, test = stratified_split(labels, test_fraction, rng)
    positions = np.linspace(0.0, 1.0, recipe["length"], dtype=np.float32)[:, None]
    return Dataset(x[train].astype(np.float32), labels[train].astype(np.int64),
                   x[test].astype(np.float32), labels[test].astype(np.int64), positions, 10)

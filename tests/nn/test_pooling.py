"""Pooling modules: the same numbers as nn.functional's pooling, no state, arguments checked at
construction."""
import numpy as np
import pytest

import itnet_np as itn
import itnet_np.nn.functional as F
from itnet_np import nn
from itnet_np.errors import ConfigError


@pytest.mark.parametrize("module,call", [
    (lambda: nn.MaxPool1d(3, 2, 1), lambda x: F.max_pool1d(x, 3, 2, 1)),
    (lambda: nn.MaxPool2d((2, 3), 1), lambda x: F.max_pool2d(x, (2, 3), 1)),
    (lambda: nn.AvgPool1d(2, padding=1, count_include_pad=False),
     lambda x: F.avg_pool1d(x, 2, padding=1, count_include_pad=False)),
    (lambda: nn.AvgPool2d(2), lambda x: F.avg_pool2d(x, 2)),
    (lambda: nn.AdaptiveAvgPool1d(3), lambda x: F.adaptive_avg_pool1d(x, 3)),
    (lambda: nn.AdaptiveAvgPool2d((2, 1)), lambda x: F.adaptive_avg_pool2d(x, (2, 1))),
])
def test_pooling_modules_match_functional(module, call):
    m = module()
    nd = 1 if "1d" in type(m).__name__ else 2
    x = np.random.default_rng(3).standard_normal((2, 3) + (5,) * nd).astype(np.float32)
    np.testing.assert_array_equal(m(itn.tensor(x)).data, call(x))
    assert m.state_dict() == {} and type(m).__name__ in repr(m)


@pytest.mark.parametrize("message,call", [
    ("MaxPool2d: kernel_size must be", lambda: nn.MaxPool2d((2, 2, 2))),
    ("MaxPool1d: stride must be", lambda: nn.MaxPool1d(2, stride=0)),
    ("AvgPool1d: padding must be", lambda: nn.AvgPool1d(2, padding=-1)),
    ("AdaptiveAvgPool2d: output_size must be", lambda: nn.AdaptiveAvgPool2d(0)),
])
def test_errors(message, call):
    with pytest.raises(ConfigError, match=message):
        call()

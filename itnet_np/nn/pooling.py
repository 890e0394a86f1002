"""Pooling layers: thin Modules over :mod:`itnet_np.nn.functional.pooling` (torch's names and
arguments, no parameters). Input (N, C, L) / (N, C, H, W), or the same without N. Arguments are
checked at construction; whether the windows fit the input is checked at each forward."""
from . import functional as F
from .functional._args import ints
from .module import Module


class _Pool(Module):
    function, nd = None, 1

    def __init__(self, kernel_size, stride=None, padding=0, **options):
        super().__init__()
        name = type(self).__name__
        ints(name, "kernel_size", kernel_size, self.nd, 1)
        if stride is not None:
            ints(name, "stride", stride, self.nd, 1)
        ints(name, "padding", padding, self.nd, 0)
        self.kernel_size, self.stride, self.padding, self.options = kernel_size, stride, padding, options

    def forward(self, x):
        return type(self).function(x, self.kernel_size, self.stride, self.padding, **self.options)

    def extra_repr(self):
        extra = "".join(f", {k}={v}" for k, v in self.options.items())
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}{extra}"


class MaxPool1d(_Pool):
    """out[n, c, i] = max of x[n, c, s i - p : s i - p + k] (padding -inf); stride defaults to k."""
    function, nd = staticmethod(F.max_pool1d), 1


class MaxPool2d(_Pool):
    """Max over kH x kW windows with stride (default kernel_size) and padding (-inf)."""
    function, nd = staticmethod(F.max_pool2d), 2


class AvgPool1d(_Pool):
    """Mean over windows of k (zero padding, counted unless count_include_pad=False)."""
    function, nd = staticmethod(F.avg_pool1d), 1

    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad=True):
        super().__init__(kernel_size, stride, padding, count_include_pad=bool(count_include_pad))


class AvgPool2d(AvgPool1d):
    """Mean over kH x kW windows (zero padding, counted unless count_include_pad=False)."""
    function, nd = staticmethod(F.avg_pool2d), 2


class AdaptiveAvgPool1d(Module):
    """Average over ``output_size`` bins [floor(i L / out), ceil((i + 1) L / out)) along L."""
    function, nd = staticmethod(F.adaptive_avg_pool1d), 1

    def __init__(self, output_size):
        super().__init__()
        ints(type(self).__name__, "output_size", output_size, self.nd, 1)
        self.output_size = output_size

    def forward(self, x):
        return type(self).function(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveAvgPool2d(AdaptiveAvgPool1d):
    """Average over output_size (an int or (oH, oW)) bins of H and W, torch's bin formula."""
    function, nd = staticmethod(F.adaptive_avg_pool2d), 2

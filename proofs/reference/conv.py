"""PyTorch Conv1d / Conv2d written out from the documented formula, with explicit loops.

Source: PyTorch docs, torch.nn.Conv1d / torch.nn.Conv2d:

    out(N_i, C_out_j) = bias(C_out_j) + sum_{k=0}^{C_in-1} weight(C_out_j, k) ⋆ input(N_i, k)

"where ⋆ is the valid cross-correlation operator" (no kernel flip), and

    L_out = floor((L_in + 2*padding - dilation*(kernel_size - 1) - 1) / stride + 1).

Written out for 1-D with G groups, left padding P_l, stride s, dilation d:

    out[n, o, i] = b[o] + sum_{c=0}^{C_in/G - 1} sum_{a=0}^{K-1}
                   W[o, c, a] * x[n, g(o)*C_in/G + c, s*i + d*a - P_l],
    g(o) = floor(o / (C_out/G)),   x[n, c, t] := 0 for t outside [0, L).

Conventions: weight layout (C_out, C_in/groups, K) / (C_out, C_in/groups, kh, kw); zero padding only
(padding_mode='zeros'). ``padding='same'`` pads a total of d*(K-1) per axis, floor half on the left and
the extra zero (when the total is odd) on the RIGHT, as PyTorch does (PR #45667); it is an error with
stride > 1, as in PyTorch (issue #67551). ``padding='valid'`` means no padding.
"""
import numpy as np

__all__ = ["conv1d_ref", "conv2d_ref", "conv_output_size"]


def _pair(value, name):
    """An int or a length-2 sequence of ints -> a tuple of two ints."""
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"conv2d_ref: {name} must be an int or a pair, got {value!r}")
    return value


def _pads(padding, kernel_sizes, dilations, strides, name):
    """Resolve ``padding`` into one (left, right) pair per spatial axis.

    'same': total d*(k-1), left = total // 2, right = total - left (extra zero on the right).
    """
    n = len(kernel_sizes)
    if isinstance(padding, str):
        if padding == "valid":
            return [(0, 0)] * n
        if padding == "same":
            if any(s != 1 for s in strides):
                raise ValueError(f"{name}: padding='same' is not supported for strided convolutions "
                                 f"(got stride {tuple(strides)}); PyTorch raises too")
            pads = []
            for k, d in zip(kernel_sizes, dilations):
                total = d * (k - 1)
                pads.append((total // 2, total - total // 2))
            return pads
        raise ValueError(f"{name}: padding must be an int, 'same' or 'valid', got {padding!r}")
    values = [int(padding)] * n if isinstance(padding, (int, np.integer)) else [int(p) for p in padding]
    if len(values) != n or any(p < 0 for p in values):
        raise ValueError(f"{name}: padding must be {n} non-negative ints, got {padding!r}")
    return [(p, p) for p in values]


def conv_output_size(length, kernel_size, stride, pad_left, pad_right, dilation):
    """floor((L + P_l + P_r - d*(K-1) - 1) / s) + 1, the PyTorch output length (symmetric P_l = P_r = P)."""
    return (length + pad_left + pad_right - dilation * (kernel_size - 1) - 1) // stride + 1


def _check_groups(name, c_in, c_out, w_cin, groups):
    if groups < 1 or c_in % groups or c_out % groups:
        raise ValueError(f"{name}: in_channels={c_in} and out_channels={c_out} must both be divisible "
                         f"by groups={groups}")
    if w_cin != c_in // groups:
        raise ValueError(f"{name}: weight has {w_cin} input channels per group, expected "
                         f"C_in/groups = {c_in}/{groups} = {c_in // groups}")


def conv1d_ref(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv1d from the doc formula (cross-correlation, zero padding).

        out[n, o, i] = b[o] + sum_c sum_a W[o, c, a] * x[n, g(o)*C_in/G + c, s*i + d*a - P_l]

    Shapes: x (B, C_in, L), weight (C_out, C_in/groups, K), bias (C_out,) or None.
    padding: int P (both sides), 'same' (torch rule, stride 1 only) or 'valid'.
    Returns (B, C_out, L_out) float64 with L_out = floor((L + P_l + P_r - d*(K-1) - 1)/s) + 1.
    """
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    if x.ndim != 3 or weight.ndim != 3:
        raise ValueError(f"conv1d_ref: expected x (B, C_in, L) and weight (C_out, C_in/g, K), "
                         f"got x {x.shape} and weight {weight.shape}")
    n_batch, c_in, length = x.shape
    c_out, w_cin, ksize = weight.shape
    _check_groups("conv1d_ref", c_in, c_out, w_cin, groups)
    if stride < 1 or dilation < 1:
        raise ValueError(f"conv1d_ref: stride and dilation must be >= 1, got {stride}, {dilation}")
    ((p_left, p_right),) = _pads(padding, [ksize], [dilation], [stride], "conv1d_ref")
    l_out = conv_output_size(length, ksize, stride, p_left, p_right, dilation)
    if l_out < 1:
        raise ValueError(f"conv1d_ref: input length {length} is too short for kernel {ksize} with "
                         f"dilation {dilation} and padding ({p_left}, {p_right})")
    cin_g, cout_g = c_in // groups, c_out // groups
    out = np.zeros((n_batch, c_out, l_out))
    for o in range(c_out):
        first_in = (o // cout_g) * cin_g          # g(o) * C_in/G
        for i in range(l_out):
            for a in range(ksize):
                t = stride * i + dilation * a - p_left
                if 0 <= t < length:                # outside [0, L) the padded input is zero
                    for c in range(cin_g):
                        out[:, o, i] += weight[o, c, a] * x[:, first_in + c, t]
        if bias is not None:
            out[:, o, :] += np.asarray(bias, dtype=np.float64)[o]
    return out


def conv2d_ref(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv2d from the doc formula (cross-correlation, zero padding).

        out[n, o, i, j] = b[o] + sum_c sum_{a1, a2} W[o, c, a1, a2]
                          * x[n, g(o)*C_in/G + c, s1*i + d1*a1 - P1_l, s2*j + d2*a2 - P2_l]

    Shapes: x (B, C_in, H, W), weight (C_out, C_in/groups, kh, kw), bias (C_out,) or None.
    stride, dilation: int or (s1, s2); padding: int, (P1, P2), 'same' (stride 1 only) or 'valid'.
    Returns (B, C_out, H_out, W_out) float64.
    """
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    if x.ndim != 4 or weight.ndim != 4:
        raise ValueError(f"conv2d_ref: expected x (B, C_in, H, W) and weight (C_out, C_in/g, kh, kw), "
                         f"got x {x.shape} and weight {weight.shape}")
    n_batch, c_in, height, width = x.shape
    c_out, w_cin, kh, kw = weight.shape
    _check_groups("conv2d_ref", c_in, c_out, w_cin, groups)
    s1, s2 = _pair(stride, "stride")
    d1, d2 = _pair(dilation, "dilation")
    if min(s1, s2, d1, d2) < 1:
        raise ValueError(f"conv2d_ref: stride and dilation must be >= 1, got {stride}, {dilation}")
    (p1, p1r), (p2, p2r) = _pads(padding if isinstance(padding, str) else _pair(padding, "padding"),
                                 [kh, kw], [d1, d2], [s1, s2], "conv2d_ref")
    h_out = conv_output_size(height, kh, s1, p1, p1r, d1)
    w_out = conv_output_size(width, kw, s2, p2, p2r, d2)
    if h_out < 1 or w_out < 1:
        raise ValueError(f"conv2d_ref: input {height}x{width} is too small for kernel {kh}x{kw} with "
                         f"dilation ({d1}, {d2}) and padding {padding!r}")
    cin_g, cout_g = c_in // groups, c_out // groups
    out = np.zeros((n_batch, c_out, h_out, w_out))
    for o in range(c_out):
        first_in = (o // cout_g) * cin_g
        for i in range(h_out):
            for j in range(w_out):
                for a1 in range(kh):
                    r = s1 * i + d1 * a1 - p1
                    if not 0 <= r < height:
                        continue
                    for a2 in range(kw):
                        t = s2 * j + d2 * a2 - p2
                        if not 0 <= t < width:
                            continue
                        for c in range(cin_g):
                            out[:, o, i, j] += weight[o, c, a1, a2] * x[:, first_in + c, r, t]
        if bias is not None:
            out[:, o] += np.asarray(bias, dtype=np.float64)[o]
    return out

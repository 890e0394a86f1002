"""Numerical proofs that conventional layers are special cases of the ITNet operator.

Installed as ``itnet_np.proofs`` (the source lives in the top-level ``proofs/``). One module per
family (convolution, attention, LSTM/GRU, S4, Mamba): its docstring derives the kernel, support and
normalisation that make y_i = sum_j w_j K_theta(p_i, p_j, f_i, f_j) V f_j (+ W_o f_i) equal the
conventional layer, and its code builds that ITNet construction. ``reference/`` holds the
conventional layers written from their published formulas, independently of ITNet, so that each
proof compares two independent computations (float64, tight tolerances).
"""

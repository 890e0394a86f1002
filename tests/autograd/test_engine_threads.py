"""Grad and anomaly modes belong to a thread (issue 7, defect 2).

Several threads training their own models at once must each get exactly the result of the same
run done alone; a ``no_grad()`` block or a backward pass in one thread must not change what
another thread records. The interleavings are forced with events and barriers, and a tiny switch
interval makes the free-running test switch threads between almost every bytecode.
"""
import sys
import threading

import numpy as np
import pytest

import itnet_np as itn
from itnet_np import nn, optim
from itnet_np.nn import functional as F


@pytest.fixture
def fast_switching():
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def _run_threads(targets, barrier=None):
    """Start one thread per target, wait for all; re-raise the first exception a thread hit (after
    breaking ``barrier``, so that the other threads stop waiting for the one that failed)."""
    errors = []

    def guarded(fn):
        def run():
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 -- reported to the main thread
                errors.append(e)
                if barrier is not None:
                    barrier.abort()
        return run

    threads = [threading.Thread(target=guarded(fn)) for fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise next((e for e in errors if not isinstance(e, threading.BrokenBarrierError)), errors[0])


def _train(seed, steps=50, barrier=None):
    """SGD on a small MLP (float64), evaluating under no_grad after every step. Returns the final
    parameters, the training losses and the evaluation losses."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((32, 3))
    y = rng.integers(0, 2, 32)
    model = nn.MLP([3, 16, 2], activation="tanh", dtype=np.float64, rng=seed)
    opt = optim.SGD(model.named_parameters(), lr=0.1, momentum=0.9)
    train_losses, eval_losses = [], []
    for _ in range(steps):
        if barrier is not None:
            barrier.wait(timeout=60)
        loss = F.cross_entropy(model(itn.tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        train_losses.append(loss.item())
        with itn.no_grad():
            held_out = F.cross_entropy(model(itn.tensor(x[::-1].copy())), y[::-1].copy())
            assert not held_out.requires_grad
        eval_losses.append(held_out.item())
    return [p.data.copy() for p in model.parameters()], train_losses, eval_losses


def test_four_threads_train_their_own_models_as_if_alone(fast_switching):
    seeds = [0, 1, 2, 3]
    alone = {s: _train(s) for s in seeds}
    together = {}
    barrier = threading.Barrier(len(seeds))
    _run_threads([lambda s=s: together.__setitem__(s, _train(s, barrier=barrier)) for s in seeds], barrier)
    for s in seeds:
        params_a, train_a, eval_a = alone[s]
        params_t, train_t, eval_t = together[s]
        np.testing.assert_allclose(train_t, train_a, rtol=1e-12, atol=0)
        np.testing.assert_allclose(eval_t, eval_a, rtol=1e-12, atol=0)
        for pt, pa in zip(params_t, params_a):
            np.testing.assert_allclose(pt, pa, rtol=1e-12, atol=1e-15)
    assert train_a[-1] < train_a[0]  # the runs did learn something


def test_no_grad_in_one_thread_does_not_reach_another():
    x = itn.tensor(np.array([1.0, 2.0]), requires_grad=True)
    inside, done = threading.Event(), threading.Event()
    seen = {}

    def holder():  # sits inside no_grad while the other thread records
        with itn.no_grad():
            inside.set()
            done.wait(60)
            seen["holder"] = (x * 2.0).requires_grad

    def recorder():
        inside.wait(60)
        y = (x * x).sum()
        seen["recorder"] = y.requires_grad
        y.backward()
        seen["grad"] = x.grad.data.copy()
        done.set()

    _run_threads([holder, recorder])
    assert seen == {"holder": False, "recorder": True, "grad": seen["grad"]}
    np.testing.assert_array_equal(seen["grad"], [2.0, 4.0])
    assert (x * 2.0).requires_grad  # the main thread is untouched too


def test_a_backward_pass_in_one_thread_does_not_turn_grad_off_in_another():
    """run_backward turns recording off for its own thread only: a hook pauses the backward pass
    half way while another thread builds (and differentiates) a graph."""
    a = itn.tensor(np.array([0.5, -1.0]), requires_grad=True)
    b = itn.tensor(np.array([3.0]), requires_grad=True)
    paused, resume = threading.Event(), threading.Event()
    seen = {}

    def pause(g):
        seen["inside"] = itn.autograd.is_grad_enabled()  # False in the backward's own thread
        paused.set()
        resume.wait(60)

    def slow_backward():
        h = itn.exp(a)
        h.register_hook(pause)
        h.sum().backward()

    def other():
        paused.wait(60)
        y = (b * b).sum()
        seen["other"] = y.requires_grad
        y.backward()
        resume.set()

    _run_threads([slow_backward, other])
    assert seen == {"inside": False, "other": True}
    np.testing.assert_allclose(a.grad.data, np.exp(a.data), rtol=1e-15)
    np.testing.assert_allclose(b.grad.data, [6.0], rtol=1e-15)


def test_detect_anomaly_is_per_thread():
    inside, done = threading.Event(), threading.Event()
    seen = {}

    def watcher():
        with itn.detect_anomaly():
            inside.set()
            done.wait(60)
            with np.errstate(divide="ignore"), pytest.raises(itn.errors.AnomalyError):
                itn.log(itn.tensor(np.array([0.0])))
            seen["watcher"] = True

    def quiet():
        inside.wait(60)
        with np.errstate(divide="ignore"):
            seen["quiet"] = float(itn.log(itn.tensor(np.array([0.0]))).item())  # no anomaly here
        done.set()

    _run_threads([watcher, quiet])
    assert seen == {"watcher": True, "quiet": -np.inf}


def test_one_mode_object_entered_by_two_threads():
    """The value a block restores lives on the thread's own stack, not on the shared object."""
    shared = itn.no_grad()
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    x = itn.tensor(np.array([1.0]), requires_grad=True)
    seen = {}

    def first():
        with shared:
            first_in.set()
            second_in.wait(60)
        seen["first_after"] = (x * 1.0).requires_grad
        first_out.set()

    def second():
        first_in.wait(60)
        with itn.no_grad():
            with shared:
                second_in.set()
                first_out.wait(60)
            seen["second_between"] = (x * 1.0).requires_grad  # still inside its own no_grad
        seen["second_after"] = (x * 1.0).requires_grad

    _run_threads([first, second])
    assert seen == {"first_after": True, "second_between": False, "second_after": True}

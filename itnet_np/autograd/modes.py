"""The autograd modes -- graph recording and anomaly detection -- per thread, as in torch.

A ``no_grad()`` block, or a backward pass, in one thread never changes what another thread
records. Every thread starts with grad on and anomaly off. Each mode is a context manager that
also works as a decorator, and keeps the value it restores on its thread's own stack, so one
instance may be entered by several threads at once.
"""
import functools
import threading


class _State(threading.local):
    """The modes of the current thread."""

    def __init__(self):
        self.grad_enabled = True
        self.anomaly = False
        self.saved = []  # the values the open mode blocks of this thread will restore


state = _State()
# How many mode blocks (and backward passes) are open, over all threads. While it is 0 every thread
# runs with the defaults, and ops skip the thread-local lookups (about 0.1 us each).
OPEN = [0]
_lock = threading.Lock()


def open_block(delta):
    """Count a mode block (or backward pass) opening (+1) or closing (-1) in any thread."""
    with _lock:
        OPEN[0] += delta


def modes():
    """(grad_enabled, anomaly) for the calling thread."""
    return (state.grad_enabled, state.anomaly) if OPEN[0] else (True, False)


def is_grad_enabled():
    """Whether ops called now, in this thread, record a graph."""
    return modes()[0]


class _Mode:
    """Base of the context managers below."""

    attr = None
    value = None

    def __enter__(self):
        open_block(1)
        state.saved.append(getattr(state, self.attr))
        setattr(state, self.attr, self.value)
        return self

    def __exit__(self, *exc):
        setattr(state, self.attr, state.saved.pop())
        open_block(-1)
        return False

    def __call__(self, func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with type(self)():
                return func(*args, **kwargs)
        return wrapper


class no_grad(_Mode):
    """Disable graph recording in this thread: ``with itn.no_grad(): ...`` or ``@itn.no_grad()``."""
    attr, value = "grad_enabled", False


class enable_grad(_Mode):
    """Re-enable graph recording inside a ``no_grad`` block."""
    attr, value = "grad_enabled", True


class detect_anomaly(_Mode):
    """Raise AnomalyError on NaN/Inf in any forward output or backward gradient (this thread).

    While enabled, every node also records the source line that created it, so the error can
    say where the offending input came from. When disabled the cost is one flag check per op.
    """
    attr, value = "anomaly", True

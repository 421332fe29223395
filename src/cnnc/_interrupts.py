"""Holding back Ctrl-C while a training step's updates are applied, so that an interrupt
lands before or after the step, never between the updates of two layers."""
import contextlib
import signal
import threading


@contextlib.contextmanager
def deferred():
    """Run the block with SIGINT held back; an interrupt received meanwhile is delivered,
    to whatever handler was there before, once the block is done.

    Signals reach Python's main thread only, so elsewhere there is nothing to hold back.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is None:                # a handler installed outside Python: leave it be
        yield
        return
    received = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            signal.raise_signal(signal.SIGINT)

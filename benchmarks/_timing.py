"""Timing helper shared by the benchmark scripts."""

import time


def timed(function, *args, **kwargs):
    """``(function(*args, **kwargs), seconds it took)``."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start

"""Run one function in a fresh worker process, which exits when it returns.

TensorFlow 2.21 keeps about the size of a model's weights and optimizer state
after every graph-mode ``model.fit``, even once every model is deleted and the
Keras session cleared (keras-team/keras#17458; docs/design.md has the
measurements). Memory that a process leaks goes back when the process exits, so
``UNetSegmenter(fit_in_subprocess=True)`` trains in a fresh worker and brings
back only the weights and the training history.

The worker is started by loky (joblib's process executor), which pickles the
function and its arguments with cloudpickle and does not re-run the user's
``__main__`` script: callbacks defined in a script or notebook travel too.
"""

import warnings

__all__ = ["run_in_worker"]


def _call_recording_warnings(function, args):
    """Run in the worker: the result and the warnings raised on the way."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = function(*args)
    return result, [(str(w.message), w.category) for w in caught]


def run_in_worker(function, *args):
    """Return ``function(*args)`` computed in a new process that exits afterwards.

    Exceptions raised by ``function`` are raised here, and the warnings it
    raised are raised again here. On Ctrl-C, which also
    reaches the worker, this waits for the worker's answer (a fit interrupted
    by Ctrl-C returns with its best weights so far); a second Ctrl-C while the
    worker is still busy stops waiting.
    """
    from joblib.externals.loky import ProcessPoolExecutor

    executor = ProcessPoolExecutor(max_workers=1)
    try:
        future = executor.submit(_call_recording_warnings, function, args)
        try:
            result, caught = future.result()
        except KeyboardInterrupt:
            if future.done():  # the worker itself ended with KeyboardInterrupt
                raise
            warnings.warn("Interrupted: waiting for the worker process to stop training "
                          "and send back its best weights.", stacklevel=2)
            result, caught = future.result()
    finally:
        executor.shutdown(wait=True, kill_workers=True)
    for message, category in caught:
        warnings.warn(message, category, stacklevel=3)
    return result

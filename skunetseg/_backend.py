"""The one place where TensorFlow, Keras and segmentation-models are imported.

Every other module of skunetseg that needs the deep-learning stack imports it
from here, and only inside functions or in modules that are themselves loaded
lazily, so that ``import skunetseg`` stays free of TensorFlow.

segmentation-models 1.0.1 chooses its framework at import time from the
``SM_FRAMEWORK`` environment variable; under Keras 3 it must be ``tf.keras``.
The variable is set here, immediately before the import, and nowhere else;
so are the defaults of TensorFlow's CPU allocator (see ``_cache_cpu_memory``).
"""

import contextlib
import functools
import io
import logging
import os
import re
import sys
import tempfile

#: TensorFlow's C++ start-up lines that only say that a machine has no GPU or what the
#: CPU build could do: hidden on a machine without an NVIDIA driver (see _quiet_start).
_START_UP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|failed call to cuInit|Could not find cuda drivers|cudart_stub\.cc"
    r"|oneDNN custom operations are on|This TensorFlow binary is optimized to use"
    r"|To enable the following instructions:|cpu_feature_guard\.cc"
    r"|Unable to register cu(DNN|FFT|BLAS) factory|computation placer already registered"
)


def _has_nvidia_driver():
    return os.path.exists("/proc/driver/nvidia") or os.path.exists("/dev/nvidia0")


@contextlib.contextmanager
def _quiet_start():
    """Hold back the C++ lines TensorFlow writes to stderr while it starts.

    On a machine without an NVIDIA driver, TensorFlow reports a failed ``cuInit``
    and oneDNN notices as error lines, which read as failures to a newcomer. They
    are captured at the file-descriptor level and every line that is not one of
    these known notices (:data:`_START_UP_NOISE`) is written back to stderr, so
    that real problems still show. With a driver present, or with
    ``SKUNETSEG_TF_LOGS=1``, nothing is held back.
    """
    if os.environ.get("SKUNETSEG_TF_LOGS") == "1" or _has_nvidia_driver():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable file descriptor 2
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode("utf-8", "replace").splitlines(True)
                    if line.strip() and not _START_UP_NOISE.search(line)]
            if kept:
                # a line cut short (a full disk, a file-size limit) still ends the line, so
                # that what is written next starts on its own
                text = "".join(kept)
                sys.stderr.write(text if text.endswith("\n") else text + "\n")
                sys.stderr.flush()


def _physical_memory_mib():
    """The machine's memory in MiB, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    except (AttributeError, ValueError, OSError):
        return None


def _cache_cpu_memory():
    """Have TensorFlow keep and reuse the CPU memory its tensors free.

    TensorFlow's default CPU allocator hands every tensor to ``malloc``, which
    maps the large ones (activations of a U-Net step) fresh from the OS and
    returns them after use, so each training step page-faults gigabytes in
    again: 6 million faults per epoch of 24 images at 256x256 on EfficientNet-B2,
    a third of the step's time on a 2-core CPU. Its BFC allocator (the one it
    uses on GPUs) keeps the freed memory for the next step: training ran 1.5x
    faster there (docs/design.md). It holds the process's peak memory until
    the process ends. Only defaults are set, before TensorFlow starts: a user's
    ``TF_CPU_ALLOCATOR_USE_BFC=false`` keeps ``malloc``, and the memory limit
    (``TF_CPU_BFC_MEM_LIMIT_IN_MB``, TensorFlow's default 64 GiB) becomes the
    machine's memory.
    """
    os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
    memory = _physical_memory_mib()
    if memory:
        os.environ.setdefault("TF_CPU_BFC_MEM_LIMIT_IN_MB", str(memory))


def _quiet_cpp_logs():
    """Keep TensorFlow's C++ log lines below FATAL off stderr, unless the user said otherwise.

    TensorFlow 2.21 writes notices as error-level lines (``E0000 ... oneDNN
    supports DT_INT32 only on platforms with AVX-512``, ``failed call to
    cuInit``), some only at the first op that meets them, long after the
    import that :func:`_quiet_start` watches; level 3 hides them, as the command
    line does. Failures still reach Python as exceptions. Only a default: a
    ``TF_CPP_MIN_LOG_LEVEL`` the user set is kept, and ``SKUNETSEG_TF_LOGS=1``
    keeps TensorFlow's own default (everything).
    """
    if os.environ.get("SKUNETSEG_TF_LOGS") != "1":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _import_frameworks():
    """Import TensorFlow, Keras 3 and segmentation-models in the right order."""
    _quiet_cpp_logs()
    _cache_cpu_memory()
    os.environ["SM_FRAMEWORK"] = "tf.keras"
    import keras
    import tensorflow

    with contextlib.redirect_stdout(io.StringIO()):  # it prints its framework choice
        import segmentation_models
    # retracing warnings are expected: every new image size is a new input shape
    logging.getLogger("tensorflow").setLevel(logging.ERROR)

    if not keras.__version__.startswith("3."):
        raise ImportError(
            f"skunetseg needs Keras 3; found keras {keras.__version__}. "
            "Install it with `pip install 'keras>=3'`."
        )
    return tensorflow, keras, segmentation_models


def _enable_gpu_memory_growth(tf):
    """Let TensorFlow allocate GPU memory as needed instead of all at once."""
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # the GPU was initialised before we got here
            pass


with _quiet_start():
    tf, keras, sm = _import_frameworks()
    _enable_gpu_memory_growth(tf)
ops = keras.ops


def gpu_available():
    """Return True when TensorFlow sees at least one GPU."""
    return bool(tf.config.list_physical_devices("GPU"))


#: CPU flags (Linux ``/proc/cpuinfo``) of the units that compute in bfloat16:
#: AVX512-BF16 and the AMX tiles of recent Intel Xeon and AMD EPYC processors.
BFLOAT16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.lru_cache(maxsize=None)
def cpu_supports_bfloat16(cpuinfo="/proc/cpuinfo"):
    """Return True when the CPU reports bfloat16 units (see ``BFLOAT16_CPU_FLAGS``).

    Reads the ``flags`` lines of ``cpuinfo``; False where the file does not exist
    (macOS, Windows) or reports none of them, so nothing is assumed.
    """
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as file:
            lines = [line for line in file if line.startswith("flags")]
    except OSError:
        return False
    flags = {flag for line in lines for flag in line.partition(":")[2].split()}
    return bool(flags & BFLOAT16_CPU_FLAGS)

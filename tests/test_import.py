import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest


def test_import_does_not_load_tensorflow():
    code = ("import sys, skunetseg, skunetseg.metrics, skunetseg.datasets, "
            "skunetseg.preprocessing, skunetseg.augment, skunetseg.tta, skunetseg.rle, "
            "skunetseg.io, skunetseg.postprocess, skunetseg.plotting; "
            "from skunetseg import (UNetSegmenter, FoldEnsemble, FalsePositiveFilter, "
            "PresenceClassifier); "
            "UNetSegmenter().get_params(); FoldEnsemble().get_params(); "
            "FalsePositiveFilter(UNetSegmenter()).get_params(); PresenceClassifier().get_params(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'keras', 'segmentation_models')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_losses_module_loads_keras_lazily():
    code = ("import sys, skunetseg; assert 'keras' not in sys.modules; "
            "skunetseg.losses.JaccardLoss; print('keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("True")


@pytest.mark.parametrize("user_setting", [None, "false"])
def test_tensorflow_caches_cpu_memory_and_logs_quietly_unless_the_user_said_otherwise(
        user_setting):
    # TensorFlow reports allocator statistics for the CPU only when its caching
    # (BFC) allocator serves it; with malloc it raises ValueError
    code = ("import os; from skunetseg._backend import tf; "
            "x = tf.ones((256, 256)); (x @ x).numpy()\n"
            "try:\n    info = tf.config.experimental.get_memory_info('CPU:0')\n"
            "except ValueError:\n    info = None\n"
            "print(os.environ['TF_CPP_MIN_LOG_LEVEL'], info is not None, "
            "os.environ['TF_CPU_ALLOCATOR_USE_BFC'], "
            "os.environ.get('TF_CPU_BFC_MEM_LIMIT_IN_MB'))")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TF_CPU_", "TF_CPP_", "SKUNETSEG_TF_LOGS"))}
    if user_setting is not None:
        env["TF_CPU_ALLOCATOR_USE_BFC"] = user_setting
        env["TF_CPP_MIN_LOG_LEVEL"] = "1"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env)
    log_level, caching, setting, limit = out.stdout.split()[-4:]
    # C++ notices at error level (E0000 ... oneDNN ...) stay off stderr by default
    assert log_level == ("3" if user_setting is None else "1")
    if user_setting is None:
        assert not [line for line in out.stderr.splitlines()
                    if line[:5] in ("E0000", "I0000", "W0000")]
        assert (caching, setting) == ("True", "true")
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        assert int(limit) == memory
    else:
        # the user's setting is kept, and the allocator is the one TensorFlow alone
        # gives under it (malloc, which reports no statistics, on AVX2 CPUs; with
        # oneDNN on AVX-512 CPUs TensorFlow reports them under either setting)
        assert setting == "false"
        plain = subprocess.run(
            [sys.executable, "-c", code.replace("from skunetseg._backend import tf",
                                                "import tensorflow as tf")],
            capture_output=True, text=True, check=True, env=env)
        assert caching == plain.stdout.split()[-3]


def _imported_modules(path, package, modules):
    """The package's modules that ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # the package is flat: "." is the package itself
                base = ".".join([package, node.module] if node.module else [package])
            elif node.module:
                base = node.module
            else:
                continue
            submodules = {f"{base}.{alias.name}" for alias in node.names} & modules
            # "from .x import y" needs x; "from . import x" needs the module x only
            found.update(submodules)
            if len(submodules) < len(node.names):
                found.add(base)
    return found & modules


def test_no_import_cycle_in_the_whole_package():
    """No module of skunetseg imports (transitively, at any depth of the file) itself."""
    import skunetseg

    root = Path(skunetseg.__file__).parent
    names = {path: "skunetseg" if path.stem == "__init__" else f"skunetseg.{path.stem}"
             for path in root.glob("*.py")}
    modules = set(names.values())
    graph = {name: _imported_modules(path, "skunetseg", modules) - {name}
             for path, name in names.items()}
    assert graph["skunetseg"] and graph["skunetseg._false_positive"]  # the parser sees imports

    cycles, state = [], {}

    def visit(name, trail):
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                cycles.append(" -> ".join(trail[trail.index(target):] + [target]))
            elif target not in state:
                visit(target, trail + [target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles: " + "; ".join(cycles)

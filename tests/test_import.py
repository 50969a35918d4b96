import os
import subprocess
import sys

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
def test_tensorflow_caches_cpu_memory_unless_the_user_said_otherwise(user_setting):
    # TensorFlow reports allocator statistics for the CPU only when its caching
    # (BFC) allocator serves it; with malloc it raises ValueError
    code = ("import os; from skunetseg._backend import tf; "
            "x = tf.ones((256, 256)); (x @ x).numpy()\n"
            "try:\n    info = tf.config.experimental.get_memory_info('CPU:0')\n"
            "except ValueError:\n    info = None\n"
            "print(info is not None, os.environ['TF_CPU_ALLOCATOR_USE_BFC'], "
            "os.environ.get('TF_CPU_BFC_MEM_LIMIT_IN_MB'))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPU_")}
    if user_setting is not None:
        env["TF_CPU_ALLOCATOR_USE_BFC"] = user_setting
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env)
    caching, setting, limit = out.stdout.split()[-3:]
    if user_setting is None:
        assert (caching, setting) == ("True", "true")
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        assert int(limit) == memory
    else:
        assert (caching, setting) == ("False", "false")

import subprocess
import sys


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

"""PresenceClassifier with its defaults on KolektorSDD: does it learn which images hold a defect?

Issue 22 found a presence classifier whose probability was the same for every image
(defect images' mean minus empty images' mean: 6e-6). This trains one on the
training parts of ``bench_mostly_empty.py``'s split (resnet18 from scratch, input
256 x 96, 10 epochs, batch 8, seed 0, everything else the defaults: balanced epochs,
10 % of the images held out for early stopping) and prints the separation on the test
parts. Usage, from the project root::

    python benchmarks/bench_presence_kolektor.py ../shared/data
"""
import os
import sys
import time

import numpy as np
from bench_mostly_empty import kolektor_split
from sklearn.metrics import roc_auc_score

from skunetseg import PresenceClassifier
from skunetseg.io import read_mask

X_train, y_train, X_test, y_test, groups = kolektor_split(
    sys.argv[1] if len(sys.argv) > 1 else os.path.join("..", "shared", "data"), 1 / 3, 0)
y_train_present = np.array([read_mask(path).any() for path in y_train]).astype(int)
y_test_present = np.array([read_mask(path).any() for path in y_test]).astype(int)
classifier = PresenceClassifier("resnet18", input_size=(256, 96), epochs=10, batch_size=8,
                                random_state=0)
start = time.perf_counter()
classifier.fit(X_train, y_train_present)
seconds = time.perf_counter() - start
proba = classifier.predict_proba(X_test)[:, -1]
defect, empty = proba[y_test_present == 1], proba[y_test_present == 0]
print(f"fit {seconds:.0f} s, {len(classifier.history_)} epochs, best {classifier.best_epoch_}")
print(f"mean probability: defect images {defect.mean():.4f}, empty images {empty.mean():.4f}, "
      f"difference {defect.mean() - empty.mean():.4f}; "
      f"ROC AUC {roc_auc_score(y_test_present, proba):.3f}")
print(f"at 0.5: defect images called present {(defect > 0.5).mean():.1%}, "
      f"empty images called present {(empty > 0.5).mean():.1%}")

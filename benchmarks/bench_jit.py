"""Keras 3 with and without XLA (``jit_compile``) on this machine.

For a bare ``sm.Unet`` on random data: the first fit (tracing and compiling), then
training and prediction throughput, with ``jit_compile=False`` and ``True``. Usage::

    python benchmarks/bench_jit.py efficientnetb2 256 32   # backbone, image size, images

The results are in docs/design.md; they are why skunetseg compiles with
``jit_compile=False``.
"""

import sys
import time

import numpy as np

from skunetseg._backend import keras, sm


def main():
    backbone, size, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    x = np.random.rand(n, size, size, 3).astype("float32")
    y = (np.random.rand(n, size, size, 1) > 0.5).astype("float32")
    for jit in (False, True):
        model = sm.Unet(backbone, encoder_weights=None, input_shape=(None, None, 3))
        model.compile(keras.optimizers.Adam(), "binary_crossentropy", jit_compile=jit)
        start = time.perf_counter()
        model.fit(x[:8], y[:8], batch_size=8, epochs=1, verbose=0)
        first_fit = time.perf_counter() - start
        start = time.perf_counter()
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        train_rate = n / (time.perf_counter() - start)
        model.predict(x, batch_size=8, verbose=0)
        start = time.perf_counter()
        model.predict(x, batch_size=8, verbose=0)
        predict_rate = n / (time.perf_counter() - start)
        print(f"{backbone} {size}px jit_compile={jit}: first fit {first_fit:.1f} s, "
              f"train {train_rate:.2f} images/s, predict {predict_rate:.2f} images/s")
        keras.backend.clear_session()


if __name__ == "__main__":
    main()

"""Sequential (and pixel-permuted) 8×8 digits: SPEC 002's decorrelated image task, offline.

scikit-learn's bundled digits (1797 images of 8×8 pixels with values 0..16, 10 classes;
`sklearn.datasets.load_digits` reads them from the package, no download). Each image is read
row by row as a sequence of L = 64 real values scaled to [0, 1] (float32 (n L): the model
reads pixel intensities through a linear encoder, as in sequential MNIST). One label 0..9 per
sequence.

- `permute: true` applies one fixed random permutation of the 64 pixel positions to every
  image (`permutation(seed)`, from the task seed): the decorrelated variant; false keeps the
  raster order.
- The split: a random order of the 1797 images (from the task seed) gives the first `n_train`
  images to train and the next `n_test` to test (n_train + n_test ≤ 1797).
- seq_len must be at least 64; a longer seq_len left-pads each sequence with zeros, so the last
  step is still the last pixel (what `pooling: last` reads).
"""

import numpy as np

N_IMAGES = 1797
PIXELS = 64


def generate(task: dict, seq_len: int) -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits  # imported here: config checks import this module

    n_train, n_test = task["n_train"], task["n_test"]
    if n_train + n_test > N_IMAGES:
        raise ValueError(f"digits: task.n_train + task.n_test = {n_train + n_test}; the data set has {N_IMAGES} images")
    if seq_len < PIXELS:
        raise ValueError(f"digits: seq_len = {seq_len}; an image is {PIXELS} pixels, seq_len must be ≥ {PIXELS}")
    digits = load_digits()
    x = digits.data.astype(np.float32) / 16.0  # (1797 64) in [0, 1]
    y = digits.target.astype(np.int64)  # (1797)
    if task["permute"]:
        x = x[:, permutation(task["seed"])]
    x = np.pad(x, ((0, 0), (seq_len - PIXELS, 0)))  # left-pad with zeros
    order = np.random.default_rng([task["seed"], 0]).permutation(N_IMAGES)
    train, test = order[:n_train], order[n_train : n_train + n_test]
    return {"x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test]}


def permutation(seed: int) -> np.ndarray:
    """The pixel order of the permuted task: position t of a sequence holds pixel permutation[t]."""
    return np.random.default_rng([seed, 1]).permutation(PIXELS)

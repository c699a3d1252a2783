"""scikit-learn's embedded 8x8 digits (1797 images, values 0..16): no files, no download."""

from __future__ import annotations

import math

import numpy as np
import torch

from robustlab.data.base import ImageDataModule

N_IMAGES = 1797
TEST_FRACTION = 0.2


class DigitsDataModule(ImageDataModule):
    """Digits with a stratified 20% test split seeded by ``split_seed``; val is carved from train."""

    def inspect_files(self) -> int:
        """No files: the training set size follows from the constants (as train_test_split)."""
        return N_IMAGES - math.ceil(TEST_FRACTION * N_IMAGES)

    def load(self):
        # scikit-learn is imported here so that `import robustlab.data` stays quick.
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        x = (digits.images / 16.0).astype(np.float32)[:, None]
        y = digits.target.astype(np.int64)
        x_train, x_test, y_train, y_test = train_test_split(
            x, y, test_size=TEST_FRACTION, stratify=y, random_state=self.split_seed
        )
        return tuple(torch.from_numpy(a) for a in (x_train, y_train, x_test, y_test))

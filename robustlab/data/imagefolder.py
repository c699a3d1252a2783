"""Image folders (``root/<split>/<class>/*.png|jpg``) read with Pillow and resized once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from robustlab.data.base import ImageDataModule

EXTENSIONS = (".png", ".jpg", ".jpeg")


def list_classes(folder: Path) -> list[str]:
    """Class names: the sub-folders of ``folder``, sorted by name."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder (expected one sub-folder per class)")
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


def list_images(folder: Path, classes: list[str]) -> list[tuple[Path, int]]:
    """``(image path, label)`` for every image under ``folder/<class>/``, in class then name order."""
    items = []
    for label, name in enumerate(classes):
        class_dir = folder / name
        if not class_dir.is_dir():
            raise FileNotFoundError(
                f"{folder}: missing class folder {name!r} (classes: {', '.join(classes)})"
            )
        paths = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in EXTENSIONS)
        items += [(path, label) for path in paths]
    if not items:
        raise FileNotFoundError(
            f"{folder}: no {'/'.join(EXTENSIONS)} images under {', '.join(classes)}"
        )
    return items


def read_image_folder(
    folder: str | Path, classes: list[str], image_size: int, mode: str = "RGB"
) -> tuple[torch.Tensor, torch.Tensor]:
    """All images under ``folder/<class>/`` as uint8 NCHW (resized to a square) and int64 labels."""
    items = list_images(Path(folder), classes)
    images = []
    for path, _ in items:
        with Image.open(path) as img:
            img = img.convert(mode).resize((image_size, image_size), Image.BILINEAR)
            images.append(np.asarray(img, dtype=np.uint8).reshape(image_size, image_size, -1))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor([label for _, label in items], dtype=torch.int64)


class ImageFolderDataModule(ImageDataModule):
    """Train from ``root/train_dir``, test from ``root/test_dir``; classes from the train folders."""

    def __init__(self, *, train_dir: str = "train", test_dir: str = "val", **kwargs):
        super().__init__(**kwargs)
        if self.in_channels not in (1, 3):
            raise ValueError(
                f"dataset.in_channels={self.in_channels} must be 1 (grayscale) or 3 (RGB)"
            )
        self.train_dir, self.test_dir = train_dir, test_dir
        self.classes: list[str] = []

    def expected_files(self) -> list[str]:
        return [self.train_dir, self.test_dir]

    def _classes(self) -> list[str]:
        """The train folder's class names, checked against ``num_classes``."""
        classes = list_classes(self.root / self.train_dir)
        if len(classes) != self.num_classes:
            raise ValueError(
                f"{self.name}: {self.root / self.train_dir} has {len(classes)} class folders, "
                f"but dataset.num_classes={self.num_classes}"
            )
        return classes

    def inspect_files(self) -> int:
        """Class folders and image counts only: no image is decoded."""
        classes = self._classes()
        list_images(self.root / self.test_dir, classes)
        return len(list_images(self.root / self.train_dir, classes))

    def load(self):
        self.classes = self._classes()
        mode = "RGB" if self.in_channels == 3 else "L"
        x_train, y_train = read_image_folder(
            self.root / self.train_dir, self.classes, self.image_size, mode
        )
        x_test, y_test = read_image_folder(
            self.root / self.test_dir, self.classes, self.image_size, mode
        )
        return x_train, y_train, x_test, y_test

"""Format readers and downloads on tiny, format-true files written to tmp_path."""

from __future__ import annotations

import gzip
import os
import pickle

import numpy as np
import pytest
import scipy.io
import torch
from data_fixtures import (
    MNIST_FILES,
    REAL_MNIST,
    assert_one_line,
    cifar_kwargs,
    folder_kwargs,
    module_kwargs,
    write_cifar,
    write_idx,
    write_image_folder,
    write_mnist,
    write_svhn,
)

from robustlab.data.cifar import CIFAR10DataModule, CIFAR100DataModule, read_cifar_batch
from robustlab.data.download import download_and_verify, md5sum
from robustlab.data.idx import IMAGES_MAGIC, LABELS_MAGIC, MNISTDataModule, read_idx
from robustlab.data.imagefolder import ImageFolderDataModule
from robustlab.data.svhn import SVHNDataModule, read_svhn_mat


def assert_pixels(x: torch.Tensor, shape: tuple) -> None:
    assert x.dtype == torch.float32 and tuple(x.shape) == shape
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0


# ---- IDX -----------------------------------------------------------------------------------------
def test_idx_gzip_and_plain(tmp_path):
    images = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256
    gz = read_idx(write_idx(tmp_path / "a.gz", images), IMAGES_MAGIC)
    plain = read_idx(write_idx(tmp_path / "a", images), IMAGES_MAGIC)
    assert gz.shape == (2, 28, 28) and np.array_equal(gz, images) and np.array_equal(plain, gz)
    assert read_idx(write_idx(tmp_path / "l.gz", np.array([3, 7])), LABELS_MAGIC).tolist() == [3, 7]


def test_mnist_module_reads_idx(tmp_path):
    dm = MNISTDataModule(**module_kwargs(root=str(write_mnist(tmp_path)), val_size=5))
    dm.setup()
    x, y = dm.tensors("train")
    assert_pixels(x, (15, 1, 28, 28))
    assert y.dtype == torch.int64 and len(dm.tensors("val")[1]) == 5
    assert dm.tensors("test")[1].tolist() == list(range(10))


@pytest.mark.parametrize(
    "header, needle",
    [
        (dict(magic=2049), "magic number 2049, expected 2051"),
        (dict(shape=(3, 28, 28)), "header shape (3, 28, 28)"),
    ],
)
def test_idx_bad_header(tmp_path, header, needle):
    path = write_idx(tmp_path / "bad.gz", np.zeros((2, 28, 28)), **header)
    with pytest.raises(ValueError) as err:
        read_idx(path, IMAGES_MAGIC)
    assert_one_line(err, str(path), needle)


def test_idx_truncated(tmp_path):
    path = write_idx(tmp_path / "t.gz", np.zeros((2, 28, 28)))
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-10]))
    with pytest.raises(ValueError) as err:
        read_idx(path, IMAGES_MAGIC)
    assert_one_line(err, str(path), "needs 1568 data bytes, file has 1558")


def test_idx_image_label_count_mismatch(tmp_path):
    root = write_mnist(tmp_path)
    write_idx(root / MNIST_FILES["test"][1], np.arange(9) % 10)
    dm = MNISTDataModule(**module_kwargs(root=str(root)))
    with pytest.raises(ValueError) as err:
        dm.setup()
    assert_one_line(err, "10 images", "9 labels")


def test_missing_files_one_line(tmp_path):
    dm = MNISTDataModule(**module_kwargs(root=str(tmp_path / "nowhere")))
    for call in (dm.check_files, dm.setup):
        with pytest.raises(FileNotFoundError) as err:
            call()
        assert_one_line(
            err, "train-images-idx3-ubyte.gz", "nowhere", "dataset.download=true", "dataset.root="
        )


def test_real_mnist_files():
    if not (REAL_MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"no MNIST files in {REAL_MNIST}")
    dm = MNISTDataModule(**module_kwargs(root=str(REAL_MNIST), val_size=0.1))
    dm.check_files()
    dm.setup()
    sizes = {split: len(dm.tensors(split)[1]) for split in ("train", "val", "test")}
    assert sizes["train"] + sizes["val"] == 14_262 and sizes["test"] == 10_000
    assert sizes["val"] == 1426


# ---- CIFAR ---------------------------------------------------------------------------------------
def test_cifar10_and_100(tmp_path):
    dm = CIFAR10DataModule(**cifar_kwargs(write_cifar(tmp_path / "c10"), 10))
    dm.setup()
    assert_pixels(dm.tensors("train")[0], (16, 3, 32, 32))
    assert dm.tensors("test")[1].tolist() == [0, 1, 2, 3]
    dm100 = CIFAR100DataModule(**cifar_kwargs(write_cifar(tmp_path / "c100", hundred=True), 100))
    dm100.setup()
    assert_pixels(dm100.tensors("test")[0], (4, 3, 32, 32))


def test_cifar_pixel_layout(tmp_path):
    write_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    with open(path, "rb") as handle:
        raw = pickle.load(handle)[b"data"]
    x, y = read_cifar_batch(path, b"labels")
    # Row layout: 1024 red, then 1024 green, then 1024 blue values, each row-major 32x32.
    assert x[1, 2, 3, 4] == raw[1, 2 * 1024 + 3 * 32 + 4]
    assert y.dtype == torch.int64 and y.tolist() == [(20 + j) % 10 for j in range(4)]


def test_cifar_wrong_key(tmp_path):
    write_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    with pytest.raises(ValueError) as err:
        read_cifar_batch(path, b"fine_labels")
    assert_one_line(err, str(path), "fine_labels")


# ---- SVHN ----------------------------------------------------------------------------------------
def test_svhn_layout_and_label_10(tmp_path):
    root = write_svhn(tmp_path)
    x, y = read_svhn_mat(root / "test_32x32.mat")
    raw = scipy.io.loadmat(root / "test_32x32.mat")["X"]
    assert x.shape == (6, 3, 32, 32) and x.dtype == torch.uint8
    assert x[5, 1, 2, 3] == raw[2, 3, 1, 5]
    assert y.tolist() == [1, 2, 3, 4, 5, 6] and 10 not in y.tolist()
    write_svhn(tmp_path, n=10)
    dm = SVHNDataModule(**cifar_kwargs(root, 10))
    dm.setup()
    assert dm.tensors("test")[1].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
    assert_pixels(dm.tensors("train")[0], (8, 3, 32, 32))


def test_svhn_wrong_layout(tmp_path):
    path = tmp_path / "train_32x32.mat"
    scipy.io.savemat(path, {"X": np.zeros((3, 32, 32, 2)), "y": np.ones((2, 1))})
    with pytest.raises(ValueError) as err:
        read_svhn_mat(path)
    assert_one_line(err, str(path), "(32, 32, 3, N)")


# ---- image folder --------------------------------------------------------------------------------
def test_image_folder(tmp_path):
    dm = ImageFolderDataModule(**folder_kwargs(write_image_folder(tmp_path)))
    dm.setup()
    x, y = dm.tensors("test")
    assert_pixels(x, (8, 3, 8, 8))
    assert dm.classes == ["cat", "dog"] and y.tolist() == [0] * 4 + [1] * 4
    assert float(x[y == 0].max()) == 0.0 and torch.allclose(x[y == 1], torch.tensor(100 / 255))
    assert len(dm.tensors("train")[1]) == 6 and len(dm.tensors("val")[1]) == 2


def test_image_folder_class_count_mismatch(tmp_path):
    dm = ImageFolderDataModule(**folder_kwargs(write_image_folder(tmp_path), classes=10))
    with pytest.raises(ValueError) as err:
        dm.setup()
    assert_one_line(err, "2 class folders", "num_classes=10")


# ---- downloads -----------------------------------------------------------------------------------
def test_download_file_url(tmp_path):
    source = tmp_path / "src.bin"
    source.write_bytes(b"robustlab" * 100)
    dest = tmp_path / "out" / "copy.bin"
    old = os.umask(0o022)
    try:
        download_and_verify(source.as_uri(), dest, md5sum(source))
    finally:
        os.umask(old)
    assert dest.read_bytes() == source.read_bytes()
    assert dest.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


def test_download_bad_md5_leaves_nothing(tmp_path):
    source = tmp_path / "src.bin"
    source.write_bytes(b"robustlab")
    out = tmp_path / "out"
    with pytest.raises(ValueError) as err:
        download_and_verify(source.as_uri(), out / "copy.bin", "0" * 32)
    assert_one_line(err, "checksum mismatch", source.as_uri(), "0" * 32)
    assert list(out.iterdir()) == []


def test_mnist_prepare_data_from_mirror(tmp_path, monkeypatch):
    mirror = write_mnist(tmp_path / "mirror")
    resources = tuple(
        (name, md5sum(mirror / name)) for pair in MNIST_FILES.values() for name in pair
    )
    monkeypatch.setattr(MNISTDataModule, "mirrors", ("file:///nonexistent/", mirror.as_uri() + "/"))
    monkeypatch.setattr(MNISTDataModule, "resources", resources)
    dm = MNISTDataModule(**module_kwargs(root=str(tmp_path / "data"), download=True))
    dm.check_files()  # download on: fetches the files from the mirror, then checks them
    dm.prepare_data()
    dm.setup()
    assert len(dm.tensors("test")[1]) == 10


def test_prepare_data_checksum_mismatch(tmp_path, monkeypatch):
    mirror = write_mnist(tmp_path / "mirror")
    monkeypatch.setattr(MNISTDataModule, "mirrors", (mirror.as_uri(),))
    dm = MNISTDataModule(**module_kwargs(root=str(tmp_path / "data"), download=True))
    with pytest.raises(OSError) as err:
        dm.prepare_data()  # the official md5s do not match the fixture files
    assert_one_line(err, "train-images-idx3-ubyte.gz", "checksum mismatch")
    assert list((tmp_path / "data").iterdir()) == []

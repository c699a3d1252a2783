"""Bad dataset input fails in the constructor or in check_files(), before any training or loading,
with one line that names the config key or the file, the bad value and what is valid."""

from __future__ import annotations

import gzip
import os
import pickle
import shlex
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from data_fixtures import (
    MNIST_FILES,
    REAL_MNIST,
    Hostile,
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

from robustlab.data import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    DigitsDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
    SVHNDataModule,
    build_datamodule,
)

TRAIN_IMAGES, TRAIN_LABELS = MNIST_FILES["train"]


def mnist(root: Path, **overrides) -> MNISTDataModule:
    return MNISTDataModule(**module_kwargs(root=str(root), **overrides))


def check_fails(dm, exc_type: type[Exception], *needles: str) -> None:
    """``dm.check_files()`` raises ``exc_type`` with one line containing every needle."""
    with pytest.raises(exc_type) as err:
        dm.check_files()
    assert_one_line(err, *needles)


@pytest.fixture
def no_load(monkeypatch):
    """Fail the test if any datamodule loads a whole dataset."""

    def load(self):
        raise AssertionError("check_files() loaded the whole dataset")

    for cls in (MNISTDataModule, DigitsDataModule, CIFAR10DataModule):
        monkeypatch.setattr(cls, "load", load)


# ---- constructor arguments -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "key, value, needle",
    [
        ("batch_size", 0, "dataset.batch_size=0 must be a positive integer"),
        ("batch_size", -8, "dataset.batch_size=-8 must be a positive integer"),
        ("eval_batch_size", 0, "dataset.eval_batch_size=0 must be a positive integer"),
        ("train_limit", 0, "dataset.train_limit=0 must be a positive integer or null"),
        ("train_limit", -3, "dataset.train_limit=-3 must be a positive integer or null"),
        ("val_size", -1, "dataset.val_size=-1 must be a fraction in (0, 1) or a count of images"),
        ("val_size", -0.1, "dataset.val_size=-0.1 must be a fraction in (0, 1)"),
        ("val_size", 1.5, "dataset.val_size=1.5 must be a fraction in (0, 1)"),
        ("val_size", 0.0, "dataset.val_size=0.0 must be a fraction in (0, 1)"),
    ],
)
def test_constructor_rejects(key, value, needle):
    with pytest.raises(ValueError) as err:
        MNISTDataModule(**module_kwargs(**{key: value}))
    assert_one_line(err, needle)


def test_hydra_override_is_one_line(compose_cfg):
    """As the CLI builds it: hydra's multi-line InstantiationException is unwrapped."""
    cfg = compose_cfg("dataset=digits", "dataset.batch_size=0")
    with pytest.raises(ValueError) as err:
        build_datamodule(cfg.dataset)
    assert_one_line(err, "dataset.batch_size=0 must be a positive integer")


# ---- val_size against the training set size from the headers -------------------------------------
@pytest.mark.parametrize("val_size", [20, 25, 0.99])
def test_val_size_leaves_no_training_images(tmp_path, no_load, val_size):
    dm = mnist(write_mnist(tmp_path, n_train=20), val_size=val_size)
    check_fails(dm, ValueError, f"dataset.val_size={val_size} leaves no training", "[0, 19]")


def test_digits_val_size_checked_without_loading(no_load):
    dm = DigitsDataModule(**module_kwargs(name="digits", image_size=8, val_size=1437))
    check_fails(dm, ValueError, "dataset.val_size=1437", "digits has 1437", "[0, 1436]")
    DigitsDataModule(**module_kwargs(name="digits", image_size=8, val_size=1436)).check_files()


# ---- IDX -----------------------------------------------------------------------------------------
def cut_in_half(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def flip_a_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", [cut_in_half, flip_a_byte])
def test_idx_corrupt_gzip(tmp_path, no_load, damage):
    root = write_mnist(tmp_path, n_train=200)
    damage(root / TRAIN_IMAGES)
    check_fails(mnist(root), ValueError, str(root / TRAIN_IMAGES), "corrupt or truncated gzip")


def test_idx_not_gzip_at_all(tmp_path, no_load):
    root = write_mnist(tmp_path)
    (root / TRAIN_IMAGES).write_text("<html>404 Not Found</html>")
    check_fails(mnist(root), ValueError, str(root / TRAIN_IMAGES), "expected 2051")


def test_idx_bad_magic(tmp_path, no_load):
    root = write_mnist(tmp_path)
    write_idx(root / TRAIN_IMAGES, np.zeros((20, 28, 28)), magic=2049)
    check_fails(
        mnist(root), ValueError, str(root / TRAIN_IMAGES), "magic number 2049, expected 2051"
    )


def test_idx_header_sizes_disagree_with_file(tmp_path, no_load):
    root = write_mnist(tmp_path)
    write_idx(root / TRAIN_IMAGES, np.zeros((20, 28, 28)), shape=(21, 28, 28))
    check_fails(
        mnist(root), ValueError, str(root / TRAIN_IMAGES), "header shape (21, 28, 28) needs 16464"
    )


def test_idx_image_and_label_counts_differ(tmp_path, no_load):
    root = write_mnist(tmp_path)
    write_idx(root / TRAIN_LABELS, np.arange(19) % 10)
    check_fails(mnist(root), ValueError, "has 20 images", str(root / TRAIN_LABELS), "19 labels")


def test_idx_labels_out_of_range(tmp_path, no_load):
    root = write_mnist(tmp_path)
    write_idx(root / TRAIN_LABELS, np.arange(20) % 12)
    check_fails(
        mnist(root), ValueError, str(root / TRAIN_LABELS), "0..11", "dataset.num_classes=10"
    )


def test_idx_image_size_disagrees_with_config(tmp_path, no_load):
    check_fails(
        mnist(write_mnist(tmp_path), image_size=32),
        ValueError,
        str(tmp_path / TRAIN_IMAGES),
        "dataset.image_size expect (N, 1, 32, 32)",
    )


# ---- CIFAR ---------------------------------------------------------------------------------------
def cifar10(root: Path) -> CIFAR10DataModule:
    return CIFAR10DataModule(**cifar_kwargs(root, 10))


def cifar_batch(root: Path, name: str = "test_batch") -> Path:
    return write_cifar(root) / "cifar-10-batches-py" / name


@pytest.mark.parametrize("damage", [cut_in_half, lambda p: p.write_text("not a pickle")])
def test_cifar_batch_not_a_pickle(tmp_path, no_load, damage):
    path = cifar_batch(tmp_path, "data_batch_3")
    damage(path)
    check_fails(cifar10(tmp_path), ValueError, str(path), "not a CIFAR python pickle")


@pytest.mark.parametrize("payload", ["os.system", "open"])
def test_cifar_hostile_pickle_is_refused_and_not_run(tmp_path, no_load, payload):
    marker = tmp_path / "pwned"
    hostile = (
        Hostile(os.system, f"touch {shlex.quote(str(marker))}")
        if payload == "os.system"
        else Hostile(open, str(marker), "w")
    )
    blob = pickle.dumps({b"data": hostile, b"labels": [0]})
    path = cifar_batch(tmp_path)
    path.write_bytes(blob)
    check_fails(cifar10(tmp_path), ValueError, str(path), "refused global")
    assert not marker.exists()
    pickle.loads(blob)  # the payload is live: a plain pickle.load would have run it
    assert marker.exists()


def test_cifar_data_wrong_shape(tmp_path, no_load):
    path = cifar_batch(tmp_path)
    data = np.zeros((4, 100), dtype=np.uint8)
    path.write_bytes(pickle.dumps({b"data": data, b"labels": [0, 1, 2, 3]}))
    check_fails(cifar10(tmp_path), ValueError, str(path), "(4, 100)", "expected (N, 3072)")


def test_cifar_labels_out_of_range(tmp_path, no_load):
    path = cifar_batch(tmp_path)
    data = np.zeros((4, 3072), dtype=np.uint8)
    path.write_bytes(pickle.dumps({b"data": data, b"labels": [0, 1, 2, 10]}))
    check_fails(cifar10(tmp_path), ValueError, str(path), "0..10", "dataset.num_classes=10")


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_cifar_every_pickle_protocol_reads(tmp_path, protocol):
    path = cifar_batch(tmp_path)
    entry = {b"data": np.ones((2, 3072), np.uint8), b"labels": [np.int64(3), 4], b"name": b"x"}
    path.write_bytes(pickle.dumps(entry, protocol=protocol))
    cifar10(tmp_path).check_files()


def test_cifar_old_numpy_module_names_read(tmp_path):
    """The official batches (python 2, numpy 1) name numpy.core.multiarray, not numpy._core."""
    path = cifar_batch(tmp_path)
    entry = {b"data": np.ones((2, 3072), np.uint8), b"labels": [1, 2]}
    blob = pickle.dumps(entry, protocol=2)
    assert b"numpy._core.multiarray" in blob
    path.write_bytes(blob.replace(b"numpy._core.", b"numpy.core."))
    cifar10(tmp_path).check_files()


# ---- SVHN and image folders ----------------------------------------------------------------------
def test_svhn_not_a_mat_file(tmp_path):
    root = write_svhn(tmp_path)
    (root / "test_32x32.mat").write_bytes(b"\0" * 300)
    check_fails(
        SVHNDataModule(**cifar_kwargs(root, 10)),
        ValueError,
        str(root / "test_32x32.mat"),
        "not a readable .mat file",
    )


def test_svhn_labels_out_of_range(tmp_path):
    root = write_svhn(tmp_path)
    x = np.zeros((32, 32, 3, 2), np.uint8)
    scipy.io.savemat(root / "train_32x32.mat", {"X": x, "y": np.array([[1], [11]], np.uint8)})
    check_fails(
        SVHNDataModule(**cifar_kwargs(root, 10)),
        ValueError,
        str(root / "train_32x32.mat"),
        "1..11",
        "dataset.num_classes=10",
    )


def test_image_folder_class_count(tmp_path):
    dm = ImageFolderDataModule(**folder_kwargs(write_image_folder(tmp_path), classes=3))
    check_fails(dm, ValueError, str(tmp_path / "train"), "2 class folders", "dataset.num_classes=3")


def test_image_folder_test_split_lacks_a_class(tmp_path):
    shutil.rmtree(write_image_folder(tmp_path) / "val" / "dog")
    dm = ImageFolderDataModule(**folder_kwargs(tmp_path))
    check_fails(dm, FileNotFoundError, str(tmp_path / "val"), "missing class folder 'dog'")


# ---- downloads -----------------------------------------------------------------------------------
def test_download_without_network(tmp_path, monkeypatch):
    monkeypatch.setattr(MNISTDataModule, "mirrors", ("http://127.0.0.1:9/",))  # nothing listens
    monkeypatch.setattr(MNISTDataModule, "download_timeout", 2.0)
    dm = mnist(tmp_path / "data", download=True)
    start = time.perf_counter()
    check_fails(
        dm,
        FileNotFoundError,
        TRAIN_IMAGES,
        f"http://127.0.0.1:9/{TRAIN_IMAGES}",
        "dataset.download=false",
    )
    assert time.perf_counter() - start < 10
    assert list((tmp_path / "data").iterdir()) == []


# ---- good files pass -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, n_train",
    [
        (lambda root: mnist(write_mnist(root)), 20),
        (lambda root: cifar10(write_cifar(root)), 20),
        (lambda root: CIFAR100DataModule(**cifar_kwargs(write_cifar(root, hundred=True), 100)), 4),
        (lambda root: SVHNDataModule(**cifar_kwargs(write_svhn(root), 10)), 6),
        (lambda root: ImageFolderDataModule(**folder_kwargs(write_image_folder(root))), 8),
    ],
    ids=["mnist", "cifar10", "cifar100", "svhn", "imagefolder"],
)
def test_good_files_pass(tmp_path, make, n_train):
    dm = make(tmp_path)
    dm.check_files()
    assert dm.inspect_files() == n_train


def test_real_mnist_check_files_is_fast():
    if not (REAL_MNIST / TRAIN_IMAGES).exists():
        pytest.skip(f"no MNIST files in {REAL_MNIST}")
    dm = mnist(REAL_MNIST, val_size=0.1)
    start = time.perf_counter()
    dm.check_files()
    assert time.perf_counter() - start < 2
    assert dm.inspect_files() == 14_262


def test_gzip_stream_reads_concatenated_members(tmp_path):
    """Some mirrors serve multi-member gzip files; they are valid and must pass."""
    root = write_mnist(tmp_path)
    raw = gzip.decompress((root / TRAIN_IMAGES).read_bytes())
    (root / TRAIN_IMAGES).write_bytes(gzip.compress(raw[:100]) + gzip.compress(raw[100:]))
    mnist(root).check_files()

"""Download a file atomically and verify its md5 (urllib only; file:// URLs work too)."""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path

_CHUNK = 1 << 20


class DownloadError(FileNotFoundError):
    """No mirror delivered a file; the message is one line naming the file and every URL tried."""


def md5sum(path: str | os.PathLike) -> str:
    """The md5 hex digest of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_and_verify(
    url: str, dest_path: str | os.PathLike, md5: str, timeout: float = 60
) -> Path:
    """Fetch ``url`` to ``dest_path`` via a temp file and ``os.replace``; raise on an md5 mismatch.

    Nothing is left at ``dest_path`` (or beside it) when the download fails or the checksum is wrong.
    """
    dest = Path(dest_path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 -> the mode ``open`` would give
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5:
            raise ValueError(
                f"checksum mismatch for {url}: md5 {digest.hexdigest()}, expected {md5} "
                f"(corrupt download or changed mirror); {dest} was not written"
            )
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest


def download_from_mirrors(
    mirrors: Sequence[str], filename: str, dest_dir: Path, md5: str, timeout: float = 60
) -> Path:
    """Try ``mirror + filename`` for each mirror in turn; raise one line listing every failure."""
    errors = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + filename
        try:
            return download_and_verify(url, dest_dir / filename, md5, timeout)
        except (OSError, ValueError) as err:
            errors.append(f"{url}: {' '.join(str(err).split())}")
    raise DownloadError(
        f"could not download {filename} into {dest_dir}: {'; '.join(errors)}; "
        "check the network, or put the files there yourself and set dataset.download=false"
    )


def extract_tar(archive: Path, dest_dir: Path) -> None:
    """Extract a (gzipped) tar archive into ``dest_dir``, refusing unsafe member paths."""
    with tarfile.open(archive) as tar:
        tar.extractall(dest_dir, filter="data")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

"""The defense a checkpoint was trained with, as the file itself records it.

``mode=eval`` records carry this name rather than whatever ``defense=`` the command line happens
to compose, so what is evaluated is what is named. The file is read like ``load_weights`` reads
it (``weights_only``: no code is unpickled) and fails with the same one-line errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from robustlab.models.loading import read_checkpoint


def checkpoint_defense(path: str | Path) -> str | None:
    """The defense name recorded in `path`, or None when the file records none.

    A Lightning checkpoint written by robustlab holds the DefenseModule's hyper-parameters
    (``hyper_parameters["name"]``); a training-cache file holds a top-level ``"defense"`` beside
    its ``"state_dict"`` and ``"training_config"`` (older cache files have no such key: None).
    A plain state_dict or a third-party checkpoint names nothing: None.
    """
    obj = read_checkpoint(Path(path), caller="checkpoint_defense")
    if not isinstance(obj, Mapping):
        return None
    hparams = obj.get("hyper_parameters")
    ours = isinstance(hparams, Mapping) and {"name", "num_classes", "optimizer"} <= set(hparams)
    if ours and isinstance(hparams["name"], str):  # a DefenseModule's, not any Lightning file's
        return hparams["name"] or None
    cached = isinstance(obj.get("state_dict"), Mapping) and "training_config" in obj
    if cached and isinstance(obj.get("defense"), str):
        return obj["defense"] or None
    return None


def checkpoint_training_flags(path: str | Path) -> tuple[str, ...]:
    """The training flags (e.g. ``catastrophic_overfitting``) `path` records: a robustlab Lightning
    checkpoint's ``robustlab_training_flags``, a training-cache file's ``training_flags``."""
    obj = read_checkpoint(Path(path), caller="checkpoint_training_flags")
    if not isinstance(obj, Mapping):
        return ()
    flags = obj.get("robustlab_training_flags", obj.get("training_flags", ()))
    return tuple(f for f in flags if isinstance(f, str)) if isinstance(flags, list) else ()

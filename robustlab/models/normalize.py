"""Per-channel normalization as a network's first layer, so that everything outside the net
(attacks, mixing, translation) works in pixel space [0, 1]."""

import torch
from torch import Tensor, nn


class Normalize(nn.Module):
    """(x - mean) / std per channel; mean and std are buffers (saved, moved with the net)."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"Normalize: mean has {len(mean)} channels but std has {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"Normalize: std must be positive, got {list(std)}")
        self.register_buffer(
            "mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        )
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.mean.shape[1]:
            raise ValueError(
                f"Normalize: expected pixel-space NCHW input with {self.mean.shape[1]} channels, "
                f"got shape {tuple(x.shape)}"
            )
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


NORMALIZATIONS = ("dataset", "identity")


def input_normalize(
    name: str, normalization: str, in_channels: int, mean: list[float], std: list[float]
) -> Normalize:
    """A net's first layer, checked in one line: ``dataset`` normalizes with the dataset's
    mean/std; ``identity`` (mean 0, std 1) passes raw [0, 1] pixels, as most public checkpoints
    (RobustBench, AutoAttack's examples) expect."""
    if len(mean) != in_channels:
        raise ValueError(f"{name}: in_channels={in_channels} but mean/std have {len(mean)} entries")
    if normalization == "dataset":
        return Normalize(mean, std)
    if normalization == "identity":
        return Normalize([0.0] * in_channels, [1.0] * in_channels)
    raise ValueError(
        f"{name}: normalization={normalization!r} is not one of {list(NORMALIZATIONS)}"
    )

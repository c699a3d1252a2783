"""The translator: a pix2pix-style U-Net generator (Isola et al., CVPR 2017; U-Net: Ronneberger
et al., MICCAI 2015) mapping a shifted image back towards the clean distribution, as in the
OOD-to-in-distribution defense of Amich & Eshete (2022, arXiv 2202.08944).

Encoder: ``depth`` blocks Conv4x4/stride 2 (-> BatchNorm, except the first) -> LeakyReLU(0.2);
decoder: ReLU -> ConvTranspose4x4/stride 2 -> BatchNorm, each concatenated with the encoder map
of the same size (the skips). Widths double per level from ``width``, capped at 8 * ``width``.

Our choice for the output (the paper's text was unavailable): residual,
``T(x) = clamp(x + tanh(h(x)), 0, 1)``, with the last layer zero-initialised so the untrained
translator is exactly the identity. Inputs whose side is not a multiple of ``2**depth`` (28x28
MNIST) are replicate-padded to the next multiple and the output is cropped back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def check_depth(depth: int, height: int, width: int, what: str = "unet depth") -> None:
    """One-line error when ``depth`` stride-2 levels would shrink the input below 1x1."""
    side = min(height, width)
    if depth < 1 or 2**depth > side:
        deepest = max(side.bit_length() - 1, 0)
        raise ValueError(
            f"{what}={depth} does not fit {height}x{width} inputs: the bottleneck must be >= 1x1, "
            f"so it must be in 1..{deepest}"
        )


def _down(c_in: int, c_out: int, norm: bool) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers)


def _up(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ReLU(),
        nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
    )


class UNet(nn.Module):
    """``x -> T(x)``, pixel space [0,1] NCHW in and out, same shape."""

    def __init__(self, in_channels: int, depth: int = 3, width: int = 32):
        super().__init__()
        if width < 1:
            raise ValueError(f"unet width={width} must be >= 1")
        if depth < 1:
            raise ValueError(f"unet depth={depth} must be >= 1")
        self.depth = depth
        widths = [width * 2 ** min(i, 3) for i in range(depth)]
        self.down = nn.ModuleList(
            _down(c_in, c_out, norm=i > 0)
            for i, (c_in, c_out) in enumerate(zip([in_channels, *widths], widths, strict=False))
        )
        # decoder level i maps the (concatenated) map at depth i+1 to the width of depth i
        self.up = nn.ModuleList(
            _up(widths[i + 1] * (1 if i + 1 == depth - 1 else 2), widths[i])
            for i in range(depth - 1)
        )
        self.head = nn.Sequential(
            nn.ReLU(),
            nn.ConvTranspose2d(widths[0] * (1 if depth == 1 else 2), in_channels, 4, 2, 1),
        )
        nn.init.zeros_(self.head[1].weight)
        nn.init.zeros_(self.head[1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        check_depth(self.depth, h, w)
        mult = 2**self.depth
        pad_h, pad_w = (-h) % mult, (-w) % mult
        z = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x
        skips = []
        for block in self.down:
            z = block(z)
            skips.append(z)
        skips.pop()  # the bottleneck is not a skip
        for block in reversed(self.up):
            z = torch.cat([block(z), skips.pop()], dim=1)
        correction = torch.tanh(self.head(z))[..., :h, :w]
        return (x + correction).clamp(0, 1)

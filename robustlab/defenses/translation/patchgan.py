"""PatchGAN discriminator of pix2pix (Isola et al., CVPR 2017): a conditional, fully
convolutional classifier of (input, output) image pairs that scores every receptive-field patch as
real (the clean target) or fake (the translator's output), used with the adversarial weight
``lambda_adv`` of the translation defense (Amich & Eshete 2022).

``layers`` Conv4x4/stride 2 blocks (BatchNorm except the first, LeakyReLU 0.2), then a
Conv3x3/stride 1 to one logit per patch; the 3x3 end (pix2pix uses 4x4) keeps 8x8 inputs valid.
"""

from __future__ import annotations

import torch
from torch import nn

from robustlab.defenses.translation.unet import check_depth


class PatchGAN(nn.Module):
    """``(condition, image) -> patch logits``, both pixel-space [0,1] NCHW of the same shape."""

    def __init__(self, in_channels: int, layers: int = 2, width: int = 32):
        super().__init__()
        if layers < 1 or width < 1:
            raise ValueError(f"patchgan layers={layers} and width={width} must be >= 1")
        self.layers = layers
        blocks: list[nn.Module] = []
        c_in = 2 * in_channels
        for i in range(layers):
            c_out = width * 2 ** min(i, 3)
            blocks.append(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=i == 0))
            if i > 0:
                blocks.append(nn.BatchNorm2d(c_out))
            blocks.append(nn.LeakyReLU(0.2))
            c_in = c_out
        blocks.append(nn.Conv2d(c_in, 1, 3, padding=1))
        self.body = nn.Sequential(*blocks)

    def forward(self, condition: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        check_depth(self.layers, *image.shape[-2:], what="patchgan layers")
        return self.body(torch.cat([condition, image], dim=1))

"""Natural distribution shifts, the "naturally OOD" inputs of Amich & Eshete (2022): darker
(brightness scaling) and sharper (unsharp mask) images, plus Gaussian noise, each at severities
0 (identity) to 5. They serve as training pairs for the translator (``defense=translation``) and are reported
like attacks (``eval.natural_shifts``, ``robustlab.evaluation.natural``).

The levels are our choice (the paper's text was unavailable), in the spirit of the corruption
levels of Hendrycks & Dietterich (ICLR 2019). Every output is clamped to [0,1]; the per-pixel
distance |shift(x) - x| grows with severity (for noise: with the same noise draw), because each
shift moves every pixel along a fixed direction by an amount that grows with severity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MAX_SEVERITY = 5
DARKER_SCALE = (1.0, 0.8, 0.65, 0.5, 0.35, 0.2)  # brightness factor per severity
SHARPER_AMOUNT = (0.0, 1.0, 2.0, 3.0, 4.5, 6.0)  # unsharp-mask gain per severity
NOISE_SIGMA = (0.0, 0.04, 0.08, 0.12, 0.18, 0.26)  # noise standard deviation per severity
BLUR = torch.tensor([1.0, 2.0, 1.0]) / 4  # separable 3x3 binomial (Gaussian-like) kernel

Severity = int | torch.Tensor


def _level(table: tuple[float, ...], severity: Severity, x: torch.Tensor) -> torch.Tensor:
    """The table's value per example, shaped (N, 1, 1, 1) (or a scalar tensor)."""
    sev = torch.as_tensor(severity, device=x.device)
    if sev.dtype.is_floating_point or sev.min() < 0 or sev.max() > MAX_SEVERITY:
        raise ValueError(f"shift severity={severity} must be integers in 0..{MAX_SEVERITY}")
    levels = torch.tensor(table, dtype=x.dtype, device=x.device)[sev.long()]
    return levels.view(-1, 1, 1, 1) if levels.dim() else levels


def darker(x: torch.Tensor, severity: Severity) -> torch.Tensor:
    """Brightness scaling ``x * s`` with s from ``DARKER_SCALE``."""
    return (x * _level(DARKER_SCALE, severity, x)).clamp(0, 1)


def blur(x: torch.Tensor) -> torch.Tensor:
    """3x3 binomial blur per channel (one batched depthwise conv), replicate padding."""
    k = torch.outer(BLUR, BLUR).to(x)
    c = x.shape[1]
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return F.conv2d(padded, k.expand(c, 1, 3, 3), groups=c)


def sharper(x: torch.Tensor, severity: Severity) -> torch.Tensor:
    """Unsharp mask ``x + a * (x - blur(x))`` with gain a from ``SHARPER_AMOUNT``."""
    return (x + _level(SHARPER_AMOUNT, severity, x) * (x - blur(x))).clamp(0, 1)


def gaussian_noise(
    x: torch.Tensor, severity: Severity, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``x + sigma * z``, z standard normal (from ``generator`` when given), sigma per severity."""
    z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + _level(NOISE_SIGMA, severity, x) * z).clamp(0, 1)


SHIFTS = {"darker": darker, "sharper": sharper, "gaussian_noise": gaussian_noise}


def check_shift_names(names: list[str]) -> None:
    unknown = [n for n in names if n not in SHIFTS]
    if unknown:
        raise ValueError(f"natural shifts {unknown} unknown; valid shifts: {list(SHIFTS)}")


def apply_shift(name: str, x: torch.Tensor, severity: Severity, seed: int = 0) -> torch.Tensor:
    """Shift ``name`` at ``severity``; Gaussian noise draws from a generator seeded by ``seed``."""
    check_shift_names([name])
    if name != "gaussian_noise":
        return SHIFTS[name](x, severity)
    generator = torch.Generator(device=x.device).manual_seed(seed)
    return gaussian_noise(x, severity, generator)

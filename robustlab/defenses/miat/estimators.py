"""Local-DIM mutual-information estimators of MIAT (Zhou et al., "Improving Adversarial Robustness
via Mutual Information Estimation", ICML 2022, Sec. 3.2.2), after Hjelm et al. (ICLR 2019).

An estimator scores a pattern (the natural input x, or the adversarial noise x_adv - x) against a
network's output h(x'): a local encoder maps the pattern to a map of ``hidden``-dim vectors, a global
encoder maps the logits to one ``hidden``-dim vector, and the critic T is their dot product at each
location. Per example i, the Donsker-Varadhan bound uses the pair (pattern_i, h_i) as the joint
sample and the pairs (pattern_j, h_i) over the batch as the marginal:

    I_i = mean_k [ T(l_ik, g_i) - log mean_j exp T(l_jk, g_i) ].

The marginal keeps the joint pair j = i (the official code, dwDavidxd/MIAT
``donsker_varadhan_loss``, keeps it too, as exp(0) after zeroing it), which bounds every estimate
above by log N. Without it, MIAT's difference objectives inflate the critic's scale without limit
(measured on digits: estimates of -100 to -1000 after 5 epochs, then a stalled stage 2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


def nonnegative(mi: Tensor) -> Tensor:
    """An MI estimate clamped at 0 (MI >= 0), for estimates being minimized: pushing one below
    zero says nothing about the dependence and is not rewarded."""
    return mi.clamp_min(0.0)


def dv_bound(joint_scores: Tensor, marginal_scores: Tensor) -> Tensor:
    """Donsker-Varadhan lower bound E_joint[T] - log E_marginal[exp T] over the last axis.

    ``joint_scores`` (..., n_joint) and ``marginal_scores`` (..., n_marginal) are critic values;
    the log-mean-exp is computed with logsumexp, so large scores do not overflow.
    """
    n_marginal = marginal_scores.shape[-1]
    log_mean_exp = torch.logsumexp(marginal_scores, dim=-1) - math.log(n_marginal)
    return joint_scores.mean(dim=-1) - log_mean_exp


class _ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of an NCHW map."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _ResidualBlock1x1(nn.Module):
    """1x1 conv -> BN -> ReLU -> 1x1 conv, plus a linear 1x1 shortcut, then channel LayerNorm.

    The shortcut starts near the identity on the first ``n_in`` channels, as in local DIM.
    """

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.nonlinear = nn.Sequential(
            nn.Conv2d(n_in, n_out, 1, bias=False),
            nn.BatchNorm2d(n_out),
            nn.ReLU(),
            nn.Conv2d(n_out, n_out, 1),
        )
        self.shortcut = nn.Conv2d(n_in, n_out, 1, bias=False)
        if n_out >= n_in:
            with torch.no_grad():
                self.shortcut.weight.uniform_(-0.01, 0.01)
                self.shortcut.weight[torch.arange(n_in), torch.arange(n_in)] = 1.0
        self.norm = _ChannelLayerNorm(n_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.nonlinear(x) + self.shortcut(x))


def _downsample(n_in: int, n_out: int, size: int) -> tuple[nn.Module, int]:
    """A 4x4 stride-2 conv (size -> size/2) while the map is at least 4 wide; on smaller maps a
    3x3 stride-1 conv with padding 1 (size kept), so tiny inputs still give a local map."""
    if size >= 4:
        conv, size = nn.Conv2d(n_in, n_out, 4, stride=2, padding=1, bias=False), size // 2
    else:
        conv = nn.Conv2d(n_in, n_out, 3, stride=1, padding=1, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(n_out), nn.ReLU()), size


class LocalEncoder(nn.Module):
    """Pattern map (N, C, S, S) -> (N, hidden, S', S'): two 4x4 stride-2 convs + a 1x1 block."""

    def __init__(self, in_channels: int, size: int, hidden: int, width: int = 64):
        super().__init__()
        first, size = _downsample(in_channels, width, size)
        second, size = _downsample(width, 2 * width, size)
        self.convs = nn.Sequential(first, second)
        self.block = _ResidualBlock1x1(2 * width, hidden)
        self.out_size = size

    def forward(self, pattern: Tensor) -> Tensor:
        return self.block(self.convs(pattern))


class GlobalEncoder(nn.Module):
    """Logits (N, K) -> (N, hidden): the 1x1 residual block applied to the logits as a 1x1 map."""

    def __init__(self, num_logits: int, hidden: int):
        super().__init__()
        self.block = _ResidualBlock1x1(num_logits, hidden)

    def forward(self, logits: Tensor) -> Tensor:
        return self.block(logits[:, :, None, None]).flatten(1)


class MIEstimator(nn.Module):
    """I(pattern; h) per example, by the DV bound over the batch (see the module docstring).

    ``pattern_shape`` is (channels, height, width) of the pattern (the input image for MIAT),
    ``num_logits`` the width of the network's output.
    """

    def __init__(
        self, pattern_shape: Sequence[int], num_logits: int, hidden: int = 2048, width: int = 64
    ):
        super().__init__()
        channels, height, width_px = (int(s) for s in pattern_shape)
        if height != width_px:
            raise ValueError(f"MIEstimator: pattern_shape={tuple(pattern_shape)} must be square")
        self.local = LocalEncoder(channels, height, hidden, width)
        self.global_ = GlobalEncoder(num_logits, hidden)

    @classmethod
    def for_net(
        cls, net: nn.Module, input_shape: Sequence[int], hidden: int = 2048, width: int = 64
    ) -> MIEstimator:
        """Size an estimator for ``net`` from a probe forward on a dummy input of ``input_shape``."""
        was_training = net.training
        net.eval()
        with torch.no_grad():
            param = next(net.parameters(), None)
            device = param.device if param is not None else None
            logits = net(torch.zeros(2, *input_shape, device=device))
        net.train(was_training)
        return cls(input_shape, logits.shape[1], hidden, width)

    def scores(self, pattern: Tensor, logits: Tensor) -> Tensor:
        """Critic values T[i, j, k] = <global(h_i), local(pattern_j) at location k>."""
        local = self.local(pattern.detach()).flatten(2)  # (N, hidden, L)
        glob = self.global_(logits)  # (N, hidden)
        return torch.einsum("ih,jhk->ijk", glob, local)

    def forward(self, pattern: Tensor, logits: Tensor) -> Tensor:
        """Per-example DV estimates (N,), at most log N; the batch (N >= 2) is the marginal."""
        n = pattern.shape[0]
        if n < 2:
            raise ValueError(
                f"MIEstimator: batch size {n} < 2; the DV marginal needs other examples"
            )
        scores = self.scores(pattern, logits)  # (N, N, L)
        joint = scores.diagonal(dim1=0, dim2=1).T.unsqueeze(-1)  # (N, L, 1)
        return dv_bound(joint, scores.transpose(1, 2)).mean(dim=1)  # marginal (N, L, N)

"""MIAT stage 2, NAMID (Zhou et al., "Improving Adversarial Robustness via Mutual Information
Estimation", ICML 2022, Sec. 3.3, Eq. 8-9): adversarial training guided by the frozen natural and
adversarial MI estimators E_n and E_a of stage 1 (``stage1.py``).

    L_all = L_adv + alpha * L_mi
    L_mi  = L_cos(I_n(x; h(x_adv)), I_n(x; h(x))) + L_cos(I_a(n; h(x_adv)), I_a(n; h(x)))
            + lambda * mean_X' [ [I_a(n; h(x_adv))]+ - I_n(x; h(x_adv)) ],      n = x_adv - x

over the examples X' the current model classifies correctly when clean and wrongly when attacked
(L_mi = 0 when there is none). [.]+ clamps the minimized I_a at 0 (MI >= 0; our addition, see
``estimators.py``); I_n is at most log N, so the lambda term is bounded below.
L_cos(a, b) = |1 - cos(a, b)|, the cosine taken between the vectors of per-example estimates over
X' (a cosine of two scalars would only compare signs; the official code does the same). L_adv is the base loss: CE on PGD examples (``pgd_at``, NAMID), TRADES
(``trades``, NAMID_T) or MART (``mart``, NAMID_M), each crafted as its own defense crafts; with
alpha = 0 the loss is exactly the base loss.

Departures of the official code (dwDavidxd/MIAT, ``train_MIAT.py``) from the paper, where we follow
the paper: it drops the lambda term (ours: lambda = 0.1 by default); its sample selection takes a
softmax over the batch axis (see ``selection.py``); it trains WRN-34-10 with PGD-40, step 0.007
(the paper: ResNet-18, PGD-10, step eps/4). One we follow: the code trains 2 clean epochs before
the MIAT loss, which the paper does not mention (``warmup_epochs: 2`` in ``conf/defense/miat.yaml``,
inside ``max_epochs``, and given to the PGD-AT classifier of stage 1 too). Without it a net trained
from scratch collapses to chance on digits: early on almost no example is selected, and the cosine
terms' gradients (about 1/|v| in the estimates) overwhelm the base loss
(experiments/miat/README.md).

What alpha means depends on how steep the estimators come out: ``train/mi_grad_ratio`` (logged on
the first batch of each epoch, ``mi_grad_ratio``) is the norm of alpha L_mi's gradient over the
net's parameters relative to L_adv's. With the paper's alpha = 5 it was 3-11 on digits (the net
then follows the estimators, 30-55 points of clean accuracy lost) and 0.1-0.16 on MNIST, so the
digits presets use alpha = 0.25 (#18, experiments/miat/README.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from robustlab.defenses.adversarial import AdversarialDefense
from robustlab.defenses.mart import mart_loss
from robustlab.defenses.miat.estimators import MIEstimator, nonnegative
from robustlab.defenses.miat.objectives import cosine_loss
from robustlab.defenses.miat.selection import select_flipped
from robustlab.defenses.miat.stage1 import freeze
from robustlab.defenses.trades import kl_sum, small_noise_start, trades_loss
from robustlab.modes import eval_mode

BASE_LOSSES = ("pgd_at", "trades", "mart")
ESTIMATORS = ("estimator_n", "estimator_a")


def load_estimators(path: str) -> dict[str, dict[str, Tensor]]:
    """{attribute: state_dict} of E_n and E_a from a stage-1 (``miat_estimators``) checkpoint."""
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    parts = {
        name: {k[len(name) + 1 :]: v for k, v in state.items() if k.startswith(name + ".")}
        for name in ESTIMATORS
    }
    missing = [name for name, part in parts.items() if not part]
    if missing:
        raise ValueError(f"miat: {path} has no {missing}; expected a miat_estimators checkpoint")
    return parts


class MIAT(AdversarialDefense):
    """NAMID / NAMID_T / NAMID_M: ``base_loss`` in {pgd_at, trades, mart}; ``alpha`` weighs L_mi
    (5 in the paper), ``lam`` the lambda term (0.1), ``beta`` the TRADES/MART KL weight (6).

    ``dependencies['estimators']``: the stage-1 checkpoint; ``estimator`` and ``input_shape`` must
    be those stage 1 was built with (the yaml passes the same values to both stages).
    """

    def __init__(
        self,
        *args,
        dependencies: dict[str, str],
        input_shape: Sequence[int],
        estimator: dict[str, Any],
        base_loss: str = "pgd_at",
        alpha: float = 5.0,
        lam: float = 0.1,
        beta: float = 6.0,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if base_loss not in BASE_LOSSES:
            raise ValueError(f"miat: base_loss={base_loss!r} is not one of {list(BASE_LOSSES)}")
        if "estimators" not in dependencies:
            raise ValueError(f"miat: dependencies={sorted(dependencies)} lack 'estimators'")
        self.base_loss, self.alpha, self.lam, self.beta = base_loss, alpha, lam, beta
        self._ratio_epoch = -1  # the epoch train/mi_grad_ratio was last measured in
        self.estimator_n = MIEstimator.for_net(self.net, input_shape, **estimator)
        self.estimator_a = MIEstimator.for_net(self.net, input_shape, **estimator)
        for name, state in load_estimators(dependencies["estimators"]).items():
            getattr(self, name).load_state_dict(state, strict=True)
            freeze(getattr(self, name))

    def train(self, mode: bool = True):
        """Train the net only: the frozen estimators stay in eval mode."""
        super().train(mode)
        self.estimator_n.eval()
        self.estimator_a.eval()
        return self

    def base_terms(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """(L_adv, x_adv, logits_adv, clean logits or None), crafted as the base defense does."""
        if self.base_loss == "pgd_at":
            x_adv = self.craft(x, y)
            logits_adv = self.net(x_adv)
            return F.cross_entropy(logits_adv, y), x_adv, logits_adv, None
        if self.base_loss == "trades":
            start = small_noise_start(x)
            with torch.no_grad(), eval_mode(self.net):
                probs_clean = F.softmax(self.net(x), dim=1)
            x_adv = self.craft(x, probs_clean, loss_fn=kl_sum, start=start)
            logits_clean, logits_adv = self.net(x), self.net(x_adv)
            return (
                trades_loss(logits_clean, logits_adv, y, self.beta),
                x_adv,
                logits_adv,
                logits_clean,
            )
        x_adv = self.craft(x, y, start=small_noise_start(x))
        logits_clean, logits_adv = self.net(x), self.net(x_adv)
        return mart_loss(logits_clean, logits_adv, y, self.beta), x_adv, logits_adv, logits_clean

    def mi_loss(
        self, x: Tensor, x_adv: Tensor, logits_clean: Tensor, logits_adv: Tensor, y: Tensor
    ) -> Tensor:
        """L_mi of Eq. 8 on the selected examples; 0 when none is selected."""
        mask = select_flipped(logits_clean.detach(), logits_adv.detach(), y)
        self.log("train/selected", mask.float().mean(), on_step=False, on_epoch=True)
        if not bool(mask.any()):
            return logits_adv.new_zeros(())
        noise = x_adv - x
        n_adv = self.estimator_n(x, logits_adv)[mask]
        n_clean = self.estimator_n(x, logits_clean)[mask]
        a_adv = self.estimator_a(noise, logits_adv)[mask]
        a_clean = self.estimator_a(noise, logits_clean)[mask]
        return (
            cosine_loss(n_adv, n_clean)
            + cosine_loss(a_adv, a_clean)
            + self.lam * (nonnegative(a_adv) - n_adv).mean()
        )

    def training_loss(self, x, y):
        loss_adv, x_adv, logits_adv, logits_clean = self.base_terms(x, y)
        if logits_clean is None:
            logits_clean = self.net(x)
        loss_mi = self.mi_loss(x, x_adv, logits_clean, logits_adv, y)
        self.log("train/loss_mi", loss_mi.detach(), on_step=False, on_epoch=True)
        if self.alpha and loss_mi.requires_grad and self._ratio_epoch != self.current_epoch:
            self._ratio_epoch = self.current_epoch  # the first batch with an MI term, per epoch
            params = [p for p in self.net.parameters() if p.requires_grad]
            ratio = mi_grad_ratio(loss_adv, self.alpha * loss_mi, params)
            self.log("train/mi_grad_ratio", ratio, on_step=False, on_epoch=True)
        return loss_adv + self.alpha * loss_mi, logits_clean


def mi_grad_ratio(loss_adv: Tensor, weighted_mi: Tensor, params: Sequence[Tensor]) -> Tensor:
    """||d(alpha L_mi)/d params|| / ||d L_adv/d params||: how hard the MI term pulls on the net
    against the base loss. Above 1 the net follows the estimators more than the labels; near 0
    MIAT is its base loss. Measured with the paper's alpha = 5 (experiments/miat/README.md): 3-11
    on digits, where the net then loses 30-55 points of clean accuracy, and 0.1-0.16 on MNIST,
    where L_mi barely acts; the estimators' steepness, not alpha alone, sets it.

    Two backward passes through the net (the graph is kept for the training step's own), which
    ``MIAT.training_loss`` spends on the first batch of each epoch only.
    """
    mi, adv = (_flat_grad(loss, params) for loss in (weighted_mi, loss_adv))
    return (mi.norm() / adv.norm().clamp_min(1e-12)).detach()


def _flat_grad(loss: Tensor, params: Sequence[Tensor]) -> Tensor:
    """d loss / d params, flattened into one vector (zeros for parameters the loss does not use)."""
    grads = torch.autograd.grad(loss, params, retain_graph=True, materialize_grads=True)
    return torch.cat([g.flatten() for g in grads])

"""``defense=translation``: OOD-to-in-distribution translation (Amich & Eshete 2022,
arXiv 2202.08944) around a frozen classifier.

The classifier (``net``) comes from the training cache through ``dependencies: {classifier: ...}``
and is frozen (no gradients, eval mode kept through Lightning's ``train()`` calls, so BatchNorm
buffers never move). Per batch (manual optimization):

1. pairs (shifted -> clean): each example is kept clean with probability ``identity_share``
   (clean -> clean pairs preserve benign inputs), else shifted by one source drawn uniformly:
   one of ``train_attacks`` (attack specs for ``robustlab.attacks.factory.build_attack``, crafted
   on the frozen classifier at ``train_eps``) or one of ``natural_shifts`` at a random severity
   1..5, as ``shift_sources`` allows;
2. the U-Net translator (pix2pix, Isola et al. 2017) steps on L1(T(shifted), clean)
   + ``lambda_adv`` * the generator's PatchGAN loss; the discriminator steps when lambda_adv > 0;
3. a ``detector`` gate steps on clean (label 0) vs shifted (label 1) inputs.

At the end of every training epoch the gate is calibrated on the datamodule's clean validation
split to its false-positive rate (the threshold is a buffer, stored by the training cache).
Validation logs the classifier's accuracy on PGD examples (``val_attack``) before and after
translation; ``val/translated_adv_acc`` is the monitor (higher is better).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks.factory import build_attack
from robustlab.data.shifts import MAX_SEVERITY, SHIFTS, check_shift_names
from robustlab.defenses.base import DefenseModule
from robustlab.defenses.inner import pgd
from robustlab.defenses.optim import build_optimizer
from robustlab.defenses.translation.gate import Gate
from robustlab.defenses.translation.patchgan import PatchGAN
from robustlab.defenses.translation.unet import UNet
from robustlab.models.loading import load_weights
from robustlab.modes import eval_mode

SOURCES = ("adversarial", "natural")


class Translation(DefenseModule):
    """Trains translator (+ PatchGAN, + detector gate) for a frozen classifier ``net``."""

    parts = ("translator", "gate")
    # the frozen classifier stays in eval mode through training, on purpose
    expected_warnings = (r"Found \d+ module\(s\) in eval mode at the start of training",)

    def __init__(
        self,
        net: nn.Module,
        name: str,
        num_classes: int,
        optimizer: dict,
        in_channels: int,
        dependencies: dict[str, str] | None = None,
        unet: dict | None = None,
        patchgan: dict | None = None,
        lambda_adv: float = 0.0,
        gate: dict | None = None,
        shift_sources: tuple[str, ...] = ("adversarial", "natural"),
        train_attacks: tuple[dict, ...] = ({"kind": "pgd", "steps": 10},),
        train_eps: float = 0.1,
        natural_shifts: tuple[str, ...] = tuple(SHIFTS),
        identity_share: float = 0.2,
        seed: int = 0,
        val_attack: dict | None = None,
        monitor: str = "val/translated_adv_acc",
    ):
        super().__init__(net, name, num_classes, optimizer, None, val_attack, monitor)
        self.automatic_optimization = False
        if dependencies is not None:
            if "classifier" not in dependencies:
                raise ValueError(
                    f"translation dependencies={sorted(dependencies)} lack 'classifier'"
                )
            load_weights(net, dependencies["classifier"])
        net.requires_grad_(False)
        net.eval()
        bad = [s for s in shift_sources if s not in SOURCES]
        if bad or not shift_sources:
            raise ValueError(
                f"translation shift_sources={list(shift_sources)}: use {list(SOURCES)}"
            )
        check_shift_names(list(natural_shifts))
        if not 0.0 <= identity_share < 1.0:
            raise ValueError(f"translation identity_share={identity_share} must be in [0, 1)")
        if lambda_adv < 0:
            raise ValueError(f"translation lambda_adv={lambda_adv} must be >= 0")
        self.translator = UNet(in_channels, **(unet or {}))
        self.discriminator = PatchGAN(in_channels, **(patchgan or {})) if lambda_adv > 0 else None
        self.gate = Gate(in_channels=in_channels, **(gate or {}))
        self.lambda_adv, self.identity_share = lambda_adv, identity_share
        self.attacks = []
        if "adversarial" in shift_sources:
            self.attacks = [
                build_attack(spec, net, seed=seed, num_classes=num_classes, eps=train_eps)
                for spec in train_attacks
            ]
        self.natural = list(natural_shifts) if "natural" in shift_sources else []
        if not self.attacks and not self.natural:
            raise ValueError(
                "translation has no shift source: list train_attacks or natural_shifts"
            )

    def train(self, mode: bool = True):
        """Lightning switches modes; the frozen classifier always stays in eval mode."""
        super().train(mode)
        self.net.eval()
        return self

    # ---- pairs ---------------------------------------------------------------------------------
    def shifted_batch(
        self, x: torch.Tensor, y: torch.Tensor, call: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, shifted mask): identity pairs keep x; the others get one shift source each.
        ``call`` seeds the attacks (the training batch's position, so a resumed run crafts what
        an uninterrupted one did)."""
        n_sources = len(self.attacks) + len(self.natural)
        identity = torch.rand(len(x), device=x.device) < self.identity_share
        source = torch.randint(n_sources, (len(x),), device=x.device)
        x_in = x.clone()
        for i in range(n_sources):
            idx = ((source == i) & ~identity).nonzero().flatten()
            if idx.numel() == 0:
                continue
            if i < len(self.attacks):
                x_in[idx] = self.attacks[i](x[idx], y[idx], call=call)
            else:
                severity = torch.randint(1, MAX_SEVERITY + 1, (idx.numel(),), device=x.device)
                x_in[idx] = SHIFTS[self.natural[i - len(self.attacks)]](x[idx], severity)
        return x_in.detach(), ~identity

    # ---- training ------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        x, y = batch
        x_in, shifted = self.shifted_batch(x, y, call=self.current_epoch * 100_000 + batch_idx)
        opts = self.optimizers()
        opts = iter(opts if isinstance(opts, list) else [opts])
        opt_t = next(opts)
        out = self.translator(x_in)
        l1 = F.l1_loss(out, x)
        loss = l1
        if self.discriminator is not None:
            fake = self.discriminator(x_in, out)
            loss = l1 + self.lambda_adv * _bce(fake, True)
        opt_t.zero_grad()
        self.manual_backward(loss)
        opt_t.step()
        self.log("train/l1", l1, prog_bar=True, on_step=True, on_epoch=True, sync_dist=True)
        if self.discriminator is not None:
            opt_d = next(opts)
            real = self.discriminator(x_in, x)
            fake = self.discriminator(x_in, out.detach())
            d_loss = (_bce(real, True) + _bce(fake, False)) / 2
            opt_d.zero_grad()
            self.manual_backward(d_loss)
            opt_d.step()
            self.log("train/d_loss", d_loss, on_step=False, on_epoch=True, sync_dist=True)
        if self.gate.detector is not None:
            opt_g = next(opts)
            inputs = torch.cat([x, x_in[shifted]])
            labels = torch.cat([torch.zeros(len(x)), torch.ones(int(shifted.sum()))]).to(x)
            g_loss = F.binary_cross_entropy_with_logits(self.gate.score(inputs, self.net), labels)
            opt_g.zero_grad()
            self.manual_backward(g_loss)
            opt_g.step()
            self.log("train/detector_loss", g_loss, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def configure_optimizers(self):
        parts = [self.translator, self.discriminator, self.gate.detector]
        return [build_optimizer(p.parameters(), self.optimizer_cfg) for p in parts if p is not None]

    def on_train_epoch_end(self) -> None:
        x_val, _ = self.trainer.datamodule.tensors("val")
        with eval_mode(self):
            fpr = self.gate.calibrate(x_val.to(self.device), self.net)
        self.log("val/gate_fpr", fpr, sync_dist=True)

    # ---- validation ----------------------------------------------------------------------------
    def validation_step(self, batch, batch_idx):
        x, y = batch
        n = len(x)
        metrics = {
            "val/clean_acc": self.net(x).argmax(1) == y,
            "val/translated_clean_acc": self.net(self.translator(x)).argmax(1) == y,
        }
        if self.val_attack is not None:
            x_adv = pgd(self.net, x, y, self.val_attack)
            metrics["val/adv_acc"] = self.net(x_adv).argmax(1) == y
            metrics["val/translated_adv_acc"] = self.net(self.translator(x_adv)).argmax(1) == y
        for key, correct in metrics.items():
            self.log(
                key,
                correct.float().mean(),
                batch_size=n,
                sync_dist=True,
                prog_bar=key == self.monitor,
            )


def _bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)

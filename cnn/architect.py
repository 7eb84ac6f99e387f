"""Architecture-weight updates: DARTS first and second order, D-DARTS per-cell losses.

One search iteration (``search_iteration``) is an architecture step on a batch of the held-out
half followed by a network-weight step on a training batch (bi-level, DARTS), or one joint step
on the training batch (``single_level``).

Architecture objective
    Cross-entropy of the supernet on the search batch. D-DARTS adds, for every set of weights
    ``c`` (a cell, or a gene shared by several cells), a zero-one *separation* term that pushes
    its op weights ``p_c`` (sigmoid or softmax, in [0, 1]) away from 0.5:
    ``sep_c = -mean((p_c - 0.5)^2)`` (``l2``) or ``-mean(|p_c - 0.5|)`` (``l1``), weighted by
    ``aux_loss_weight``; and an *ablation* term from each cell's marginal contribution,
    weighted by ``abl_loss_weight``::

        mc_c  = CE(all cells) - CE(cell c deactivated)       (D-DARTS: random op weights)
        abl_c = (mc_c - mean_d mc_d) / |mean_d mc_d|

    Cell c's own loss is ``CE + aux_loss_weight * sep_c + abl_loss_weight * abl_c`` and set c
    receives the gradient of that loss with respect to its own weights and nothing else: not
    the other cells' separation or ablation terms, and nothing reaches the network weights.
    The deactivated losses and the mean are statistics of the batch (constants); the
    deactivated loss cannot depend on the weights of the cell it deactivates anyway. So the
    ablation term's gradient is ``dCE/d alpha_c / |mean mc|``: every cell's cross-entropy
    gradient is amplified by ``1 + abl_loss_weight / |mean mc|`` relative to its separation
    term, more when the cells matter little on average.

    Differences from D-DARTS, on purpose: D-DARTS back-propagates each cell's loss through the
    shared graph, so the cross-entropy gradient accumulates in the cells not yet stepped and
    in the network weights (and reaches the next weight step); its ablation term is a constant
    tensor, so it has no gradient at all; and it divides by the signed mean, which turns the
    ablation term into gradient *ascent* on the cross-entropy when the mean contribution is
    positive. Here each set gets exactly its own gradient, the ablation term carries gradient,
    and the denominator is ``|mean|`` (with a zero term when the mean is zero, as D-DARTS).
    When one gene is shared by several layers (DARTOpti), deactivating it randomises all of
    them, so that its deactivated loss does not depend on its weights.

Second order (``--unrolled``)
    The DARTS hypergradient ``dL_val(w', a)/da - eta * d2L_train(w, a)/(da dw) . v`` where
    ``w' = w - eta * (momentum * buf + dL_train(w, a)/dw + weight_decay * w)`` is the network
    step the SGD optimizer would take (buf: its momentum buffer), ``v = dL_val(w', a)/dw'`` and
    the Hessian-vector product is the central difference
    ``(dL_train(w + r v, a)/da - dL_train(w - r v, a)/da) / (2 r)`` with
    ``r = 0.01 / ||v||``, as in DARTS (quark0/darts). The network is never copied: the
    virtual weights are plain tensors passed with ``torch.func.functional_call``. Forward
    passes at virtual weights keep their BatchNorm statistics in a scratch copy of the
    buffers, so only real steps move the running statistics. The second-order step runs in
    float32 even with ``--amp``: a finite difference at ``r = 0.01 / ||v||`` is noise in half
    precision.

Under torchrun every gradient above is averaged over the ranks where it is formed (the virtual
step's training gradient, the validation gradients, the finite difference, the ablation
statistics), so every rank computes the same update and the architecture weights stay identical.

Nothing here reads a value back to the host: losses and statistics are returned as device
tensors, and the caller reads them when it reports.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from distributed import average_over_ranks
from model_search import SearchError, SearchNetwork, Supernet, op_probabilities
from runtime import Precision

SEP_LOSSES = ("none", "l2", "l1")
CELL_LOSSES = ("none", "ablation_loss")
HVP_SCALE = 0.01        # DARTS: r = 0.01 / ||v||
ABLATION_EPS = 1e-12    # |mean marginal contribution| below this: no ablation term


@dataclass(frozen=True)
class ArchConfig:
    learning_rate: float = 3e-4
    weight_decay: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)
    unrolled: bool = False
    network_momentum: float = 0.9         # of the network optimizer, for the virtual step
    network_weight_decay: float = 3e-4
    per_cell: bool = False                # one Adam parameter group and cosine schedule per set
    epochs: int = 50                      # length of the per-cell schedules (search epochs)
    learning_rate_min: float = 1e-3       # end of the per-cell schedules
    sep_loss: str = "none"
    aux_loss_weight: float = 0.0
    cell_loss: str = "none"
    abl_loss_weight: float = 0.0

    def check(self) -> None:
        if self.sep_loss not in SEP_LOSSES:
            raise SearchError(f"unknown --sep_loss {self.sep_loss!r}; use one of {', '.join(SEP_LOSSES)}")
        if self.cell_loss not in CELL_LOSSES:
            raise SearchError(f"unknown --cell_loss {self.cell_loss!r}; use one of {', '.join(CELL_LOSSES)}")
        if self.unrolled and self.cell_loss == "ablation_loss":
            raise SearchError("--unrolled and --cell_loss ablation_loss do not combine (the ablation "
                              "term is defined for first-order steps); pass --cell_loss none or drop --unrolled")


def _grad(output: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Gradients, zeros for inputs the output does not use (the normal cells' weights of a
    network too shallow to have a normal cell)."""
    return list(torch.autograd.grad(output, inputs, materialize_grads=True))


def separation_terms(model: SearchNetwork, kind: str) -> torch.Tensor:
    """(n_sets,) zero-one separation terms; each depends on its own set only."""
    terms = []
    for a in model.arch_parameters():
        p = op_probabilities(a, model.spec.weighting)
        if kind == "l2":
            terms.append(-(p - 0.5).square().mean())
        else:
            terms.append(-(p - 0.5).abs().mean())
    return torch.stack(terms)


class Architect:
    """Owns the architecture optimizer (Adam; per set with its own schedule for D-DARTS)."""

    def __init__(self, model: Supernet, config: ArchConfig, precision: Precision):
        config.check()
        self.model = model
        self.config = config
        self.precision = precision
        alphas = model.arch_parameters()
        # One parameter group per set is one optimizer per cell (Adam's state is per tensor),
        # stepped in one fused call; each group follows its own schedule.
        groups = [{"params": [a]} for a in alphas] if config.per_cell else [{"params": alphas}]
        self.optimizer = torch.optim.Adam(groups, lr=config.learning_rate, betas=config.betas,
                                          weight_decay=config.weight_decay)
        self.scheduler = None
        if config.per_cell:
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizer, max(config.epochs, 1), eta_min=config.learning_rate_min)
        named = model.named_weight_parameters()
        self._names = [n for n, _ in named]
        self._weights = [p for _, p in named]
        self._alphas = alphas
        # BatchNorm statistics of virtual forward passes land here, never in the model.
        self._scratch = {n: b.detach().clone() for n, b in model.named_buffers()}

    # ------------------------------------------------------------------ helpers

    def _virtual_forward(self, x: torch.Tensor, weights: list[torch.Tensor] | None = None,
                         ablate: int | None = None) -> torch.Tensor:
        tensors = dict(self._scratch)
        if weights is not None:
            tensors.update(zip(self._names, weights))
        return functional_call(self.model, tensors, (x,), {"ablate": ablate})

    def _ablation_factor(self, x: torch.Tensor, y: torch.Tensor, ce: torch.Tensor) -> dict[str, torch.Tensor]:
        """Marginal contributions (constants) and the resulting CE gradient factor."""
        n_sets = len(self._alphas)
        with torch.no_grad(), self.precision.autocast():
            without = torch.stack([F.cross_entropy(self._virtual_forward(x, ablate=g), y) for g in range(n_sets)])
        losses = torch.cat([ce.detach().float().reshape(1), without.float()])
        average_over_ranks([losses])            # statistics of the global batch: one factor on every rank
        mc = losses[0] - losses[1:]
        mean = mc.mean()
        inv = torch.where(mean.abs() > ABLATION_EPS, 1.0 / mean.abs().clamp_min(ABLATION_EPS), torch.zeros_like(mean))
        ablation = (mc - mean) * inv
        return {"marginal": mc, "ablation": ablation, "ce_factor": 1.0 + self.config.abl_loss_weight * inv}

    def _direct_terms(self) -> tuple[torch.Tensor | None, list[torch.Tensor] | None]:
        """Separation terms and their gradients (each set's own term only)."""
        if self.config.sep_loss == "none":
            return None, None
        with torch.enable_grad():
            sep = separation_terms(self.model, self.config.sep_loss)
            scaled = self.precision.scaler.scale(self.config.aux_loss_weight * sep.sum())
            grads = _grad(scaled, self._alphas)
        return sep.detach(), list(grads)

    # ------------------------------------------------------------------ gradients

    def objective_gradients(self, x: torch.Tensor, y: torch.Tensor, *, extra_inputs: list[torch.Tensor] = (),
                            ) -> tuple[list[torch.Tensor], list[torch.Tensor], dict[str, torch.Tensor]]:
        """First-order gradients of every set's own loss on (x, y).

        Returns (alpha gradients, gradients of the plain CE for `extra_inputs`, statistics);
        gradients are scaled by the AMP loss scale when fp16 scaling is on.
        """
        with self.precision.autocast():
            logits = self.model(x)
            ce = F.cross_entropy(logits, y)
        stats = {"arch_loss": ce.detach(), "logits": logits.detach()}
        factor = None
        if self.config.cell_loss == "ablation_loss":
            ab = self._ablation_factor(x, y, ce)
            factor = ab.pop("ce_factor")
            stats.update(ab)
        # Set c's own loss is CE + aux_loss_weight * sep_c + abl_loss_weight * abl_c, and of those
        # terms only CE and its own sep_c, abl_c depend on alpha_c: its gradient is
        # (1 + abl_loss_weight / |mean mc|) * dCE/d alpha_c + aux_loss_weight * d sep_c/d alpha_c.
        # So one backward pass of CE serves every set, with no cross-set terms.
        inputs = list(self._alphas) + list(extra_inputs)
        grads = _grad(self.precision.scaler.scale(ce), inputs)
        average_over_ranks(grads)
        alpha_grads, extra_grads = list(grads[:len(self._alphas)]), list(grads[len(self._alphas):])
        if factor is not None:
            torch._foreach_mul_(alpha_grads, factor)
        sep, sep_grads = self._direct_terms()
        if sep is not None:
            torch._foreach_add_(alpha_grads, sep_grads)
            stats["separation"] = sep
        if sep is not None or factor is not None:
            stats["cell_losses"] = self.cell_losses(stats)
        return alpha_grads, extra_grads, stats

    def cell_losses(self, stats: dict[str, torch.Tensor]) -> torch.Tensor:
        """(n_sets,) value of each set's own loss (for the log)."""
        losses = stats["arch_loss"].float().expand(len(self._alphas)).clone()
        if "separation" in stats:
            losses += self.config.aux_loss_weight * stats["separation"]
        if "ablation" in stats:
            losses += self.config.abl_loss_weight * stats["ablation"]
        return losses

    def unrolled_gradients(self, x_train: torch.Tensor, y_train: torch.Tensor, x_search: torch.Tensor,
                           y_search: torch.Tensor, network_optimizer: torch.optim.Optimizer,
                           ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """The DARTS second-order gradient (module docstring), in float32, without copying the network."""
        cfg = self.config
        eta = network_optimizer.param_groups[0]["lr"]
        W = self._weights
        # 1. the virtual step w' = w - eta * (momentum * buf + g + weight_decay * w)
        g_train = _grad(F.cross_entropy(self._virtual_forward(x_train), y_train), W)
        average_over_ranks(g_train)
        with torch.no_grad():
            step = list(g_train)
            buffers = [network_optimizer.state.get(p, {}).get("momentum_buffer") for p in W]
            if all(b is not None for b in buffers):
                torch._foreach_add_(step, buffers, alpha=cfg.network_momentum)
            torch._foreach_add_(step, W, alpha=cfg.network_weight_decay)
            w_prime = list(torch._foreach_add(W, step, alpha=-eta))
        for t in w_prime:
            t.requires_grad_(True)
        # 2. d L_val(w', a) / d(a, w')
        logits = self._virtual_forward(x_search, w_prime)
        loss_val = F.cross_entropy(logits, y_search)
        grads = _grad(loss_val, list(self._alphas) + w_prime)
        average_over_ranks(grads)
        dalpha, v = list(grads[:len(self._alphas)]), list(grads[len(self._alphas):])
        del w_prime, grads
        # 3. central difference of dL_train/da at w +- r v, r = 0.01 / ||v||
        with torch.no_grad():
            r = HVP_SCALE / torch.linalg.vector_norm(torch.stack(torch._foreach_norm(v)))
            rv = torch._foreach_mul(v, r)
            w_pm = torch._foreach_add(W, rv)
        g_plus = _grad(F.cross_entropy(self._virtual_forward(x_train, w_pm), y_train), self._alphas)
        with torch.no_grad():
            torch._foreach_sub_(w_pm, rv)
            torch._foreach_sub_(w_pm, rv)
        g_minus = _grad(F.cross_entropy(self._virtual_forward(x_train, w_pm), y_train), self._alphas)
        with torch.no_grad():
            implicit = torch._foreach_sub(g_plus, g_minus)
            average_over_ranks(implicit)
            torch._foreach_div_(implicit, 2 * r)
            torch._foreach_add_(dalpha, implicit, alpha=-eta)
        stats = {"arch_loss": loss_val.detach(), "logits": logits.detach()}
        sep, sep_grads = self._direct_terms()
        if sep is not None:
            scale = self.precision.scaler.scale(torch.ones((), device=dalpha[0].device))
            torch._foreach_div_(sep_grads, scale)
            torch._foreach_add_(dalpha, sep_grads)
            stats["separation"] = sep
            stats["cell_losses"] = self.cell_losses(stats)
        return dalpha, stats

    # ------------------------------------------------------------------ steps

    def step(self, x_train: torch.Tensor, y_train: torch.Tensor, x_search: torch.Tensor, y_search: torch.Tensor,
             network_optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
        """One bi-level architecture update from the search batch."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.config.unrolled:
            with torch.autocast(device_type=x_search.device.type, enabled=False):
                grads, stats = self.unrolled_gradients(x_train, y_train, x_search, y_search, network_optimizer)
            self._apply(grads, scaled=False)
        else:
            grads, _, stats = self.objective_gradients(x_search, y_search)
            self._apply(grads, scaled=True)
        return stats

    def _apply(self, grads: list[torch.Tensor], scaled: bool) -> None:
        for a, g in zip(self._alphas, grads):
            a.grad = g
        if scaled:
            self.precision.scaler.step(self.optimizer)
        else:
            self.optimizer.step()

    def end_epoch(self) -> None:
        if self.scheduler is not None:
            self.scheduler.step()

    def learning_rates(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])


# ----------------------------------------------------------------------------------------
# One iteration
# ----------------------------------------------------------------------------------------

def _clip_and_step(weights: list[torch.Tensor], optimizer: torch.optim.Optimizer, precision: Precision,
                   grad_clip: float) -> None:
    if grad_clip > 0:
        precision.scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(weights, grad_clip)
    precision.scaler.step(optimizer)


def search_iteration(model: Supernet, architect: Architect | None, optimizer: torch.optim.Optimizer,
                     precision: Precision, x: torch.Tensor, y: torch.Tensor, search_batch, *,
                     grad_clip: float, single_level: bool = False,
                     ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Architecture step (unless `architect` is None: pretraining) and network step.

    `search_batch` is a callable returning the next (x, y) of the held-out half, called once
    for a bi-level step. Returns (training logits, training loss, architecture statistics),
    all device tensors.
    """
    weights = [p for group in optimizer.param_groups for p in group["params"]]   # the network weights
    optimizer.zero_grad(set_to_none=True)
    stats: dict[str, torch.Tensor] = {}
    if architect is not None and single_level:
        # One batch: the network weights get the plain CE gradient, each set its own loss's.
        architect.optimizer.zero_grad(set_to_none=True)
        alpha_grads, weight_grads, stats = architect.objective_gradients(x, y, extra_inputs=weights)
        for p, g in zip(weights, weight_grads):
            p.grad = g
        logits, loss = stats.pop("logits"), stats["arch_loss"]
        architect._apply(alpha_grads, scaled=True)
        _clip_and_step(weights, optimizer, precision, grad_clip)
        precision.scaler.update()
        return logits, loss, stats
    if architect is not None:
        xs, ys = search_batch()
        stats = architect.step(x, y, xs, ys, optimizer)
        stats.pop("logits", None)
    with precision.autocast():
        logits = model(x)
        loss = F.cross_entropy(logits, y)
    precision.scaler.scale(loss).backward(inputs=weights)
    average_over_ranks([p.grad for p in weights if p.grad is not None])
    _clip_and_step(weights, optimizer, precision, grad_clip)
    precision.scaler.update()
    return logits.detach(), loss.detach(), stats

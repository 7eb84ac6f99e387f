"""D-DARTS's per-cell architecture losses, as terms of the architect (``architect.ArchTerms``).

D-DARTS adds to the cross-entropy, for every set of weights ``c`` (a cell, or a gene shared by
several cells), a zero-one *separation* term that pushes its op weights ``p_c`` (sigmoid or
softmax, in [0, 1]) away from 0.5: ``sep_c = -mean((p_c - 0.5)^2)`` (``l2``) or
``-mean(|p_c - 0.5|)`` (``l1``), weighted by ``aux_loss_weight``; and an *ablation* term from
each cell's marginal contribution, weighted by ``abl_loss_weight``::

    mc_c  = CE(all cells) - CE(cell c deactivated)       (D-DARTS: random op weights)
    abl_c = (mc_c - mean_d mc_d) / |mean_d mc_d|

Cell c's own loss is ``CE + aux_loss_weight * sep_c + abl_loss_weight * abl_c`` and set c
receives the gradient of that loss with respect to its own weights and nothing else: not the
other cells' separation or ablation terms, and nothing reaches the network weights. The
deactivated losses and the mean are statistics of the batch (constants); the deactivated loss
cannot depend on the weights of the cell it deactivates anyway. So the ablation term's gradient
is ``dCE/d alpha_c / |mean mc|``: every cell's cross-entropy gradient is amplified by
``1 + abl_loss_weight / |mean mc|`` (the architect's gradient *factor*) relative to its
separation term (the architect's *penalty*, ``aux_loss_weight * sum_c sep_c``, whose gradient
for set c is its own term's, since sep_c depends on alpha_c only).

Differences from D-DARTS, on purpose: D-DARTS back-propagates each cell's loss through the
shared graph, so the cross-entropy gradient accumulates in the cells not yet stepped and in the
network weights (and reaches the next weight step); its ablation term is a constant tensor, so
it has no gradient at all; and it divides by the signed mean, which turns the ablation term into
gradient *ascent* on the cross-entropy when the mean contribution is positive. Here each set
gets exactly its own gradient, the ablation term carries gradient, and the denominator is
``|mean|`` (with a zero term when the mean is zero, as D-DARTS). When one gene is shared by
several layers (DARTOpti), deactivating it randomises all of them, so that its deactivated loss
does not depend on its weights. Under torchrun the marginal contributions are measured on the
global batch, so every rank applies the same factor.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from architect import ArchTerms
from distributed import average_over_ranks
from model_search import SearchError, SearchNetwork, op_probabilities

SEP_LOSSES = ("none", "l2", "l1")
CELL_LOSSES = ("none", "ablation_loss")
ABLATION_EPS = 1e-12    # |mean marginal contribution| below this: no ablation term


def separation_terms(model: SearchNetwork, kind: str) -> torch.Tensor:
    """(n_sets,) zero-one separation terms; each depends on its own set only."""
    terms = []
    for a in model.alphas:
        p = op_probabilities(a, model.spec.weighting)
        if kind == "l2":
            terms.append(-(p - 0.5).square().mean())
        else:
            terms.append(-(p - 0.5).abs().mean())
    return torch.stack(terms)


@dataclass(frozen=True)
class DDartsLosses:
    """The separation and ablation terms, called by the architect at every architecture step."""
    sep_loss: str = "none"
    aux_loss_weight: float = 0.0
    cell_loss: str = "none"
    abl_loss_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.sep_loss not in SEP_LOSSES:
            raise SearchError(f"unknown --sep_loss {self.sep_loss!r}; use one of {', '.join(SEP_LOSSES)}")
        if self.cell_loss not in CELL_LOSSES:
            raise SearchError(f"unknown --cell_loss {self.cell_loss!r}; use one of {', '.join(CELL_LOSSES)}")

    @property
    def active(self) -> bool:
        return self.sep_loss != "none" or self.cell_loss != "none"

    def __call__(self, model: SearchNetwork, loss: torch.Tensor,
                 evaluate: Callable[..., torch.Tensor] | None) -> ArchTerms:
        terms = ArchTerms()
        losses = loss.float().expand(len(model.alphas)).clone()
        if self.cell_loss == "ablation_loss":
            if evaluate is None:
                raise SearchError("--cell_loss ablation_loss is defined for first-order steps; drop --unrolled")
            marginal, ablation, factor = self._ablation(loss, evaluate, len(model.alphas))
            terms.factors = factor.expand(len(model.alphas))
            terms.stats.update(marginal=marginal, ablation=ablation)
            losses += self.abl_loss_weight * ablation
        if self.sep_loss != "none":
            with torch.enable_grad():
                separation = separation_terms(model, self.sep_loss)
            terms.penalty = self.aux_loss_weight * separation.sum()
            terms.stats["separation"] = separation.detach()
            losses += self.aux_loss_weight * separation.detach()
        if self.active:
            terms.stats["cell_losses"] = losses
        return terms

    def _ablation(self, loss: torch.Tensor, evaluate: Callable[..., torch.Tensor],
                  n_sets: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Marginal contributions, ablation terms (constants) and the resulting CE gradient factor."""
        without = torch.stack([evaluate(ablate=g) for g in range(n_sets)])
        losses = torch.cat([loss.float().reshape(1), without.float()])
        average_over_ranks([losses])            # statistics of the global batch: one factor on every rank
        mc = losses[0] - losses[1:]
        mean = mc.mean()
        inv = torch.where(mean.abs() > ABLATION_EPS, 1.0 / mean.abs().clamp_min(ABLATION_EPS), torch.zeros_like(mean))
        return mc, (mc - mean) * inv, 1.0 + self.abl_loss_weight * inv

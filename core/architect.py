"""Architecture-parameter updates for any supernet: DARTS first and second order.

One search iteration (``search_iteration``) is an architecture step on a batch of the held-out
data followed by a network-weight step on a training batch (bi-level, DARTS), or one joint step
on the training batch (``single_level``).

Nothing here knows the domain. A batch is whatever the domain's closures take:

``objective(forward, batch) -> (loss, output)``
    The architecture loss of one batch. ``forward`` is the supernet's forward, called as the
    module would be, at its real weights or at virtual ones (the second-order step). ``output``
    is handed back untouched in the statistics (``"output"``): the logits of an image batch, or
    the hidden state a recurrent search carries to its next batch (DARTS's architect returns the
    hidden state of the search batch's forward, at w' in the second-order step).
``network_loss(model, batch) -> (loss, output)``
    The loss of the network-weight step (default: ``classification_objective`` at the real
    weights). SDARTS replaces it to train the weights under perturbed architecture weights.
``terms(model, loss, evaluate) -> ArchTerms``
    What a strategy adds to the architecture objective (``ArchTerms``): an additive penalty
    differentiable in the architecture parameters only (beta-DARTS's Beta-Decay, DrNAS's KL,
    D-DARTS's separation), and per-tensor factors on the data loss's gradient (D-DARTS's
    ablation term). ``evaluate(**forward_kwargs)`` is the loss of the same batch with extra
    forward arguments, at the same weights, without gradient (None in the second-order step).

Second order (``unrolled``)
    The DARTS hypergradient ``dL_val(w', a)/da - eta * d2L_train(w, a)/(da dw) . v`` where
    ``w' = w - eta * (momentum * buf + dL_train(w, a)/dw + weight_decay * w)`` is the network
    step the SGD optimizer would take (buf: its momentum buffer; the gradient clipped to norm
    ``virtual_step_clip`` when that is set, as DARTS's recurrent search clips it), ``v = dL_val(w', a)/dw'`` and
    the Hessian-vector product is the central difference
    ``(dL_train(w + r v, a)/da - dL_train(w - r v, a)/da) / (2 r)`` with
    ``r = 0.01 / ||v||``, as in DARTS (quark0/darts). The network is never copied: the virtual
    weights are plain tensors put in the modules' places for one forward (``_swapped``). The virtual
    step's gradient is taken with the architecture weights frozen (no gradient of theirs is wanted there). Forward
    passes at virtual weights keep their BatchNorm statistics in a scratch copy of the
    buffers, so only real steps move the running statistics. The second-order step runs in
    float32 even with AMP: a finite difference at ``r = 0.01 / ||v||`` is noise in half
    precision.

Under torchrun every gradient above is averaged over the ranks where it is formed (the virtual
step's training gradient, the validation gradients, the finite difference), so every rank
computes the same update and the architecture weights stay identical; a strategy's terms
average what they measure themselves.

Nothing here reads a value back to the host: losses and statistics are returned as device
tensors, and the caller reads them when it reports.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from distributed import average_over_ranks
from runtime import Precision
from supernet import Supernet

HVP_SCALE = 0.01        # DARTS: r = 0.01 / ||v||

Forward = Callable[..., Any]
Objective = Callable[[Forward, Any], tuple[torch.Tensor, Any]]
NetworkLoss = Callable[[nn.Module, Any], tuple[torch.Tensor, Any]]


def classification_objective(forward: Forward, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, Any]:
    """Cross-entropy of an (inputs, targets) batch; the output is the logits."""
    x, y = batch
    logits = forward(x)
    return F.cross_entropy(logits, y), logits


@dataclass
class ArchTerms:
    """A strategy's additions to one architecture step (see the module docstring)."""
    penalty: torch.Tensor | None = None        # added to the loss; its gradient reaches the arch parameters only
    factors: torch.Tensor | None = None        # (n arch tensors,) scale of each tensor's data-loss gradient
    stats: dict[str, torch.Tensor] = field(default_factory=dict)

    def plus(self, penalty: torch.Tensor, name: str) -> "ArchTerms":
        """These terms with one more penalty, also reported (detached) as the statistic `name`."""
        total = penalty if self.penalty is None else self.penalty + penalty
        return ArchTerms(total, self.factors, {**self.stats, name: penalty.detach()})


def no_terms(model: Supernet, loss: torch.Tensor, evaluate: Callable[..., torch.Tensor] | None) -> ArchTerms:
    return ArchTerms()


@dataclass(frozen=True)
class ArchConfig:
    learning_rate: float = 3e-4
    weight_decay: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)
    unrolled: bool = False
    network_momentum: float = 0.9         # of the network optimizer, for the virtual step
    network_weight_decay: float = 3e-4
    virtual_step_clip: float = 0.0        # clip the virtual step's gradient to this norm (0: not clipped)
    per_tensor: bool = False              # one Adam parameter group and cosine schedule per architecture tensor
    epochs: int = 50                      # length of the per-tensor schedules (search epochs)
    learning_rate_min: float = 1e-3       # end of the per-tensor schedules


def _detached(value):
    """An objective's output without its graph (a tensor, or a list or tuple of them)."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, (list, tuple)):
        return type(value)(_detached(v) for v in value)
    return value


def _slots(model: nn.Module) -> list[tuple[dict, str, str]]:
    """Where each parameter and buffer of `model` is registered (its owner module's ``_parameters`` or
    ``_buffers`` and the key there), with the name the tensor first goes by: a tied tensor (the RNN's
    embedding and decoder) is replaced under all its names by a tensor passed under its first. Made once, as
    the architect's names and scratch buffers are: the module tree stays as it was when the architect was
    made (SyncBatchNorm conversion comes before)."""
    first: dict[int, str] = {}
    slots, seen = [], set()
    for prefix, module in model.named_modules(remove_duplicate=False):
        for table in (module._parameters, module._buffers):
            for key, t in table.items():
                if t is not None and (id(table), key) not in seen:
                    seen.add((id(table), key))
                    slots.append((table, key, first.setdefault(id(t), f"{prefix}.{key}" if prefix else key)))
    return slots


@contextmanager
def _swapped(slots: list[tuple[dict, str, str]], tensors: dict[str, torch.Tensor]) -> Iterator[None]:
    """Inside, the model's tensors named in `tensors` are those, as in ``torch.func.functional_call``
    (which also writes straight into the modules' tables), without walking the module tree on every call:
    that walk cost ~2% of a DARTS second-order iteration on a CPU (4,186 tensors, 55 ms a call)."""
    saved = [(table, key, table[key]) for table, key, name in slots if name in tensors]
    try:
        for table, key, name in slots:
            if name in tensors:
                table[key] = tensors[name]
        yield
    finally:
        for table, key, t in saved:
            table[key] = t


def _grad(output: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Gradients, zeros for inputs the output does not use (the normal cells' weights of a
    network too shallow to have a normal cell)."""
    return list(torch.autograd.grad(output, inputs, materialize_grads=True))


@contextmanager
def _frozen(weights: list[torch.Tensor]) -> Iterator[None]:
    """Network weights that no gradient is asked of: with requires_grad off while the graph is built,
    backward skips their gradients everywhere, custom autograd functions (cnn/lean_ops.py) included."""
    flags = [w.requires_grad for w in weights]
    for w in weights:
        w.requires_grad_(False)
    try:
        yield
    finally:
        for w, flag in zip(weights, flags):
            w.requires_grad_(flag)


class Architect:
    """Owns the architecture optimizer (Adam; per tensor with its own schedule for D-DARTS)."""

    def __init__(self, model: Supernet, config: ArchConfig, precision: Precision, *,
                 objective: Objective = classification_objective,
                 terms: Callable[..., ArchTerms] = no_terms, capturable: bool = False):
        self.model = model
        self.config = config
        self.precision = precision
        self.objective = objective
        self.terms = terms
        alphas = model.arch_parameters()
        # One parameter group per tensor is one optimizer per cell (Adam's state is per tensor),
        # stepped in one fused call; each group follows its own schedule.
        groups = [{"params": [a]} for a in alphas] if config.per_tensor else [{"params": alphas}]
        # capturable: Adam's step counts on the device, so that a CUDA graph replays its updates (cuda_graphs.py)
        self.optimizer = torch.optim.Adam(groups, lr=config.learning_rate, betas=config.betas,
                                          weight_decay=config.weight_decay, capturable=capturable)
        self.scheduler = None
        if config.per_tensor:
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizer, max(config.epochs, 1), eta_min=config.learning_rate_min)
        named = model.named_weight_parameters()
        self._names = [n for n, _ in named]
        self._weights = [p for _, p in named]
        self._alphas = alphas
        # BatchNorm statistics of virtual forward passes land here, never in the model.
        self._scratch = {n: b.detach().clone() for n, b in model.named_buffers()}
        self._slots = _slots(model)

    # ------------------------------------------------------------------ helpers

    def _virtual(self, weights: list[torch.Tensor] | None = None, **kwargs) -> Forward:
        """The supernet's forward at `weights` (default: its own) with scratch BatchNorm buffers."""
        tensors = dict(self._scratch)
        if weights is not None:
            tensors.update(zip(self._names, weights))

        def forward(*args):
            with _swapped(self._slots, tensors):
                return self.model(*args, **kwargs)
        return forward

    def _loss(self, batch, weights: list[torch.Tensor] | None = None) -> torch.Tensor:
        return self.objective(self._virtual(weights), batch)[0]

    def _penalty_gradients(self, terms: ArchTerms) -> list[torch.Tensor] | None:
        if terms.penalty is None:
            return None
        return _grad(self.precision.scaler.scale(terms.penalty), self._alphas)

    # ------------------------------------------------------------------ gradients

    def objective_gradients(self, batch, *, extra_inputs: list[torch.Tensor] = (),
                            ) -> tuple[list[torch.Tensor], list[torch.Tensor], dict[str, Any]]:
        """First-order gradients of the architecture objective (and the strategy's terms) on `batch`.

        Returns (architecture gradients, gradients of the plain objective for `extra_inputs`,
        statistics); gradients are scaled by the AMP loss scale when fp16 scaling is on.
        """
        with _frozen([] if extra_inputs else self._weights):
            with self.precision.autocast():
                loss, output = self.objective(self.model, batch)

            def evaluate(**kwargs) -> torch.Tensor:
                with torch.no_grad(), self.precision.autocast():
                    return self.objective(self._virtual(**kwargs), batch)[0]

            terms = self.terms(self.model, loss.detach(), evaluate)
            inputs = list(self._alphas) + list(extra_inputs)
            grads = _grad(self.precision.scaler.scale(loss), inputs)
        average_over_ranks(grads)
        alpha_grads, extra_grads = list(grads[:len(self._alphas)]), list(grads[len(self._alphas):])
        if terms.factors is not None:
            torch._foreach_mul_(alpha_grads, list(terms.factors.unbind(0)))
        penalty_grads = self._penalty_gradients(terms)
        if penalty_grads is not None:
            torch._foreach_add_(alpha_grads, penalty_grads)
        return alpha_grads, extra_grads, {"arch_loss": loss.detach(), "output": _detached(output), **terms.stats}

    def unrolled_gradients(self, train_batch, search_batch, network_optimizer: torch.optim.Optimizer,
                           ) -> tuple[list[torch.Tensor], dict[str, Any]]:
        """The DARTS second-order gradient (module docstring), without copying the network."""
        cfg = self.config
        eta = network_optimizer.param_groups[0]["lr"]
        W = self._weights
        # 1. the virtual step w' = w - eta * (momentum * buf + g + weight_decay * w)
        with _frozen(self._alphas):
            g_train = _grad(self._loss(train_batch), W)
        average_over_ranks(g_train)
        with torch.no_grad():
            if cfg.virtual_step_clip > 0:
                norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(g_train)))
                torch._foreach_mul_(g_train, torch.clamp(cfg.virtual_step_clip / (norm + 1e-6), max=1.0))
            step = list(g_train)
            buffers = [network_optimizer.state.get(p, {}).get("momentum_buffer") for p in W]
            if all(b is not None for b in buffers):
                torch._foreach_add_(step, buffers, alpha=cfg.network_momentum)
            torch._foreach_add_(step, W, alpha=cfg.network_weight_decay)
            w_prime = list(torch._foreach_add(W, step, alpha=-eta))
        for t in w_prime:
            t.requires_grad_(True)
        # 2. d L_val(w', a) / d(a, w')
        loss_val, output = self.objective(self._virtual(w_prime), search_batch)
        grads = _grad(loss_val, list(self._alphas) + w_prime)
        average_over_ranks(grads)
        dalpha, v = list(grads[:len(self._alphas)]), list(grads[len(self._alphas):])
        del w_prime, grads
        # 3. central difference of dL_train/da at w +- r v, r = 0.01 / ||v||
        with torch.no_grad():
            r = HVP_SCALE / torch.linalg.vector_norm(torch.stack(torch._foreach_norm(v)))
            rv = torch._foreach_mul(v, r)
            w_pm = torch._foreach_add(W, rv)
        g_plus = _grad(self._loss(train_batch, w_pm), self._alphas)
        with torch.no_grad():
            torch._foreach_sub_(w_pm, rv)
            torch._foreach_sub_(w_pm, rv)
        g_minus = _grad(self._loss(train_batch, w_pm), self._alphas)
        with torch.no_grad():
            implicit = torch._foreach_sub(g_plus, g_minus)
            average_over_ranks(implicit)
            torch._foreach_div_(implicit, 2 * r)
            torch._foreach_add_(dalpha, implicit, alpha=-eta)
        terms = self.terms(self.model, loss_val.detach(), None)
        if terms.factors is not None:
            raise ValueError("gradient factors are defined for first-order steps only")
        penalty_grads = self._penalty_gradients(terms)
        if penalty_grads is not None:
            scale = self.precision.scaler.scale(torch.ones((), device=dalpha[0].device))
            torch._foreach_div_(penalty_grads, scale)
            torch._foreach_add_(dalpha, penalty_grads)
        return dalpha, {"arch_loss": loss_val.detach(), "output": _detached(output), **terms.stats}

    # ------------------------------------------------------------------ steps

    def step(self, train_batch, search_batch, network_optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """One bi-level architecture update from the search batch."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.config.unrolled:
            device_type = self._alphas[0].device.type
            with torch.autocast(device_type=device_type, enabled=False):
                grads, stats = self.unrolled_gradients(train_batch, search_batch, network_optimizer)
            self.apply(grads, scaled=False)
        else:
            grads, _, stats = self.objective_gradients(search_batch)
            self.apply(grads, scaled=True)
        return stats

    def apply(self, grads: list[torch.Tensor], scaled: bool) -> None:
        """Step the architecture optimizer with these gradients (AMP-scaled ones through the scaler)."""
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
                     precision: Precision, batch, search_batch: Callable[[], Any], *, grad_clip: float,
                     single_level: bool = False, network_loss: NetworkLoss = classification_objective,
                     ) -> tuple[torch.Tensor, Any, dict[str, Any]]:
    """Architecture step (unless `architect` is None: pretraining) and network step.

    `search_batch` returns the next batch of the held-out data, called once for a bi-level step.
    Returns (training loss, the network step's output, architecture statistics), all device values.
    """
    weights = [p for group in optimizer.param_groups for p in group["params"]]   # the network weights
    optimizer.zero_grad(set_to_none=True)
    stats: dict[str, Any] = {}
    if architect is not None and single_level:
        # One batch: the network weights get the plain objective's gradient, the architecture its own.
        architect.optimizer.zero_grad(set_to_none=True)
        alpha_grads, weight_grads, stats = architect.objective_gradients(batch, extra_inputs=weights)
        for p, g in zip(weights, weight_grads):
            p.grad = g
        output, loss = stats.pop("output"), stats["arch_loss"]
        architect.apply(alpha_grads, scaled=True)
        _clip_and_step(weights, optimizer, precision, grad_clip)
        precision.scaler.update()
        return loss, output, stats
    if architect is not None:
        stats = architect.step(batch, search_batch(), optimizer)
        stats.pop("output", None)
    with _frozen(model.arch_parameters()), precision.autocast():
        loss, output = network_loss(model, batch)
    precision.scaler.scale(loss).backward(inputs=weights)
    average_over_ranks([p.grad for p in weights if p.grad is not None])
    _clip_and_step(weights, optimizer, precision, grad_clip)
    precision.scaler.update()
    return loss.detach(), _detached(output), stats

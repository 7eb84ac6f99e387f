"""Model size, cost and accuracy, counted the way the DARTS papers report them."""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from distributed import sum_over_ranks


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters without the auxiliary head (the DARTS convention for "Params")."""
    return sum(p.numel() for name, p in model.named_parameters() if "auxiliary" not in name)


def count_macs(model: nn.Module, image_size: int, device: torch.device | str = "cpu",
               in_channels: int = 3) -> int:
    """Multiply-accumulates of one eval-mode forward pass at batch 1 (papers call them FLOPs)."""
    was_training = model.training
    model.eval()
    x = torch.zeros(1, in_channels, image_size, image_size, device=device)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    model.train(was_training)
    return counter.get_total_flops() // 2


def correct_topk(logits: torch.Tensor, target: torch.Tensor, topk: tuple[int, ...] = (1, 5)) -> list[torch.Tensor]:
    """Number of samples whose label is among the k best logits, per k, as device tensors (no sync)."""
    maxk = min(max(topk), logits.shape[1])
    pred = logits.topk(maxk, dim=1).indices
    hits = pred.eq(target.unsqueeze(1))
    return [hits[:, :min(k, maxk)].any(dim=1).sum() for k in topk]


class RunningSum:
    """Sums of per-batch tensors kept on the device, read once when reported.

    Under torchrun ``mean`` is over the samples of every rank, so every rank must call it.
    """

    def __init__(self, device: torch.device | str):
        self.total = torch.zeros((), dtype=torch.float64, device=device)
        self.count = 0

    def add(self, value: torch.Tensor, n: int) -> None:
        self.total += value.detach().to(torch.float64)
        self.count += n

    def mean(self) -> float:
        total, count = sum_over_ranks(torch.stack([self.total, torch.tensor(float(self.count), dtype=torch.float64,
                                                                               device=self.total.device)])).tolist()
        return total / max(count, 1)

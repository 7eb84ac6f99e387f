"""What the architect and the search loop need of a search space, in either domain.

A supernet declares its architecture parameters: ``arch_parameters()`` returns them (alphas,
PC-DARTS's edge betas, ...), and every other parameter is a network weight, told apart by
identity, never by name. So a new kind of architecture parameter is trained by the architecture
optimizer as soon as the supernet returns it, and never by the network optimizer.
"""
from __future__ import annotations

import torch.nn as nn


class Supernet(nn.Module):
    """A network with declared architecture parameters; subclasses implement ``arch_parameters``."""

    def arch_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError(f"{type(self).__name__} must declare its architecture parameters")

    def named_weight_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Every parameter that is not an architecture parameter, with its name (in module order)."""
        arch = {id(p) for p in self.arch_parameters()}
        return [(n, p) for n, p in self.named_parameters() if id(p) not in arch]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_weight_parameters()]

"""Sample orders that do not depend on how many processes or loader workers share the work.

Every pass over a dataset is a permutation seeded from (seed, stream, pass), and every sample's
augmentation draws from torch seeded with (that key, the sample's position in the permutation).
A rank takes the positions ``rank, rank + world_size, ...``, so the ``world_size`` per-rank
batches of step ``j`` together hold exactly the global batch ``j`` of a single process with the
same global batch size, augmented the same way. This is what makes a ``torchrun`` run follow
a single-process run, and a resumed run follow an uninterrupted one.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler


def mix_seed(*values: int) -> int:
    """One 62-bit key from several integers, order-sensitive."""
    key = 0
    for value in values:
        key = (key * 1_000_003 + int(value)) % 2**62
    return key


class SeededSamples(Dataset):
    """Items are requested as (index, seed): the sample's augmentation draws from torch seeded
    with `seed`, and the caller's random state is left as it was."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        state = torch.get_rng_state()
        torch.default_generator.manual_seed(seed)
        try:
            return self.dataset[index]
        finally:
            torch.set_rng_state(state)


class ShardedOrder(Sampler):
    """(index, seed) pairs of one pass, for one rank, for use with ``SeededSamples``.

    The last ``n % world_size`` positions of each permutation are left out so that every rank
    makes the same number of steps (a different few samples each pass). ``start_batch`` skips
    the first batches of the pass (of ``batch_size`` samples per rank), to resume mid-pass.
    """

    def __init__(self, n: int, seed: int, *, stream: int = 0, rank: int = 0, world_size: int = 1,
                 batch_size: int = 1):
        self.n, self.seed, self.stream = n, seed, stream
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size
        self.pass_index = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int) -> None:
        self.pass_index = epoch
        self.start_batch = 0

    def _positions(self) -> range:
        usable = self.n - self.n % self.world_size
        first = self.rank + self.start_batch * self.batch_size * self.world_size
        return range(first, usable, self.world_size)

    def __len__(self) -> int:
        return len(self._positions())

    def __iter__(self) -> Iterator[tuple[int, int]]:
        key = mix_seed(self.seed, self.stream, self.pass_index)
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(key)).tolist()
        for position in self._positions():
            yield order[position], mix_seed(key, position)


class EvalShard(Sampler):
    """Indices ``rank, rank + world_size, ...`` in order: every sample scored exactly once over the ranks."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1):
        self.indices = range(rank, n, world_size)

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

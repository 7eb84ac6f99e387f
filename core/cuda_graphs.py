"""CUDA-graph replay of the search iteration (train_search.py --cuda_graphs).

On a GPU the DARTS supernet's iteration is bound by the host: one first-order iteration at the
DARTS defaults launched 38,967 kernels on an H200 and kept the GPU busy 11% of its time. Captured
once as a CUDA graph, the whole iteration (both steps, both optimizers) is one launch.

What capture asks of the iteration, and how it holds here:
- fixed shapes and addresses: each batch is copied into tensors kept for the graph; a batch of
  another size (an epoch's last) runs eagerly;
- no host synchronisation: the iteration never reads a tensor's value on the host (the divergence
  watch and the metrics read the graph's outputs after it ran); AMP's fp16 loss scaling does, so it
  is refused, bf16 autocast runs without its cast cache;
- state updated in place: weights, momentum buffers, BatchNorm statistics, and the architecture's
  Adam with ``capturable=True`` (its step counts on the device);
- Python numbers are baked into a graph (the learning rate, a strategy's schedule): they change at
  epoch boundaries, so each epoch captures anew (``reset``).
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch

from errors import UserError

Batch = tuple[torch.Tensor, ...]
Iteration = Callable[[Batch, Callable[[], Batch], bool], Any]
Shapes = tuple[tuple, tuple | None]


class CaptureError(UserError, RuntimeError):
    """The iteration could not be captured (an op that synchronises with the host, or one CUDA graphs refuse)."""


class GraphedIteration:
    """Runs `iteration(batch, search_batch, searching)` as a CUDA graph once it has run `warmup` times
    eagerly (on a side stream, as CUDA asks before a first capture), one graph per value of
    `searching`; the returned values are the graph's own output tensors, overwritten by the next replay."""

    def __init__(self, iteration: Iteration, warmup: int = 3):
        self.iteration = iteration
        self.warmup = warmup
        self._eager_runs: dict[bool, int] = {}
        self._shapes: dict[bool, Shapes] = {}           # of the first warm-up's batches: the graph's
        self._graphs: dict[bool, _Captured] = {}
        self._side_stream: torch.cuda.Stream | None = None

    def reset(self) -> None:
        """Drop the graphs: the next iterations capture again with the Python numbers they now read."""
        self._graphs.clear()

    def __call__(self, batch: Batch, search_batch: Callable[[], Batch], searching: bool) -> Any:
        captured = self._graphs.get(searching)
        if captured is not None:
            return captured.run(batch, search_batch)
        if self._eager_runs.get(searching, 0) < self.warmup:
            self._eager_runs[searching] = self._eager_runs.get(searching, 0) + 1
            return self._warm_up(batch, search_batch, searching)
        reads_search_batch = self._shapes[searching][1] is not None
        held = search_batch() if reads_search_batch else None
        if _shapes(batch, held) != self._shapes[searching]:
            with _uncaptured_steps():
                return self.iteration(batch, lambda: held, searching)
        captured = self._graphs[searching] = _Captured(self.iteration, batch, held, searching)
        return captured.outputs

    def _warm_up(self, batch: Batch, search_batch: Callable[[], Batch], searching: bool) -> Any:
        fetched = None

        def fetch() -> Batch:
            nonlocal fetched
            fetched = search_batch()
            return fetched

        if self._side_stream is None:
            self._side_stream = torch.cuda.Stream()
        stream = self._side_stream
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), _uncaptured_steps():
            result = self.iteration(batch, fetch, searching)
        torch.cuda.current_stream().wait_stream(stream)
        self._shapes.setdefault(searching, _shapes(batch, fetched))
        return result


class _Captured:
    """One captured iteration: its input tensors, its graph and its outputs. Capturing runs nothing, so
    the graph is replayed once at once: that is the iteration of the batch it was captured with."""

    def __init__(self, iteration: Iteration, batch: Batch, search: Batch | None, searching: bool):
        self.iteration, self.searching = iteration, searching
        self.batch = tuple(t.clone() for t in batch)     # tensors of the captured batch, filled before each replay
        self.search = None if search is None else tuple(t.clone() for t in search)
        self.shapes = _shapes(batch, search)
        self.graph = torch.cuda.CUDAGraph()
        try:
            # thread_local: the loaders' pin-memory threads may allocate pinned memory meanwhile
            with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
                self.outputs = iteration(self.batch, lambda: self.search, searching)
        except RuntimeError as e:
            raise CaptureError(f"--cuda_graphs could not capture the search iteration ({e}); run without "
                               f"--cuda_graphs") from e
        self.graph.replay()

    def run(self, batch: Batch, search_batch: Callable[[], Batch]) -> Any:
        """The iteration on these batches: the graph's if they have its shapes, else eagerly."""
        search = search_batch() if self.search is not None else None
        if _shapes(batch, search) != self.shapes:
            with _uncaptured_steps():
                return self.iteration(batch, lambda: search, self.searching)
        for static, new in zip(self.batch + (self.search or ()), tuple(batch) + tuple(search or ())):
            static.copy_(new, non_blocking=True)
        self.graph.replay()
        return self.outputs


def _shapes(batch: Batch, search: Batch | None) -> Shapes:
    """Shapes and dtypes of a batch and of the search batch (None: not read), what a graph is fixed to."""
    def of(tensors: Batch) -> tuple:
        return tuple((t.shape, t.dtype) for t in tensors)
    return of(batch), None if search is None else of(search)


@contextlib.contextmanager
def _uncaptured_steps() -> Iterator[None]:
    """Eager iterations are meant here: torch's warning that a capturable optimizer steps uncaptured is not."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="This instance was constructed with capturable=True")
        yield

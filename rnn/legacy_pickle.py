"""The tensors of a whole pickled module in PyTorch's legacy (non-zip) format, without running it.

DARTS published its language model as ``torch.save(model)`` from PyTorch 0.3: a pickle of the
``RNNModel`` object itself. Unpickling it the ordinary way imports and calls whatever classes
the file names (``model.RNNModel``, ``utils.LockedDropout``, ...), which is running the file's
code; ``weights_only`` loading refuses it. This reader unpickles with a `find_class` that never
imports anything: every class or function the file names becomes an inert stub that only
records its arguments and state, except ``collections.OrderedDict`` and ``range`` (plain
containers) and the tensor rebuild functions, which become records of (storage, offset, size,
stride). The storages' bytes, which follow the pickles in the legacy layout, are read raw.

Legacy layout (torch/serialization.py, unchanged from 0.1.12 to today's ``_legacy_save``): the
pickles of the magic number, the protocol version (1001) and a dict of system facts, then the
pickle of the object (storages and module classes as persistent ids), then the pickle of the
sorted list of storage keys, then for each key an int64 element count and the raw bytes.
"""
from __future__ import annotations

import collections
import io
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from checkpoint import CheckpointError

MAGIC_NUMBER = 0x1950a86a20f9469cfc6c
PROTOCOL_VERSION = 1001
STORAGE_DTYPES = {"DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
                  "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
                  "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
                  "BoolStorage": torch.bool}


class Stub:
    """Stands for a class the pickle names: keeps the arguments it was made with and its state."""
    pickled_name = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.args, obj.state = args, None
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state) -> None:
        self.state = state


@dataclass
class StorageRecord:
    key: str
    dtype: torch.dtype
    numel: int
    data: torch.Tensor | None = None


@dataclass
class TensorRecord:
    storage: StorageRecord
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def tensor(self) -> torch.Tensor:
        return self.storage.data.as_strided(self.size, self.stride, self.offset).clone()


def _rebuild_tensor(storage, offset, size, stride, *_ignored) -> TensorRecord:
    if not isinstance(storage, StorageRecord):
        raise pickle.UnpicklingError("a tensor without a storage")
    return TensorRecord(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, *_ignored):
    return data


class _InertUnpickler(pickle.Unpickler):
    """An unpickler that imports nothing: see the module docstring."""

    def __init__(self, file, storages: dict[str, StorageRecord]):
        super().__init__(file, encoding="latin1")
        self.storages = storages

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) in (("builtins", "range"), ("__builtin__", "xrange")):
            return range
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module in ("torch", "torch.cuda") and name in STORAGE_DTYPES:
            return STORAGE_DTYPES[name]
        return type(name, (Stub,), {"pickled_name": f"{module}.{name}"})

    def persistent_load(self, pid):
        if isinstance(pid, tuple) and pid and pid[0] == "module":
            return pid[1]
        if isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage" and isinstance(pid[1], torch.dtype):
            _, dtype, key, _location, numel, view = pid
            root = self.storages.setdefault(str(key), StorageRecord(str(key), dtype, int(numel)))
            if view is not None:
                raise pickle.UnpicklingError("storage views are not supported")
            return root
        raise pickle.UnpicklingError(f"unknown persistent id {pid!r:.80}")


def read_legacy_module(path: str | Path) -> Stub:
    """The pickled module as stubs, its tensors filled in; a file of another kind is one sentence."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            storages: dict[str, StorageRecord] = {}
            unpickler = lambda: _InertUnpickler(f, storages)  # noqa: E731  (one per pickle in the file)
            if unpickler().load() != MAGIC_NUMBER or unpickler().load() != PROTOCOL_VERSION:
                raise CheckpointError(f"{path} is not a legacy (PyTorch < 1.6) torch.save file")
            info = unpickler().load()
            if not (isinstance(info, dict) and info.get("little_endian", False)):
                raise CheckpointError(f"{path} was written on a big-endian machine, which this reader does not handle")
            root = unpickler().load()
            keys = unpickler().load()
            for key in keys:
                storage = storages[str(key)]
                (numel,) = struct.unpack("<q", f.read(8))
                nbytes = numel * torch.empty((), dtype=storage.dtype).element_size()
                raw = f.read(nbytes)
                if numel != storage.numel or len(raw) != nbytes:
                    raise CheckpointError(f"{path} is truncated or damaged (storage {key})")
                storage.data = torch.frombuffer(bytearray(raw), dtype=storage.dtype) if nbytes else \
                    torch.empty(0, dtype=storage.dtype)
    except OSError as e:
        raise CheckpointError(f"{path} cannot be read ({e.strerror or e})") from None
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, AttributeError, IndexError,
            RecursionError, struct.error, io.UnsupportedOperation) as e:
        raise CheckpointError(f"{path} is not a legacy pickled module this reader understands "
                              f"({type(e).__name__}: {e})") from None
    if not isinstance(root, Stub) or not isinstance(root.state, dict):
        raise CheckpointError(f"{path} holds a {type(root).__name__}, not a pickled module")
    return root


def module_tensors(module: Stub, prefix: str = "", _seen: frozenset = frozenset()) -> dict[str, torch.Tensor]:
    """The state_dict a module stub would have: its parameters and buffers, then its children's."""
    if id(module) in _seen:
        raise CheckpointError(f"the pickled module contains itself (at {prefix or 'the root'})")
    state = module.state if isinstance(module.state, dict) else {}
    tensors = {}
    for group in ("_parameters", "_buffers"):
        for name, value in (state.get(group) or {}).items():
            if isinstance(value, Stub) and value.args:          # PyTorch 0.3: Parameter(data), then its state
                value = value.args[0]
            if isinstance(value, TensorRecord):
                tensors[prefix + name] = value.tensor()
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, Stub):
            tensors.update(module_tensors(child, f"{prefix}{name}.", _seen | {id(module)}))
    return tensors


def find_attribute(module: Stub, name: str):
    """The first value of attribute `name` in the module or its children (depth first), else None."""
    pending, seen = [module], set()
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        state = current.state if isinstance(current.state, dict) else {}
        if name in state:
            return state[name]
        pending[:0] = [child for child in (state.get("_modules") or {}).values() if isinstance(child, Stub)]
    return None

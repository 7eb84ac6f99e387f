"""Write what DARTS's rnn/train.py saved with PyTorch 0.3, `torch.save(model)` of its RNNModel, in
PyTorch's legacy format, byte layout and pickle structure as 0.3 wrote them (run in a subprocess):

    python tests/legacy_darts_writer.py OUT_DIR [evil]

Classes live in stand-in modules named as DARTS's (model, utils, genotypes); module classes are
persistent ids ('module', class, file, source); a parameter is `Parameter(data)` plus the state
(requires_grad, volatile, hooks); a tensor is torch._utils._rebuild_tensor(storage, offset, size,
stride); storages are torch.cuda.FloatStorage persistent ids, their bytes after the pickles.
Writes OUT_DIR/ptb_model.pt and OUT_DIR/reference.pt (the same weights as a plain state_dict).
With `evil`, the pickled object instead asks for os.system to create OUT_DIR/ran.
"""
import collections
import io
import os
import pickle
import struct
import sys
import types
from pathlib import Path

import torch
import torch.nn as nn

MAGIC_NUMBER, PROTOCOL_VERSION = 0x1950a86a20f9469cfc6c, 1001


def stand_in_module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    sys.modules[name] = module
    return module


genotypes, utils, model = stand_in_module("genotypes"), stand_in_module("utils"), stand_in_module("model")
genotypes.Genotype = collections.namedtuple("Genotype", "recurrent concat")
genotypes.Genotype.__module__ = "genotypes"


class LockedDropout(nn.Module):
    pass


class DARTSCell(nn.Module):
    def __init__(self, ninp, nhid, genotype):
        super().__init__()
        self.nhid, self.dropouth, self.dropoutx, self.genotype = nhid, 0.25, 0.75, genotype
        self._W0 = nn.Parameter(torch.rand(ninp + nhid, 2 * nhid) - 0.5)
        self._Ws = nn.ParameterList([nn.Parameter(torch.rand(nhid, 2 * nhid) - 0.5) for _ in genotype.recurrent])


class RNNModel(nn.Module):
    def __init__(self, ntoken, ninp, genotype):
        super().__init__()
        self.lockdrop = LockedDropout()
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnns = nn.ModuleList([DARTSCell(ninp, ninp, genotype)])
        self.decoder = nn.Linear(ninp, ntoken)
        self.decoder.weight = self.encoder.weight
        self.ninp = self.nhid = self.nhidlast = ninp
        self.dropout, self.dropouti, self.dropoute, self.ntoken, self.cell_cls = 0.75, 0.2, 0.1, ntoken, DARTSCell


for cls, module in ((LockedDropout, utils), (DARTSCell, model), (RNNModel, model)):
    cls.__module__ = module.__name__
    setattr(module, cls.__name__, cls)


class Evil:
    def __reduce__(self):
        return os.system, (f"touch {sys.argv[1]}/ran",)


class Torch03Pickler(pickle.Pickler):
    def __init__(self, file):
        super().__init__(file, protocol=2)
        self.storages, self.module_classes = {}, set()

    def persistent_id(self, obj):
        if isinstance(obj, type) and issubclass(obj, nn.Module) and obj not in self.module_classes:
            self.module_classes.add(obj)          # as 0.3: the class inside the id, and later uses, are plain globals
            return "module", obj, f"{obj.__module__}.py", "class ...: source as in the file"
        if isinstance(obj, torch.UntypedStorage):
            key = str(obj.data_ptr())
            self.storages[key] = obj
            return "storage", torch.cuda.FloatStorage, key, "cuda:0", obj.nbytes() // 4, None
        return None

    def reducer_override(self, obj):
        if isinstance(obj, nn.Parameter):
            return nn.Parameter, (obj.data,), (obj.requires_grad, False, collections.OrderedDict())
        if isinstance(obj, torch.Tensor):
            return torch._utils._rebuild_tensor, (obj.untyped_storage(), obj.storage_offset(), tuple(obj.shape),
                                                  obj.stride())
        return NotImplemented


def main(out: Path, evil: bool) -> None:
    torch.manual_seed(0)
    genotype = genotypes.Genotype(recurrent=[("sigmoid", 0), ("relu", 1), ("relu", 1), ("identity", 1), ("tanh", 2),
                                             ("sigmoid", 5), ("tanh", 3), ("relu", 5)], concat=range(1, 9))
    net = RNNModel(30, 6, genotype)
    buffer = io.BytesIO()
    for header in (MAGIC_NUMBER, PROTOCOL_VERSION, {"protocol_version": PROTOCOL_VERSION, "little_endian": True,
                                                    "type_sizes": {"short": 2, "int": 4, "long": 8}}):
        pickle.dump(header, buffer, protocol=2)
    pickler = Torch03Pickler(buffer)
    pickler.dump(Evil() if evil else net)
    keys = sorted(pickler.storages)
    pickle.dump(keys, buffer, protocol=2)
    for key in keys:
        data = torch.empty(0, dtype=torch.float32).set_(pickler.storages[key]).numpy().tobytes()
        buffer.write(struct.pack("<q", len(data) // 4) + data)
    (out / "ptb_model.pt").write_bytes(buffer.getvalue())
    torch.save(net.state_dict(), out / "reference.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:] == ["evil"])

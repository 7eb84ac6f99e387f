"""Probe PyTorch's CPU kernels under every module our networks are built from, one case per process.

Some oneDNN kernels corrupt the heap on some CPUs (the backward of a stride-2 1x1 convolution on a
channels_last tensor does on this project's machines), and heap corruption need not crash where it
happens, nor crash at all. So each case runs in a child process of its own (forked, so torch is
imported once), and a case passes only if the child exits cleanly and its numbers agree with a
float64 reference computed in contiguous memory, where PyTorch uses its own kernels, not oneDNN's:
the outputs (train and eval mode) and the gradients of the input and of every parameter.

The cases: every primitive of both op families (cnn/operations.py), FactorizedReduce and the 1x1
preprocessing, the stems and auxiliary heads, the multi-channel grid ops, and small evaluation and
search networks; stride 1 and 2, odd and even sizes, 4 to 64 channels, in the memory format asked.

    python tests/kernel_probe.py                          # quick set, in the format --memory_format auto picks on the CPU
    python tests/kernel_probe.py --wide --memory_format both --repeats 3
    python tests/kernel_probe.py --list --only 'factorized_reduce*'

glibc's heap checks (MALLOC_PERTURB_, and MALLOC_CHECK_=3 where libc_malloc_debug is installed)
make corruption fail sooner; the probe starts itself again with them set. Exit status 0: every case passed; 1 otherwise,
with one line per failing case.
"""
from __future__ import annotations

import argparse
import copy
import fnmatch
import gc
import itertools
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

CNN_DIR = Path(__file__).resolve().parent.parent / "cnn"
sys.path.insert(0, str(CNN_DIR))
import core_path  # noqa: E402,F401

MALLOC_DEBUG = Path("/usr/lib/x86_64-linux-gnu/libc_malloc_debug.so.0")     # glibc >= 2.34 needs it for MALLOC_CHECK_
# Relative error allowed to float32 against float64. Where a ReLU or max pool meets an input within
# rounding of its kink, float32 and float64 take different branches; in deep networks trained on a
# batch of two that moves gradients by up to ~4% (a float64 run whose inputs are perturbed by 1e-7
# moves as much). Memory corruption gives garbage, NaN or a crash.
TOLERANCE = 0.1


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], "torch.nn.Module"]
    inputs: tuple[tuple[int, ...], ...]     # shapes; 4-D inputs are images and take the probed memory format


# ---------------------------------------------------------------------------------------- the cases

def _grid(wide: bool, quick: tuple, *axes: tuple) -> list[tuple]:
    """The quick set's own combinations, or every combination of the axes."""
    return list(itertools.product(*axes)) if wide else list(quick)


def _op_cases(wide: bool) -> Iterator[Case]:
    from operations import OPS, build_op
    # the defect showed at 56 px with few channels: the quick set keeps that corner, an odd size and 64 channels
    sizes = _grid(wide, ((4, 56), (16, 7), (64, 8)), (4, 6, 16, 36, 48, 64), (1, 2, 3, 7, 8, 14, 15, 16, 28, 32, 56))
    for family, names in OPS.items():       # sharp's own ops; its fallbacks are the darts modules
        for name in sorted(names):
            for stride in (1, 2):
                for C, H in sizes:
                    yield Case(f"op/{family}/{name}/s{stride}/C{C}/H{H}",
                               lambda n=name, C=C, s=stride, f=family: build_op(n, C, s, True, f), ((2, C, H, H),))


def _preprocess_cases(wide: bool) -> Iterator[Case]:
    from operations import FactorizedReduce, ReLUConvBN
    sizes = _grid(wide, (((12, 4), 56), ((16, 8), 7), ((64, 64), 8), ((8, 8), 2)),
                  ((4, 4), (12, 4), (16, 8), (48, 16), (64, 32), (64, 64)), (1, 2, 3, 7, 8, 14, 15, 16, 28, 32, 56, 57))
    for (C_in, C_out), H in sizes:
        shape = ((2, C_in, H, H),)
        yield Case(f"factorized_reduce/{C_in}to{C_out}/H{H}", lambda a=C_in, b=C_out: FactorizedReduce(a, b), shape)
        for stride in (1, 2):
            yield Case(f"relu_conv_bn_1x1/s{stride}/{C_in}to{C_out}/H{H}",
                       lambda a=C_in, b=C_out, s=stride: ReLUConvBN(a, b, 1, s, 0), shape)


def _stem_and_head_cases(wide: bool) -> Iterator[Case]:
    import torch.nn as nn
    from model import AuxiliaryHead, cifar_stem, imagenet_stems
    from multichannel import PATH_OPS, build_path_op
    for C in (4, 8, 16, 32, 48, 64) if wide else (8,):
        for H in (8, 31, 32) if wide else (32,):
            yield Case(f"stem/cifar/C{C}/H{H}", lambda C=C: cifar_stem(3, 3 * C), ((2, 3, H, H),))
        for second_stride in (1, 2):
            for H in (223, 224) if wide else (224,):
                yield Case(f"stem/imagenet/second_stride{second_stride}/C{C}/H{H}",
                           lambda C=C, s=second_stride: nn.Sequential(*imagenet_stems(3, C, s)), ((2, 3, H, H),))
        for H in (8, 9) if wide else (8,):        # what the CIFAR and ImageNet heads see at 32 and 224 px
            yield Case(f"aux_head/cifar/C{4 * C}/H{H}", lambda C=C: AuxiliaryHead(4 * C, 10, 3, True),
                       ((2, 4 * C, H, H),))
        for norm in (False, True):
            for H in (7, 8) if wide else (7,):
                yield Case(f"aux_head/imagenet/norm{norm}/C{4 * C}/H{H}",
                           lambda C=C, n=norm: AuxiliaryHead(4 * C, 10, 2, n), ((2, 4 * C, H, H),))
    for op in PATH_OPS:
        for C_in, C_out in ((8, 8), (8, 16), (16, 8), (32, 64)) if wide else ((8, 16), (16, 8)):
            for stride in (1, 2):
                for H in (7, 8, 32) if wide else (8,):
                    yield Case(f"multi_channel/{op}/s{stride}/{C_in}to{C_out}/H{H}",
                               lambda o=op, a=C_in, b=C_out, s=stride: build_path_op(o, a, b, s), ((2, C_in, H, H),))


def _search_cell_cases(wide: bool) -> Iterator[Case]:
    from genotypes import PRIMITIVE_SETS
    from model_search import MixedOp, SearchCell
    steps = 4 if wide else 2
    for family, set_name in (("darts", "DARTS"), ("darts", "DDARTS_12"), ("sharp", "PRIMITIVES")):
        primitives = PRIMITIVE_SETS[set_name]
        for C in (4, 16, 64) if wide else (8,):
            for stride in (1, 2):
                for H in (7, 8, 16, 32) if wide else (7,):
                    yield Case(f"mixed_op/{family}/{set_name}/s{stride}/C{C}/H{H}",
                               lambda p=primitives, f=family, C=C, s=stride: MixedOp(C, s, p, f, 32),
                               ((2, C, H, H), (len(primitives),)))
            for reduction, after_reduction in ((False, False), (False, True), (True, False), (True, True)):
                H0 = 32 if after_reduction else 16
                yield Case(f"search_cell/{family}/{set_name}/reduction{reduction}/after_reduction{after_reduction}/C{C}",
                           lambda p=primitives, f=family, C=C, r=reduction, a=after_reduction:
                           SearchCell(steps, steps, 4 * C, 4 * C, C, r, a, p, f, 32),
                           ((2, 4 * C, H0, H0), (2, 4 * C, 16, 16), (steps * (steps + 3) // 2, len(primitives))))


def _network_cases(wide: bool) -> Iterator[Case]:
    from genotypes import PRIMITIVE_SETS, load_architecture
    from model import NetworkCIFAR, NetworkImageNet
    from model_search import SearchNetwork, make_spec
    from multichannel import MultiChannelSearchNetwork, PathNetwork, load_path
    nested = "D-DARTS_threshold_sparse_cifar10_0.85_50"
    for arch, family in (("DARTS_V2", "darts"), ("SHARP_DARTS", "sharp"), (nested, "darts")):
        for C, H in _grid(wide, ((4, 32),), (4, 8, 16, 32), (8, 32)):
            yield Case(f"network/cifar/{arch}/C{C}/H{H}",
                       lambda a=arch, f=family, C=C, aux=H >= 30: NetworkCIFAR(
                           C, 10, None if a == nested else 3, aux, load_architecture(a), family=f), ((2, 3, H, H),))
        # the auxiliary head of a D-DARTS ImageNet network needs 448-px inputs (its stems reduce 4x, not 8x)
        for C in (8, 16, 32) if wide else (8,):
            yield Case(f"network/imagenet/{arch}/C{C}",
                       lambda a=arch, f=family, C=C: NetworkImageNet(
                           C, 10, None if a == nested else 3, a != nested, load_architecture(a), family=f),
                       ((2, 3, 224, 224),))
    for family, set_name, layout, network in (("darts", "DARTS", "shared", "cifar"),
                                              ("sharp", "PRIMITIVES", "shared", "cifar"),
                                              ("darts", "DDARTS_7", "per_cell", "cifar"),
                                              ("darts", "DARTS", "shared", "imagenet")):
        H = 224 if network == "imagenet" else 16
        yield Case(f"search_network/{network}/{family}/{set_name}/{layout}",
                   lambda f=family, s=set_name, l=layout, n=network: SearchNetwork(
                       make_spec(10, 4, 3, 2, 2, PRIMITIVE_SETS[s], "softmax", l, family=f, network=n)),
                   ((2, 3, H, H),))
    yield Case("search_network/multi_channel", lambda: MultiChannelSearchNetwork(10, channels=(4, 8), layers=1),
               ((2, 3, 16, 16),))
    yield Case("network/multi_channel_path", lambda: PathNetwork(load_path("MULTI_CHANNEL_HANDMADE_PATH")[1], 10),
               ((2, 3, 16, 16),))


def all_cases(wide: bool) -> list[Case]:
    cases = [*_op_cases(wide), *_preprocess_cases(wide), *_stem_and_head_cases(wide), *_search_cell_cases(wide),
             *_network_cases(wide)]
    assert len({c.name for c in cases}) == len(cases), "duplicate case names"
    return cases


# ---------------------------------------------------------------------------------------- one case

def _outputs(result) -> list:
    items = result if isinstance(result, tuple) else (result,)
    return [t for t in items if t is not None]


def _pass(module, inputs: list, out_grads: list | None):
    """Forward in train mode, backward with `out_grads` (drawn when None), forward in eval mode."""
    import torch
    module.train()
    outputs = _outputs(module(*(x.clone() for x in inputs)))    # clones: a first in-place ReLU must not touch a leaf
    if out_grads is None:
        generator = torch.Generator().manual_seed(1)
        out_grads = [torch.randn(o.shape, generator=generator, dtype=torch.float64) for o in outputs]
    torch.autograd.backward(outputs, [g.to(o.dtype) for g, o in zip(out_grads, outputs)])
    module.eval()
    with torch.no_grad():
        eval_outputs = _outputs(module(*inputs))
    grads = {f"input {i}": x.grad for i, x in enumerate(inputs) if x.grad is not None}
    grads.update({name: p.grad for name, p in module.named_parameters() if p.grad is not None})
    results = {f"train output {i}": o.detach() for i, o in enumerate(outputs)}
    results.update({f"eval output {i}": o for i, o in enumerate(eval_outputs)})
    results.update({f"gradient of {k}": g for k, g in grads.items()})
    return results, out_grads


def _worst_error(expected: dict, got: dict) -> tuple[float, str]:
    """The largest relative error, in 2-norm (a ReLU or max pool that flips on a rounding-size
    input moves single elements a lot, the norm hardly); tensors that are zero in exact arithmetic
    (a BatchNorm bias followed by a BatchNorm) are measured against the case's largest norm."""
    floor = 1e-2 * max(want.norm().item() for want in expected.values())
    worst, where = 0.0, ""
    for key, want in expected.items():
        have = got.get(key)
        if have is None or have.shape != want.shape:
            return float("inf"), f"{key}, missing or of shape {None if have is None else tuple(have.shape)}"
        error = (have.double() - want).norm().item() / max(want.norm().item(), floor, 1e-12)
        if not error <= worst:      # NaN counts as the worst
            worst, where = error, key
    return worst, where


def run_case(case: Case, fmt) -> tuple[float, str]:
    """The largest relative error against the float64 reference, and where it is."""
    import torch
    torch.manual_seed(0)
    module = case.build()
    reference = copy.deepcopy(module).double()
    raw = [torch.randn(shape) for shape in case.inputs]
    expected, out_grads = _pass(reference, [x.double().requires_grad_(True) for x in raw], None)
    module = module.to(memory_format=fmt)
    inputs = [(x.contiguous(memory_format=fmt) if x.dim() == 4 else x).detach().requires_grad_(True) for x in raw]
    got, _ = _pass(module, inputs, out_grads)
    result = _worst_error(expected, got)
    del module, reference, raw, inputs, expected, got
    gc.collect()
    churn = [torch.empty(1 << k) for k in range(4, 22)]     # reuse freed blocks, so a damaged heap shows
    del churn
    return result


@dataclass
class Outcome:
    passed: bool
    error: float        # relative error against float64; inf when the case crashed or raised
    detail: str


def _in_child(case: Case, fmt, timeout: int) -> Outcome:
    """Run `case` in a forked child: it reports its error through a pipe and exits."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        signal.alarm(timeout)
        status = 0
        try:
            error, where = run_case(case, fmt)
            report = f"{error!r}\t{where}"
        except Exception as e:      # noqa: BLE001 - any Python error is this case's failure
            status, report = 1, f"{type(e).__name__}: {e}"
        os.write(write_end, report.encode()[:4000])
        os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return Outcome(False, float("inf"), f"died of {signal.Signals(os.WTERMSIG(status)).name}")
    if os.WEXITSTATUS(status) != 0 or "\t" not in message:
        return Outcome(False, float("inf"), message or f"exit status {os.WEXITSTATUS(status)}")
    error_text, where = message.split("\t", 1)
    error = float(error_text)
    return Outcome(error <= TOLERANCE, error, f"relative error {error:.3g} in the {where}")


# ---------------------------------------------------------------------------------------- the sweep

def _formats(name: str) -> list[tuple[str, object]]:
    import torch
    from training import memory_format
    if name == "both":
        return [("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last)]
    fmt = memory_format(name, torch.device("cpu"))
    return [("channels_last" if fmt == torch.channels_last else "contiguous", fmt)]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--memory_format", default="auto", choices=("auto", "channels_last", "contiguous", "both"),
                   help="auto: what --memory_format auto picks on the CPU")
    p.add_argument("--wide", action="store_true", help="every size and width of the sweep (slow)")
    p.add_argument("--repeats", type=int, default=1, help="runs of each case, each in a fresh process")
    p.add_argument("--only", default="*", help="run the cases whose name matches this glob")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--timeout", type=int, default=120, help="seconds before a case counts as hung")
    p.add_argument("--list", action="store_true", help="print the case names and exit")
    p.add_argument("--verbose", action="store_true", help="print every case with its relative error")
    return p.parse_args(argv)


def _warm_up() -> None:
    """Pay PyTorch's lazy first-call costs once, here, instead of in every child: a safe case."""
    import torch
    from operations import ReLUConvBN
    run_case(Case("warm-up", lambda: ReLUConvBN(4, 4, 3, 1, 1), ((2, 4, 4, 4),)), torch.contiguous_format)


def main(argv=None) -> int:
    args = parse_args(argv)
    if "MALLOC_PERTURB_" not in os.environ:       # glibc reads these at start-up: start again with them
        env = {**os.environ, "MALLOC_PERTURB_": "165"}
        if MALLOC_DEBUG.exists():
            env.update(MALLOC_CHECK_="3", LD_PRELOAD=str(MALLOC_DEBUG))
        os.execve(sys.executable, [sys.executable, __file__, *(sys.argv[1:] if argv is None else argv)], env)
    import torch
    torch.set_num_threads(args.threads)
    cases = [c for c in all_cases(args.wide) if fnmatch.fnmatch(c.name, args.only)]
    if args.list:
        print("\n".join(c.name for c in cases))
        return 0
    _warm_up()
    gc.freeze()     # children then leave the parent's objects alone, so forking stays copy-free and fast
    failures, started = 0, time.perf_counter()
    for fmt_name, fmt in _formats(args.memory_format):
        worst = Outcome(True, 0.0, "")
        for case in cases:
            for _ in range(args.repeats):
                outcome = _in_child(case, fmt, args.timeout)
                if args.verbose or not outcome.passed:
                    print(f"{'ok' if outcome.passed else 'FAIL'} {case.name} [{fmt_name}]: {outcome.detail}", flush=True)
                if not outcome.passed:
                    failures += 1
                    break
                if outcome.error >= worst.error:
                    worst = Outcome(True, outcome.error, f"{case.name}: {outcome.detail}")
        print(f"{fmt_name}: {len(cases)} cases x {args.repeats} runs, {args.threads} thread(s), "
              f"{time.perf_counter() - started:.0f} s: {failures} failed so far; largest error that passed: "
              f"{worst.detail}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

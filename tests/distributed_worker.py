"""One rank of the torchrun checks in test_distributed.py (run as a script by torchrun).

    torchrun --nproc_per_node=2 tests/distributed_worker.py batchnorm OUT_DIR
    torchrun --nproc_per_node=2 tests/distributed_worker.py search OUT_DIR -- <train_search.py flags>

Each rank writes what it computed to OUT_DIR/rank<r>.pt, for the test to compare.
"""
import os
import sys
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cnn"))

import core_path  # noqa: E402,F401

import train_search  # noqa: E402
from checkpoint import resume_arguments  # noqa: E402
from distributed import GlobalBatchNorm2d, process_group  # noqa: E402
from runtime import resolve_device  # noqa: E402


def batchnorm(out: Path) -> None:
    """A share of a fixed float64 batch through GlobalBatchNorm2d; the test redoes the whole batch."""
    torch.manual_seed(0)
    x = torch.randn(8, 3, 5, 5, dtype=torch.float64) * 3 + 1
    w = torch.randn(8, 3, 5, 5, dtype=torch.float64)
    with process_group(torch.device("cpu")) as (ctx, _):
        share = slice(ctx.rank * 4, ctx.rank * 4 + 4)
        bn = GlobalBatchNorm2d(3).double()
        nn.init.uniform_(bn.weight, generator=torch.Generator().manual_seed(1))
        xs = x[share].clone().requires_grad_(True)
        y = bn(xs)
        (y * w[share]).sum().backward()
        torch.save({"y": y.detach(), "x_grad": xs.grad, "weight_grad": bn.weight.grad, "bias_grad": bn.bias.grad,
                    "running_mean": bn.running_mean, "running_var": bn.running_var}, out / f"rank{ctx.rank}.pt")


def search(out: Path, flags: list[str]) -> None:
    args, state, run_dir = resume_arguments(train_search.parse_args(flags), train_search.build_parser().parse_args([]),
                                            "search", train_search.RESUME_OVERRIDABLE)
    with process_group(resolve_device(args.device)) as (ctx, device):
        model = train_search.search(args, state, run_dir, ctx, device)
        torch.save([a.detach().cpu() for a in model.arch_parameters()], out / f"rank{ctx.rank}.pt")


if __name__ == "__main__":
    task, out_dir = sys.argv[1], Path(sys.argv[2])
    torch.set_num_threads(1)
    if os.environ.get("DARTS_TEST_GENOTYPES"):
        train_search.GENOTYPE_OUTPUT_DIR = Path(os.environ["DARTS_TEST_GENOTYPES"])
    if task == "batchnorm":
        batchnorm(out_dir)
    else:
        search(out_dir, sys.argv[sys.argv.index("--") + 1:])

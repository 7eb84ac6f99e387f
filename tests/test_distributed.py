"""torchrun: sharded sample orders, global BatchNorm, and real 2-process gloo runs on the CPU.

The runs fork their ranks from the script server with torchrun's environment (scripts.run_ranks_ok);
torchrun itself starts the ranks of the refused batch."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from distributed import Dist, DistributedError
from sampling import EvalShard, ShardedOrder
from scripts import run_ok, run_ranks_ok

REPO = Path(__file__).resolve().parents[1]
WORKER = "tests/distributed_worker.py"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]    # torchrun, from the torch this test imports


def test_the_shards_of_a_step_are_the_global_batch_of_one_process():
    n, batch, world = 40, 8, 2
    single = list(ShardedOrder(n, seed=3))
    shards = [list(ShardedOrder(n, seed=3, rank=r, world_size=world)) for r in range(world)]
    per_rank = batch // world
    for step in range(n // batch):
        together = sorted(item for shard in shards for item in shard[step * per_rank:(step + 1) * per_rank])
        assert together == sorted(single[step * batch:(step + 1) * batch])   # same samples, same augmentation seeds
    assert len(set(i for i, _ in single)) == n


def test_every_rank_makes_the_same_number_of_steps_and_passes_differ():
    shards = [ShardedOrder(41, seed=0, rank=r, world_size=2) for r in range(2)]
    assert [len(s) for s in shards] == [20, 20] and [len(list(s)) for s in shards] == [20, 20]
    order = ShardedOrder(41, seed=0)
    first = [i for i, _ in order]
    order.set_epoch(1)
    assert sorted(first) == sorted(i for i, _ in order) and first != [i for i, _ in order]


def test_a_pass_resumes_at_a_batch():
    full = list(ShardedOrder(30, seed=1, rank=1, world_size=3, batch_size=2))
    resumed = ShardedOrder(30, seed=1, rank=1, world_size=3, batch_size=2)
    resumed.start_batch = 2
    assert list(resumed) == full[4:] and len(resumed) == len(full) - 4


def test_evaluation_shards_score_every_sample_once():
    shards = [list(EvalShard(11, r, 3)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(11))


def test_the_global_batch_must_split_over_the_ranks():
    assert Dist(rank=1, local_rank=1, world_size=4).per_rank_batch(96) == 24
    with pytest.raises(DistributedError, match="multiple of 4"):
        Dist(world_size=4).per_rank_batch(90)


def test_global_batchnorm_computes_the_full_batch_exactly(tmp_path):
    run_ranks_ok(WORKER, "batchnorm", tmp_path)
    torch.manual_seed(0)
    x = torch.randn(8, 3, 5, 5, dtype=torch.float64) * 3 + 1
    w = torch.randn(8, 3, 5, 5, dtype=torch.float64)
    bn = nn.BatchNorm2d(3).double()
    nn.init.uniform_(bn.weight, generator=torch.Generator().manual_seed(1))
    xr = x.clone().requires_grad_(True)
    y = bn(xr)
    (y * w).sum().backward()
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for r, got in enumerate(ranks):
        share = slice(4 * r, 4 * r + 4)
        torch.testing.assert_close(got["y"], y[share].detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got["x_grad"], xr.grad[share], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got["running_mean"], bn.running_mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got["running_var"], bn.running_var, rtol=1e-12, atol=1e-12)
    # the affine gradients are per rank; DistributedDataParallel sums them (then averages)
    torch.testing.assert_close(ranks[0]["weight_grad"] + ranks[1]["weight_grad"], bn.weight.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ranks[0]["bias_grad"] + ranks[1]["bias_grad"], bn.bias.grad, rtol=1e-12, atol=1e-12)


def _scalars(run: Path) -> dict[str, list[float]]:
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in ("train_loss", "test_loss", "valid_loss")}


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint.pt", weights_only=True)["model"]


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key].float(), b[key].float(), rtol=1e-3, atol=1e-5, msg=key)


# 64 training images (digits minus a 95.5% held-out part) in one global batch of 64: one step
# per epoch, so each epoch's losses are those of the weights after one more step. Contiguous
# layout: oneDNN's channels-last kernels round differently for batches of 32 and 64, and four
# steps amplify that to ~1e-4; without --sync_bn the runs differ by ~4e-3.
TRAIN = ("cnn/train.py --arch DARTS_V2 --dataset digits --init_channels 4 --layers 3 --epochs 4 --batch_size 64 "
         "--valid_portion 0.955 --drop_path_prob 0 --learning_rate 0.02 --device cpu --sync_bn --memory_format contiguous")


def test_torchrun_training_follows_a_single_process_step_by_step(tmp_path):
    env = {"DARTS_LOGS_DIR": str(tmp_path / "logs")}
    # both stop after two steps, are compared, and are resumed (under torchrun for the distributed one)
    run_ranks_ok(*TRAIN.split(), "--save", "ddp", "--stop_epoch", "2", env=env, timeout=600)
    run_ok(*TRAIN.split(), "--save", "single", "--stop_epoch", "2", env=env, timeout=600)
    runs = {p.name.split("-")[0]: p for p in (tmp_path / "logs" / "eval").iterdir()}
    assert sorted(runs) == ["ddp", "single"]      # rank 1 wrote no run folder of its own
    _assert_same_weights(_weights(runs["ddp"]), _weights(runs["single"]))
    run_ranks_ok("cnn/train.py", "--resume", runs["ddp"], env=env, timeout=600)
    run_ok("cnn/train.py", "--resume", str(runs["single"]), env=env, timeout=600)
    assert "2 processes, 32 images each per step, global BatchNorm" in (runs["ddp"] / "log.txt").read_text()
    ddp, single = _scalars(runs["ddp"]), _scalars(runs["single"])
    for tag in ddp:
        assert len(ddp[tag]) == 4
        np.testing.assert_allclose(ddp[tag], single[tag], rtol=1e-4)
    _assert_same_weights(_weights(runs["ddp"]), _weights(runs["single"]))
    assert torch.load(runs["ddp"] / "checkpoint.pt", weights_only=True)["epoch"] == 4


def test_torchrun_training_in_the_default_layout_reports_every_step_without_warnings(tmp_path):
    ranks = run_ranks_ok("cnn/train.py", "--dataset", "digits", "--init_channels", "4", "--layers", "3",
                         "--epochs", "1", "--batch_size", "256", "--valid_portion", "0.5", "--report_freq", "1",
                         "--device", "cpu", env={"DARTS_LOGS_DIR": str(tmp_path)}, timeout=600)
    # the 1x1 kernels' gradients have their weights' strides (training.to_memory_format): DDP has nothing to say
    assert not any("Grad strides do not match" in done.stderr for done in ranks), ranks[0].stderr[-2000:]
    (run,) = (tmp_path / "eval").iterdir()
    reports = [line for line in (run / "log.txt").read_text().splitlines() if " train 00" in line]
    assert [line.split(" train ")[1][:3] for line in reports] == ["001", "002"], reports   # the ranks' collectives met


SEARCH = ("--dataset digits --layers 3 --steps 2 --multiplier 2 --init_channels 4 --batch_size 16 --device cpu "
          "--sync_bn --memory_format contiguous --unrolled --epochs 1 --max_steps 1")


def _search(tmp_path: Path, name: str, flags: str, nproc: int) -> list[torch.Tensor]:
    out = tmp_path / name
    out.mkdir()
    run_ranks_ok(WORKER, "search", out, "--", *flags.split(), nproc=nproc, timeout=600,
                 env={"DARTS_LOGS_DIR": str(out / "logs"), "DARTS_TEST_GENOTYPES": str(out / "genotypes")})
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(nproc)]
    for other in ranks[1:]:
        for a, b in zip(ranks[0], other, strict=True):
            assert torch.equal(a, b)             # bit for bit: every rank applied the same update
    assert len(list((out / "logs" / "search").iterdir())) == 1
    return ranks[0]


@pytest.mark.slow   # about a minute on 2 cores; the multi-channel torchrun search stays in the quick suite
def test_torchrun_search_takes_the_second_order_step_of_one_process(tmp_path):
    two = _search(tmp_path, "two", SEARCH + " --genotype_name ddp_search", 2)
    one = _search(tmp_path, "one", SEARCH + " --genotype_name ddp_search", 1)
    still = _search(tmp_path, "still", SEARCH + " --arch_learning_rate 0", 1)
    for a, b, c in zip(two, one, still, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
        assert (b - c).abs().min() > 1e-4         # Adam's first step moves every alpha by about its rate, 3e-4
    assert [p.name for p in (tmp_path / "two" / "genotypes").rglob("*.txt")] == ["ddp_search.txt"]


def test_torchrun_multi_channel_search_writes_one_path_named_after_its_run(tmp_path):
    _search(tmp_path, "grid", "--dataset digits --multi_channel --init_channels 4 --steps 2 --layers 2 --epochs 2 "
                              "--batch_size 16 --max_steps 2 --device cpu --save grid", 2)
    written = list((tmp_path / "grid" / "genotypes").rglob("*.txt"))
    assert len(written) == 1 and written[0].parent.name == "multi_channel"
    assert written[0].stem.startswith("grid_") and written[0].stem.isidentifier()


def test_a_batch_that_does_not_split_is_one_sentence_from_rank_0(tmp_path):
    done = subprocess.run([*TORCHRUN, "--standalone", "--nproc_per_node=2", "cnn/train.py", "--dataset", "digits",
                           "--device", "cpu", "--batch_size", "63"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "DARTS_LOGS_DIR": str(tmp_path)}, timeout=300)
    assert done.returncode != 0
    errors = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("error:")]
    assert errors == ["error: --batch_size 63 is the global batch and must split evenly over 2 processes; "
                      "use a multiple of 2"]
    assert not (tmp_path / "eval").exists()

"""core/lanes.py: two lanes of threads for independent tasks, and the search's mixed op run in them."""
import copy
import multiprocessing
import threading

import pytest
import torch
import torch.nn.functional as F

import lanes
from genotypes import PRIMITIVE_SETS
from model import ModelSpec
from model_search import MixedOp

CPU = torch.device("cpu")


def _meeting_tasks(n: int) -> tuple[list, list]:
    """n tasks that each wait for another task at a barrier (so they pass only if two run at once) and
    report (thread, torch threads, grad mode)."""
    barrier, seen = threading.Barrier(2, timeout=10), []

    def task(i: int):
        barrier.wait()
        seen.append(i)
        return threading.get_ident(), torch.get_num_threads(), torch.is_grad_enabled(), i
    return [lambda i=i: task(i) for i in range(n)], seen


def test_two_lanes_run_tasks_at_once_on_one_thread_each_and_keep_the_order(two_threads):
    tasks, seen = _meeting_tasks(4)
    with torch.no_grad():
        results = lanes.run(tasks, [3, 2, 1, 0], CPU)
    assert [r[3] for r in results] == [0, 1, 2, 3]                    # results in the tasks' order
    assert len({r[0] for r in results}) == 2 and threading.get_ident() in {r[0] for r in results}
    assert all(r[1] == 1 and r[2] is False for r in results)          # one torch thread each; no grad as the caller
    assert sorted(seen[:2]) == [2, 3]                                 # the first two taken are order's first two
    assert torch.get_num_threads() == 2                               # the caller's count is back


def test_lanes_run_serially_when_asked_on_one_thread_off_the_cpu_and_within_a_lane(two_threads):
    def where():
        return threading.get_ident(), torch.get_num_threads()
    me = threading.get_ident()
    with lanes.serial():
        assert lanes.run([where, where], [0, 1], CPU) == [(me, 2), (me, 2)]
    assert lanes.run([where, where], [1, 0], torch.device("meta")) == [(me, 2), (me, 2)]
    torch.set_num_threads(1)
    assert lanes.run([where, where], [0, 1], CPU) == [(me, 1), (me, 1)]
    torch.set_num_threads(4)
    nested = lanes.run([lambda: lanes.run([where, where], [0, 1], CPU)] * 2, [0, 1], CPU)
    for inner in nested:        # each lane (2 threads of 4) ran its inner tasks itself
        assert inner[0] == inner[1] and inner[0][1] == 2
    assert torch.get_num_threads() == 4


def test_a_task_s_exception_reaches_the_caller_and_the_thread_count_is_restored(two_threads):
    def fails():
        raise ValueError("task 1 failed")
    for order in ([0, 1], [1, 0]):      # raised in either lane
        with pytest.raises(ValueError, match="task 1 failed"):
            lanes.run([lambda: 0, fails], order, CPU)
        assert torch.get_num_threads() == 2
    assert lanes.run([lambda: 1, lambda: 2], [0, 1], CPU) == [1, 2]


def _child_runs_lanes(queue) -> None:
    torch.set_num_threads(2)
    tasks, _ = _meeting_tasks(2)
    queue.put(len({r[0] for r in lanes.run(tasks, [0, 1], CPU)}))


def test_a_forked_child_makes_its_own_lane_thread(two_threads):
    """A data loader worker is a fork: the parent's worker thread does not exist there."""
    lanes.run(_meeting_tasks(2)[0], [0, 1], CPU)        # the parent's worker thread exists
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_runs_lanes, args=(queue,))
    child.start()
    child.join(60)
    assert child.exitcode == 0 and queue.get(timeout=1) == 2


@pytest.mark.parametrize("stride, frozen", [(1, False), (2, False), (2, True)])
def test_a_mixed_op_in_two_lanes_equals_it_run_serially(two_threads, stride, frozen):
    """Output, every gradient and the BatchNorm statistics, float64, with the weights' gradients (the weight
    step) or without (the architecture step); stride 2 has FactorizedReduce among the lanes' tasks."""
    torch.manual_seed(0)
    ops = [MixedOp(8, stride, PRIMITIVE_SETS["DARTS"], "darts", 32).double().to(memory_format=torch.channels_last)]
    ops.append(copy.deepcopy(ops[0]))
    x = torch.randn(4, 8, 8, 8, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    alphas = torch.randn(len(PRIMITIVE_SETS["DARTS"]), dtype=torch.float64)
    g = torch.randn(4, 8, 8 // stride, 8 // stride, dtype=torch.float64)
    results = []
    for op, serial in zip(ops, (False, True)):
        for p in op.parameters():
            p.requires_grad_(not frozen)
        inputs = [x.clone().requires_grad_(), alphas.clone().requires_grad_()]
        with lanes.serial() if serial else torch.enable_grad():
            out = op(inputs[0], F.softmax(inputs[1], 0))
            grads = torch.autograd.grad(out, inputs + [p for p in op.parameters() if p.requires_grad], g)
        results.append([out, *grads, *op.buffers()])
    assert len(results[0]) == len(results[1]) > 3
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_a_training_network_in_two_lanes_equals_it_run_serially(two_threads):
    """DARTS_V2 (its normal cells run five chains at once, then one): logits, every gradient and the
    BatchNorm statistics of one training step's forward and backward, float64, channels-last."""
    torch.manual_seed(0)
    nets = [ModelSpec.resolve("DARTS_V2", "cifar", 10, init_channels=8, layers=5, auxiliary=False).build()
            .double().to(memory_format=torch.channels_last)]
    nets.append(copy.deepcopy(nets[0]))
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (4,))
    results = []
    for net, serial in zip(nets, (False, True)):
        with lanes.serial() if serial else torch.enable_grad():
            logits = net(x)[0]
            grads = torch.autograd.grad(F.cross_entropy(logits, y), list(net.parameters()))
        results.append([logits, *grads, *net.buffers()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)

"""DARTS (Liu, Simonyan and Yang, ICLR 2019): softmax over the ops of every edge, shared normal and
reduction cells, first-order or (``--unrolled``) second-order architecture steps on the held-out
half, and the DARTS parse (two strongest edges per node, ``none`` excluded)."""
from strategies import STRATEGIES
from strategies.base import CellStrategy


@STRATEGIES.register
class Darts(CellStrategy):
    name = "darts"
    SOURCE = "quark0/darts cnn/train_search.py; DARTS paper Sec. 3.1 (search settings)"
    SUMMARY = "the baseline: softmax mixed ops, first or second order (--unrolled)"
    supports_multi_channel = True
    cuda_graphs_ready = True       # no host reads, no host-side draws in its iteration (core/cuda_graphs.py)
    VARIANTS = {"darts_first_order": (), "darts_second_order": ("--unrolled",)}

"""DARTS+ early stopping: both criteria on scripted epoch records, and a search that stops early."""
import logging

import numpy as np
import pytest
import torch

import train_search
from genotypes import PRIMITIVE_SETS, RangeLiteral, darts_record
from model_search import CellResult, SearchError, SearchNetwork, make_spec
from search_run import EpochRecord
from strategies.dartsplus import DartsPlusRule
from test_search import search
from weight_report import WeightTable

DARTS = list(PRIMITIVE_SETS["DARTS"])
LEARNABLE = ["sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]
SPEC = make_spec(10, 4, 3, 2, 2, DARTS, "softmax", "shared")
LOG = logging.getLogger("test")

pytestmark = pytest.mark.usefixtures("one_thread")


def record(epoch, weights, skips=0, searching=True):
    """An epoch whose normal cell holds `skips` skip connections and whose weights are `weights` (edges x ops)."""
    normal = [("skip_connect", 0)] * skips + [("sep_conv_3x3", 1)] * (4 - skips)
    result = CellResult(darts_record(normal, RangeLiteral(2, 4), normal, RangeLiteral(2, 4)), SPEC, "darts", 0.85)
    tables = {name: WeightTable(np.asarray(weights, float), ["0-2", "1-2"], DARTS) for name in ("normal", "reduce")}
    return EpochRecord(epoch, searching, {}, tables, result)


def weights(*learnable):
    """Two edges; the learnable ops' weights as given (edge 0), reversed on edge 1; the rest 0.1."""
    rows = np.full((2, len(DARTS)), 0.1)
    for k, op in enumerate(LEARNABLE):
        rows[0, DARTS.index(op)], rows[1, DARTS.index(op)] = learnable[k], learnable[::-1][k]
    return rows


def test_the_option_watches_the_learnable_ops_with_the_papers_patience():
    strategy, (option,) = train_search.make_strategy(train_search.parse_args(["--method", "darts", "--early_stop"]))
    (rule,) = option.stop_rules(SearchNetwork(SPEC), strategy)
    assert rule.learnable == LEARNABLE and rule.patience == 10


def test_criterion_1_stops_at_the_first_epoch_with_two_skips_in_the_normal_cell():
    rule = DartsPlusRule(patience=10, learnable=LEARNABLE)
    history = [record(1, weights(4, 3, 2, 1), skips=1), record(2, weights(1, 2, 3, 4), skips=1),
               record(3, weights(4, 3, 2, 1), skips=2)]
    assert [rule.observe(r, LOG) for r in history[:2]] == [None, None]
    assert rule.observe(history[2], LOG) == ("DARTS+ criterion 1: the normal cell holds 2 skip connections "
                                             "(at most 1)")


def test_criterion_2_stops_once_the_ranking_of_learnable_ops_stayed_the_same_for_the_patience():
    rule = DartsPlusRule(patience=3, learnable=LEARNABLE)
    # epoch 2 swaps two ops (a new ranking); epochs 3..5 change the values but not the order, and the
    # parameter-free ops (skip here) may move freely: stable for 1, 2, 3 epochs after epoch 2
    history = [weights(4, 3, 2, 1), weights(3, 4, 2, 1), weights(2, 5, 1, 0.5), weights(3, 3.5, 0.5, 0.2),
               weights(8, 9, 7, 6)]
    history[3][0, DARTS.index("skip_connect")] = 50.0
    reasons = [rule.observe(record(e + 1, w), LOG) for e, w in enumerate(history)]
    assert reasons[:4] == [None] * 4
    assert reasons[4] == "DARTS+ criterion 2: the ranking of the learnable ops' weights was stable for 3 epochs"
    assert rule.state_dict()["stable"] == 3


def test_pretraining_epochs_neither_count_nor_stop_and_the_state_resumes():
    rule = DartsPlusRule(patience=2, learnable=LEARNABLE)
    w = weights(4, 3, 2, 1)
    assert [rule.observe(record(e, w, skips=3, searching=False), LOG) for e in (1, 2, 3)] == [None] * 3
    assert rule.observe(record(4, w), LOG) is None and rule.observe(record(5, w), LOG) is None
    resumed = DartsPlusRule(patience=2, learnable=LEARNABLE)
    resumed.load_state_dict(rule.state_dict())
    assert resumed.observe(record(6, w), LOG).startswith("DARTS+ criterion 2")


def test_a_digits_search_stops_early_and_says_so(tmp_path, monkeypatch):
    # the architecture frozen (learning rate 0): its ranking is the same after epochs 1, 2 and 3
    monkeypatch.setenv("DARTS_LOGS_DIR", str(tmp_path / "logs"))
    monkeypatch.setattr(train_search, "GENOTYPE_OUTPUT_DIR", tmp_path / "genotypes")
    search("--dataset", "digits", "--init_channels", "8", "--layers", "3", "--steps", "2", "--multiplier", "2",
           "--batch_size", "16", "--epochs", "5", "--max_steps", "1", "--report_freq", "0", "--seed", "1",
           "--arch_learning_rate", "0", "--early_stop", "--early_stop_patience", "2", "--genotype_name", "stopped")
    run = next((tmp_path / "logs" / "search").iterdir())
    log = (run / "log.txt").read_text()
    reason = "DARTS+ criterion 2: the ranking of the learnable ops' weights was stable for 2 epochs"
    assert f"{reason}: search stopped early" in log and "epoch 3/5" in log and "epoch 4/5" not in log
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 3 and state["stopped_early"] == reason
    assert (tmp_path / "genotypes" / "stopped.txt").exists()


def test_early_stop_needs_a_method_that_trains_architecture_weights():
    with pytest.raises(SearchError, match="--early_stop needs the architecture weights of a cell supernet, and "
                                          "--method random trains none"):
        train_search.parse_args(["--method", "random", "--early_stop"])


def test_help_lists_the_flags_under_the_option_not_under_a_method():
    text = train_search.build_parser().format_help()
    assert "option early_stop (with any method):\n  --early_stop" in text and "--method early_stop" not in text

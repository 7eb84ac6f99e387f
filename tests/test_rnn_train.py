"""rnn/train.py, rnn/evaluate_model.py and rnn/visualize.py end to end, each in a subprocess, on a
tiny corpus in the PTB layout; and the training steps they share, in process."""
import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from checkpoint import load_checkpoint
from corpus import batchify
from lm_training import StepConfig, averaged_weights, batch_schedule, make_optimizer, should_switch, train_step
from recurrent_model import Dropouts, LanguageModelSpec, resolve_genotype
from runtime import DivergenceWatch, Precision
from scripts import REPO, assert_one_sentence_error, run_ranks_ok, run_script
from tiny_datasets import make_text_corpus

TINY = ["--emsize", "8", "--nhid", "8", "--nhidlast", "8", "--batch_size", "8", "--bptt", "10",
        "--max_seq_len_delta", "5", "--eval_batch_size", "2", "--log_interval", "4"]


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    return make_text_corpus(tmp_path_factory.mktemp("corpus") / "tiny", n_train=40, n_valid=20, n_test=20)


def train(logs: Path, *args: str, script: str = "rnn/train.py", cwd: Path = REPO) -> subprocess.CompletedProcess:
    return run_script(script, *args, cwd=cwd, env={"DARTS_LOGS_DIR": str(logs)})


def vocabulary_size(folder: Path) -> int:
    return len({w for name in ("train", "valid", "test") for w in (folder / f"{name}.txt").read_text().split()}) + 1


def runs(logs: Path) -> list[Path]:
    return sorted((logs / "eval").iterdir())


def test_train_writes_a_run_and_evaluate_model_reproduces_its_test_perplexity(tmp_path, corpus_dir):
    logs = tmp_path / "logs"
    done = train(logs, "--data", str(corpus_dir), *TINY, "--epochs", "2", "--arch", "ENAS", "--save", "quick")
    assert done.returncode == 0, done.stderr
    (run,) = runs(logs)
    for name in ("log.txt", "command.txt", "args.json", "checkpoint.pt", "model_best.pt", "results.json"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    results = json.loads((run / "results.json").read_text())
    assert results["arch"] == "ENAS" and results["epochs"] == 2 and results["test_batch_size"] == 1
    words = vocabulary_size(corpus_dir)
    assert results["params"] == words * 8 + words + 16 * 16 + 11 * 8 * 16      # tied decoder; 11 ENAS steps
    assert math.isclose(results["test_ppl"], math.exp(results["test_loss"]), rel_tol=1e-9)
    assert 1 < results["test_ppl"] < 10 * results["unigram_test_ppl"]
    log = (run / "log.txt").read_text()
    assert "| end of epoch   2 |" in log and "valid ppl" in log and "test ppl" in log and "unigram test perplexity" in log
    assert "| epoch   1 |     4/" in log                                   # --log_interval lines
    best = load_checkpoint(run / "model_best.pt")
    assert best["kind"] == "lm_model" and best["vocabulary"][0] == "<eos>" and best["spec"]["arch_name"] == "ENAS"
    assert list(best["model"])[:2] == ["encoder.weight", "rnns.0._W0"]
    # DARTS's test.py: perplexity of the checkpoint on the test split, 1 sequence per batch; run from rnn/
    done = run_script("rnn/evaluate_model.py", "--model_path", str(run / "model_best.pt"), "--data", str(corpus_dir),
                      cwd=REPO / "rnn")
    assert done.returncode == 0, done.stderr
    assert f"test ppl {results['test_ppl']:.2f}" in done.stdout and "ENAS | 11 steps, 8 units" in done.stdout


def test_a_plain_darts_state_dict_is_evaluated_with_arch(tmp_path, corpus_dir):
    words = vocabulary_size(corpus_dir)
    spec = LanguageModelSpec.from_genotype(resolve_genotype("DARTS"), words, 8, 8, 8, Dropouts())
    torch.manual_seed(0)
    path = tmp_path / "darts_state_dict.pt"
    torch.save(spec.build().state_dict(), path)
    done = run_script("rnn/evaluate_model.py", "--model_path", str(path), "--data", str(corpus_dir), "--arch", "DARTS",
                      "--split", "valid", "--batch_size", "2")
    assert done.returncode == 0, done.stderr
    assert f"DARTS_V2 | 8 steps, 8 units, {words} words" in done.stdout and "| valid ppl" in done.stdout
    ppl = float(done.stdout.split("valid ppl ")[1].split()[0])
    assert abs(math.log(ppl) - math.log(words)) < 0.05                   # untrained: about uniform
    assert_one_sentence_error(run_script("rnn/evaluate_model.py", "--model_path", str(path), "--data", str(corpus_dir)),
                              "does not say which genotype it holds: pass --arch")
    assert_one_sentence_error(run_script("rnn/evaluate_model.py", "--model_path", str(path), "--data", str(corpus_dir),
                                         "--arch", "ENAS"), "3 weights missing (e.g. rnns.0._Ws.8)", "check --arch")


def test_resume_continues_exactly_across_the_switch_to_averaged_sgd(tmp_path, corpus_dir):
    args = ["--data", str(corpus_dir), *TINY, "--epochs", "5", "--lr", "40", "--nonmono", "1"]
    whole = tmp_path / "whole"
    assert train(whole, *args).returncode == 0
    (run,) = runs(whole)
    log = (run / "log.txt").read_text()
    assert "switching to averaged SGD" in log and "| end of epoch   5 | time" in log and "ASGD, averaged weights" in log
    switch_epoch = int(log.split("switching to averaged SGD")[0].rsplit("| end of epoch", 1)[1].split("|")[0])
    assert switch_epoch < 5

    parts = tmp_path / "parts"
    assert train(parts, *args, "--stop_epoch", "2").returncode == 0
    (resumed,) = runs(parts)
    assert load_checkpoint(resumed / "checkpoint.pt")["optimizer_kind"] == "sgd"
    for stop in (switch_epoch, 5):           # stop right after the switch, then continue with ASGD
        done = train(parts, "--resume", str(resumed), "--stop_epoch", str(stop))
        assert done.returncode == 0, done.stderr
    assert runs(parts) == [resumed]
    a, b = load_checkpoint(run / "checkpoint.pt"), load_checkpoint(resumed / "checkpoint.pt")
    assert a["optimizer_kind"] == b["optimizer_kind"] == "asgd" and a["epoch"] == b["epoch"] == 5
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["history"] == b["history"] and a["best"] == b["best"]
    assert json.loads((run / "results.json").read_text())["test_ppl"] == \
        json.loads((resumed / "results.json").read_text())["test_ppl"]


def test_a_diverging_run_stops_in_one_sentence_and_keeps_no_checkpoint(tmp_path, corpus_dir):
    logs = tmp_path / "logs"
    done = train(logs, "--data", str(corpus_dir), *TINY, "--epochs", "2", "--lr", "1e30", "--clip", "1e30",
                 "--log_interval", "1")
    assert_one_sentence_error(done, "training diverged at epoch 1, step 2", "lower --lr or --clip")
    (run,) = runs(logs)
    assert not (run / "checkpoint.pt").exists() and not (run / "model_best.pt").exists()
    # it stopped at the first report after the NaN, not at the end of the epoch's 11 batches
    reports = [line for line in (run / "log.txt").read_text().splitlines() if "| epoch   1 |" in line]
    assert len(reports) == 1 and "1/   11 batches" in reports[0], reports


def test_bad_input_is_one_sentence(tmp_path, corpus_dir):
    logs = tmp_path / "logs"
    assert_one_sentence_error(train(logs, "--data", str(tmp_path / "penn"), *TINY),
                              f"there is no folder {tmp_path / 'penn'}", "train.txt, valid.txt and test.txt")
    empty = shutil.copytree(corpus_dir, tmp_path / "empty")
    (empty / "valid.txt").write_text("\n")
    assert_one_sentence_error(train(logs, "--data", str(empty), *TINY), "valid.txt holds no words")
    assert_one_sentence_error(train(logs, "--data", str(corpus_dir), *TINY, "--arch", "DARTS_V3"),
                              "unknown genotype 'DARTS_V3'", "did you mean DARTS_V2")
    assert_one_sentence_error(train(logs, "--data", str(corpus_dir), "--emsize", "8"),
                              "--emsize 8, --nhid 850 and --nhidlast 850 must be equal")
    assert_one_sentence_error(train(logs, "--data", str(corpus_dir), *TINY, "--small_batch_size", "3"),
                              "--batch_size 8 must be a multiple of --small_batch_size 3")
    assert not (logs / "eval").exists()
    # a checkpoint meets a corpus with another vocabulary: evaluation and resuming refuse it
    assert train(logs, "--data", str(corpus_dir), *TINY, "--epochs", "2", "--stop_epoch", "1").returncode == 0
    (run,) = runs(logs)
    other = make_text_corpus(tmp_path / "other", n_train=100, n_valid=20, n_test=20)
    assert_one_sentence_error(run_script("rnn/evaluate_model.py", "--model_path", str(run / "model_best.pt"),
                                         "--data", str(other)), "was trained on a vocabulary of", "give the --data")
    assert_one_sentence_error(train(logs, "--resume", str(run), "--data", str(other)),
                              "was trained on a vocabulary of", "give the --data")


def test_visualize_draws_a_recurrent_cell(tmp_path):
    done = run_script("rnn/visualize.py", "ENAS", "--format", "svg", "--out", str(tmp_path), "--keep_source")
    assert done.returncode == 0, done.stderr
    source = (tmp_path / "ENAS_recurrent.gv").read_text()
    for edge in ('"x_{t}" -> 0', '"h_{t-1}" -> 0', "8 -> 11 [label=relu", '11 -> "h_{t}"', '2 -> "h_{t}"'):
        assert edge in source, edge
    assert '\t1 -> "h_{t}"' not in source                                  # ENAS averages states 2, 5, 6, 9, 10, 11
    if shutil.which("dot"):
        assert (tmp_path / "ENAS_recurrent.svg").read_text().lstrip().startswith("<?xml")
    assert_one_sentence_error(run_script("rnn/visualize.py", "DARTS_V2x"), "did you mean DARTS_V2")


def test_two_processes_take_the_steps_of_one(tmp_path, corpus_dir):
    """Without dropout (whose masks each rank draws for its own sequences) two gloo processes, each
    with half of every batch, train the weights one process trains."""
    args = ["--data", str(corpus_dir), *TINY, "--epochs", "1", "--dropout", "0", "--dropouth", "0", "--dropoutx", "0",
            "--dropouti", "0", "--dropoute", "0", "--small_batch_size", "2", "--eval_batch_size", "3"]
    one = tmp_path / "one"
    assert train(one, *args).returncode == 0
    two = tmp_path / "two"
    run_ranks_ok("rnn/train.py", *args, env={"DARTS_LOGS_DIR": str(two)})
    (a,), (b,) = runs(one), runs(two)
    assert "2 processes, 4 sequences each per batch" in (b / "log.txt").read_text()
    wa, wb = load_checkpoint(a / "checkpoint.pt")["model"], load_checkpoint(b / "checkpoint.pt")["model"]
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=1e-5, msg=key)
    ra, rb = (json.loads((r / "results.json").read_text()) for r in (a, b))
    for key in ("valid_ppl", "test_ppl"):
        assert ra["best"][key] == pytest.approx(rb["best"][key], rel=1e-5), key
    assert ra["test_ppl"] == pytest.approx(rb["test_ppl"], rel=1e-5)


# ------------------------------------------------------------------------------------------ the steps, in process

def test_batch_lengths_follow_darts_and_cover_the_data():
    rng = np.random.default_rng(0)
    schedule = batch_schedule(10_000, 35, 20, rng)
    lengths = np.array([n for _, n in schedule])
    assert lengths.min() >= 5 and lengths.max() <= 55 and 33 < lengths.mean() < 35
    assert (lengths < 25).mean() == pytest.approx(0.05, abs=0.02)         # the bptt / 2 batches
    starts = [i for i, _ in schedule]
    assert starts[0] == 0 and all(b - a == n for (a, n), b in zip(schedule, starts[1:])) and starts[-1] < 10_000 - 2
    assert batch_schedule(10_000, 35, 20, np.random.default_rng(0)) == schedule


def test_the_switch_rule_is_darts_nonmono():
    assert not should_switch([5.0, 4.0, 3.0], 3.5, 5)                      # not enough epochs yet
    assert should_switch([5.0, 4.0, 4.1], 4.2, 1)                         # worse than 4.0, the best before the last
    assert not should_switch([5.0, 4.0, 4.1], 3.9, 1)
    assert not should_switch([5.0, 4.0, 4.1], 4.2, 2)                     # the best before the last 2 is 5.0


def test_a_step_scales_the_learning_rate_by_its_length_and_asgd_evaluates_the_average():
    torch.manual_seed(0)
    model = LanguageModelSpec.from_genotype(resolve_genotype("DARTS_V2"), 20, 6, 6, 6, Dropouts()).build()
    data = batchify(torch.randint(0, 20, (400,)), 4, "training split")
    cfg = StepConfig(bptt=10, max_seq_len_delta=5, clip=0.25, alpha=2.0, beta=1.0, small_batch_size=2, log_interval=0)
    precision, watch = Precision(torch.device("cpu"), False), DivergenceWatch(torch.device("cpu"), 1)
    optimizer = make_optimizer("asgd", model, 20.0, 0.0)
    hidden = [model.init_hidden(2) for _ in range(2)]
    iterates = []
    for i, seq_len in enumerate((10, 5, 15)):
        nll = train_step(model, data[i * 20:i * 20 + seq_len], data[i * 20 + 1:i * 20 + 1 + seq_len], hidden,
                         optimizer, precision, cfg, seq_len, watch)
        assert nll > 0 and optimizer.param_groups[0]["lr"] == 20.0       # scaled for the step, then restored
        iterates.append([p.detach().clone() for p in model.parameters()])
    watch.check()
    assert all(h[0].grad_fn is not None for h in hidden)                 # carried to the next batch (detached there)
    trained = [p.detach().clone() for p in model.parameters()]
    with averaged_weights(model, optimizer):
        for p, *steps in zip(model.parameters(), *iterates):
            # torch's ASGD with t0=0 (as in PyTorch 0.3, which DARTS ran) averages the iterates from its second step on
            torch.testing.assert_close(p, torch.stack(steps[1:]).mean(0))
    for p, q in zip(model.parameters(), trained):
        assert torch.equal(p, q)
    sgd = make_optimizer("sgd", model, 20.0, 0.0)
    with averaged_weights(model, sgd):
        assert all(torch.equal(p, q) for p, q in zip(model.parameters(), trained))


DEMO = ["--data", "pydoc", "--emsize", "256", "--nhid", "256", "--nhidlast", "256", "--batch_size", "32", "--epochs", "6",
        "--dropout", "0.3", "--dropoutx", "0.2", "--dropouth", "0.1", "--dropouti", "0.1", "--dropoute", "0"]


@pytest.mark.slow
def test_the_readme_demo_beats_the_unigram_baseline_by_far(tmp_path):
    """README, "Quick offline training": DARTS_V2 on the pydoc corpus, about 4 minutes on one thread."""
    done = train(tmp_path, *DEMO, "--save", "pydoc_demo")
    assert done.returncode == 0, done.stderr
    (run,) = runs(tmp_path)
    results = json.loads((run / "results.json").read_text())
    assert results["arch"] == "DARTS_V2" and results["params"] == 1_831_659
    assert results["test_ppl"] < 0.5 * results["unigram_test_ppl"]

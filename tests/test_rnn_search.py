"""rnn/train_search.py: the architecture gradients of the recurrent search (core/architect.py with the
language-model objective) against independent computations in float64, and the script end to end in
subprocesses: a search whose genotype rnn/train.py trains, an exact resume, bad input."""
import json
import math
import subprocess
from pathlib import Path

import pytest
import torch
from torch.func import functional_call

from architect import ArchConfig, Architect
from checkpoint import load_checkpoint
from genotypes import load_recurrent_genotype
from recurrent_model import Dropouts
from recurrent_search import RNNModelSearch, language_model_objective
from runtime import Precision
from scripts import assert_one_sentence_error, run_script
from tiny_datasets import make_text_corpus

NO_DROPOUT = Dropouts(0.0, 0.0, 0.0, 0.0, 0.0)
WORDS, UNITS, BATCH = 11, 4, 16
TINY = ["--emsize", "6", "--nhid", "6", "--nhidlast", "6", "--batch_size", "4", "--small_batch_size", "2",
        "--bptt", "8", "--max_seq_len_delta", "4", "--eval_batch_size", "2", "--log_interval", "0"]


def tiny_search() -> RNNModelSearch:
    torch.manual_seed(0)
    model = RNNModelSearch(WORDS, UNITS, UNITS, NO_DROPOUT, steps=3, concat=3).double()
    with torch.no_grad():                           # away from the near-zero start, where every gradient is tiny
        model.alphas[0].normal_(0.0, 0.7)
        for p in model.weight_parameters():
            p.normal_(0.0, 0.2)
    return model


def lm_batch(seed: int, length: int = 5) -> tuple:
    g = torch.Generator().manual_seed(seed)
    words = torch.randint(0, WORDS, (length + 1, BATCH), generator=g)
    hidden = [0.5 * torch.randn(1, BATCH, UNITS, generator=g, dtype=torch.float64)]
    return words[:-1], words[1:], hidden


def architect_for(model: RNNModelSearch, unrolled: bool, wdecay: float, clip: float = 0.0) -> Architect:
    config = ArchConfig(learning_rate=3e-3, weight_decay=1e-3, betas=(0.9, 0.999), unrolled=unrolled,
                        network_momentum=0.0, network_weight_decay=wdecay, virtual_step_clip=clip)
    return Architect(model, config, Precision(torch.device("cpu"), False), objective=language_model_objective)


def test_first_order_architecture_gradient_equals_finite_differences_and_returns_the_hidden_state():
    model = tiny_search()
    batch = lm_batch(1)
    grads, _, stats = architect_for(model, False, 0.0).objective_gradients(batch)
    alpha, eps = model.alphas[0], 1e-6
    numeric = torch.zeros_like(alpha)
    with torch.no_grad():
        for idx in [(e, k) for e in range(alpha.shape[0]) for k in range(alpha.shape[1])]:
            alpha[idx] += eps
            plus = language_model_objective(model, batch)[0]
            alpha[idx] -= 2 * eps
            minus = language_model_objective(model, batch)[0]
            alpha[idx] += eps
            numeric[idx] = (plus - minus) / (2 * eps)
    torch.testing.assert_close(grads[0], numeric, rtol=1e-6, atol=1e-9)
    assert grads[0].abs().max() > 1e-3
    with torch.no_grad():
        expected_loss, expected_hidden = language_model_objective(model, batch)
    assert stats["arch_loss"].item() == pytest.approx(expected_loss.item(), rel=1e-12)
    torch.testing.assert_close(stats["output"][0], expected_hidden[0], rtol=0, atol=1e-12)


def test_second_order_architecture_gradient_is_darts_formula_and_the_hypergradient_by_double_backpropagation():
    """The architect's second-order gradient, (1) exactly DARTS's formula recomputed here: dL_val(w', a)/da
    - eta * (dL_train(w + r v, a)/da - dL_train(w - r v, a)/da) / 2r, r = 0.01 / ||v||, v = dL_val/dw';
    (2) the true hypergradient d/da L_val(w - eta (dL_train(w, a)/dw + wd w), a) by autograd through the
    virtual step, up to the finite difference's O(r^2) error (1.3% here); the hidden state it carries on
    is the one of the forward at w'."""
    model, eta, wdecay = tiny_search(), 0.8, 1e-2
    train, valid = lm_batch(2), lm_batch(3, length=4)
    optimizer = torch.optim.SGD(model.weight_parameters(), lr=eta, weight_decay=wdecay)
    grads, stats = architect_for(model, True, wdecay).unrolled_gradients(train, valid, optimizer)

    named = model.named_weight_parameters()
    weights, alphas = [p for _, p in named], model.arch_parameters()

    def at(tensors: dict):
        return lambda *a: functional_call(model, tensors, a)

    g = torch.autograd.grad(language_model_objective(model, train)[0], weights, create_graph=True)
    w_prime = {n: w - eta * (gw + wdecay * w) for (n, w), gw in zip(named, g)}
    loss, hidden = language_model_objective(at(w_prime), valid)
    (direct,) = torch.autograd.grad(loss, alphas, retain_graph=True)

    fixed = {n: w.detach().requires_grad_() for n, w in w_prime.items()}
    partial, *v = torch.autograd.grad(language_model_objective(at(fixed), valid)[0], alphas + list(fixed.values()))
    r = 0.01 / torch.sqrt(sum((x ** 2).sum() for x in v))
    moved = [torch.autograd.grad(language_model_objective(at({n: (w + sign * r * x).detach() for (n, w), x in
                                                               zip(named, v)}), train)[0], alphas)[0]
             for sign in (1, -1)]
    darts = partial - eta * (moved[0] - moved[1]) / (2 * r)
    torch.testing.assert_close(grads[0], darts, rtol=1e-9, atol=1e-12)
    assert (grads[0] - direct).norm() < 0.03 * direct.norm()
    assert (direct - partial).norm() > 0.2 * direct.norm()      # the implicit term matters here
    assert stats["arch_loss"].item() == pytest.approx(loss.item(), rel=1e-12)
    torch.testing.assert_close(stats["output"][0], hidden[0].detach(), rtol=0, atol=1e-12)


def test_the_virtual_step_clips_the_training_gradient_as_darts_recurrent_search():
    """With virtual_step_clip (rnn/train_search.py passes --clip), w' = w - eta (g * clip / ||g|| + wd w) when
    ||g|| > clip: the validation loss the architect reports is the one at that w'."""
    model, eta, wdecay = tiny_search(), 0.8, 1e-2
    train, valid = lm_batch(2), lm_batch(3, length=4)
    named = model.named_weight_parameters()
    g = torch.autograd.grad(language_model_objective(model, train)[0], [p for _, p in named])
    norm = torch.sqrt(sum((x ** 2).sum() for x in g))
    clip = 0.25 * norm.item()

    def loss_at(scale: float) -> float:
        w_prime = {n: (w - eta * (scale * gw + wdecay * w)).detach() for (n, w), gw in zip(named, g)}
        with torch.no_grad():
            return language_model_objective(lambda *a: functional_call(model, w_prime, a), valid)[0].item()

    optimizer = torch.optim.SGD(model.weight_parameters(), lr=eta, weight_decay=wdecay)
    clipped = architect_for(model, True, wdecay, clip).unrolled_gradients(train, valid, optimizer)[1]["arch_loss"]
    assert clipped.item() == pytest.approx(loss_at(clip / (norm.item() + 1e-6)), rel=1e-12)
    assert abs(loss_at(1.0) - clipped.item()) > 1e-3
    unclipped = architect_for(model, True, wdecay, 10 * norm.item()).unrolled_gradients(train, valid, optimizer)[1]
    assert unclipped["arch_loss"].item() == pytest.approx(loss_at(1.0), rel=1e-12)


# ----------------------------------------------------------------------------------------
# The script
# ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    return make_text_corpus(tmp_path_factory.mktemp("corpus") / "tiny", n_train=8, n_valid=10, n_test=10)


def search(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return run_script("tests/patched_script.py", "--genotypes_to", str(tmp_path / "genotypes"), "--",
                      "rnn/train_search.py", *args, env={"DARTS_LOGS_DIR": str(tmp_path / "logs")})


def search_runs(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "logs" / "search").iterdir())


def genotype_body(path: Path) -> str:
    return "".join(line for line in path.read_text().splitlines(keepends=True) if not line.startswith("#"))


def test_search_stopped_and_resumed_ends_as_an_uninterrupted_one_and_train_py_trains_its_genotype(tmp_path,
                                                                                                   corpus_dir):
    common = ["--data", str(corpus_dir), *TINY, "--epochs", "2", "--unrolled"]
    whole = search(tmp_path / "whole", *common, "--genotype_name", "whole")
    assert whole.returncode == 0, whole.stderr
    parts = search(tmp_path / "parts", *common, "--genotype_name", "parts", "--stop_epoch", "1")
    assert parts.returncode == 0, parts.stderr
    (run,) = search_runs(tmp_path / "parts")
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 1 and not (tmp_path / "parts" / "genotypes").exists()
    resumed = search(tmp_path / "parts", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr

    (whole_run,) = search_runs(tmp_path / "whole")
    a, b = load_checkpoint(whole_run / "checkpoint.pt"), load_checkpoint(run / "checkpoint.pt")
    assert a["epoch"] == b["epoch"] == 2
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert not torch.equal(a["model"]["alphas.0"], torch.zeros_like(a["model"]["alphas.0"]))
    whole_file, parts_file = tmp_path / "whole" / "genotypes" / "whole.txt", tmp_path / "parts" / "genotypes" / "parts.txt"
    assert genotype_body(whole_file) == genotype_body(parts_file)
    assert f"run: {run.name}" in parts_file.read_text() and (run / "genotype.txt").is_file()
    log = (run / "log.txt").read_text()
    assert "resumed from epoch 1" in log and "| end of epoch   2 |" in log and "second order" in log
    assert len(list((run / "weights").glob("epoch_*.npy"))) == 2

    assert load_recurrent_genotype(str(parts_file)).steps    # the parse is a trainable genotype
    logs = tmp_path / "train_logs"
    trained = run_script("rnn/train.py", "--data", str(corpus_dir), "--arch", str(parts_file), *TINY, "--epochs", "1",
                         env={"DARTS_LOGS_DIR": str(logs)})
    assert trained.returncode == 0, trained.stderr
    (train_run,) = sorted((logs / "eval").iterdir())
    results = json.loads((train_run / "results.json").read_text())
    assert results["arch"] == "parts" and math.isfinite(results["test_ppl"])


def test_first_order_search_writes_to_the_run_name_and_refuses_a_name_it_did_not_write(tmp_path, corpus_dir):
    done = search(tmp_path, "--data", str(corpus_dir), *TINY, "--epochs", "1", "--save", "quick")
    assert done.returncode == 0, done.stderr
    (run,) = search_runs(tmp_path)
    written = tmp_path / "genotypes" / f"{run.name}.txt"
    assert written.is_file() and "first order" in written.read_text()
    assert "param size: " in (run / "log.txt").read_text()
    (tmp_path / "genotypes" / "mine.txt").write_text("Genotype(recurrent=[('tanh', 0)], concat=range(1, 2))\n")
    refused = search(tmp_path, "--data", str(corpus_dir), *TINY, "--epochs", "1", "--genotype_name", "mine")
    assert_one_sentence_error(refused, "mine.txt exists and was not written by a search")


@pytest.mark.parametrize("flags, message", [
    (["--data", "/nonexistent/corpus"], "/nonexistent/corpus"),
    (["--emsize", "6", "--nhid", "8"], "must be equal"),
    (["--batch_size", "6", "--small_batch_size", "4"], "must be a multiple of --small_batch_size 4"),
    (["--genotype_name", "../up"], "must be a plain file name"),
    (["--small_batch_size", "1"], "the search cell's BatchNorm needs at least 2 sequences computed at once"),
    (["--arch_lr", "1e30"], "training diverged at epoch 1, step 2: the loss became nan; lower --lr, --arch_lr or "
                            "--clip"),
])
def test_bad_input_is_one_sentence(tmp_path, corpus_dir, flags, message):
    args = ["--data", str(corpus_dir), *TINY, "--epochs", "1", *flags]
    assert_one_sentence_error(search(tmp_path, *args), message)


def test_help_names_the_darts_flags():
    done = run_script("rnn/train_search.py", "--help")
    assert done.returncode == 0
    for flag in ("--unrolled", "--arch_lr", "--arch_wdecay", "--small_batch_size", "--max_seq_len_delta", "--resume",
                 "--genotype_name", "--amp", "--device"):
        assert flag in done.stdout, flag


DEMO_SEARCH = ["--data", "pydoc", "--emsize", "64", "--nhid", "64", "--nhidlast", "64", "--batch_size", "64",
               "--epochs", "1", "--dropout", "0.3", "--dropoutx", "0.2", "--dropouth", "0.1", "--dropouti", "0.1",
               "--dropoute", "0", "--genotype_name", "demo_pydoc"]
DEMO_TRAIN = ["--arch", "demo_pydoc", "--data", "pydoc", "--emsize", "256", "--nhid", "256", "--nhidlast", "256",
              "--batch_size", "32", "--epochs", "6", "--dropout", "0.3", "--dropoutx", "0.2", "--dropouth", "0.1",
              "--dropouti", "0.1", "--dropoute", "0"]


@pytest.mark.slow
def test_the_readme_search_demo_beats_the_unigram_baseline_by_30_percent(tmp_path):
    """README, "Quick offline search": search on the pydoc corpus, then train the cell it found (about 5
    minutes of one thread together)."""
    genotypes = tmp_path / "genotypes"
    found = search(tmp_path, *DEMO_SEARCH)
    assert found.returncode == 0, found.stderr
    trained = run_script("rnn/train.py", *[str(genotypes / "demo_pydoc.txt") if a == "demo_pydoc" else a
                                           for a in DEMO_TRAIN], env={"DARTS_LOGS_DIR": str(tmp_path / "logs")},
                         timeout=1200)
    assert trained.returncode == 0, trained.stderr
    (run,) = sorted((tmp_path / "logs" / "eval").iterdir())
    results = json.loads((run / "results.json").read_text())
    assert results["test_ppl"] < 0.7 * results["unigram_test_ppl"]

"""Bad flags and bad data: one sentence and exit status 2 (or a warning that names the file), never a
traceback, never a run that trains on a value it cannot use."""
import socket

import numpy as np
import pytest

import cli
import evaluate_model
import train
import train_search
from data import DataError, build_datasets
from scripts import REPO, assert_one_sentence_error, run_script
from tiny_datasets import make_cifar10, make_imagefolder

SCRIPTS = {"train": train.main, "train_search": train_search.main, "evaluate_model": evaluate_model.main}


def one_sentence(capsys, script: str, *argv: str) -> str:
    """Run a script's main in this process through cli.run (for input refused before any compute:
    no native kernel runs) and return its one `error: ...` line, after checking the exit status 2."""
    with pytest.raises(SystemExit) as exit_info:
        cli.run(lambda: SCRIPTS[script](list(argv)))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("script, flags, message", [
    ("train", ["--learning_rate", "-0.1"], "--learning_rate: -0.1 is not a number >= 0"),
    ("train", ["--learning_rate", "nan"], "--learning_rate: nan is not a number >= 0"),
    ("train", ["--weight_decay", "-1"], "--weight_decay: -1 is not a number >= 0"),
    ("train", ["--momentum", "-0.5"], "--momentum: -0.5 is not in [0, 1)"),
    ("train", ["--workers", "-1"], "--workers: -1 is not an integer >= 0"),
    ("train", ["--label_smooth", "2"], "--label_smooth: 2 is not in [0, 1)"),
    ("train", ["--mid_channels", "-4"], "--mid_channels: -4 is not a positive integer"),
    ("train", ["--drop_path_prob", "2"], "--drop_path_prob: 2 is not in [0, 1)"),
    ("train", ["--cutout", "--cutout_length", "0"], "--cutout_length: 0 is not a positive integer"),
    ("train", ["--valid_portion", "1"], "--valid_portion: 1 is not in [0, 1)"),
    ("train", ["--batch_size", "ten"], "--batch_size: 'ten' is not a positive integer"),
    ("train", ["--seed", "-3"], "--seed: -3 is not a seed"),
    ("train", ["--dist_timeout", "0"], "--dist_timeout: 0 is not a number > 0"),
    ("train", ["--epochs", "3", "--bogus"], "unrecognized arguments: --bogus"),
    ("train", ["--dataset", "digits", "--auxiliary", "--batch_size", "1"],
     "--auxiliary needs at least 2 images per batch in each process, not 1"),
    ("train_search", ["--max_steps", "0"], "--max_steps: 0 is not a positive integer"),
    ("train_search", ["--learning_rate", "-1"], "--learning_rate: -1 is not a number >= 0"),
    ("train_search", ["--arch_learning_rate", "-1"], "--arch_learning_rate: -1 is not a number >= 0"),
    ("train_search", ["--momentum", "1.5"], "--momentum: 1.5 is not in [0, 1)"),
    ("train_search", ["--weight_decay", "-0.0003"], "--weight_decay: -0.0003 is not a number >= 0"),
    ("train_search", ["--workers", "-2"], "--workers: -2 is not an integer >= 0"),
    ("train_search", ["--train_portion", "1"], "--train_portion: 1 is not strictly between 0 and 1"),
    ("train_search", ["--cutout", "--cutout_length", "0"], "--cutout_length: 0 is not a positive integer"),
    ("train_search", ["--mid_channels", "-4"], "--mid_channels: -4 is not a positive integer"),
    ("evaluate_model", ["--model_path", "x.pt", "--batch_size", "0"], "--batch_size: 0 is not a positive integer"),
    ("evaluate_model", ["--model_path", "x.pt", "--workers", "-1"], "--workers: -1 is not an integer >= 0"),
])
def test_a_bad_flag_is_refused_while_parsing(capsys, script, flags, message):
    assert message in one_sentence(capsys, script, *flags)


@pytest.mark.parametrize("script, flags, message", [
    ("cnn/train.py", ["--drop_path_prob", "2"], "--drop_path_prob: 2 is not in [0, 1) (see train.py --help)"),
    ("cnn/train_search.py", ["--max_steps", "0"], "--max_steps: 0 is not a positive integer"),
    ("cnn/evaluate_model.py", ["--model_path", "x.pt", "--init_channels", "0"], "--init_channels: 0 is not"),
])
def test_a_bad_flag_is_one_sentence_from_the_command_line(script, flags, message):
    assert_one_sentence_error(run_script(script, *flags), message)


COMMAND_LINE_SCRIPTS = sorted(str(path.relative_to(REPO)) for folder in ("cnn", "rnn")
                              for path in (REPO / folder).glob("*.py") if "cli.run(main)" in path.read_text())


def test_every_script_is_found():
    assert len(COMMAND_LINE_SCRIPTS) >= 13 and "cnn/summarize_results.py" in COMMAND_LINE_SCRIPTS


@pytest.mark.parametrize("script", COMMAND_LINE_SCRIPTS)
def test_every_script_refuses_an_unknown_flag_in_one_sentence(script):
    """Every script parses with cli.ArgumentParser: one sentence that points to --help, no usage dump (a script
    with required arguments names those first)."""
    assert_one_sentence_error(run_script(script, "--no_such_flag"), f"(see {script.split('/')[1]} --help)")


@pytest.mark.parametrize("flags, message", [
    (["--device", "cpu"], "--cuda_graphs captures CUDA kernels: it needs a CUDA device, not cpu"),
    (["--method", "gdas"], "--cuda_graphs is built for --method darts (first or second order, cells, without "
                           "--compile) only so far"),
    (["--unrolled", "--compile"], "--cuda_graphs is built for --method darts"),
    (["--method", "darts", "--multi_channel"], "--cuda_graphs is built for --method darts"),
])
def test_cuda_graphs_are_refused_where_they_cannot_run(capsys, flags, message):
    assert message in one_sentence(capsys, "train_search", "--dataset", "digits", "--cuda_graphs", *flags)


def test_a_split_that_leaves_a_part_empty_is_refused_with_the_sizes(capsys):
    message = one_sentence(capsys, "train", "--dataset", "digits", "--valid_portion", "0.9999")
    assert "--valid_portion 0.9999 leaves a part of the 1437 training examples empty: 0 to train on, 1437 held out" \
        in message
    message = one_sentence(capsys, "train_search", "--dataset", "digits", "--train_portion", "0.0001")
    assert "--train_portion 0.0001 leaves a part of the 1437 training examples empty: 0 train" in message


def test_an_unreadable_image_is_skipped_with_a_warning_naming_it(tmp_path):
    make_imagefolder(tmp_path, classes=2, per_class=2, size=32)
    broken = tmp_path / "train" / "n00000000" / "train_0_1.png"
    broken.write_bytes(broken.read_bytes()[:60])            # a truncated PNG
    (tmp_path / "train" / "n00000001" / "train_1_0.png").write_bytes(b"not an image at all")
    train_set, _ = build_datasets("imagenet", tmp_path)
    train_set.transform = None
    with pytest.warns(UserWarning) as warned:
        image, label = train_set[1]                          # the next readable image takes its place
    assert [str(w.message).split(" (")[0] for w in warned] == [
        f"skipping unreadable image {broken}", f"skipping unreadable image {broken.parent.parent / 'n00000001'}"
                                               f"/train_1_0.png"]
    assert label == 1 and np.array_equal(np.asarray(image), np.asarray(train_set[3][0]))


@pytest.fixture
def offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network disabled by the test")
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_a_missing_cifar_batch_is_named(tmp_path, offline):
    make_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="incomplete: data_batch_3 missing"):
        build_datasets("cifar10", tmp_path)


def test_a_missing_data_folder_is_not_created(tmp_path, offline):
    missing = tmp_path / "nowhere" / "data"
    with pytest.raises(DataError, match="download failed"):
        build_datasets("cifar10", missing)
    assert not (tmp_path / "nowhere").exists()

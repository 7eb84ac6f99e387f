"""DARTS's published whole-module checkpoint (PyTorch 0.3 legacy format) converted without running it."""
from pathlib import Path

import pytest
import torch

from checkpoint import CheckpointError
from genotypes import load_recurrent_genotype
from legacy_pickle import find_attribute, module_tensors, read_legacy_module
from recurrent_model import Dropouts, LanguageModelSpec
from scripts import assert_one_sentence_error, run_script


def write_legacy(folder: Path, *extra: str) -> Path:
    """tests/legacy_darts_writer.py in a child process: it stands in modules named model, utils and genotypes."""
    folder.mkdir(parents=True, exist_ok=True)
    done = run_script("tests/legacy_darts_writer.py", str(folder), *extra, timeout=120)
    assert done.returncode == 0, done.stderr
    return folder / "ptb_model.pt"


@pytest.fixture(scope="module")
def legacy_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("legacy")
    write_legacy(folder)
    return folder


def test_the_legacy_reader_finds_the_tensors_and_genotype_of_a_pickled_darts_model(legacy_dir):
    path = legacy_dir / "ptb_model.pt"
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(path, weights_only=True)
    root = read_legacy_module(path)
    assert root.pickled_name == "model.RNNModel"
    tensors, reference = module_tensors(root), torch.load(legacy_dir / "reference.pt", weights_only=True)
    assert list(tensors) == list(reference)
    for key in reference:
        assert torch.equal(tensors[key], reference[key]), key
    genotype = find_attribute(root, "genotype")
    assert genotype.pickled_name == "genotypes.Genotype" and genotype.args[1] == range(1, 9)
    model = LanguageModelSpec.from_genotype(load_recurrent_genotype("DARTS_V2"), 30, 6, 6, 6, Dropouts()).build()
    model.load_state_dict(tensors, strict=True)


def test_convert_writes_a_state_dict_and_genotype_that_evaluate_model_reads(legacy_dir, tmp_path):
    done = run_script("rnn/convert_darts_model.py", str(legacy_dir / "ptb_model.pt"), "--out",
                      str(tmp_path / "ptb_model_state_dict.pt"))
    assert done.returncode == 0, done.stderr
    assert "(the cell of DARTS_V2)" in done.stdout and "12 tensors" in done.stdout
    converted = torch.load(tmp_path / "ptb_model_state_dict.pt", weights_only=True)
    reference = torch.load(legacy_dir / "reference.pt", weights_only=True)
    assert all(torch.equal(converted[k], reference[k]) for k in reference) and list(converted) == list(reference)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    words = [f"w{i}" for i in range(29)]                  # 29 words and <eos>: the 30 rows of the model
    for name, text in (("train", " ".join(words[:20])), ("valid", " ".join(words[20:])), ("test", "w1 w2 w3 w28")):
        (corpus / f"{name}.txt").write_text(text + "\n")
    done = run_script("rnn/evaluate_model.py", "--model_path", str(tmp_path / "ptb_model_state_dict.pt"),
                      "--arch", str(tmp_path / "ptb_model_state_dict.genotype.txt"), "--data", str(corpus))
    assert done.returncode == 0, done.stderr
    assert "8 steps, 6 units, 30 words" in done.stdout and "| test ppl" in done.stdout


def test_a_pickle_that_asks_to_run_code_runs_nothing(tmp_path):
    path = write_legacy(tmp_path / "evil", "evil")
    assert_one_sentence_error(run_script("rnn/convert_darts_model.py", str(path)), "holds a system, not a pickled module")
    assert not (tmp_path / "evil" / "ran").exists()
    torch.save({"model": {}}, tmp_path / "zip.pt")
    with pytest.raises(CheckpointError, match="is not a legacy pickled module this reader understands"):
        read_legacy_module(tmp_path / "zip.pt")

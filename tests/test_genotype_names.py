"""Two searches that write the same genotype name never silently overwrite each other."""
import pytest

import run_dir
import train_search
from scripts import run_script
from test_bad_input import one_sentence

SEARCH = ["--dataset", "digits", "--init_channels", "4", "--layers", "3", "--steps", "2", "--multiplier", "2",
          "--batch_size", "16", "--max_steps", "2", "--report_freq", "0", "--workers", "0"]


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    monkeypatch.setenv("DARTS_LOGS_DIR", str(tmp_path / "logs"))
    (tmp_path / "genotypes").mkdir()
    return tmp_path


def search(sandbox, *flags: str):
    return run_script("tests/patched_script.py", "--genotypes_to", str(sandbox / "genotypes"), "--",
                      "cnn/train_search.py", *SEARCH, *flags)


def runs(sandbox):
    return sorted((sandbox / "logs" / "search").iterdir())


def test_a_name_another_search_wrote_is_refused_and_one_written_meanwhile_is_kept(sandbox, monkeypatch, capsys):
    genotypes = sandbox / "genotypes"
    # run A starts with the name and stops after an epoch; run B takes the name and finishes
    assert search(sandbox, "--epochs", "2", "--stop_epoch", "1", "--genotype_name", "shared").returncode == 0
    first = runs(sandbox)[0]
    assert search(sandbox, "--epochs", "1", "--genotype_name", "shared").returncode == 0
    second = next(run for run in runs(sandbox) if run != first)
    written_by_b = (genotypes / "shared.txt").read_text()
    assert f"run: {second.name};" in written_by_b

    # a third search asking for the name is refused before it starts (in this process: nothing runs)
    monkeypatch.setattr(train_search, "GENOTYPE_OUTPUT_DIR", genotypes)
    monkeypatch.setattr(run_dir, "LOGS_DIR", sandbox / "logs")
    refused = one_sentence(capsys, "train_search", *SEARCH, "--epochs", "1", "--genotype_name", "shared")
    assert f"shared.txt exists, written by the search run {second.name}; choose another --genotype_name" in refused
    assert len(runs(sandbox)) == 2

    # run A, resumed, finds the name taken meanwhile: it writes shared_2 and says so
    done = search(sandbox, "--resume", str(first))
    assert done.returncode == 0, done.stderr
    assert (genotypes / "shared.txt").read_text() == written_by_b
    assert f"run: {first.name};" in (genotypes / "shared_2.txt").read_text()
    assert "shared.txt was written by " + second.name in done.stdout
    assert "python cnn/train.py --arch shared_2 " in done.stdout

    # deriving A's genotype again rewrites its own file, not a third one
    again = search(sandbox, "--resume", str(first))
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in genotypes.iterdir()) == ["shared.txt", "shared_2.txt"]

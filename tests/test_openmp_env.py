"""core/openmp_env.py: the OpenMP spin count our scripts set before torch loads, and only then."""
import os
import subprocess
import sys

import pytest

import openmp_env
from scripts import REPO, environment_without_openmp_choices

# Runs a script with --help and prints GOMP_SPINCOUNT as the environment held it when torch was first imported.
_IMPORT_WATCH = """
import importlib.abc, os, runpy, sys
seen = []
class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not seen:
            seen.append(os.environ.get("GOMP_SPINCOUNT"))
        return None
sys.meta_path.insert(0, Watch())
script = sys.argv[1]
sys.argv = [script, "--help"]
sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit:
    pass
print("SPIN", seen)
"""


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(openmp_env, "_SET_HERE", [])
    return monkeypatch


def test_sets_the_spin_count_and_leaves_it_out_for_other_programs(clean_env):
    openmp_env.prefer_short_spin()
    assert os.environ["GOMP_SPINCOUNT"] == openmp_env.SPIN_COUNT == "10000"
    env = openmp_env.without_our_defaults({**os.environ, "OMP_NUM_THREADS": "2"})
    assert "GOMP_SPINCOUNT" not in env and env["OMP_NUM_THREADS"] == "2"


@pytest.mark.parametrize("variable, value", [("GOMP_SPINCOUNT", "300000"), ("OMP_WAIT_POLICY", "PASSIVE")])
def test_a_users_own_openmp_choice_is_kept(clean_env, variable, value):
    clean_env.setenv(variable, value)
    openmp_env.prefer_short_spin()
    assert os.environ[variable] == value
    assert os.environ.get("GOMP_SPINCOUNT") == (value if variable == "GOMP_SPINCOUNT" else None)
    assert openmp_env.without_our_defaults(os.environ)[variable] == value


@pytest.mark.parametrize("script", ["cnn/train_search.py", "cnn/train.py", "rnn/train.py"])
def test_scripts_set_it_before_torch_loads(script):
    done = subprocess.run([sys.executable, "-c", _IMPORT_WATCH, script], cwd=REPO,
                          env=environment_without_openmp_choices(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "SPIN ['10000']" in done.stdout, done.stdout[-500:] + done.stderr[-2000:]

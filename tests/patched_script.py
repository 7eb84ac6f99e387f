"""Run one of the project's scripts with one fault injected or one output moved, for the tests that
need what a plain command line cannot ask for:

    python tests/patched_script.py [--genotypes_to DIR] [--file_size_limit BYTES] [--rank_sleeps R] [--hide_package NAME]
                                   -- cnn/SCRIPT.py FLAGS

--genotypes_to DIR       train_search.py (cnn/ or rnn/) writes its genotype files to DIR instead of genotypes/
--file_size_limit BYTES  no file this process writes may grow past BYTES (as on a full disk: writes fail)
--rank_sleeps R          under torchrun, rank R sleeps 120 s before each training epoch (a hung rank)
--hide_package NAME      importing NAME fails as it does when the package is not installed

The script runs in this process, through cli.run, exactly as `python cnn/SCRIPT.py FLAGS` would.
"""
import importlib
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cnn"))

import core_path  # noqa: E402,F401

import cli  # noqa: E402


def sleeping(epoch_function, rank: int):
    def epoch(*args, **kwargs):
        if int(os.environ.get("RANK", "0")) == rank:
            time.sleep(120)
        return epoch_function(*args, **kwargs)
    return epoch


def main() -> None:
    split = sys.argv.index("--")
    options = dict(zip(sys.argv[1:split:2], sys.argv[2:split:2]))
    script, flags = sys.argv[split + 1], sys.argv[split + 2:]
    if "--hide_package" in options:
        sys.modules[options["--hide_package"]] = None       # how Python reports an absent package: ImportError
    sys.path.insert(0, str(Path(script).resolve().parent))      # cnn/ or rnn/: the script's own modules first
    module = importlib.import_module(Path(script).stem)
    if "--genotypes_to" in options:
        module.GENOTYPE_OUTPUT_DIR = Path(options["--genotypes_to"])
    if "--file_size_limit" in options:
        limit = int(options["--file_size_limit"])
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    if "--rank_sleeps" in options:
        module.train_epoch = sleeping(module.train_epoch, int(options["--rank_sleeps"]))
    sys.argv = [script, *flags]
    cli.run(module.main)


if __name__ == "__main__":
    main()

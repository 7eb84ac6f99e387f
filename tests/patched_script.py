"""Run one of the project's scripts with one output moved, for tests that must not write into the
repository:

    python tests/patched_script.py --genotypes_to DIR -- cnn/train_search.py FLAGS

--genotypes_to DIR   train_search.py writes its genotype files to DIR instead of genotypes/

The script runs in this process, through cli.run, as `python cnn/SCRIPT.py FLAGS` would.
"""
import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cnn"))

import cli  # noqa: E402


def main() -> None:
    split = sys.argv.index("--")
    options = dict(zip(sys.argv[1:split:2], sys.argv[2:split:2]))
    script, flags = sys.argv[split + 1], sys.argv[split + 2:]
    module = importlib.import_module(Path(script).stem)
    if "--genotypes_to" in options:
        module.GENOTYPE_OUTPUT_DIR = Path(options["--genotypes_to"])
    sys.argv = [script, *flags]
    cli.run(module.main)


if __name__ == "__main__":
    main()

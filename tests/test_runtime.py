"""Process-wide runtime settings (runtime.tune_runtime), each checked in a process of its own."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Page faults of filling a 64 MB tensor (above the 32 MB up to which glibc raises its threshold for
# mapping a block afresh) three times, after ten times: before and after keep_freed_memory(). After ten,
# because a freed block that a small allocation lies above is too small for the next aligned one: the
# heap grows by a few blocks before they merge (2-5 here), then it reuses them.
_REFAULTS = """
import json, resource, sys
sys.path.insert(0, "core")
import torch
from runtime import keep_freed_memory

def refaults():
    for _ in range(10):
        torch.empty(16 << 20).fill_(1.0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        torch.empty(16 << 20).fill_(1.0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

default = refaults()
kept = keep_freed_memory()
print(json.dumps({"kept": kept, "default": default, "after": refaults()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_cpu_step_reuses_the_memory_the_last_one_freed():
    done = subprocess.run([sys.executable, "-c", _REFAULTS], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    faults = json.loads(done.stdout.strip().splitlines()[-1])
    assert faults["kept"]
    assert faults["default"] > 45_000      # 3 x 64 MB of 4 kB pages, faulted in again
    assert faults["after"] < 1_000

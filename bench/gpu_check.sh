#!/usr/bin/env bash
# The CUDA checks of the training path in one go, on a lent GPU machine (about 10 minutes on one
# H100/H200), with no data download (random tensors, tiny CIFAR files written by the tests):
#
#     bash bench/gpu_check.sh [OUT.json]          # default OUT: gpu_check.json
#
# 1. pytest -m cuda (tests/test_cuda.py): AMP bf16 and fp16 steps against fp32, compiled against eager,
#    --data_on_device batches on the GPU against the CPU's;
# 2. bench/train_speed.py on CUDA (DARTS_V2, C=36, 20 cells, auxiliary head, batch 96, DARTS's
#    training batch): contiguous and channels_last in fp32, channels_last with AMP, and with AMP and
#    --compile; with ORIGINAL=<the original DARTS cnn/ folder> in the environment, the original code too.
#
# OUT holds one JSON object: the test counts and every bench report. Without CUDA the script says so,
# writes {"cuda": false, ...} and exits 0. A part that fails or runs out of time is recorded as such
# and the others still run; the exit status is 1 if any part failed.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu_check.json}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if ! python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: CUDA is absent on this machine; the CUDA checks are skipped"
    echo '{"cuda": false, "skipped": "CUDA is absent"}' > "$out"
    exit 0
fi

status=0
part() {   # part NAME SECONDS COMMAND...: run COMMAND, its stdout to $work/NAME.out, its status to $work/NAME.rc
    local name=$1 seconds=$2
    shift 2
    echo "gpu_check: $name" >&2
    timeout "$seconds" "$@" > "$work/$name.out" 2> "$work/$name.err"
    local rc=$?
    echo "$rc" > "$work/$name.rc"
    if [ "$rc" -ne 0 ]; then status=1; tail -n 5 "$work/$name.err" >&2; fi
}

part pytest 240 python -m pytest -q -m cuda tests/test_cuda.py --junitxml "$work/pytest.xml"
bench=(python bench/train_speed.py --device cuda --batch_size 96 --rounds 1 --iterations 20 --warmup 3
       ${ORIGINAL:+--original "$ORIGINAL"})
part train_fp32_contiguous 90 "${bench[@]}" --memory_format contiguous
part train_fp32_channels_last 90 "${bench[@]}" --memory_format channels_last
part train_amp_channels_last 90 "${bench[@]}" --memory_format channels_last --amp
part train_amp_compiled 360 "${bench[@]}" --memory_format channels_last --amp --compile

python - "$work" "$out" <<'PY'
import json, sys
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

work, out = Path(sys.argv[1]), Path(sys.argv[2])
report = {"cuda": True, "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
          "cuda_version": torch.version.cuda, "bf16": torch.cuda.is_bf16_supported()}
for rc in sorted(work.glob("*.rc")):
    name, status = rc.stem, int(rc.read_text())
    entry = {"exit_status": status, "timed_out": status == 124}
    if name == "pytest" and (work / "pytest.xml").is_file():
        suite = ET.parse(work / "pytest.xml").getroot().find("testsuite")
        entry.update({k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")})
    elif status == 0:
        entry["report"] = json.loads((work / f"{name}.out").read_text())
    if status != 0:
        entry["stderr_tail"] = (work / f"{name}.err").read_text().splitlines()[-5:]
    report[name] = entry
out.write_text(json.dumps(report, indent=2) + "\n")
print(f"gpu_check: wrote {out}")
PY
exit $status

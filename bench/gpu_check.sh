#!/usr/bin/env bash
# The CUDA checks of the training and search paths in one go, on a lent GPU machine, with no data download
# (random tensors, tiny CIFAR files written by the tests), within one time budget: 480 s by default (the
# issue asks for at most 8 minutes on one H100/H200), GPU_CHECK_SECONDS to change it:
#
#     bash bench/gpu_check.sh [OUT.json]          # default OUT: gpu_check.json
#
# `python` on PATH must be the one with torch (on this workplace's lent H200s, /opt/torch/.venv/bin's, whose
# torch 2.11 runs this code as it is; its image has no graphviz, which the bench and tests do not need).
#
# The parts, most wanted first; each has its own time limit, cut to what is left of the budget, and a part
# that would get under 20 s is not started (recorded as "not_run"):
# 1. bench/search_speed.py on CUDA at the DARTS search defaults (C=16, 8 cells, batch 64, 32 px): DARTS first
#    and second order eager, in fp32 and then with AMP (bf16 where supported); each report holds images/s,
#    peak memory and the projected wall time of a 50-epoch CIFAR-10 search (391 iterations of 64 per
#    epoch), gathered under "search" at the top of OUT; then the same replayed as CUDA graphs (--cuda_graphs,
#    never run on a GPU before this script's next run), fp32 here and bf16 after the tests;
# 2. pytest -m cuda (tests/test_cuda.py): AMP bf16 and fp16 steps against fp32, compiled training steps and
#    search iterations against eager, CUDA-graph search iterations against eager, --data_on_device batches on
#    the GPU against the CPU's;
# 3. the search's first order in contiguous layout and with the plain modules instead of the lean path
#    (--plain_ops), between bench/train_speed.py's runs on CUDA (DARTS_V2, C=36, 20 cells, auxiliary head,
#    batch 96, DARTS's training batch): channels_last in fp32 and with AMP, contiguous in fp32; with
#    ORIGINAL=<the original DARTS cnn/ folder> in the environment, the original code too;
# 4. what compiles (minutes each, never measured on a GPU yet; their warm-up seconds are in the reports):
#    the search's first order with --compile in fp32, the training step with AMP and --compile, the
#    search's first order with AMP and --compile.
#
# OUT holds one JSON object: the test counts and every bench report. GPU_CHECK_LOGS=DIR keeps each part's
# stdout, stderr and exit status in DIR (by default they go with a temporary folder). Without CUDA the
# script says so, writes {"cuda": false, ...} and exits 0. A part that fails or runs out of time is recorded as such
# and the others still run; the exit status is 1 if any part failed or timed out.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu_check.json}
if [ -n "${GPU_CHECK_LOGS:-}" ]; then
    work=$GPU_CHECK_LOGS
    mkdir -p "$work"
else
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
fi

if ! python -c 'import torch' 2> /dev/null; then      # else the CUDA test below would say CUDA is absent
    echo "gpu_check: $(command -v python || echo python) cannot import torch: put the Python that has it first on PATH" >&2
    exit 1
fi
if ! python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: CUDA is absent on this machine; the CUDA checks (tests, training and search speed) are skipped"
    echo '{"cuda": false, "skipped": "CUDA is absent"}' > "$out"
    exit 0
fi

budget=${GPU_CHECK_SECONDS:-480}
deadline=$((SECONDS + budget))
status=0
part() {   # part NAME SECONDS COMMAND...: run COMMAND within SECONDS and the budget; stdout to $work/NAME.out
    local name=$1 seconds=$2
    shift 2
    local left=$((deadline - SECONDS))
    if [ "$left" -lt 20 ]; then
        echo "gpu_check: $name not run: the time budget of ${budget} s is spent" >&2
        echo "not_run" > "$work/$name.rc"
        return
    fi
    [ "$seconds" -gt "$left" ] && seconds=$left
    echo "gpu_check: $name (at most $seconds s)" >&2
    timeout "$seconds" "$@" > "$work/$name.out" 2> "$work/$name.err"
    local rc=$?
    echo "$rc" > "$work/$name.rc"
    if [ "$rc" -ne 0 ]; then status=1; tail -n 5 "$work/$name.err" >&2; fi
}

search=(python bench/search_speed.py --device cuda --batch_size 64 --layers 8 --init_channels 16 --iterations 5)
part search_fp32_eager 90 "${search[@]}" --warmup 2 --strategies darts_first_order darts_second_order
part search_fp32_cuda_graphs 120 "${search[@]}" --warmup 5 --strategies darts_first_order darts_second_order --cuda_graphs
part pytest 170 python -m pytest -q -m cuda tests/test_cuda.py --junitxml "$work/pytest.xml"
part search_bf16_eager 60 "${search[@]}" --warmup 2 --strategies darts_first_order darts_second_order --amp
part search_bf16_cuda_graphs 60 "${search[@]}" --warmup 5 --strategies darts_first_order darts_second_order --amp --cuda_graphs
part search_fp32_contiguous 40 "${search[@]}" --warmup 2 --strategies darts_first_order --memory_format contiguous
bench=(python bench/train_speed.py --device cuda --batch_size 96 --rounds 1 --iterations 10 --warmup 3
       ${ORIGINAL:+--original "$ORIGINAL"})
part train_fp32_channels_last 40 "${bench[@]}" --memory_format channels_last
part train_amp_channels_last 40 "${bench[@]}" --memory_format channels_last --amp
part search_fp32_plain_ops 40 "${search[@]}" --warmup 2 --strategies darts_first_order --plain_ops
part train_fp32_contiguous 40 "${bench[@]}" --memory_format contiguous
part search_fp32_compiled 300 "${search[@]}" --warmup 3 --strategies darts_first_order --compile
part train_amp_compiled 300 "${bench[@]}" --memory_format channels_last --amp --compile
part search_bf16_compiled 300 "${search[@]}" --warmup 3 --strategies darts_first_order --amp --compile

python - "$work" "$out" "$budget" <<'PY'
import json, sys
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

work, out = Path(sys.argv[1]), Path(sys.argv[2])
report = {"cuda": True, "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
          "cuda_version": torch.version.cuda, "bf16": torch.cuda.is_bf16_supported()}
report["budget_seconds"] = int(sys.argv[3])
for rc in sorted(work.glob("*.rc")):
    name, text = rc.stem, rc.read_text().strip()
    if text == "not_run":
        report[name] = {"not_run": "the time budget was spent"}
        continue
    status = int(text)
    entry = {"exit_status": status, "timed_out": status == 124}
    if name == "pytest" and (work / "pytest.xml").is_file():
        suite = ET.parse(work / "pytest.xml").getroot().find("testsuite")
        entry.update({k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")})
    elif status == 0:
        entry["report"] = json.loads((work / f"{name}.out").read_text())
    if status != 0:
        entry["stderr_tail"] = (work / f"{name}.err").read_text().splitlines()[-5:]
    report[name] = entry
report["search"] = {                     # per mode and variant: what the issue's goals are stated in
    name.removeprefix("search_"): {
        variant: {"images_per_s": result["ours"]["images_per_s"], "peak_memory_mb": result["ours"]["peak_memory_mb"],
                  "warmup_seconds": result["ours"]["runs"][0]["warmup_seconds"],
                  "kernels_per_step": result["ours"].get("kernels_per_step"),
                  "gpu_busy_fraction": result["ours"].get("gpu_busy_fraction"),
                  "projected_50_epoch_search_hours": entry["report"]["projected_search"][variant]["ours"]["hours"]}
        for variant, result in entry["report"]["results"].items() if "ours" in result}
    for name, entry in report.items() if name.startswith("search_") and "report" in entry}
out.write_text(json.dumps(report, indent=2) + "\n")
print(f"gpu_check: wrote {out}")
PY
exit $status

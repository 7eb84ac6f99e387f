"""A hung rank under torchrun: the others stop after --dist_timeout with one sentence naming it."""
from scripts import run_ranks


def test_a_silent_rank_is_named_after_the_timeout(tmp_path):
    # rank 0 hangs before its first epoch; rank 1 waits for it in the first gradient all-reduce
    ranks = run_ranks("tests/patched_script.py", "--rank_sleeps", "0", "--",
                      "cnn/train.py", "--dataset", "digits", "--device", "cpu", "--init_channels", "4", "--layers", "3",
                      "--batch_size", "64", "--epochs", "1", "--workers", "0", "--dist_timeout", "5",
                      env={"DARTS_LOGS_DIR": str(tmp_path / "logs")})
    stderr = "".join(done.stderr for done in ranks)
    ours = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert ranks[1].returncode == 2
    assert ours == ["error: rank 0 did not answer within --dist_timeout 5 s (stuck, or much slower than the others), "
                    "so the run stopped; find what held it up, or raise --dist_timeout"], stderr[-3000:]

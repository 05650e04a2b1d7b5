"""The benchmarks under ``bench/`` still run against the library (a renamed config key or
function would otherwise only show on the GPU machine): each in its smallest form, on CPU.
No timing is asserted."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import TINY_OVERRIDES

ROOT = Path(__file__).resolve().parents[1]


def bench(script: str, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def settings(*extra: str) -> list[str]:
    return [arg for over in (*TINY_OVERRIDES, *extra) for arg in ("--set", over)]


def test_train_step_bench_runs(store, tmp_path):
    summary = tmp_path / "summary.tsv"
    done = bench(
        "train_step.py", "--crops", str(store), "--steps", "1", "--summary", str(summary),
        *settings("train.batch_size=8"),
    )  # fmt: skip
    assert "data + augmentation:" in done.stdout and "% of a step" in done.stdout
    assert len(summary.read_text().splitlines()) == 1


def test_embed_rate_bench_runs(store, tmp_path):
    summary = tmp_path / "summary.tsv"
    bench("embed_rate.py", "--crops", str(store), "--summary", str(summary), *settings())
    assert summary.read_text().startswith("embed\t")


@pytest.mark.parametrize("config", ["bbbc021-gpu", "cellpainting-gpu"])
def test_peak_memory_bench_estimates_the_shipped_gpu_configs(config):
    done = bench("peak_memory.py", "--config", config, "--batch", "8")
    assert "peak memory" in done.stdout

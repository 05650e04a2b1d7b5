"""The test suite's own switch (tests/conftest.py): with CELLCLR_REQUIRE_DATA=1, as .ci/run sets
it, a test skipped because the real data are missing fails; without it, it is skipped with its
reason. Other skips stay skips."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TESTS = """
import pytest

@pytest.fixture
def data():
    pytest.skip("real crops not found at /nowhere (only present in CI and dev)")

def test_data_from_a_fixture(data):
    pass

def test_data_in_the_body():
    pytest.skip("a field not found at /nowhere (only present in CI and dev)")

def test_another_skip():
    pytest.skip("needs a CUDA GPU")
"""


def run_pytest(folder: Path, require: str | None) -> subprocess.CompletedProcess:
    (folder / "conftest.py").write_text(
        "from tests.conftest import pytest_runtest_makereport  # noqa: F401\n"
    )
    (folder / "test_data.py").write_text(TESTS)
    env = {k: v for k, v in os.environ.items() if k != "CELLCLR_REQUIRE_DATA"}
    env["PYTHONPATH"] = str(ROOT)
    if require is not None:
        env["CELLCLR_REQUIRE_DATA"] = require
    command = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", str(folder)]
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)


@pytest.mark.parametrize("require", [None, "0"])
def test_a_clone_without_the_data_skips_with_the_reason(tmp_path, require):
    done = run_pytest(tmp_path, require)
    assert done.returncode == 0, done.stdout
    assert "3 skipped" in done.stdout and "failed" not in done.stdout
    assert "real crops not found at /nowhere (only present in CI and dev)" in done.stdout


def test_ci_turns_missing_data_into_failures(tmp_path):
    done = run_pytest(tmp_path, "1")
    assert done.returncode == 1, done.stdout
    assert "1 failed, 1 skipped, 1 error" in done.stdout
    assert "ERROR test_data.py::test_data_from_a_fixture" in done.stdout
    assert "FAILED test_data.py::test_data_in_the_body" in done.stdout
    assert "SKIPPED [1] test_data.py:15: needs a CUDA GPU" in done.stdout
    # the reason follows each of the two in its section (the short summary repeats it or not,
    # depending on the terminal width and whether pytest sees a CI)
    details = done.stdout.split("short test summary info")[0]
    assert details.count("CELLCLR_REQUIRE_DATA=1 (.ci/run): the real data must be there") == 2


def test_ci_sets_the_switch_and_runs_make_test():
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    commands = [line for line in lines if line and not line.startswith("#")]
    assert commands[-2:] == ["export CELLCLR_REQUIRE_DATA=1", "make test"]

"""Progress bars: shown on a terminal, switched off by ``cellclr.progress.enable(False)`` or
``CELLCLR_PROGRESS=0``, for every bar of the library."""

import ast
import contextlib
import io
import subprocess
import sys
from pathlib import Path

import pytest

import cellclr
from cellclr import progress
from cellclr.store.import_crops import import_crops

SRC = Path(cellclr.__file__).parent


class Terminal(io.StringIO):
    """Standard error as a terminal: tqdm draws its bars there (``disable=None``)."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def switch(monkeypatch) -> None:
    monkeypatch.setattr(progress, "_enabled", None)  # as the environment says; restored after
    monkeypatch.delenv(progress.ENV, raising=False)


def bars_of_an_import(crop_files, out: Path) -> str:
    """What ``import_crops`` (one bar, "import") draws on a terminal."""
    images, cells = crop_files
    with contextlib.redirect_stderr(Terminal()) as screen:
        import_crops(images, cells, out, ["DNA", "Tubulin", "Actin"])
    return screen.getvalue()


def test_bars_show_on_a_terminal_and_the_switch_hides_them(tmp_path, crop_files):
    assert "import: 100%" in bars_of_an_import(crop_files, tmp_path / "a")
    progress.enable(False)
    assert bars_of_an_import(crop_files, tmp_path / "b") == ""
    progress.enable(True)
    assert "import: 100%" in bars_of_an_import(crop_files, tmp_path / "c")


def test_the_environment_variable_hides_them_unless_python_says_otherwise(
    tmp_path, crop_files, monkeypatch
):
    monkeypatch.setenv("CELLCLR_PROGRESS", "0")
    assert not progress.enabled()
    assert bars_of_an_import(crop_files, tmp_path / "a") == ""
    progress.enable(True)  # a call from Python wins over the environment
    assert "import: 100%" in bars_of_an_import(crop_files, tmp_path / "b")
    progress.enable(None)  # back to the environment
    assert bars_of_an_import(crop_files, tmp_path / "c") == ""
    monkeypatch.setenv("CELLCLR_PROGRESS", "1")
    assert progress.enabled()


def test_a_bar_hidden_by_its_caller_stays_hidden():
    """``disable=True`` (e.g. all but the main process) wins; the switch only hides more."""
    for on, asked, hidden in [(True, None, False), (True, True, True), (False, None, True)]:
        progress.enable(on)
        with contextlib.redirect_stderr(Terminal()), progress.progress_bar(disable=asked) as bar:
            assert bool(bar.disable) is hidden


def test_every_bar_of_the_library_goes_through_the_switch():
    """No module but cellclr.progress makes a tqdm itself (crop, import, train, embed,
    baselines, verify, download all call progress_bar)."""
    direct = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "progress.py" and path.parent == SRC:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", None))
                if name in ("tqdm", "trange"):
                    direct.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not direct, direct
    users = {
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if "progress_bar" in path.read_text() and path.name != "progress.py"
    }
    assert users >= {
        "cropping/stage.py",
        "store/import_crops.py",
        "store/integrity.py",
        "learning/train.py",
        "learning/embed.py",
        "baselines/chunks.py",
        "datasets/download.py",
    }


def test_the_switch_is_at_hand_after_import_cellclr():
    code = (
        "import sys, cellclr; cellclr.progress.enable(False); "
        "said = [cellclr.progress.enabled(), 'torch' in sys.modules, 'tqdm' in sys.modules]; "
        "sys.stdout.write(repr(said))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "[False, False, False]"

"""The promise of docs/errors-and-recovery.md: one line naming the file and the problem,
exit code 2, and nothing lost: an output never overlaps its inputs, and --overwrite replaces
only a finished cellclr output, after the new one is complete."""

import hashlib
import os

import pytest

from cellclr.cli import main
from cellclr.outputs import OutputError, staged_dir
from tests.helpers import error_part
from tests.test_cli import sets


def digest(folder):
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return h.hexdigest()


def one_line_error(capsys) -> str:
    err = error_part(capsys.readouterr().err).strip()
    assert err.startswith("cellclr: error: ") and "\n" not in err, err
    return err


@pytest.fixture
def model(store, tmp_path):
    out = tmp_path / "model"
    assert main(["train", "--crops", str(store), "--out", str(out), *sets()]) == 0
    return out


def test_train_and_embed_refuse_an_output_that_overlaps_an_input(store, model, tmp_path, capsys):
    before = digest(store), digest(model)
    cases = [
        ["train", "--crops", str(store), "--out", str(store)],
        ["train", "--crops", str(store), "--out", str(store / "model")],
        ["train", "--crops", str(store), "--out", str(store.parent)],
        ["embed", "--model", str(model), "--crops", str(store), "--out", str(store)],
        ["embed", "--model", str(model), "--crops", str(store), "--out", str(model)],
        ["baseline", "--kind", "classic", "--crops", str(store), "--run", str(store)],
    ]
    for args in cases:
        capsys.readouterr()
        assert main([*args, *sets(), "--overwrite"]) == 2, args
        assert "overlaps the input" in one_line_error(capsys)
    assert (digest(store), digest(model)) == before


def test_report_never_overwrites_a_file_of_the_run(store, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["run", "--crops", str(store), "--out", str(run), *sets()]) == 0
    capsys.readouterr()  # the run's progress notes
    before = digest(run)
    target = run / "eval" / "metrics.json"
    assert main(["report", "--run", str(run), "--out", str(target), "--overwrite"]) == 2
    assert "overlaps the input" in one_line_error(capsys)
    assert digest(run) == before


def test_an_output_that_is_a_file_or_not_ours(store, tmp_path, capsys):
    afile = tmp_path / "notes.txt"
    afile.write_text("keep me")
    assert main(["train", "--crops", str(store), "--out", str(afile), *sets(), "--overwrite"]) == 2
    assert "exists and is a file" in one_line_error(capsys)
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "chapter1.tex").write_text("keep me too")
    assert main(["train", "--crops", str(store), "--out", str(folder), *sets(), "--overwrite"]) == 2
    assert "is not a cellclr output" in one_line_error(capsys)
    assert afile.read_text() == "keep me" and (folder / "chapter1.tex").is_file()


def test_overwrite_keeps_the_old_output_until_the_new_one_is_complete(tmp_path):
    out = tmp_path / "out"
    with staged_dir(out) as work:
        (work / "stage.json").write_text('{"fingerprint": "a"}')
    with pytest.raises(RuntimeError), staged_dir(out, overwrite=True) as work:
        (work / "half").write_text("x")
        raise RuntimeError("the new output fails half-way")
    assert (out / "stage.json").read_text() == '{"fingerprint": "a"}'
    assert not (tmp_path / "out.partial").exists()
    (tmp_path / "out.old").write_text("a stray file with the old swap name")
    with staged_dir(out, overwrite=True) as work:
        (work / "stage.json").write_text('{"fingerprint": "b"}')
    assert (out / "stage.json").read_text() == '{"fingerprint": "b"}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out.old"]
    with pytest.raises(OutputError, match="overlaps the input"), staged_dir(out, inputs=[out]):
        pass


def test_a_permission_error_is_one_line(store, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        args = ["train", "--crops", str(store), "--out", str(locked / "m"), *sets()]
        assert main(args) == 2
        assert "Permission denied" in one_line_error(capsys)
    finally:
        os.chmod(locked, 0o700)


def test_a_missing_input_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    missing = ["profile", "--embeddings", str(tmp_path / "nowhere"), "--out", str(tmp_path / "p")]
    assert main(missing) == 2
    assert "nowhere is not a finished cellclr output" in one_line_error(capsys)
    with pytest.raises(FileNotFoundError):
        main(["--debug", *missing])


def test_an_input_named_like_the_outputs_staging_folder_is_kept(tmp_path, capsys):
    source = tmp_path / "eval.partial"
    source.mkdir()
    (source / "stage.json").write_text('{"fingerprint": "x"}')
    args = ["evaluate", "--profiles", str(source), "--out", str(tmp_path / "eval")]
    assert main(args) == 2
    assert "overlaps the input" in one_line_error(capsys)
    assert (source / "stage.json").is_file()


def test_a_csv_with_a_row_longer_than_its_header_is_refused(tmp_path, capsys):
    table = tmp_path / "features.csv"
    table.write_text("Metadata_Plate,Metadata_Well,f1\nP1,A01,1.0,7\nP1,A02,2.0\n")
    assert main(["evaluate", "--features", str(table), "--out", str(tmp_path / "e")]) == 2
    assert "features.csv" in one_line_error(capsys) and not (tmp_path / "e").exists()

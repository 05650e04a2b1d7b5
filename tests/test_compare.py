"""``cellclr compare`` (cellclr.compare)."""

import pandas as pd

from cellclr.cli import main
from tests.helpers import sets


def test_compare_puts_methods_and_baselines_side_by_side(store, tmp_path, capsys):
    configs = []
    for method in ("simclr", "supcon"):
        path = tmp_path / f"{method}.toml"
        path.write_text(f'[train]\nmethod = "{method}"\nepochs = 1\n')
        configs.append(str(path))
    out = tmp_path / "cmp"
    args = ["compare", "--configs", *configs, "--crops", str(store), "--out", str(out), *sets()]
    assert main([*args, "--set", "train.epochs=1"]) == 0
    printed = capsys.readouterr().out
    assert "| supcon (weakly supervised) | none |" in printed
    results = pd.read_parquet(out / "results.parquet")
    assert set(results["representation"]) == {"simclr", "supcon", "classic", "random"}
    assert set(results.loc[results["representation"] == "supcon", "supervision"]) == {
        "weak: treatment labels"
    }
    page = (out / "report.html").read_text()
    assert (
        "SupCon, weakly supervised (treatment labels)" in page and "simclr (this run)" not in page
    )
    assert page.count("<h3>") >= 2  # a training section per method


def test_a_baseline_joins_a_compare_folder_without_crops(store, tmp_path, capsys):
    config = tmp_path / "simclr.toml"
    config.write_text("[train]\nepochs = 1\n")
    out = tmp_path / "cmp"
    args = ["compare", "--configs", str(config), "--crops", str(store), "--out", str(out)]
    assert main([*args, *sets()]) == 0
    capsys.readouterr()
    # as docs/results.md adds CellProfiler's measurements (here the cheaper classic features,
    # made again after moving compare's away)
    (out / "baselines" / "classic").rename(tmp_path / "classic-before")
    assert main(["baseline", "--kind", "classic", "--out", str(out), *sets()]) == 0
    assert (out / "baselines" / "classic" / "eval" / "metrics.json").is_file()

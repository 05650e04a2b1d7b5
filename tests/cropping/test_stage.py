"""The raw-image route: image table -> illumination -> nuclei -> crops -> crop store."""

import errno
import zlib

import numpy as np
import pandas as pd
import pytest
import tifffile

from cellclr.cli import main
from cellclr.cropping.stage import CropError, crop_sites
from cellclr.datasets.bbbc021 import bbbc021_image_table
from cellclr.store import CropStore
from cellclr.store.format import plate_file_stem
from cellclr.tables.image_table import ImageTableError, read_image_table
from tests.helpers import SHARED, tiny_config

SIZE = 160
# nucleus centres (x, y); the last two touch (centres 17 px apart, radius 10)
CENTRES = [(30.0, 30.0), (100.0, 40.0), (50.0, 110.0), (110.0, 110.0), (127.0, 110.0)]
RADIUS = 10


def site_centres(plate, well, site):
    """CENTRES moved by an offset of its own for every site (a plate's fields differ)."""
    rng = np.random.default_rng(zlib.crc32(f"{plate} {well} {site}".encode()))
    return [
        (x + dx, y + dy)
        for (x, y), (dx, dy) in zip(CENTRES, [rng.uniform(-12, 12, 2)] * len(CENTRES), strict=True)
    ]


def render_site(rng, centres):
    """DNA: bright discs on a vignetted background; the other channels: a larger soft halo."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(float)
    vignette = 1.0 - 0.4 * (((xx - SIZE / 2) ** 2 + (yy - SIZE / 2) ** 2) / (SIZE / 2) ** 2)
    dna = np.full((SIZE, SIZE), 200.0)
    other = np.full((SIZE, SIZE), 150.0)
    for x, y in centres:
        d2 = (xx - x) ** 2 + (yy - y) ** 2
        dna += 3000.0 * (d2 <= RADIUS**2)
        other += 1500.0 * np.exp(-d2 / (2 * (2 * RADIUS) ** 2))
    channels = [dna, other, other * 0.7]
    noisy = [rng.normal(c * vignette, 20.0) for c in channels]
    return [np.clip(c, 0, 65535).astype(np.uint16) for c in noisy]


def write_plates(folder, plates=("Week1_1", "Week2_2"), wells=("B02", "C03"), sites=(1, 2, 3)):
    rng = np.random.default_rng(0)
    rows = []
    for plate in plates:
        for w, well in enumerate(wells):
            for site in sites:
                row = {
                    "Metadata_Plate": plate,
                    "Metadata_Well": well,
                    "Metadata_Site": site,
                    "Metadata_Compound": ["DMSO", "taxol"][w],
                    "Metadata_Concentration": [0.0, 1.0][w],
                    "Metadata_MoA": ["DMSO", "MS"][w],
                }
                images = render_site(rng, site_centres(plate, well, site))
                for name, image in zip(("DNA", "Tubulin", "Actin"), images, strict=True):
                    rel = f"{plate}/{well}_s{site}_{name}.tif"
                    (folder / plate).mkdir(parents=True, exist_ok=True)
                    tifffile.imwrite(folder / rel, image)
                    row[name] = rel
                rows.append(row)
    table = pd.DataFrame(rows)
    table.to_csv(folder / "sites.csv", index=False)
    return folder / "sites.csv"


def crop_args(table, out, *extra):
    return [
        "crop",
        "--images-table",
        str(table),
        "--channels",
        "DNA,Tubulin,Actin",
        "--out",
        str(out),
        "--box",
        "32",
        "--workers",
        "1",
        "--set",
        "crop.nucleus_min_area=100",
        "--set",
        "crop.illumination_min_sites=4",
        *extra,
    ]


def test_positions_recovered_and_touching_nuclei_split(tmp_path):
    table = write_plates(tmp_path / "images")
    out = tmp_path / "crops"
    assert main(crop_args(table, out)) == 0
    store = CropStore(out)
    assert store.channels == ["DNA", "Tubulin", "Actin"] and store.crop_shape == (3, 32, 32)
    cells = store.cells
    for (plate, well, site), site_cells in cells.groupby(
        ["Metadata_Plate", "Metadata_Well", "Metadata_Site"]
    ):
        found = site_cells[["Nuclei_Location_Center_X", "Nuclei_Location_Center_Y"]].to_numpy()
        assert len(found) == len(CENTRES), (plate, well, site)  # the touching pair is two cells
        for centre in site_centres(plate, well, site):
            assert np.min(np.linalg.norm(found - np.array(centre), axis=1)) < 3.0
        assert (site_cells["Metadata_SiteCellCount"] == len(CENTRES)).all()
    assert set(cells["Metadata_Batch"]) == {"Week1", "Week2"}
    assert set(cells["Metadata_Compound"]) == {"DMSO", "taxol"}
    crops = store.read(np.arange(len(store)))
    assert crops.dtype == np.uint16
    # each crop is centred on its nucleus: the DNA centre is bright, the corners are not
    assert (crops[:, 0, 16, 16] > 4 * crops[:, 0, 0, 0]).all()
    sites = pd.read_parquet(out / "sites.parquet")
    assert len(sites) == 12 and (sites["cells"] == 5).all() and (sites["status"] == "ok").all()
    assert sites["illumination"].all()
    names = [f"{plate_file_stem(p)}.npz" for p in ("Week1_1", "Week2_2")]
    assert sorted(p.name for p in (out / "illum").iterdir()) == names


def test_boxes_off_the_edge_are_skipped_and_counted(tmp_path):
    table = write_plates(tmp_path / "images", plates=("Week1_1",), wells=("B02",), sites=(1,))
    summary = crop_sites(
        read_image_table(table, ["DNA", "Tubulin", "Actin"]),
        ["DNA", "Tubulin", "Actin"],
        tmp_path / "crops",
        tiny_config("crop.box=50", "crop.workers=1", "crop.nucleus_min_area=100"),
    )
    # with 50 px boxes only the nuclei at least 25 px from every edge fit (here all centres
    # are 3 px or more from that limit, beyond any detection error)
    centres = site_centres("Week1_1", "B02", 1)
    fits = [c for c in centres if 25 <= c[0] <= SIZE - 25 and 25 <= c[1] <= SIZE - 25]
    assert 0 < len(fits) < len(CENTRES)
    assert summary["cells"] == len(fits) and summary["off_edge"] == len(CENTRES) - len(fits)


def test_plates_separately_then_rerun_skips(tmp_path):
    table = write_plates(tmp_path / "images")
    out = tmp_path / "crops"
    assert main(crop_args(table, out, "--plates", "Week1_1")) == 0
    assert CropStore(out).cells["Metadata_Plate"].unique().tolist() == ["Week1_1"]
    week1 = out / "plates" / f"{plate_file_stem('Week1_1')}.npy"
    first = week1.stat().st_mtime_ns
    assert main(crop_args(table, out, "--workers", "2")) == 0  # the rest, in a process pool
    store = CropStore(out)
    assert sorted(store.cells["Metadata_Plate"].unique()) == ["Week1_1", "Week2_2"]
    assert week1.stat().st_mtime_ns == first
    assert main(crop_args(table, out, "--box", "40")) == 2  # other settings need --overwrite
    assert main(crop_args(table, out, "--box", "40", "--overwrite")) == 0
    assert CropStore(out).crop_shape == (3, 40, 40)


def test_nucleus_locations_from_csv(tmp_path):
    table = write_plates(tmp_path / "images", plates=("Week1_1",), wells=("B02",), sites=(1,))
    locations = tmp_path / "locations" / "Week1_1"
    locations.mkdir(parents=True)
    given = pd.DataFrame(
        {"Nuclei_Location_Center_X": [50.0, 80.0], "Nuclei_Location_Center_Y": [60.0, 70.0]}
    )
    given.to_csv(locations / "B02-1-Nuclei.csv", index=False)
    out = tmp_path / "crops"
    assert (
        main(crop_args(table, out, "--locations", str(tmp_path / "locations"), "--no-illumination"))
        == 0
    )
    store = CropStore(out)
    np.testing.assert_array_equal(store.cells["Nuclei_Location_Center_X"], [50.0, 80.0])
    image = tifffile.imread(tmp_path / "images" / "Week1_1" / "B02_s1_DNA.tif")
    np.testing.assert_array_equal(store.read(np.array([0]))[0, 0], image[44:76, 34:66])


def test_missing_file_named_or_skipped(tmp_path, capsys):
    table = write_plates(tmp_path / "images", plates=("Week1_1",))
    missing = tmp_path / "images" / "Week1_1" / "C03_s2_Actin.tif"
    missing.unlink()
    out = tmp_path / "crops"
    assert main(crop_args(table, out)) == 2
    assert str(missing) in capsys.readouterr().err
    assert not (out / "store.json").exists()
    assert main(crop_args(table, out, "--skip-incomplete")) == 0
    assert "skipped 1 incomplete sites: Week1_1 C03 s2" in capsys.readouterr().out
    sites = pd.read_parquet(out / "sites.parquet")
    assert sites["status"].str.startswith("skipped: missing").sum() == 1


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 3]), "unreadable TIFF"),
        (lambda p: p.write_bytes(b"not a tiff at all"), "unreadable TIFF"),
        (lambda p: tifffile.imwrite(p, np.zeros((50, 60), np.uint16)), "differ in shape"),
    ],
)
def test_bad_tiffs_are_named(tmp_path, capsys, damage, message):
    table = write_plates(tmp_path / "images", plates=("Week1_1",), wells=("B02",), sites=(1,))
    bad = tmp_path / "images" / "Week1_1" / "B02_s1_Tubulin.tif"
    damage(bad)
    assert main(crop_args(table, tmp_path / "crops", "--no-illumination")) == 2
    err = capsys.readouterr().err
    assert message in err and "B02_s1_Tubulin.tif" in err
    assert not list((tmp_path / "crops").rglob("*.tmp"))  # no half-written plate is left


def test_table_without_required_columns(tmp_path):
    table = write_plates(tmp_path / "images", plates=("Week1_1",), wells=("B02",), sites=(1,))
    df = pd.read_csv(table)
    df.drop(columns=["Metadata_Well"]).to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(ImageTableError, match="missing columns Metadata_Well"):
        read_image_table(tmp_path / "a.csv", ["DNA", "Tubulin", "Actin"])
    with pytest.raises(ImageTableError, match="Mito \\(a channel's image paths\\)"):
        read_image_table(table, ["DNA", "Mito"])
    # treatment columns are optional, but where a table names them every field needs one
    df.assign(Metadata_Compound="").to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(CropError, match="column Metadata_Compound is empty in 1 rows"):
        crop_sites(
            read_image_table(tmp_path / "b.csv", ["DNA"]), ["DNA"], tmp_path / "o", tiny_config()
        )


@pytest.mark.parametrize("value", ["inf", "-0.5"])
def test_an_image_table_with_an_infinite_or_negative_concentration(tmp_path, capsys, value):
    table = write_plates(tmp_path / "images", plates=("Week1_1",), sites=(1,))
    df = pd.read_csv(table).astype({"Metadata_Concentration": object})
    df.loc[1, "Metadata_Concentration"] = value
    df.to_csv(table, index=False)
    assert main(crop_args(table, tmp_path / "crops")) == 2
    err = capsys.readouterr().err
    assert (
        f"{table}: Metadata_Concentration must be a finite concentration >= 0, got "
        f"{float(value)!r} in row 1 (1 such rows)" in err
    )
    assert not (tmp_path / "crops").exists()


class FullDisk:
    """A file whose writes fail after ``room`` bytes, as on a full disk: OSError 28 with no
    file name."""

    def __init__(self, path, mode, room):
        self.file, self.room = open(path, mode), room  # noqa: SIM115 (closed by close())

    def write(self, data):
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)


def test_a_full_disk_while_cropping_names_the_file(tmp_path, capsys, monkeypatch):
    table = write_plates(tmp_path / "images", plates=("Week1_1",))
    monkeypatch.setattr(
        "cellclr.store.writer.open", lambda path, mode: FullDisk(path, mode, 5000), raising=False
    )
    out = tmp_path / "crops"
    assert main(crop_args(table, out, "--no-illumination")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    npy = tmp_path / "crops.partial" / "plates" / f".{plate_file_stem('Week1_1')}.npy.tmp"
    assert err == [f"cellclr: error: {npy}: No space left on device"]
    assert not npy.exists()  # no half-written plate is left


def test_bbbc021_metadata_as_published():
    if not (SHARED / "metadata" / "BBBC021_v1_image.csv").is_file():
        pytest.skip(f"BBBC021 metadata not found in {SHARED} (only present in CI and dev)")
    table = bbbc021_image_table(SHARED)
    assert len(table) == 13200 and table["Metadata_Plate"].nunique() == 55
    annotated = table[table["Metadata_MoA"].notna() & (table["Metadata_Compound"] != "DMSO")]
    treatments = annotated.groupby(["Metadata_Compound", "Metadata_Concentration"]).size()
    assert len(treatments) == 103
    assert annotated["Metadata_Compound"].nunique() == 38
    assert annotated["Metadata_MoA"].nunique() == 12
    assert (table.loc[table["Metadata_Compound"] == "DMSO", "Metadata_MoA"] == "DMSO").all()
    assert set(table["Metadata_Site"]) == {1, 2, 3, 4}
    assert table["Metadata_Batch"].str.fullmatch(r"Week\d+").all()


def test_real_fields_of_view(tmp_path, capsys):
    images = SHARED / "images" / "Week2" / "Week2_24381"
    if not images.is_dir():
        pytest.skip(f"real BBBC021 fields not found at {images} (only present in CI and dev)")
    table = bbbc021_image_table(SHARED)
    well = table[(table["Metadata_Plate"] == "Week2_24381") & (table["Metadata_Well"] == "B02")]
    well[well["Metadata_Site"].isin([1, 3])].to_csv(tmp_path / "sites.csv", index=False)
    args = [
        "crop",
        "--images-table",
        str(tmp_path / "sites.csv"),
        "--channels",
        "DNA,Tubulin,Actin",
        "--out",
        str(tmp_path / "crops"),
        "--workers",
        "1",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "missing image file" in err and "Week2_180607_B02_s3_w4" in err  # the actin file
    assert main([*args, "--skip-incomplete"]) == 0
    assert "Week2_24381 B02 s3" in capsys.readouterr().out
    store = CropStore(tmp_path / "crops")
    assert 10 <= len(store) <= 250  # MCF-7 nuclei in one 1280x1024 field
    assert store.crop_shape == (3, 96, 96) and store.read(np.arange(3)).dtype == np.uint16
    assert (store.cells["Metadata_Site"] == 1).all()


def test_more_wells_or_late_files_recrop_the_plate_keeping_what_was_there(tmp_path):
    table = write_plates(tmp_path / "images", plates=("Week1_1",))
    out = tmp_path / "crops"
    assert main(crop_args(table, out, "--wells", "B02")) == 0
    assert set(CropStore(out).cells["Metadata_Well"]) == {"B02"}
    assert main(crop_args(table, out, "--wells", "C03")) == 0  # B02 is kept
    assert set(CropStore(out).cells["Metadata_Well"]) == {"B02", "C03"}

    late = tmp_path / "images" / "Week1_1" / "C03_s2_Actin.tif"
    kept = late.read_bytes()
    late.unlink()
    assert main(crop_args(table, tmp_path / "c2", "--skip-incomplete")) == 0
    n_before = len(CropStore(tmp_path / "c2"))
    late.write_bytes(kept)  # the file arrives (a finished download)
    assert main(crop_args(table, tmp_path / "c2", "--skip-incomplete")) == 0
    assert len(CropStore(tmp_path / "c2")) == n_before + len(CENTRES)
    assert (pd.read_parquet(tmp_path / "c2" / "sites.parquet")["status"] == "ok").all()

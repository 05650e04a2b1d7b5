"""CellProfiler LoadData / CytoTable tables -> crop store: channels, paths, plate maps,
CellProfiler's illumination functions and nucleus tables, the nucleus channel, edge padding."""

import numpy as np
import pandas as pd
import pytest
import tifffile

from cellclr.cli import main
from cellclr.store import CropStore
from cellclr.tables.loaddata import LoadDataError, read_loaddata

SHAPE = (150, 200)  # rows x columns: not square, so a transposed function is told apart
NUCLEI = [(40.0, 50.0), (120.0, 60.0), (160.0, 100.0), (70.0, 110.0)]  # (x, y) in DNA
ER_BLOBS = [(100.0, 30.0), (30.0, 120.0)]  # bright spots of the ER channel, not nuclei
CHANNELS = {"Brightfield": 1, "ER": 2, "DNA": 5, "Mito": 4}  # Phenix channel numbers
BOX = 32


def render(seed: int) -> dict[str, np.ndarray]:
    """One field: DNA discs at NUCLEI, ER blobs at ER_BLOBS, flat brightfield, soft mito."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]].astype(float)
    dna, er = np.full(SHAPE, 300.0), np.full(SHAPE, 200.0)
    for x, y in NUCLEI:
        dna += 4000.0 * ((xx - x) ** 2 + (yy - y) ** 2 <= 9**2)
    for x, y in ER_BLOBS:
        er += 6000.0 * ((xx - x) ** 2 + (yy - y) ** 2 <= 10**2)
    mito = 250.0 + 0.5 * dna
    images = {"Brightfield": np.full(SHAPE, 9000.0), "ER": er, "DNA": dna, "Mito": mito}
    return {k: np.clip(rng.normal(v, 15.0), 0, 65535).astype(np.uint16) for k, v in images.items()}


def write_fields(root, plates=("P1",), wells=("A01", "B02"), sites=(1, 2)) -> list[dict]:
    """LZW TIFFs in Phenix naming under ``root/<plate>/``; one dict per field."""
    fields = []
    for p, plate in enumerate(plates):
        (root / plate).mkdir(parents=True, exist_ok=True)
        for w, well in enumerate(wells):
            for site in sites:
                row, col = ord(well[0]) - 64, int(well[1:])
                images = render(seed=100 * p + 10 * w + site)
                field = {"plate": plate, "well": well, "site": site, "folder": root / plate}
                for name, image in images.items():
                    file = f"r{row:02d}c{col:02d}f{site:02d}p01-ch{CHANNELS[name]}sk1fk1fl1.tiff"
                    tifffile.imwrite(root / plate / file, image, compression="lzw")
                    field[name] = file
                fields.append(field)
    return fields


def loaddata(fields, *, prefix="", orig="Orig", pathname=True, treatments=True) -> pd.DataFrame:
    """A LoadData-style table of ``fields``: one row per field."""
    rows = []
    for i, f in enumerate(fields):
        row = {
            f"{prefix}Metadata_Plate": f["plate"],
            f"{prefix}Metadata_Well": f["well"],
            f"{prefix}Metadata_Site": f["site"],
            "Metadata_ImageNumber": i + 1,
        }
        for name in CHANNELS:
            row[f"{prefix}FileName_{orig}{name}"] = f[name]
            if pathname:
                row[f"{prefix}PathName_{orig}{name}"] = str(f["folder"])
        if treatments:
            row["Metadata_Compound"] = ["DMSO", "taxol"][f["well"] != "A01"]
            row["Metadata_Concentration"] = [0.0, 1.0][f["well"] != "A01"]
        rows.append(row)
    return pd.DataFrame(rows)


def crop(table, out, *extra):
    args = ["crop", "--loaddata", str(table), "--out", str(out), "--box", str(BOX)]
    return main([*args, "--workers", "1", "--set", "crop.nucleus_min_area=100", *map(str, extra)])


def box_of(image, x, y):
    r, c = round(y) - BOX // 2, round(x) - BOX // 2
    return image[r : r + BOX, c : c + BOX]


def test_loaddata_csv_chooses_orders_and_reads_channels(tmp_path):
    fields = write_fields(tmp_path / "images")
    loaddata(fields).to_csv(tmp_path / "load_data.csv", index=False)
    out = tmp_path / "crops"
    assert crop(tmp_path / "load_data.csv", out, "--channels", "DNA,ER") == 0
    store = CropStore(out)
    assert store.channels == ["DNA", "ER"] and store.crop_shape == (2, BOX, BOX)
    cells = store.cells
    assert len(cells) == len(fields) * len(NUCLEI)
    assert set(cells["Metadata_Compound"]) == {"DMSO", "taxol"}
    assert set(cells["Metadata_ImageNumber"]) == {1, 2, 3, 4}
    crops = store.read(np.arange(len(store)))
    for i, cell in cells.iterrows():
        x, y = cell["Nuclei_Location_Center_X"], cell["Nuclei_Location_Center_Y"]
        assert min(np.hypot(x - nx, y - ny) for nx, ny in NUCLEI) < 1.5
        key = (cell["Metadata_Well"], cell["Metadata_Site"])
        field = next(f for f in fields if (f["well"], f["site"]) == key)
        for c, name in enumerate(["DNA", "ER"]):
            image = tifffile.imread(field["folder"] / field[name])
            np.testing.assert_array_equal(crops[i, c], box_of(image, x, y))


def test_per_object_parquet_without_pathname_needs_the_images_root(tmp_path):
    fields = write_fields(tmp_path / "images", wells=("A01",), sites=(1,))
    per_field = loaddata(fields, prefix="Image_", pathname=False)
    objects = pd.concat([per_field] * 3, ignore_index=True)  # one row per object
    objects["Metadata_Nuclei_Number_Object_Number"] = [1, 2, 3]
    objects.to_parquet(tmp_path / "cells.parquet")
    table, channels = read_loaddata(tmp_path / "cells.parquet", ["dna", "Mito"], tmp_path / "x")
    assert channels == ["DNA", "Mito"] and len(table) == 1
    assert "Metadata_Nuclei_Number_Object_Number" not in table  # it varies within the field
    assert table.loc[0, "Metadata_Plate"] == "P1" and table.loc[0, "Metadata_ImageNumber"] == 1
    assert table.loc[0, "DNA"] == str(tmp_path / "x" / fields[0]["DNA"])
    out = tmp_path / "crops"
    root = str(tmp_path / "images" / "P1")
    assert crop(tmp_path / "cells.parquet", out, "--images-root", root) == 0
    assert CropStore(out).channels == ["Brightfield", "ER", "DNA", "Mito"]  # all, table order


def test_a_foreign_pathname_is_refused_unless_the_images_root_replaces_it(tmp_path, capsys):
    fields = write_fields(tmp_path / "images", plates=("P1", "P2"), wells=("A01",), sites=(1,))
    table = loaddata(fields)
    for name in CHANNELS:  # paths of the machine that made the table
        table[f"PathName_Orig{name}"] = "/home/ubuntu/bucket/images/" + table["Metadata_Plate"]
    table.to_csv(tmp_path / "load_data.csv", index=False)
    out = tmp_path / "crops"
    assert crop(tmp_path / "load_data.csv", out) == 2
    err = capsys.readouterr().err
    assert "PathName_OrigBrightfield" in err and "/home/ubuntu/bucket/images/P1" in err
    assert "--images-root" in err
    # the plate folders are found under the root by the PathName's tail
    assert crop(tmp_path / "load_data.csv", out, "--images-root", str(tmp_path / "images")) == 0
    assert sorted(CropStore(out).cells["Metadata_Plate"].unique()) == ["P1", "P2"]


def test_bad_tables_and_files_are_named(tmp_path, capsys):
    fields = write_fields(tmp_path / "images", wells=("A01",), sites=(1, 2))
    table = tmp_path / "load_data.csv"
    loaddata(fields).to_csv(table, index=False)
    out = tmp_path / "crops"
    assert crop(table, out, "--channels", "DNA,RNA") == 2
    err = capsys.readouterr().err
    assert "no channel 'RNA'" in err and "FileName_OrigRNA" in err
    assert "Brightfield, ER, DNA, Mito" in err
    missing = fields[1]["folder"] / fields[1]["ER"]
    missing.rename(missing.with_suffix(".bak"))
    assert crop(table, out, "--channels", "DNA,ER") == 2
    assert f"missing image file: {missing}" in capsys.readouterr().err
    missing.with_suffix(".bak").rename(missing)
    missing.write_bytes(b"II*\x00 not really a tiff")
    assert crop(table, out, "--channels", "DNA,ER") == 2
    assert f"unreadable TIFF {missing}" in capsys.readouterr().err
    no_site = loaddata(fields).drop(columns=["Metadata_Site"])
    no_site.to_csv(tmp_path / "no_site.csv", index=False)
    with pytest.raises(LoadDataError, match=r"Metadata_Site \(or Image_Metadata_Site\)"):
        read_loaddata(tmp_path / "no_site.csv")


def test_a_table_without_treatments_crops_and_a_platemap_adds_them(tmp_path, capsys):
    fields = write_fields(tmp_path / "images")
    table = tmp_path / "load_data.csv"
    loaddata(fields, treatments=False).to_csv(table, index=False)
    out = tmp_path / "crops"
    assert crop(table, out, "--channels", "DNA") == 0
    cells = CropStore(out).cells
    assert len(cells) == len(fields) * len(NUCLEI)
    assert {"Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_ImageNumber"} <= set(
        cells
    )
    assert "Metadata_Compound" not in cells and "Metadata_Concentration" not in cells
    assert set(cells["Metadata_Batch"]) == {"P1"}
    capsys.readouterr()
    platemap = tmp_path / "platemap.csv"
    layout = pd.DataFrame(
        {
            "plate": ["P1", "P1"],
            "well_position": ["A1", "B2"],  # matches A01 and B02
            "broad_sample": ["BRD-K1", "BRD-K2"],
            "mmoles_per_liter": [0.01, 0.003],
            "solvent": ["DMSO", "DMSO"],
        }
    )
    layout.to_csv(platemap, index=False)
    with_map = tmp_path / "with_map"
    assert crop(table, with_map, "--channels", "DNA", "--platemap", str(platemap)) == 0
    cells = CropStore(with_map).cells
    by_well = cells.groupby("Metadata_Well")[["Metadata_Compound", "Metadata_Concentration"]]
    assert by_well.first().to_dict("index") == {
        "A01": {"Metadata_Compound": "BRD-K1", "Metadata_Concentration": 0.01},
        "B02": {"Metadata_Compound": "BRD-K2", "Metadata_Concentration": 0.003},
    }
    assert (cells["Metadata_broad_sample"] == cells["Metadata_Compound"]).all()
    assert set(cells["Metadata_solvent"]) == {"DMSO"}
    # a well listed twice with the same treatment is one well
    pd.concat([layout, layout.iloc[:1]]).to_csv(platemap, index=False)
    assert crop(table, tmp_path / "c1", "--channels", "DNA", "--platemap", str(platemap)) == 0


def write_illumination(folder, shape, transposed=False) -> dict[str, np.ndarray]:
    """CellProfiler-style functions ``P1_Illum<Ch>.npy``: smooth, around 1."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    functions = {}
    for k, name in enumerate(CHANNELS):
        f = 0.6 + 0.8 * (xx / shape[1]) * (1 + 0.1 * k) * (0.5 + yy / shape[0])
        functions[name] = f
        np.save(folder / f"P1_Illum{name}.npy", f.T if transposed else f)
    return functions


def test_cellprofiler_illumination_functions_are_divided_out(tmp_path, capsys):
    fields = write_fields(tmp_path / "images", wells=("A01",), sites=(1,))
    illum = tmp_path / "illum"
    illum.mkdir()
    functions = write_illumination(illum, SHAPE)
    table = loaddata(fields)
    for name in CHANNELS:
        table[f"FileName_Illum{name}"] = f"P1_Illum{name}.npy"
        table[f"PathName_Illum{name}"] = str(illum)
    table.to_csv(tmp_path / "load_data.csv", index=False)
    out = tmp_path / "crops"
    loc = tmp_path / "nuclei.csv"
    pd.DataFrame(
        {
            "ImageNumber": [1],
            "ObjectNumber": [7],
            "Location_Center_X": [70.0],
            "Location_Center_Y": [75.0],
        }
    ).to_csv(loc, index=False)
    assert (
        crop(tmp_path / "load_data.csv", out, "--channels", "Mito,DNA", "--locations", str(loc))
        == 0
    )
    store = CropStore(out)
    assert store.cells["Metadata_ObjectNumber"].tolist() == [7]  # matched by ImageNumber
    sites = pd.read_parquet(out / "sites.parquet")
    assert sites["illumination"].all() and not (out / "illum").exists()  # not estimated
    crop_ = store.read(np.array([0]))[0]
    for c, name in enumerate(["Mito", "DNA"]):
        raw = tifffile.imread(fields[0]["folder"] / fields[0][name]).astype(np.float32)
        expected = np.clip(np.rint(raw / functions[name].astype(np.float32)), 0, 65535)
        np.testing.assert_array_equal(crop_[c], box_of(expected, 70.0, 75.0))
    # a function named but absent, or of another orientation, is an error naming it
    (illum / "P1_IllumDNA.npy").unlink()
    assert crop(tmp_path / "load_data.csv", tmp_path / "c2", "--channels", "Mito,DNA") == 2
    err = capsys.readouterr().err
    assert f"illumination function not found: {illum / 'P1_IllumDNA.npy'}" in err
    write_illumination(illum, SHAPE, transposed=True)
    assert crop(tmp_path / "load_data.csv", tmp_path / "c3", "--channels", "Mito,DNA") == 2
    err = capsys.readouterr().err
    assert "P1_IllumMito.npy is 200 x 150" in err and "transposed" in err


def test_nuclei_are_found_in_the_nucleus_channel(tmp_path, capsys):
    fields = write_fields(tmp_path / "images", wells=("A01",), sites=(1,))
    loaddata(fields).to_csv(tmp_path / "load_data.csv", index=False)

    def centres(out, *extra):
        assert crop(tmp_path / "load_data.csv", out, "--channels", "ER,DNA", *extra) == 0
        cells = CropStore(out).cells
        return cells[["Nuclei_Location_Center_X", "Nuclei_Location_Center_Y"]].to_numpy()

    def near(found, truth):
        return all(np.min(np.hypot(*(found - t).T)) < 1.5 for t in truth)

    found = centres(tmp_path / "a")  # DNA, though it is not the first channel
    assert len(found) == len(NUCLEI) and near(found, NUCLEI)
    found = centres(tmp_path / "b", "--nucleus-channel", "ER", "--set", "crop.edge='pad'")
    assert len(found) == len(ER_BLOBS) and near(found, ER_BLOBS)
    assert crop(tmp_path / "load_data.csv", tmp_path / "c", "--nucleus-channel", "Hoechst") == 2
    assert "nucleus channel" in capsys.readouterr().err


def test_edge_pad_keeps_boxes_leaving_the_field_with_zeros(tmp_path, capsys):
    fields = write_fields(tmp_path / "images", wells=("A01",), sites=(1,))
    loaddata(fields).to_csv(tmp_path / "load_data.csv", index=False)
    given = [(5.0, 75.0), (100.0, 144.0), (100.0, 75.0)]  # 5 px from the left, bottom; inside
    loc = tmp_path / "nuclei.parquet"
    pd.DataFrame(
        {
            "Image_Metadata_Plate": "P1",
            "Image_Metadata_Well": "A01",
            "Image_Metadata_Site": 1,
            "Nuclei_Location_Center_X": [x for x, _ in given],
            "Nuclei_Location_Center_Y": [y for _, y in given],
        }
    ).to_parquet(loc)
    args = ["--channels", "DNA,Mito", "--locations", str(loc)]
    assert crop(tmp_path / "load_data.csv", tmp_path / "skip", *args) == 0
    assert "2 boxes off the image edge skipped" in capsys.readouterr().out
    assert len(CropStore(tmp_path / "skip")) == 1
    assert crop(tmp_path / "load_data.csv", tmp_path / "pad", *args, "--edge", "pad") == 0
    assert "2 boxes off the image edge padded" in capsys.readouterr().out
    store = CropStore(tmp_path / "pad")
    cells = store.cells.sort_values("Metadata_CropRow")
    # x = 5: columns -11..20 of the field, 11 of them outside; y = 144: rows 128..159, 10 out
    assert cells["Metadata_PaddedPixels"].tolist() == [11 * BOX, 10 * BOX, 0]
    crops = store.read(np.arange(3))
    dna = tifffile.imread(fields[0]["folder"] / fields[0]["DNA"])
    assert (crops[0, :, :, :11] == 0).all()
    np.testing.assert_array_equal(crops[0, 0, :, 11:], dna[59:91, 0:21])
    assert (crops[1, :, 22:, :] == 0).all()
    np.testing.assert_array_equal(crops[1, 0, :22, :], dna[128:150, 84:116])
    np.testing.assert_array_equal(crops[2, 0], dna[59:91, 84:116])
    assert (crops[2] > 0).all()


@pytest.mark.parametrize("name", ["ABSOLUTE", "../secret.txt", "sub/../../secret.txt"])
def test_a_file_name_outside_the_images_root_is_refused(tmp_path, capsys, name):
    fields = write_fields(tmp_path / "images", wells=("A01",), sites=(1,))
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:SECRET\n")
    name = str(secret) if name == "ABSOLUTE" else name
    table = loaddata(fields, pathname=False)
    table.loc[0, "FileName_OrigDNA"] = name
    table.to_csv(tmp_path / "load_data.csv", index=False)
    root = tmp_path / "images" / "P1"
    assert crop(tmp_path / "load_data.csv", tmp_path / "c", "--images-root", root) == 2
    err = capsys.readouterr().err
    assert f"FileName_OrigDNA names {name!r}" in err and f"outside --images-root {root}" in err
    assert "SECRET" not in err
    assert not (tmp_path / "c").exists()


def test_a_file_that_is_not_a_tiff_is_refused_without_echoing_it(tmp_path, capsys):
    fields = write_fields(tmp_path / "images", wells=("A01",), sites=(1,))
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:SECRET\n")
    table = loaddata(fields)
    table.loc[0, "FileName_OrigDNA"] = str(secret)  # no --images-root: the table's paths
    table.to_csv(tmp_path / "load_data.csv", index=False)
    assert crop(tmp_path / "load_data.csv", tmp_path / "c", "--no-illumination") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"cellclr: error: unreadable TIFF {secret}: not a TIFF file")
    assert "SECRET" not in err and "b'" not in err

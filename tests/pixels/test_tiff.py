"""Reading microscope TIFFs: compression, OME-TIFF, bit depths, field sizes, refusals."""

import numpy as np
import pytest
import tifffile

import cellclr.pixels.tiff as tiff
from cellclr.cli import main
from cellclr.pixels.tiff import ImageReadError, read_image
from cellclr.store import CropStore
from tests.cropping.test_stage import crop_args, one_site, rewrite


def counts(shape, high=65535, seed=0):
    return np.random.default_rng(seed).integers(0, high + 1, shape).astype(np.uint16)


@pytest.mark.parametrize("compression", [None, "lzw", "zlib", "zstd"])
def test_compressed_tiffs_read_exactly(tmp_path, compression):
    image = counts((128, 96))
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, image, compression=compression)
    np.testing.assert_array_equal(read_image(str(path)), image)


@pytest.mark.parametrize("shape", [(1080, 1080), (2160, 2160), (1024, 1280)])
def test_any_field_size(tmp_path, shape):
    image = counts(shape, seed=1)
    tifffile.imwrite(tmp_path / "a.tif", image, compression="lzw")
    out = read_image(str(tmp_path / "a.tif"))
    assert out.shape == shape and out.dtype == np.uint16
    np.testing.assert_array_equal(out, image)


def test_8_and_12_bit_counts_keep_their_values(tmp_path):
    eight = counts((40, 50), high=255).astype(np.uint8)
    twelve = counts((40, 50), high=4095)  # a 12-bit camera's counts in 16-bit words
    tifffile.imwrite(tmp_path / "8.tif", eight)
    tifffile.imwrite(tmp_path / "12.tif", twelve, compression="zlib")
    out8 = read_image(str(tmp_path / "8.tif"))
    assert out8.dtype == np.uint16 and out8.max() == eight.max()
    np.testing.assert_array_equal(out8, eight)
    np.testing.assert_array_equal(read_image(str(tmp_path / "12.tif")), twelve)


def test_ome_tiff_with_one_plane(tmp_path):
    image = counts((64, 80), seed=2)
    path = tmp_path / "a.ome.tif"
    tifffile.imwrite(path, image, ome=True, compression="zlib", metadata={"axes": "YX"})
    np.testing.assert_array_equal(read_image(str(path)), image)


@pytest.mark.parametrize(
    "write,message",
    [
        (
            lambda p: tifffile.imwrite(p, counts((3, 32, 32)), ome=True, metadata={"axes": "CYX"}),
            r"holds 3 planes .*axes 'CYX', OME-TIFF.*one 2-D plane per file",
        ),
        (lambda p: tifffile.imwrite(p, counts((2, 32, 32))), "holds 2 planes"),
        (
            lambda p: tifffile.imwrite(p, counts((32, 32, 3)).astype(np.uint8), photometric="rgb"),
            "RGB/colour samples",
        ),
    ],
)
def test_several_planes_in_one_file_are_refused(tmp_path, write, message):
    path = tmp_path / "multi.tif"
    write(path)
    with pytest.raises(ImageReadError, match=message) as info:
        read_image(str(path))
    assert str(path) in str(info.value)


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint32, np.int8])
def test_other_pixel_types_are_refused_not_cast(tmp_path, dtype):
    tifffile.imwrite(tmp_path / "a.tif", np.ones((16, 16), dtype=dtype))
    with pytest.raises(ImageReadError, match=f"{np.dtype(dtype)} pixels"):
        read_image(str(tmp_path / "a.tif"))


def test_missing_codec_is_named(tmp_path, monkeypatch):
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, counts((16, 16)), compression="zstd")

    def no_codec(tif, name):
        raise ValueError("<COMPRESSION.ZSTD: 50000> requires the 'imagecodecs' package")

    monkeypatch.setattr(tiff, "_single_plane", no_codec)
    with pytest.raises(ImageReadError, match="needs the imagecodecs package") as info:
        read_image(str(path))
    assert str(path) in str(info.value) and "pip install imagecodecs" in str(info.value)


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(ImageReadError, match="missing image file"):
        read_image(str(tmp_path / "nowhere.tif"))
    path = tmp_path / "bad.tif"
    tifffile.imwrite(path, counts((64, 64)), compression="lzw")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ImageReadError, match=r"unreadable TIFF .*bad\.tif"):
        read_image(str(path))


@pytest.mark.parametrize(
    "content",
    [b"root:x:0:0:SECRET:/root:/bin/bash\n", b"II*\x00SECRET" + bytes(40), b"\x89PNG SECRET"],
)
def test_a_file_that_is_not_a_tiff_is_named_without_its_contents(tmp_path, content):
    path = tmp_path / "passwd"
    path.write_bytes(content)
    with pytest.raises(ImageReadError) as info:
        read_image(str(path))
    message = str(info.value)
    assert message.startswith(f"unreadable TIFF {path}: ")
    assert "SECRET" not in message and "PNG" not in message and "b'" not in message


@pytest.mark.parametrize(
    "convert,dtype",
    [
        (lambda im: (im / 65535).astype(np.float32), "float32"),  # 0..1: once all zeros
        (lambda im: im.astype(np.int32) * 30, "int32"),  # above 65535: once wrapped
        (lambda im: im.astype(np.int16) - 3000, "int16"),  # negative: once wrapped
        (lambda im: np.where(im > 1000, np.nan, im), "float64"),  # NaN: once 0
    ],
)
def test_images_that_are_not_16_bit_counts_are_refused(tmp_path, capsys, convert, dtype):
    table = one_site(tmp_path)
    rewrite(tmp_path / "images" / "Week1_1", convert)
    assert main(crop_args(table, tmp_path / "crops", "--no-illumination")) == 2
    err = capsys.readouterr().err
    assert "B02_s1_DNA.tif" in err and dtype in err and "16-bit counts" in err
    assert not (tmp_path / "crops" / "store.json").exists()


def test_8_bit_images_keep_their_values(tmp_path):
    table = one_site(tmp_path)
    rewrite(tmp_path / "images" / "Week1_1", lambda im: (im // 16).astype(np.uint8))
    out = tmp_path / "crops"
    args = crop_args(table, out, "--no-illumination", "--set", "crop.nucleus_min_area=50")
    assert main(args) == 0
    store = CropStore(out)
    image = tifffile.imread(tmp_path / "images" / "Week1_1" / "B02_s1_DNA.tif")
    cell = store.cells.iloc[0]
    x, y = round(cell["Nuclei_Location_Center_X"]), round(cell["Nuclei_Location_Center_Y"])
    np.testing.assert_array_equal(
        store.read(np.array([0]))[0, 0], image[y - 16 : y + 16, x - 16 : x + 16]
    )


def test_truncated_tiff_is_called_so(tmp_path, capsys):
    table = one_site(tmp_path)
    bad = tmp_path / "images" / "Week1_1" / "B02_s1_Actin.tif"
    bad.write_bytes(bad.read_bytes()[:8])  # the header only: tifffile reads shape (0,)
    assert main(crop_args(table, tmp_path / "crops", "--no-illumination")) == 2
    err = capsys.readouterr().err
    assert "truncated or corrupt" in err and str(bad) in err and "shape" not in err

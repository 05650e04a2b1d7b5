"""One site of the crop stage (cellclr.cropping.sites)."""

from cellclr.cli import main
from tests.cropping.test_stage import crop_args, one_site


def test_a_box_larger_than_the_field_says_so(tmp_path, capsys):
    table = one_site(tmp_path)
    assert main(crop_args(table, tmp_path / "crops", "--box", "200", "--no-illumination")) == 2
    err = capsys.readouterr().err
    assert "larger than the field of view, 160 x 160" in err and "no cells" not in err

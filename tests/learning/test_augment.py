import pytest
import torch

from cellclr.config import AugmentConfig
from cellclr.learning import augment
from cellclr.learning.augment import Augmenter, resize
from cellclr.learning.rng import cell_keys

ALL_OFF = dict(
    crop=False, flip=False, rotate90=False, brightness=0.0, contrast=0.0, blur_p=0.0, noise_p=0.0
)  # elastic_p is 0 by default


def batch(b=6, c=3, s=24, seed=0):
    return torch.rand(b, c, s, s, generator=torch.Generator().manual_seed(seed))


def keys(x, seed=0, view=0):
    return cell_keys(seed, 0, torch.arange(len(x)), view)


@pytest.mark.parametrize("channels", [1, 3, 5])
def test_shape_dtype_channels(channels):
    aug = Augmenter(AugmentConfig(size=16))
    x = batch(c=channels)
    out = aug(x, keys(x))
    assert out.shape == (6, channels, 16, 16)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_identity_when_all_off():
    x = batch()
    out = Augmenter(AugmentConfig(size=24, **ALL_OFF))(x, keys(x))
    assert torch.equal(out, x)
    assert out is not x  # the caller's batch is never modified in place


def test_all_off_with_other_size_is_a_plain_resize():
    x = batch()
    out = Augmenter(AugmentConfig(size=12, **ALL_OFF))(x, keys(x))
    torch.testing.assert_close(out, resize(x, 12))


def test_views_differ_per_sample():
    x = batch(b=1).expand(8, -1, -1, -1).contiguous()  # eight copies of one image
    out = Augmenter(AugmentConfig(size=16))(x, keys(x))
    flat = out.flatten(1)
    distances = torch.cdist(flat, flat)
    off_diagonal = distances[~torch.eye(8, dtype=torch.bool)]
    assert (off_diagonal > 1e-3).all()


def test_seeded_and_input_untouched():
    x = batch()
    before = x.clone()
    aug = Augmenter(AugmentConfig(size=16))
    assert torch.equal(aug(x, keys(x, 5)), aug(x, keys(x, 5)))
    assert not torch.equal(aug(x, keys(x, 5)), aug(x, keys(x, 6)))
    assert not torch.equal(aug(x, keys(x, 5, view=0)), aug(x, keys(x, 5, view=1)))
    assert torch.equal(x, before)


def test_a_view_depends_on_its_cell_key_not_on_the_batch():
    x = batch(b=8)
    k = keys(x, 3)
    aug = Augmenter(AugmentConfig(size=16))
    whole = aug(x, k)
    halves = torch.cat([aug(x[:3], k[:3]), aug(x[3:], k[3:])])
    torch.testing.assert_close(whole, halves, atol=1e-6, rtol=0)


def test_flips_and_rotations_only_permute_pixels():
    x = batch()
    cfg = AugmentConfig(size=24, **{**ALL_OFF, "flip": True, "rotate90": True})
    out = Augmenter(cfg)(x, keys(x))
    torch.testing.assert_close(out.flatten(2).sort(dim=2).values, x.flatten(2).sort(dim=2).values)
    # each output is one of the 8 symmetries of its input
    for i in range(len(x)):
        candidates = [torch.rot90(v, k, (1, 2)) for v in (x[i], x[i].flip(2)) for k in range(4)]
        assert any(torch.allclose(out[i], c, atol=1e-5) for c in candidates)


@pytest.mark.parametrize(
    "name,value",
    [
        ("brightness", 0.5),
        ("contrast", 0.5),
        ("gamma", 0.5),
        ("offset", 0.2),
        ("blur_p", 1.0),
        ("noise_p", 1.0),
        ("crop", True),
        ("elastic_p", 1.0),
    ],
)
def test_each_operation_alone_changes_the_image(name, value):
    x = batch()
    cfg = AugmentConfig(size=24, **{**ALL_OFF, name: value})
    out = Augmenter(cfg)(x, keys(x))
    assert out.shape == x.shape
    assert not torch.allclose(out, x, atol=1e-4)


def test_brightness_scales_each_channel_by_one_factor():
    x = batch() + 0.1
    out = Augmenter(AugmentConfig(size=24, **{**ALL_OFF, "brightness": 0.3}))(x, keys(x))
    ratio = out / x
    spread = ratio.flatten(2).std(dim=2)
    assert spread.max() < 1e-5
    factors = ratio.flatten(2)[..., 0]
    assert ((factors >= 0.7) & (factors <= 1.3)).all()
    assert factors.std() > 0.01  # channels and samples get their own factors


def test_gamma_and_offset_act_per_channel_as_their_formulas():
    x = batch() + 0.05  # positive intensities
    out = Augmenter(AugmentConfig(size=24, **{**ALL_OFF, "gamma": 0.4}))(x, keys(x))
    g = torch.log(out) / torch.log(x)  # x ** g: one exponent per sample and channel
    assert g.flatten(2).std(dim=2).max() < 1e-3
    exponents = g.flatten(2)[..., 0]
    assert ((exponents >= 0.6) & (exponents <= 1.4)).all() and exponents.std() > 0.01
    out = Augmenter(AugmentConfig(size=24, **{**ALL_OFF, "offset": 0.1}))(x, keys(x))
    shift = (out - x).flatten(2)
    assert shift.std(dim=2).max() < 1e-6 and shift.abs().max() <= 0.1 + 1e-6


def test_blur_keeps_the_mean_and_smooths():
    x = batch(s=32)
    cfg = AugmentConfig(size=32, **{**ALL_OFF, "blur_p": 1.0, "blur_sigma": [1.5, 2.0]})
    out = Augmenter(cfg)(x, keys(x))
    torch.testing.assert_close(out.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=5e-3, rtol=0)
    assert out.std() < 0.5 * x.std()


def test_invalid_settings_are_named():
    with pytest.raises(ValueError, match="crop_scale"):
        Augmenter(AugmentConfig(crop_scale=[0.0, 1.0]))
    with pytest.raises(ValueError, match="rotate90 needs square"):
        x = torch.rand(2, 3, 10, 12)
        Augmenter(AugmentConfig(size=8))(x, keys(x))


def test_elastic_moves_pixels_by_at_most_about_alpha():
    # a horizontal ramp: a displacement of d pixels changes a value by about d / size
    size = 32
    ramp = torch.linspace(0, 1, size).expand(4, 1, size, size).contiguous()
    cfg = AugmentConfig(size=size, **{**ALL_OFF, "elastic_p": 1.0, "elastic_alpha": 2.0})
    out = Augmenter(cfg)(ramp, keys(ramp))
    inner = (slice(None), slice(None), slice(3, -3), slice(3, -3))  # away from the reflection
    shift = (out - ramp)[inner].abs() * (size - 1)
    assert 0.3 < shift.max() <= 2.5
    still = Augmenter(AugmentConfig(size=size, **{**ALL_OFF, "elastic_p": 1.0, "elastic_alpha": 0}))
    torch.testing.assert_close(still(ramp, keys(ramp)), ramp, atol=1e-5, rtol=0)


def test_the_gpu_path_makes_the_same_views(monkeypatch):
    """On a GPU, blur and noise go to every sample and are masked (finding the chosen ones
    would make the host wait); on the CPU, only the chosen ones are computed. Same views."""
    x = batch(b=16, s=28)
    cfg = AugmentConfig(size=20, blur_p=0.5, noise_p=0.5, elastic_p=0.5)
    host = Augmenter(cfg)(x, keys(x, 4))
    monkeypatch.setattr(augment, "_rows", lambda chosen: None)  # as on a GPU
    assert torch.equal(Augmenter(cfg)(x, keys(x, 4)), host)


def test_affine_grid_equals_torchs():
    theta = torch.randn(7, 2, 3, generator=torch.Generator().manual_seed(1))
    for size in (5, 16):
        expected = torch.nn.functional.affine_grid(theta, [7, 1, size, size], align_corners=False)
        torch.testing.assert_close(augment.affine_grid(theta, size), expected)


def test_intensity_is_the_direct_formula_of_its_four_operations():
    """Contrast, gain, gamma (positive values only) and offset, with the factors each sample
    draws, written out one operation at a time."""
    from cellclr.learning.augment import BRIGHTNESS, CONTRAST, GAMMA, OFFSET
    from cellclr.learning.rng import KeyedRandom

    x = batch(b=8, c=2) - 0.2  # some negative intensities
    settings = dict(contrast=0.4, brightness=0.3, gamma=0.5, offset=0.1)
    out = Augmenter(AugmentConfig(size=24, **{**ALL_OFF, **settings}))(x, keys(x))
    r = KeyedRandom(keys(x))
    f = r.uniform(CONTRAST, 2, 1, 1, low=0.6, high=1.4)
    b = r.uniform(BRIGHTNESS, 2, 1, 1, low=0.7, high=1.3)
    g = r.uniform(GAMMA, 2, 1, 1, low=0.5, high=1.5)
    o = r.uniform(OFFSET, 2, 1, 1, low=-0.1, high=0.1)
    mean = x.mean(dim=(2, 3), keepdim=True)
    y = ((x - mean) * f + mean) * b
    y = torch.where(y > 0, y.clamp_min(1e-12) ** g, y) + o
    torch.testing.assert_close(out, y, atol=1e-5, rtol=1e-5)
    assert (x < 0).any() and not torch.equal(out, x)

"""Counter-based random numbers: uniform and normal enough, and independent across keys,
parameters and elements."""

import torch

from cellclr.learning.rng import DRAWS, KeyedRandom, cell_keys, hash32, hash32_int, mix, view_keys


def test_hash_is_a_32_bit_bijection_on_a_sample():
    x = torch.arange(200_000, dtype=torch.int64) * 7919
    h = hash32(x)
    assert h.min() >= 0 and h.max() < 2**32
    assert len(torch.unique(h)) == len(x)
    # the tensor hash (in place, with a scratch) is the one written on Python integers
    assert [hash32_int(int(v)) for v in x[:300]] == h[:300].tolist()
    y = x.clone()
    assert hash32(y, inplace=True) is y and torch.equal(y, h)


def test_uniform_and_normal_moments():
    r = KeyedRandom(cell_keys(0, 0, torch.arange(1000), 0))
    u = r.uniform(1, 100)
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    z = r.normal(2, 100)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    # parameters, samples and elements are uncorrelated
    assert abs(torch.corrcoef(torch.stack([r.uniform(1), r.uniform(3)]))[0, 1]) < 0.1
    assert abs(torch.corrcoef(torch.stack([u[:, 0], u[:, 1]]))[0, 1]) < 0.1
    i = r.integers(4, 4)
    assert set(i.tolist()) == {0, 1, 2, 3} and abs(i.float().mean() - 1.5) < 0.1


def test_keys_depend_on_every_part():
    p = torch.arange(64)
    base = cell_keys(1, 2, p, 0)
    for other in (cell_keys(2, 2, p, 0), cell_keys(1, 3, p, 0), cell_keys(1, 2, p, 1)):
        assert (other != base).all()
    assert len(torch.unique(base)) == len(p)
    assert torch.equal(cell_keys(1, 2, p[10:20], 0), base[10:20])
    rows = torch.tensor([3, 7])
    r = KeyedRandom(base)
    assert torch.equal(r.normal(5, 4, 4, rows=rows), r.normal(5, 4, 4)[rows])


def test_bulk_draws_equal_one_at_a_time():
    """The epoch's keys of every view at once, and a batch's parameters drawn together, are the
    numbers drawn one by one (written out with the hash itself)."""
    positions = torch.arange(40).view(4, 10) * 7
    bulk = view_keys(3, 2, positions, range(5))
    for v in range(5):
        assert torch.equal(bulk[v], cell_keys(3, 2, positions, v))
    keys = cell_keys(3, 2, torch.arange(10), 0)
    r = KeyedRandom(keys)
    for draw in (1, 14, DRAWS + 3):  # a bulk-drawn parameter, and one drawn alone
        assert torch.equal(r.bits(draw), mix(keys, draw))
        h = mix(keys, draw)
        assert torch.equal(r.bits(draw, 2, 3), mix(h[:, None, None], torch.arange(6).view(2, 3)))


def test_normal_sums_the_four_bytes_of_a_hash():
    r = KeyedRandom(cell_keys(0, 0, torch.arange(50), 0))
    h = r.bits(7, 4, 5)
    total = (h & 0xFF) + ((h >> 8) & 0xFF) + ((h >> 16) & 0xFF) + (h >> 24)
    assert torch.equal(r.normal(7, 4, 5), (total.float() - 510.0) / 147.80)

"""The training methods end to end on a tiny store, balanced sampling, the DINO teacher, and
test-time augmentation."""

import json
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cellclr.learning.backbones import build_encoder
from cellclr.learning.encode import encode
from cellclr.learning.methods import build_method
from cellclr.learning.methods.dino import DINOHead
from cellclr.learning.sampler import epoch_batches, group_codes
from cellclr.learning.saved_model import MODEL
from cellclr.learning.train import train
from cellclr.store import CropStore
from cellclr.store.import_crops import import_crops
from tests.helpers import CountOps, tiny_config

DINO_TINY = ["dino.out_dim=32", "dino.hidden=16", "dino.bottleneck=8", "dino.local_size=8"]


@pytest.mark.parametrize(
    "method,supervision",
    [("simclr", "none"), ("supcon", "weak: treatment labels"), ("dino", "none")],
)
def test_one_epoch_of_each_method(store, tmp_path, method, supervision):
    cfg = tiny_config(f"train.method='{method}'", "train.epochs=1", *DINO_TINY)
    out = train(store, tmp_path / method, cfg)
    manifest = json.loads((out / "stage.json").read_text())
    assert manifest["method"] == method and manifest["supervision"] == supervision
    log = json.loads((out / "train_log.jsonl").read_text())
    assert np.isfinite(log["loss"]) and log["loss"] > 0
    saved = torch.load(out / MODEL, weights_only=True)["encoder"]
    assert "stem.0.weight" in saved  # a plain backbone, as embed expects


def test_supcon_refuses_moa_labels():
    with pytest.raises(ValueError, match="MoA labels would train on the answer"):
        tiny_config("train.method='supcon'", "supcon.label='moa'")


def test_balanced_sampling_draws_treatments_equally(store):
    s = CropStore(store)
    codes = group_codes(s, "treatment")
    cells = s.cells
    # make it unbalanced: drop most cells of every treatment but DMSO
    keep = np.flatnonzero(
        (cells["Metadata_Compound"] == "DMSO").to_numpy() | (np.arange(len(cells)) % 4 == 0)
    )
    batches = epoch_batches(len(keep), 8, seed=0, epoch=3, groups=codes[keep])
    drawn = Counter(codes[keep][np.concatenate(batches)])
    assert len(drawn) == len(set(codes[keep]))  # every treatment
    assert max(drawn.values()) - min(drawn.values()) <= 2  # equally often (up to rounding)
    again = epoch_batches(len(keep), 8, seed=0, epoch=3, groups=codes[keep])
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))  # resumable
    other = epoch_batches(len(keep), 8, seed=0, epoch=4, groups=codes[keep])
    assert not np.array_equal(np.concatenate(batches), np.concatenate(other))


def test_dino_teacher_follows_the_student_by_its_momentum():
    cfg = tiny_config("train.method='dino'", "dino.teacher_momentum=0.9", *DINO_TINY)
    dino = build_method(cfg, 3)
    with torch.no_grad():
        for p in dino.student.parameters():
            p.add_(1.0)
    before = [t.clone() for t in dino.teacher.parameters()]
    dino.after_step(0.0)  # momentum 0.9 at the start
    for t, b, s in zip(dino.teacher.parameters(), before, dino.student.parameters(), strict=True):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * s)
    before = [t.clone() for t in dino.teacher.parameters()]
    dino.after_step(1.0)  # momentum 1 at the end: the teacher stays
    for t, b in zip(dino.teacher.parameters(), before, strict=True):
        torch.testing.assert_close(t, b)
    assert dino.encoder_to_keep() is dino.teacher.encoder


def test_test_time_augmentation_is_invariant_to_rotation(tmp_path, crop_files):
    images = np.load(crop_files[0])["images"]
    np.savez(tmp_path / "turned.npz", images=np.ascontiguousarray(np.rot90(images, 1, (2, 3))))
    channels = ["DNA", "Tubulin", "Actin"]
    a = CropStore(import_crops(crop_files[0], crop_files[1], tmp_path / "a", channels))
    b = CropStore(import_crops(tmp_path / "turned.npz", crop_files[1], tmp_path / "b", channels))
    torch.manual_seed(0)
    encoder = build_encoder("resnet_small", 3).eval()
    cpu = torch.device("cpu")

    def features(store, tta):
        batches = [np.arange(len(store))]
        norm = store.normalization("plate", 100)
        return np.concatenate(list(encode(encoder, store, norm, batches, cpu, 20, tta)))

    np.testing.assert_allclose(features(a, True), features(b, True), rtol=1e-4, atol=1e-5)
    assert not np.allclose(features(a, False), features(b, False), rtol=1e-3, atol=1e-4)


def test_dino_logits_are_not_rounded_to_bf16_under_autocast():
    """The targets divide the logits by 0.04: the prototype layer computes in float32, from the
    (bf16) MLP's hidden features, even under bf16 autocast."""
    torch.manual_seed(0)
    head = DINOHead(64, 128, 32, 256)
    h = torch.randn(64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(h)
        hidden = head.mlp[:-1](h)
    assert hidden.dtype == torch.bfloat16  # the MLP keeps the speed of bf16
    x = F.normalize(head.mlp[-1](hidden.float()), dim=-1)
    exact = x @ F.normalize(head.prototypes.weight, dim=1).T
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, exact, atol=1e-6, rtol=0)
    # what bf16 logits would have been off by, in units of the teacher's temperature
    assert (exact.bfloat16().float() - exact).abs().max() / 0.04 > 0.02


def test_dino_teacher_update_is_a_few_operations_whatever_the_number_of_parameters():
    calls = []
    for arch in ("resnet_small", "resnet18"):  # 4x as many parameter tensors
        dino = build_method(tiny_config("train.method='dino'", f"model.arch='{arch}'"), 3)
        with CountOps() as count:
            dino.after_step(0.5)
        calls.append(count.calls)
    assert calls[0] == calls[1]


def test_the_batch_adversary_reverses_its_gradient_into_the_encoder():
    """The adversary's cross-entropy trains its own weights as usual and reaches the encoder
    multiplied by -w: the encoder's gradient is -w times what the plain classifier gives it."""
    import torch.nn.functional as F

    from cellclr.learning.methods import build_method
    from cellclr.learning.methods.simclr import ReverseGradient

    x = torch.randn(4, 3, requires_grad=True)
    (ReverseGradient.apply(x, 0.3) * torch.arange(3.0)).sum().backward()
    torch.testing.assert_close(x.grad, -0.3 * torch.arange(3.0).expand(4, 3))

    cfg = tiny_config("train.batch_adversary=0.5")
    model = build_method(cfg, 3, n_batches=3).eval()
    crops = torch.rand(6, 3, 16, 16)
    codes = torch.tensor([0, 1, 2, 0, 1, 2])
    _, logits = model(crops)
    F.cross_entropy(logits, codes).backward()
    reversed_grads = {n: p.grad.clone() for n, p in model.encoder.named_parameters()}
    head_grad = model.adversary.weight.grad.clone()
    model.zero_grad()
    F.cross_entropy(model.adversary(model.encoder(crops)), codes).backward()
    for name, p in model.encoder.named_parameters():
        torch.testing.assert_close(reversed_grads[name], -0.5 * p.grad, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(head_grad, model.adversary.weight.grad)


def test_a_batch_adversary_trains(store, tmp_path):
    from cellclr.config import ConfigError
    from cellclr.learning.saved_model import load_encoder
    from cellclr.learning.train import train

    out = train(store, tmp_path / "adv", tiny_config("train.epochs=1", "train.batch_adversary=0.5"))
    encoder, _ = load_encoder(out, torch.device("cpu"))
    assert all(torch.isfinite(p).all() for p in encoder.parameters())
    dino = tiny_config("train.method='dino'", "train.batch_adversary=1")
    with pytest.raises(ConfigError, match="batch_adversary works with simclr and supcon"):
        train(store, tmp_path / "dino", dino)

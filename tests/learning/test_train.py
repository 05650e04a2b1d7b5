import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import cellclr.learning.methods.simclr as simclr_module
import cellclr.learning.train as train_module
from cellclr.cli import main
from cellclr.learning.device import grad_scaler
from cellclr.learning.distributed import World
from cellclr.learning.methods import Batch, build_method
from cellclr.learning.optim import build_optimizer
from cellclr.learning.rng import view_keys
from cellclr.learning.saved_model import MODEL
from cellclr.learning.train import (
    CHECKPOINT,
    LOG,
    NonFiniteLossError,
    train,
    train_fingerprint,
    train_step,
)
from cellclr.store import CropStore
from tests.cropping.test_sources import crop
from tests.helpers import error_part, sets, tiny_config


def weights(folder):
    return torch.load(folder / MODEL, weights_only=True)["encoder"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_deterministic_and_logged(store, tmp_path):
    cfg = tiny_config()
    a = train(store, tmp_path / "a", cfg)
    b = train(store, tmp_path / "b", cfg)
    assert_same_weights(weights(a), weights(b))
    log = [json.loads(line) for line in (a / LOG).read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    assert all(r["loss"] > 0 and r["images_per_s"] > 0 and r["lr"] >= 0 for r in log)
    assert (a / "config.toml").is_file() and (a / "stage.json").is_file()
    # 28 cells a plate, under normalize_min_cells: the plates borrow wider statistics, on record
    assert json.loads((a / "stage.json").read_text())["normalization"] == {"global": 2}
    c = train(store, tmp_path / "c", tiny_config("train.seed=1"))
    assert not torch.equal(weights(a)["stem.0.weight"], weights(c)["stem.0.weight"])


def interrupt_in_epoch(monkeypatch, n: int) -> None:
    """Make training stop with KeyboardInterrupt when its n-th epoch starts."""
    real_epoch = train_module._train_epoch
    calls = {"n": 0}

    def epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train_module, "_train_epoch", epoch)


def test_interrupted_then_resumed_equals_uninterrupted(store, tmp_path, monkeypatch):
    cfg = tiny_config("train.epochs=3")
    whole = train(store, tmp_path / "whole", cfg)
    out = tmp_path / "resumed"
    with monkeypatch.context() as m:
        interrupt_in_epoch(m, 2)
        with pytest.raises(KeyboardInterrupt):
            train(store, out, cfg)
    partial = tmp_path / "resumed.partial"
    assert not out.exists() and (partial / CHECKPOINT).is_file()
    train(store, out, cfg)  # the same settings continue the unfinished run
    assert not partial.exists()
    assert_same_weights(weights(whole), weights(out))
    log = [json.loads(line)["epoch"] for line in (out / LOG).read_text().splitlines()]
    assert log == [1, 2, 3]


def test_other_settings_replace_an_unfinished_training(store, tmp_path, monkeypatch, caplog):
    with monkeypatch.context() as m:
        interrupt_in_epoch(m, 2)
        with pytest.raises(KeyboardInterrupt):
            train(store, tmp_path / "m", tiny_config())
    caplog.clear()
    other = tiny_config("train.lr=0.5")
    train(store, tmp_path / "m", other)  # no --overwrite: nothing had completed
    assert "replacing the unfinished training" in caplog.text
    assert_same_weights(weights(train(store, tmp_path / "fresh", other)), weights(tmp_path / "m"))


def test_lars_trains(store, tmp_path):
    out = train(store, tmp_path / "lars", tiny_config("train.optimizer='lars'", "train.lr=0.3"))
    assert all(torch.isfinite(v).all() for v in weights(out).values() if v.is_floating_point())


def test_resume_from_an_older_checkpoint_rolls_the_log_back(store, tmp_path, monkeypatch):
    cfg = tiny_config("train.epochs=4", "train.checkpoint_every=2")
    whole = train(store, tmp_path / "whole", cfg)
    out = tmp_path / "resumed"
    with monkeypatch.context() as m:
        interrupt_in_epoch(m, 4)  # epochs 1-3 done, the last checkpoint after epoch 2
        with pytest.raises(KeyboardInterrupt):
            train(store, out, cfg)
    partial_log = (tmp_path / "resumed.partial" / LOG).read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in partial_log] == [1, 2, 3]
    train(store, out, cfg, resume=True)
    assert_same_weights(weights(whole), weights(out))
    log = [json.loads(line) for line in (out / LOG).read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3, 4]
    whole_log = [json.loads(line) for line in (whole / LOG).read_text().splitlines()]
    assert [r["loss"] for r in log] == [r["loss"] for r in whole_log]


@pytest.mark.parametrize("mode", ["well", "cell"])
def test_well_and_cell_normalisation_train_and_embed(store, tmp_path, mode):
    from cellclr.embeddings import load_embeddings
    from cellclr.learning.embed import embed

    cfg = tiny_config("train.epochs=1", f"data.normalize='{mode}'", "data.normalize_min_cells=1")
    out = train(store, tmp_path / "m", cfg)
    assert all(torch.isfinite(v).all() for v in weights(out).values() if v.is_floating_point())
    assert json.loads((out / "stage.json").read_text())["normalization"] == {
        mode: 14 if mode == "well" else 2
    }
    cells = load_embeddings(embed(out, store, tmp_path / "e", cfg))
    assert len(cells) == 56 and np.isfinite(cells.filter(like="emb_").to_numpy()).all()


def test_a_batch_larger_than_the_store_is_clamped_and_said(store, tmp_path, caplog):
    clamped = train(store, tmp_path / "big", tiny_config("train.batch_size=64"))
    said = caplog.text
    assert (
        "train.batch_size=64 is more than the store's 56 cells: training on batches of 56" in said
    )
    caplog.clear()
    assert json.loads((clamped / "stage.json").read_text())["batch_size"] == 56
    exact = train(store, tmp_path / "exact", tiny_config("train.batch_size=56"))
    assert "more than the store" not in caplog.text
    assert json.loads((exact / "stage.json").read_text())["batch_size"] == 56
    assert_same_weights(weights(clamped), weights(exact))  # trained on the batch it says


class DeviceReads(TorchDispatchMode):
    """Records what would make the host wait for a GPU: reading a value of a device tensor
    (``.item()``, ``bool()``, ``int()``, ``nonzero``, ``tolist``) and copies between the host and
    the device. (Host tensors are free to read: torch's AdamW keeps its step counts there.)"""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []
        self.reads = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [a for a in [*args, *kwargs.values()] if isinstance(a, torch.Tensor)]
        devices = {t.device.type for t in tensors}
        if func in self.reads and devices != {"cpu"}:
            self.seen.append(str(func))
        if func in (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default):
            target = kwargs.get("device") or tensors[0].device
            if len({*devices, torch.device(target).type}) > 1:
                self.seen.append(f"{func} {sorted(devices)} -> {target}")
        return func(*args, **kwargs)


@pytest.mark.parametrize(
    ("method", "optimizer"),
    [("simclr", "lars"), ("supcon", "adamw"), ("dino", "adamw"), ("dino", "lars")],
)
def test_a_training_step_never_waits_for_the_device(method, optimizer):
    """A whole step (views, forward, loss, backward, optimiser, DINO's teacher) on the meta
    device, which has no values: any read of one fails there, and copies are recorded."""
    cfg = tiny_config(
        f"train.method='{method}'",
        f"train.optimizer='{optimizer}'",
        "augment.elastic_p=0.5",
        "dino.local_size=8",
    )
    meta = torch.device("meta")
    model = build_method(cfg, 3).to(meta, memory_format=torch.channels_last)
    opt = build_optimizer(model.trained(), optimizer, 0.1, 1e-4)
    positions = torch.arange(3 * 8, device=meta).view(3, 8)  # an epoch of 3 steps
    keys = view_keys(0, 1, positions, range(model.views))
    labels = torch.zeros(3, 8, dtype=torch.long, device=meta)
    x = torch.empty(8, 3, 20, 20, device=meta).contiguous(memory_format=torch.channels_last)
    batch = Batch(x, lambda view: keys[view, 1], labels[1], gather=None, world=World())
    with DeviceReads() as reads:
        for _ in range(2):  # the optimisers' first and later steps differ
            loss = train_step(model.trained(), model, opt, grad_scaler(meta), batch)
            model.after_step(0.5)
    assert loss.device == meta
    assert reads.seen == []


def test_the_process_group_timeout_is_not_part_of_the_fingerprint(store):
    s = CropStore(store)
    base = train_fingerprint(s, tiny_config())
    assert train_fingerprint(s, tiny_config("train.dist_timeout=5")) == base
    assert train_fingerprint(s, tiny_config("train.lr=0.5")) != base


def nan_loss_at(monkeypatch, epoch: int, step: int) -> None:
    """Make the loss NaN at one step of one epoch (1-based)."""
    real = simclr_module.nt_xent
    calls = {"n": 0}
    steps = 3  # 56 cells / batch 16

    def loss(*args, **kwargs):
        calls["n"] += 1
        value = real(*args, **kwargs)
        return value * float("nan") if calls["n"] == (epoch - 1) * steps + step else value

    monkeypatch.setattr(simclr_module, "nt_xent", loss)


def test_non_finite_loss_stops_and_the_last_checkpoint_resumes(store, tmp_path, monkeypatch):
    cfg = tiny_config("train.epochs=3")
    whole = train(store, tmp_path / "whole", cfg)
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        nan_loss_at(m, epoch=2, step=2)
        with pytest.raises(NonFiniteLossError, match=r"loss is nan at epoch 2, step 2 of 3"):
            train(store, out, cfg)
    partial = tmp_path / "run.partial"
    assert not out.exists()
    saved = torch.load(partial / CHECKPOINT, weights_only=True)
    assert saved["epoch"] == 1  # the last good one
    for line in (partial / LOG).read_text().splitlines():
        assert json.loads(line, parse_constant=pytest.fail)["epoch"] == 1  # strict JSON
    train(store, out, cfg, resume=True)
    assert_same_weights(weights(whole), weights(out))


def test_non_finite_loss_through_the_cli(store, tmp_path, monkeypatch, capsys):
    nan_loss_at(monkeypatch, epoch=1, step=1)
    assert main(["train", "--crops", str(store), "--out", str(tmp_path / "m"), *sets()]) == 2
    err = error_part(capsys.readouterr().err).strip()
    assert (
        err.count("\n") == 0
        and "epoch 1, step 1" in err
        and "to continue from that checkpoint" in err
    )


def test_five_channels_train_embed_and_profile(field, tmp_path):
    """One epoch of training, embedding and profiles on the 5-channel store, as
    docs/cell-painting.md runs them (tiny model and views)."""
    from tests.helpers import TINY_OVERRIDES

    assert crop(tmp_path, "crops", "--no-illumination") == 0
    tiny = [a for o in [*TINY_OVERRIDES, "train.epochs=1"] for a in ("--set", o)]
    crops, model = str(tmp_path / "crops"), str(tmp_path / "model")
    assert main(["train", "--crops", crops, "--out", model, *tiny]) == 0
    embeddings = str(tmp_path / "embeddings")
    assert main(["embed", "--model", model, "--crops", crops, "--out", embeddings]) == 0
    assert main(["profile", "--embeddings", embeddings, "--out", str(tmp_path / "p")]) == 0
    cells = pd.read_parquet(tmp_path / "embeddings" / "embeddings.parquet")
    assert len(cells) == len(CropStore(tmp_path / "crops"))
    wells = pd.read_parquet(tmp_path / "p" / "wells.parquet")
    assert len(wells) == 1 and wells["Metadata_Cells"].iloc[0] == len(cells)
    assert np.isfinite(wells.filter(like="emb_").to_numpy()).all()


def knn_accuracy(x: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Leave-one-out k-NN accuracy under cosine similarity (majority vote, ties to the label
    that comes first)."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    similarity = x @ x.T
    np.fill_diagonal(similarity, -np.inf)
    neighbours = np.argsort(-similarity, axis=1)[:, :k]
    votes = [np.bincount(row, minlength=labels.max() + 1).argmax() for row in labels[neighbours]]
    return float(np.mean(np.array(votes) == labels))


def test_training_learns_the_simulated_phenotypes_better_than_random_weights(tmp_path):
    """On a simulated screen (cellclr.datasets.simulate: three MoAs whose cells differ in shape
    and texture, and DMSO; two weeks with their batch effects), 20 short epochs of SimCLR give
    features whose 5 nearest cells share the cell's MoA more often than the same encoder's
    features at its initial, random weights. Margin: 0.11 to 0.19 over seeds 0-4 (0.19 here)."""
    from cellclr.cropping.stage import crop
    from cellclr.datasets.simulate import ScreenSpec, simulate_screen
    from cellclr.learning.encode import encode
    from cellclr.learning.saved_model import load_encoder

    spec = ScreenSpec(
        weeks=2,
        plates_per_week=1,
        field_shape=(160, 160),
        sites_per_well=2,
        cells_per_field=(8, 10),
        moas=("Microtubule stabilizers", "Actin disruptors", "Aurora kinase inhibitors"),
        compounds_per_moa=1,
        concentrations=(3.0,),
        weeks_per_compound=2,
        dmso_wells=2,
    )
    simulate_screen(tmp_path / "screen", seed=0, spec=spec)
    cfg = tiny_config(
        f"crop.bbbc021='{tmp_path / 'screen'}'",
        "crop.box=48",
        "crop.workers=1",
        "augment.size=32",
        "data.normalize_min_cells=1",
        "train.epochs=20",
        "train.batch_size=32",
        "train.lr=0.003",
    )
    crop(tmp_path / "crops", cfg)
    store = CropStore(tmp_path / "crops")
    moa = store.cells["Metadata_MoA"].astype("category").cat.codes.to_numpy()
    assert len(store) > 150 and len(set(moa)) == 4

    def accuracy(encoder: torch.nn.Module) -> float:
        assert not encoder.training
        norm = store.normalization(cfg.data.normalize, cfg.data.normalize_min_cells)
        cells = [np.arange(len(store))]
        device = torch.device("cpu")
        x = np.concatenate(list(encode(encoder, store, norm, cells, device, 32, False)))
        return knn_accuracy(x, moa)

    # train's initial weights, in eval mode as embed uses an encoder (the random baseline)
    untrained = accuracy(build_method(cfg, 3).encoder_to_keep().eval())
    trained_encoder, _ = load_encoder(
        train(store.path, tmp_path / "model", cfg), torch.device("cpu")
    )
    trained = accuracy(trained_encoder)
    assert trained > untrained + 0.08, (trained, untrained)


def test_callbacks_add_to_each_epochs_log_line(store, tmp_path):
    seen = []

    class Counting:
        def on_epoch(self, epoch, encoder, world):
            seen.append((epoch, encoder.training, world.main))
            return {"counted": epoch * 10} if epoch == 2 else {}

    out = train(store, tmp_path / "m", tiny_config("train.epochs=2"), callbacks=[Counting()])
    log = [json.loads(line) for line in (out / LOG).read_text().splitlines()]
    assert seen == [(1, True, True), (2, True, True)]
    assert "counted" not in log[0] and log[1]["counted"] == 20


def test_gamma_and_offset_change_training_on_a_tiny_store(store, tmp_path):
    plain = weights(train(store, tmp_path / "plain", tiny_config("train.epochs=1")))
    cfg = tiny_config("train.epochs=1", "augment.gamma=0.3", "augment.offset=0.1")
    shifted = weights(train(store, tmp_path / "shifted", cfg))
    assert all(torch.isfinite(v).all() for v in shifted.values() if v.is_floating_point())
    assert any(not torch.equal(plain[k], shifted[k]) for k in plain)

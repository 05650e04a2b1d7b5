"""The precision on each device: bf16 on GPUs that have it, fp16 with a loss scaler on those that
do not (V100, T4: checked with a mocked GPU), float32 on the CPU; and fp16 training end to end
(on the CPU, whose autocast has fp16 too)."""

import json
import warnings

import pytest
import torch

import cellclr.learning.device as device_module
from cellclr.learning.device import autocast, grad_scaler, precision, precision_note
from cellclr.learning.train import CHECKPOINT, train, train_fingerprint
from cellclr.store import CropStore
from tests.helpers import tiny_config

CUDA = torch.device("cuda", 0)


@pytest.fixture
def gpu(monkeypatch):
    """A mocked GPU; ``gpu(bf16)`` says whether it has native bf16."""

    def make(bf16: bool) -> None:
        def supported(including_emulation: bool = True) -> bool:
            return bf16 or including_emulation  # as torch >= 2.4 answers on a V100

        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Tesla V100")

    return make


def test_bf16_where_the_gpu_has_it(gpu):
    gpu(bf16=True)
    assert precision(CUDA) == "bf16" and precision_note(CUDA) is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CPU-only torch disables the CUDA autocast it makes
        assert autocast(CUDA).fast_dtype == torch.bfloat16
    assert not grad_scaler(CUDA).is_enabled()
    assert precision(torch.device("cpu")) == "fp32"


def test_fp16_with_a_loss_scaler_where_it_does_not(gpu):
    gpu(bf16=False)
    assert precision(CUDA) == "fp16"
    assert "Tesla V100 has no native bf16" in precision_note(CUDA)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert autocast(CUDA).fast_dtype == torch.float16
        assert grad_scaler(CUDA).is_enabled()


def test_older_torch_without_the_emulation_argument(gpu, monkeypatch):
    gpu(bf16=False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert precision(CUDA) == "fp16"


def test_fp16_training_scales_the_loss_and_says_so(store, tmp_path, monkeypatch, caplog):
    cfg = tiny_config()
    bf16_fp = train_fingerprint(CropStore(store), cfg)
    fp16 = {"cpu": "fp16"}  # the CPU's autocast stands in for a GPU without bf16
    monkeypatch.setattr(device_module, "precision", lambda d: fp16.get(d.type, "fp32"))
    monkeypatch.setattr("cellclr.learning.train.precision", device_module.precision)
    monkeypatch.setattr(device_module, "precision_note", lambda d: "no bf16 here: fp16")
    monkeypatch.setattr("cellclr.learning.train.precision_note", device_module.precision_note)
    out = train(store, tmp_path / "m", cfg)
    assert "no bf16 here: fp16" in caplog.text
    manifest = json.loads((out / "stage.json").read_text())
    assert manifest["precision"] == "fp16" and manifest["final_loss"] > 0
    assert manifest["fingerprint"] != bf16_fp  # other numbers: another fingerprint
    scaler = torch.load(out / CHECKPOINT, weights_only=True)["scaler"]
    assert scaler["scale"] > 1  # the loss was scaled

"""Features of crops in eval mode, with test-time augmentation (cellclr.learning.encode)."""

import numpy as np
import torch

from cellclr.learning.backbones import build_encoder
from cellclr.learning.encode import encode
from cellclr.store import CropStore
from cellclr.store.import_crops import import_crops


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

import json

import pytest
import torch

from bayesrad.errors import MissingFileError, ModelError, ModelFileError
from bayesrad.imaging.encoders import ENCODERS, InpaintingDecoder, build_encoder, load_encoder, save_encoder


@pytest.mark.parametrize("name", ENCODERS)
def test_each_backbone_gives_pooled_features_and_a_decodable_map(name):
    torch.manual_seed(0)
    size = 32
    encoder = build_encoder(name, in_channels=2, size=size, width=8 if name != "swin" else 12).eval()
    x = torch.randn(2, 2, size, size, size)  # two volumes: BatchNorm-free eval, distinct inputs
    with torch.no_grad():
        pooled = encoder(x)
        fmap = encoder.feature_map(x)
        recon = InpaintingDecoder(encoder.feature_dim, encoder.feature_grid, 2, size)(fmap)
    assert pooled.shape == (2, encoder.feature_dim)
    assert fmap.shape[:2] == (2, encoder.feature_dim) and tuple(fmap.shape[2:]) == encoder.feature_grid
    assert recon.shape == x.shape
    # different inputs give different embeddings (the network is not degenerate)
    assert not torch.allclose(pooled[0], pooled[1])


def test_save_load_round_trip_is_exact(tmp_path):
    torch.manual_seed(1)
    encoder = build_encoder("resnet", 1, 16, 4).eval()
    save_encoder(encoder, tmp_path, {"note": "test"})
    loaded, record = load_encoder(tmp_path)
    x = torch.randn(3, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(encoder(x), loaded(x))
    assert record["note"] == "test" and record["encoder"]["name"] == "resnet"


def test_load_refuses_missing_or_foreign_files(tmp_path):
    with pytest.raises(MissingFileError, match="lacks encoder.json"):
        load_encoder(tmp_path)
    save_encoder(build_encoder("resnet", 1, 16, 4), tmp_path)
    record = json.loads((tmp_path / "encoder.json").read_text())
    (tmp_path / "encoder.json").write_text(json.dumps({**record, "format_version": 99}))
    with pytest.raises(ModelFileError, match="re-run pretraining"):
        load_encoder(tmp_path)
    (tmp_path / "encoder.json").write_text(json.dumps({**record, "encoder": {**record["encoder"], "width": 8}}))
    with pytest.raises(ModelFileError, match="does not match the architecture"):
        load_encoder(tmp_path)


def test_bad_encoder_settings_are_named():
    with pytest.raises(ModelError, match="unknown"):
        build_encoder("unet")
    with pytest.raises(ModelError, match="multiple of 32"):
        build_encoder("swin", size=48)

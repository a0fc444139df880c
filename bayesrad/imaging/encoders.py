"""3D image encoders built from MONAI networks, and their safetensors files.

``VolumeEncoder`` wraps one of four MONAI backbones and exposes

- ``feature_map(x)``: (B, F, d, h, w) spatial features (the input of the inpainting decoder
  and of attention-MIL over positions), and
- ``forward(x)``: (B, F) globally average-pooled features (the embedding).

Backbones (``name``): ``"resnet"`` (``monai.networks.nets.ResNet``, basic blocks),
``"densenet"`` (``DenseNet``), ``"vit"`` (``ViT`` tokens folded back to their patch grid) and
``"swin"`` (the Swin transformer encoder of ``SwinUNETR``, its deepest stage). ``width`` sets
the channel count so a CPU-sized encoder stays a few hundred thousand parameters.

An encoder is saved as ``encoder.safetensors`` (weights only: loading never unpickles code)
plus ``encoder.json`` (architecture, preprocessing, training record).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from monai.networks.nets import DenseNet, ResNet, SwinUNETR, ViT
from safetensors.torch import load_file, save_file
from torch import nn

from bayesrad.errors import MissingFileError, ModelError, ModelFileError

ENCODERS = ("resnet", "densenet", "vit", "swin")
ENCODER_FORMAT = "bayesrad-encoder"
ENCODER_FORMAT_VERSION = 1
WEIGHTS_FILE = "encoder.safetensors"
CONFIG_FILE = "encoder.json"


@dataclass(frozen=True)
class EncoderConfig:
    """Architecture of a ``VolumeEncoder``.

    name : one of ``ENCODERS``.
    in_channels : image channels (stacked modalities).
    size : voxels per side of the cubic input (multiple of 8; of 32 for ``"swin"``).
    width : base channel count (ResNet stem / DenseNet growth / ViT hidden size / 12x Swin feature size).
    """

    name: str = "resnet"
    in_channels: int = 1
    size: int = 32
    width: int = 16

    def __post_init__(self):
        if self.name not in ENCODERS:
            raise ModelError(f"encoder name {self.name!r} is unknown; use one of {list(ENCODERS)}")
        need = 32 if self.name == "swin" else 8
        if self.size % need:
            raise ModelError(f"encoder {self.name!r} needs an input size that is a multiple of {need} voxels, got {self.size}")
        if self.in_channels < 1 or self.width < 4:
            raise ModelError(f"encoder: in_channels={self.in_channels} must be >= 1 and width={self.width} >= 4")


class VolumeEncoder(nn.Module):
    """A MONAI 3D backbone returning pooled features; input (B, in_channels, S, S, S)."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        c, w = config.in_channels, config.width
        if config.name == "resnet":
            self.backbone = ResNet("basic", [1, 1, 1, 1], [w, 2 * w, 4 * w, 8 * w], spatial_dims=3,
                                   n_input_channels=c, conv1_t_size=3, conv1_t_stride=2, no_max_pool=True,
                                   feed_forward=False)
        elif config.name == "densenet":
            self.backbone = DenseNet(3, c, 1, init_features=2 * w, growth_rate=w, block_config=(2, 2, 2, 2), bn_size=2)
        elif config.name == "vit":
            heads = 4
            hidden = max(heads, (4 * w) // heads * heads)
            self.backbone = ViT(c, img_size=config.size, patch_size=8, hidden_size=hidden, mlp_dim=2 * hidden,
                                num_layers=4, num_heads=heads, classification=False)
        else:
            feature_size = 12 * max(1, w // 12)
            self.backbone = SwinUNETR(c, 1, feature_size=feature_size, depths=(1, 1, 1, 1), num_heads=(3, 6, 12, 24)).swinViT
        with torch.no_grad():
            was = self.training
            self.eval()
            probe = self.feature_map(torch.zeros(1, c, config.size, config.size, config.size))
            self.train(was)
        self.feature_dim = int(probe.shape[1])
        self.feature_grid = tuple(int(s) for s in probe.shape[2:])

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Spatial features (B, feature_dim, d, h, w) of a batch (B, C, S, S, S)."""
        b = self.backbone
        name = self.config.name
        if name == "resnet":
            x = b.act(b.bn1(b.conv1(x)))
            if not b.no_max_pool:
                x = b.maxpool(x)
            return b.layer4(b.layer3(b.layer2(b.layer1(x))))
        if name == "densenet":
            return torch.relu(b.features(x))
        if name == "vit":
            tokens, _ = b(x)
            grid = self.config.size // 8
            return tokens.transpose(1, 2).reshape(x.shape[0], tokens.shape[-1], grid, grid, grid)
        return b(x, True)[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled embedding (B, feature_dim)."""
        return self.feature_map(x).mean(dim=(2, 3, 4))


class InpaintingDecoder(nn.Module):
    """Upsamples encoder feature maps (B, F, d, h, w) back to a volume (B, C, S, S, S).

    Each stage doubles the grid (trilinear) and applies a 3x3x3 convolution; channels halve
    down to 8; the last doubling is a plain trilinear upsampling before a 1x1x1 head (a
    full-resolution 3x3x3 convolution would dominate the CPU cost). Deliberately light so that
    the encoder, not the decoder, has to carry what is needed to fill in masked regions.
    """

    def __init__(self, feature_dim: int, feature_grid: tuple[int, int, int], out_channels: int, size: int):
        super().__init__()
        self.size = size
        stages = []
        channels, grid = feature_dim, feature_grid[0]
        while 2 * grid < size:
            nxt = max(8, channels // 2)
            stages += [nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False),
                       nn.Conv3d(channels, nxt, 3, padding=1), nn.GELU()]
            channels, grid = nxt, grid * 2
        self.stages = nn.Sequential(*stages)
        self.head = nn.Conv3d(channels, out_channels, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.stages(features)
        if x.shape[-1] != self.size:
            x = nn.functional.interpolate(x, size=(self.size,) * 3, mode="trilinear", align_corners=False)
        return self.head(x)


def build_encoder(name: str = "resnet", in_channels: int = 1, size: int = 32, width: int = 16) -> VolumeEncoder:
    """A freshly initialised ``VolumeEncoder`` (random weights; nothing is downloaded)."""
    return VolumeEncoder(EncoderConfig(name, int(in_channels), int(size), int(width)))


def _atomic_write_bytes(target: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a model file is meant to be shared
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_encoder(encoder: VolumeEncoder, out_dir: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Write ``encoder.safetensors`` + ``encoder.json`` to ``out_dir`` (each atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    _atomic_write_bytes(out / WEIGHTS_FILE, lambda p: save_file(state, p))
    record = {"format": ENCODER_FORMAT, "format_version": ENCODER_FORMAT_VERSION,
              "encoder": asdict(encoder.config), "feature_dim": encoder.feature_dim, **(metadata or {})}
    _atomic_write_bytes(out / CONFIG_FILE, lambda p: Path(p).write_text(json.dumps(record, indent=2, default=str)))
    return out


def load_encoder(encoder_dir: str | os.PathLike) -> tuple[VolumeEncoder, dict]:
    """Read an encoder written by ``save_encoder``; returns (encoder in eval mode, its json record)."""
    d = Path(encoder_dir)
    for f in (CONFIG_FILE, WEIGHTS_FILE):
        if not (d / f).is_file():
            raise MissingFileError(f"encoder directory {str(d)!r} lacks {f}; train one with bayesrad.imaging.pretrain_encoder")
    try:
        record = json.loads((d / CONFIG_FILE).read_text())
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{str(d / CONFIG_FILE)!r} is not valid JSON ({exc}); re-run pretraining") from exc
    if record.get("format") != ENCODER_FORMAT or record.get("format_version") != ENCODER_FORMAT_VERSION:
        raise ModelFileError(
            f"{str(d / CONFIG_FILE)!r} is format {record.get('format')!r} v{record.get('format_version')}; "
            f"this bayesrad reads {ENCODER_FORMAT!r} v{ENCODER_FORMAT_VERSION}: re-run pretraining"
        )
    encoder = VolumeEncoder(EncoderConfig(**record["encoder"]))
    state = load_file(str(d / WEIGHTS_FILE))
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(
            f"{str(d / WEIGHTS_FILE)!r} does not match the architecture in {CONFIG_FILE} "
            f"({str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else exc}); "
            f"the two files come from different runs: re-run pretraining"
        ) from exc
    return encoder.eval(), record


__all__ = ["ENCODERS", "EncoderConfig", "VolumeEncoder", "InpaintingDecoder", "build_encoder", "save_encoder", "load_encoder"]

"""Train the package's own small CT+PET encoder (``models/encoder_small``) and write its model card.

Data: simulated radiotherapy patients (``bayesrad.simulate``, CT + PET + GTV mask) plus the real
soft-tissue sarcoma patients STS_001-003 of the IBSI validation set in ``../shared/data``
(CT + PET in SUV + GTV). No labels are used; no weights are downloaded.

    python benchmarks/train_encoder.py [--steps 150] [--patients 96] [--out models/encoder_small]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from bayesrad.data.cohort import Cohort
from bayesrad.data.simulate import simulate
from bayesrad.imaging.pretrain import AUGMENTATION, pretrain_volumes
from bayesrad.imaging.transforms import PreprocessConfig, preprocess_cohort

ROOT = Path(__file__).resolve().parents[1]
STS = ROOT / ".." / "shared" / "data" / "radiomics_reference" / "ibsi" / "data_sets" / "ibsi_validation" / "nifti"


def sarcoma_cohort() -> Cohort:
    """The three real IBSI sarcoma patients with CT and PET, each with its own GTV mask."""
    rows = []
    for patient in sorted(p.name for p in STS.glob("STS_*")):
        for modality, units in (("CT", "HU"), ("PET", "SUV")):
            rows.append(dict(patient_id=patient, modality=modality, path=str((STS / patient / f"{modality}_image.nii.gz").resolve()),
                             mask_path=str((STS / patient / f"{modality}_mask.nii.gz").resolve()), mask_labels="",
                             roi="gtv", frame_times="", units=units))
    return Cohort({}, pd.DataFrame(rows), name="ibsi_sts_real")


def write_model_card(out: Path, record: dict, seconds: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = record["loss_history"]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(losses, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("masked-voxel MSE")
    ax.set_yscale("log")
    ax.set_title("encoder_small pretraining loss")
    fig.tight_layout()
    fig.savefig(out / "loss_curve.png", dpi=90)
    plt.close(fig)
    pre, train = record["preprocessing"], record["pretraining"]
    k = max(1, len(losses) // 10)
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    size_kb = (out / "encoder.safetensors").stat().st_size / 1024
    data = "\n".join(f"- `{d['cohort']}`: {d['n_patients']} patients" for d in record["data"])
    card = f"""# encoder_small: a CT+PET 3D encoder pretrained by bayesrad itself

## What it is
A MONAI 3D ResNet (basic blocks, one per stage, widths {train['width']}-{8 * train['width']}) that maps a
2-channel (CT, PET) {pre['size']}^3 volume at {pre['spacing_mm']} mm to a {record['feature_dim']}-dimensional
pooled embedding. Weights: `encoder.safetensors` ({size_kb:.0f} KiB, loaded without unpickling);
architecture and preprocessing: `encoder.json`. Produced by `python benchmarks/train_encoder.py`
({seconds / 60:.1f} min on {record['trained_on']['device']}, {platform.processor() or platform.machine()}).

## Data (no labels used)
{data}

Simulated patients come from `bayesrad.simulate("radiotherapy", image_size=48)` (3 mm grid);
the real patients are STS_001-003 of the IBSI validation set (soft-tissue sarcoma, CC BY 3.0),
CT and PET (SUV) with their GTV masks.

## Preprocessing (bayesrad.imaging.transforms, MONAI dictionary transforms)
1. Orientation to RAS; PET and mask resampled onto the CT grid (`ResampleToMatchd`).
2. Crop around the GTV, isotropic resampling to {pre['spacing_mm']} mm (`Spacingd`).
3. CT window {pre['ct_window_hu'][0]:.0f} to {pre['ct_window_hu'][1]:.0f} HU -> [0, 1]; PET SUV / {pre['suv_max']:.0f}, clipped to [0, 1].
4. Crop around the mask with a {pre['margin_mm']:.0f} mm margin, pad/crop to {pre['size']}^3 (zero outside), channels stacked (CT, PET).

## Training
Masked-volume inpainting: {train['mask_ratio']:.0%} of the {train['patch_size']}^3-voxel cubes hidden, MSE on hidden
voxels, light trilinear decoder; AdamW lr {train['lr']}, cosine decay, batch {train['batch_size']},
{train['steps']} steps, seed {train['seed']}, {train['n_volumes']} volumes.
Augmentation (MONAI, each physically plausible):
{chr(10).join('- ' + a for a in AUGMENTATION)}

Loss: {first:.4f} (mean of first {k} steps) -> {last:.4f} (last {k}); curve in `loss_curve.png`,
values in `loss_curve.csv`.

## Intended use
Embeddings of a tumour-centred CT+PET volume as the `deep` block of a bayesrad cohort
(`bayesrad.imaging.embed_cohort(cohort, "models/encoder_small", pca_dim=...)`), for demos
and tests. For a real cohort, pretrain an encoder on it (`bayesrad.imaging.pretrain_encoder`).

## Limits
- Tiny: trained for minutes on CPU, mostly on simulated phantoms and three real patients. Not a
  clinical model; do not read its embeddings as validated imaging biomarkers.
- Needs both CT and PET and a tumour mask; other modalities need their own encoder.
- A {pre['size']}^3 cube of {pre['spacing_mm']} mm covers {pre['size'] * pre['spacing_mm']:.0f} mm: larger tumours are cut to the cube.
- How much a linear probe recovers of the simulated tumour phenotype (vs random weights) is
  measured by `benchmarks/imaging.py` (`benchmarks/results/imaging.json`).
"""
    (out / "MODEL_CARD.md").write_text(card)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--patients", type=int, default=96)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--out", default=str(ROOT / "models" / "encoder_small"))
    args = parser.parse_args()
    config = PreprocessConfig(modalities=("CT", "PET"), size=32, spacing_mm=3.0, margin_mm=10.0)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        sim = simulate("radiotherapy", n_patients=args.patients, seed=2024, out=tmp, image_size=48)
        sim_volumes, _, sim_ids = preprocess_cohort(sim.cohort, config)
    real = sarcoma_cohort()
    real_volumes, _, real_ids = preprocess_cohort(real, config)
    volumes = torch.cat([sim_volumes, real_volumes])
    data = [{"cohort": "simulated_radiotherapy (seed 2024)", "n_patients": len(sim_ids)},
            {"cohort": real.name, "n_patients": len(real_ids)}]
    result = pretrain_volumes(volumes, args.out, encoder="resnet", width=args.width, steps=args.steps, batch_size=8,
                              lr=2e-3, mask_ratio=0.5, patch_size=8, seed=0, keep_checkpoint=False,
                              metadata={"preprocessing": config.to_dict(), "data": data})
    seconds = time.perf_counter() - t0
    record = json.loads((Path(args.out) / "encoder.json").read_text())
    write_model_card(Path(args.out), record, seconds)
    print(f"wrote {args.out}: {len(volumes)} volumes, loss {result.loss_history[0]:.4f} -> {result.loss_history[-1]:.4f}, "
          f"{seconds:.0f} s")


if __name__ == "__main__":
    main()

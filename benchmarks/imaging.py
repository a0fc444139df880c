"""Quality and speed of bayesrad.imaging; writes benchmarks/results/imaging.json.

1. probe: radiotherapy simulator, CT+PET. Ridge-probe R^2 of the true latent tumour phenotype
   (size, aggressiveness) from the pooled embeddings (``linear_probe_r2``: 5 x 5-fold CV, the
   penalty chosen inside each training fold), for several initialisations: each randomly
   initialised encoder, the same encoder after masked-inpainting pretraining on the cohort's
   images (no labels), and the shipped ``bayesrad/imaging/pretrained/encoder_small`` (pretrained on other patients).
2. saliency: glioma_pet simulator, MR_T1C + static PET + the early (5-15 min) sum of the dynamic
   PET, where aggressive tissue peaks before it washes out. An encoder + linear head is fine-tuned
   on the aggressiveness latent with training patients only (``VolumeRegressor``, early stopping
   on an inner split); its integrated-gradient heatmap (signed, smoothed by one voxel), put back
   on the original image grid, is scored against the true aggressive subregion by ROC AUC over
   the voxels of the lesion, on held-out patients.
3. mil: liver_multiphase simulator, three CT phases, three classes from the patient label only.
   Balanced accuracy of attention-MIL (volume alone, and with the lesion mask as a fourth
   channel) vs the cohort's radiomics block + logistic regression on the same stratified folds,
   with logistic regression on the true latents as the ceiling of what the images hold.
4. real: IBSI sarcoma patients (real CT, PET, MR as three channels) and pyradiomics' cases
   (lung1-2 CT; brain1-2 and breast1 MR, one channel each): preprocessing, embedding, and
   pretraining loss falling on them.
5. throughput: volumes/s of embedding and of pretraining steps on this machine; on a GPU also at
   96^3 with bfloat16 autocast, with peak memory.

Cohort seeds differ from those the settings were chosen on (radiotherapy 0 and 2024, glioma 2
and 12, liver 1), so no reported figure comes from data that tuned it.

    python benchmarks/imaging.py [--quick] [--only SECTION]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, r2_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bayesrad.data.cohort import Cohort
from bayesrad.data.simulate import simulate
from bayesrad.imaging import (
    AttentionMILClassifier, PreprocessConfig, VolumeRegressor, embed_volumes, gradient_saliency,
    heatmap_auc, heatmap_to_image, integrated_gradient_saliency, linear_probe_r2, load_encoder, preprocess_cohort,
    preprocess_patient, pretrain_volumes, save_heatmap,
)
from bayesrad.imaging.encoders import EncoderConfig, VolumeEncoder
from bayesrad.imaging.probe import probe_protocol
from bayesrad.imaging.transforms import metatensor_to_sitk
from _machine import machine_info  # benchmarks/ is on sys.path when run as a script
from train_encoder import CONFIG as RT_CONFIG, PRETRAIN, weights_sha256  # the shipped encoder's settings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
STS = ROOT / ".." / "shared" / "data" / "radiomics_reference" / "ibsi" / "data_sets" / "ibsi_validation" / "nifti"
PYRADIOMICS = ROOT / ".." / "shared" / "data" / "radiomics_reference" / "pyradiomics" / "data"
# pyradiomics' own test cases: real scans (nrrd) with tumour masks, one modality each
PYRADIOMICS_CASES = {"CT": ("lung1", "lung2"), "MR_T1": ("brain1", "brain2", "breast1")}


def summary(values) -> dict:
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "n": int(len(v))}


def probe(features, targets) -> dict:
    out = linear_probe_r2(features, targets, n_splits=5, n_repeats=5, seed=0, target_names=["size", "aggressiveness"])
    return {k: out[k] for k in ("mean", "sd", "mean_over_targets", "sd_mean_over_targets")}


def bench_probe(n: int, steps: int, n_inits: int, tmp: Path) -> tuple[dict, dict]:
    sim = simulate("radiotherapy", n_patients=n, seed=7, out=tmp / "rt", image_size=48)
    t0 = time.perf_counter()
    volumes, _, ids = preprocess_cohort(sim.cohort, RT_CONFIG)
    preprocess_rate = len(ids) / (time.perf_counter() - t0)
    targets = sim.truth.latents.loc[ids, ["radiomics[0]", "radiomics[1]"]].to_numpy()
    per_init, embed_rates, pretrain_rates = [], [], []
    for init in range(n_inits):
        # pretrain_volumes seeds torch with `seed` before building the encoder, so the random
        # encoder below holds exactly the initial weights that pretraining starts from
        torch.manual_seed(init)
        random_encoder = VolumeEncoder(EncoderConfig("resnet", 2, 32, PRETRAIN["width"]))
        t0 = time.perf_counter()
        random_features = embed_volumes(random_encoder, volumes, device="cpu")
        embed_rates.append(len(ids) / (time.perf_counter() - t0))
        settings = {**PRETRAIN, "steps": steps}
        result = pretrain_volumes(volumes, tmp / f"enc{init}", seed=init, keep_checkpoint=False, device="cpu", **settings)
        pretrain_rates.append(result.volumes_per_second)
        row = {"init_seed": init, "random": probe(random_features, targets),
               "pretrained": probe(embed_volumes(result.encoder, volumes, device="cpu"), targets),
               "pretraining_loss_first10_last10": [float(np.mean(result.loss_history[:10])),
                                                   float(np.mean(result.loss_history[-10:]))]}
        per_init.append(row)
        print("probe init", init, json.dumps({k: row[k]["mean"] for k in ("random", "pretrained")}), flush=True)
    out = {
        "scenario": "radiotherapy (seed 7)", "n_patients": len(ids), "latents": ["size", "aggressiveness"],
        "encoder": f"resnet width {PRETRAIN['width']} (64 pooled features)", "pretraining": {**PRETRAIN, "steps": steps},
        "protocol": probe_protocol(5, 5),
        "per_init": per_init,
    }
    for kind in ("random", "pretrained"):
        means = [r[kind]["mean_over_targets"] for r in per_init]
        out[f"r2_{kind}_mean_over_targets"] = summary(means)
        for j, name in enumerate(("size", "aggressiveness")):
            out[f"r2_{kind}_{name}"] = summary([r[kind]["mean"][j] for r in per_init])
    out["r2_gain_pretrained_minus_random"] = summary(
        [r["pretrained"]["mean_over_targets"] - r["random"]["mean_over_targets"] for r in per_init])
    small = ROOT / "bayesrad" / "imaging" / "pretrained" / "encoder_small"
    encoder, record = load_encoder(small)
    if PreprocessConfig.from_dict(record["preprocessing"]) == RT_CONFIG:
        out["encoder_small"] = {**probe(embed_volumes(encoder, volumes, device="cpu"), targets),
                                "weights_sha256": weights_sha256(small)}
    out["meets_target"] = bool(out["r2_pretrained_mean_over_targets"]["mean"] >= 0.6
                               and out["r2_gain_pretrained_minus_random"]["min"] > 0)
    throughput = {"device": "cpu", "torch_threads": torch.get_num_threads(), "volume": "2 x 32^3",
                  "preprocess_patients_per_s": preprocess_rate, "embed_volumes_per_s": float(np.median(embed_rates)),
                  "pretrain_volumes_per_s": float(np.median(pretrain_rates)), "batch_pretrain": PRETRAIN["batch_size"]}
    return out, throughput


def bench_saliency(n: int, tmp: Path) -> dict:
    config = PreprocessConfig(modalities=("MR_T1C", "PET", "DPET"), size=24, spacing_mm=4.0, margin_mm=8.0,
                              dynamic_window_s=(300.0, 900.0))
    sim = simulate("glioma_pet", n_patients=n, seed=3, out=tmp / "glioma", image_size=48)
    images = sim.cohort.images
    volumes, masks, ids = preprocess_cohort(sim.cohort, config)
    target = sim.truth.latents.loc[ids, "radiomics[1]"].to_numpy()
    order = np.random.default_rng(0).permutation(len(ids))
    n_train = int(0.7 * len(ids))
    train, test = np.sort(order[:n_train]), np.sort(order[n_train:])
    t0 = time.perf_counter()
    model = VolumeRegressor(encoder="resnet", width=8, epochs=80, patience=15, seed=0, device="auto")
    model.fit(volumes[train], target[train])
    fit_seconds = time.perf_counter() - t0
    test_r2 = float(r2_score(target[test], model.predict(volumes[test])))
    truth_paths = sim.truth.aggressive_masks
    methods = {
        "integrated_gradients_signed_smoothed": lambda v: integrated_gradient_saliency(model.module_, v),
        "integrated_gradients_abs_smoothed": lambda v: integrated_gradient_saliency(model.module_, v, signed=False),
        "gradient_x_input_abs_smoothed": lambda v: gradient_saliency(model.module_, v, sigma_voxels=1.0),
    }
    aucs = {name: [] for name in methods}
    channel_aucs = {m: [] for m in config.modalities}
    example = None
    for k in test:
        pid = ids[k]
        vol = preprocess_patient(images, pid, config)
        region = sitk.GetArrayFromImage(sitk.ReadImage(str(truth_paths[pid]))) > 0
        lesion_row = images[(images.patient_id == pid) & (images.modality == "PET")].iloc[0]
        lesion = sitk.GetArrayFromImage(sitk.ReadImage(lesion_row["mask_path"])) > 0
        if not ((region & lesion).any() and (lesion & ~region).any()):
            continue  # the AUC needs aggressive and non-aggressive lesion voxels
        for name, method in methods.items():
            heat = method(vol.image)
            on_original = sitk.GetArrayFromImage(heatmap_to_image(heat, vol.affine, vol.reference))
            aucs[name].append(heatmap_auc(on_original, region, within=lesion))
            if example is None and name.startswith("integrated_gradients_signed"):
                example = (pid, heat, vol, region, aucs[name][-1])
        # does each input channel carry the subregion? (raw intensity, on the preprocessed grid)
        grid_region = _truth_on_grid(truth_paths[pid], vol) & (vol.mask[0].numpy() > 0)
        inside = vol.mask[0].numpy() > 0
        if grid_region.any() and (inside & ~grid_region).any():
            for c, modality in enumerate(config.modalities):
                channel_aucs[modality].append(float(roc_auc_score(grid_region[inside], vol.image[c].numpy()[inside])))
    pid, heat, vol, region, auc = example
    save_heatmap(heat, vol.affine, vol.reference, RESULTS, name="imaging_saliency_example", outline=region,
                 zoom_voxels=24, title=f"{pid} (held out): integrated gradients of predicted aggressiveness\n"
                                       f"cyan: true aggressive subregion; AUC within the lesion {auc:.2f}")
    primary = aucs["integrated_gradients_signed_smoothed"]
    return {
        "scenario": "glioma_pet (seed 3)", "n_patients": len(ids), "n_train": len(train), "n_test": len(test),
        "channels": list(config.modalities), "dynamic_window_s": list(config.dynamic_window_s),
        "grid": f"{config.size}^3 at {config.spacing_mm} mm", "target": "aggressiveness latent (radiomics[1])",
        "predictor": "VolumeRegressor: resnet width 8 + linear head, fine-tuned on training patients only "
                     "(20% of them for early stopping)",
        "predictor_test_r2": test_r2, "predictor_validation_r2": float(model.validation_r2_),
        "predictor_best_epoch": int(model.best_epoch_), "predictor_fit_seconds": fit_seconds,
        "primary_method": "integrated_gradients_signed_smoothed (32 steps, zero baseline, summed over channels, "
                          "Gaussian sigma 1 voxel = 4 mm)",
        "auc_within_lesion": {name: {**summary(v), "median": float(np.median(v)), "p10": float(np.percentile(v, 10)),
                                     "share_at_least_0.75": float(np.mean(np.asarray(v) >= 0.75))}
                              for name, v in aucs.items()},
        "auc_within_lesion_mean": float(np.mean(primary)),
        "meets_target": bool(np.mean(primary) >= 0.75),
        "raw_channel_auc_within_lesion": {m: summary(v) for m, v in channel_aucs.items()},
        "evaluation": "heatmap resampled onto the original 4 mm image grid; ROC AUC of heatmap values vs the true "
                      "aggressive-subregion mask over the voxels of the lesion mask; held-out patients",
        "example_png": "benchmarks/results/imaging_saliency_example.png",
    }


def _truth_on_grid(path, vol) -> np.ndarray:
    """The true subregion mask resampled (nearest) onto a preprocessed patient's grid, (x, y, z)."""
    grid = metatensor_to_sitk(np.zeros(vol.mask.shape[1:], np.float32), vol.affine)
    truth = sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkFloat32)
    on_grid = sitk.Resample(truth, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0)
    return sitk.GetArrayFromImage(on_grid).transpose(2, 1, 0) > 0.5


def bench_mil(n: int, epochs: int, tmp: Path) -> dict:
    # 4 mm is the simulator's own grid: finer resampling adds voxels (8x the cost), not information
    config = PreprocessConfig(modalities=("CT_arterial", "CT_portal", "CT_delayed"), size=16, spacing_mm=4.0,
                              margin_mm=8.0)
    sim = simulate("liver_multiphase", n_patients=n, seed=5, out=tmp / "liver", image_size=48)
    volumes, masks, ids = preprocess_cohort(sim.cohort, config)
    labels = sim.cohort.blocks["outcome"]["tumour_class"].reindex(ids)
    keep = labels.notna().to_numpy()
    volumes, masks = volumes[keep], masks[keep]
    ids, y = [i for i, k in zip(ids, keep) if k], labels[keep].astype(str).to_numpy()
    radiomics = sim.cohort.blocks["radiomics"].reindex(ids)
    latents = sim.truth.latents.loc[ids, ["radiomics[0]", "radiomics[1]", "radiomics[2]"]]
    folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(volumes, y))
    inputs = {"mil_volume": volumes, "mil_volume_and_lesion_mask": torch.cat([volumes, masks], 1)}
    scores = {name: [] for name in (*inputs, "radiomics_logistic", "true_latents_logistic")}
    seconds = {name: 0.0 for name in inputs}
    for train, test in folds:
        for name, x in inputs.items():
            t0 = time.perf_counter()
            mil = AttentionMILClassifier(instance="patch", patch_size=4, embed_dim=32, attention_dim=16, epochs=epochs,
                                         validation_fraction=0.2, patience=10, seed=0, device="auto")
            mil.fit(x[train], y[train])
            scores[name].append(float(balanced_accuracy_score(y[test], mil.predict(x[test]))))
            seconds[name] += time.perf_counter() - t0
        for name, table in (("radiomics_logistic", radiomics), ("true_latents_logistic", latents)):
            fill = table.iloc[train].mean()
            baseline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, class_weight="balanced"))
            baseline.fit(table.iloc[train].fillna(fill), y[train])
            scores[name].append(float(balanced_accuracy_score(y[test], baseline.predict(table.iloc[test].fillna(fill)))))
        print("mil fold", json.dumps({k: v[-1] for k, v in scores.items()}), flush=True)
    best = "mil_volume_and_lesion_mask"
    diff = np.asarray(scores[best]) - np.asarray(scores["radiomics_logistic"])
    return {
        "scenario": "liver_multiphase (seed 5)", "n_patients": len(ids),
        "class_counts": pd.Series(y).value_counts().to_dict(), "folds": len(folds),
        "instances": f"4^3-voxel patches (16 mm) of a 3 x {config.size}^3 volume at {config.spacing_mm} mm",
        "training": f"class-balanced cross entropy, AdamW, <= {epochs} epochs, early stopping (patience 10) on a "
                    f"stratified 20% of the training fold",
        "balanced_accuracy": {name: v for name, v in scores.items()},
        "mean": {name: float(np.mean(v)) for name, v in scores.items()},
        "mil_minus_radiomics_per_fold": diff.tolist(),
        "mil_minus_radiomics": {"mean": float(diff.mean()), "sd": float(diff.std(ddof=1)),
                                "se": float(diff.std(ddof=1) / np.sqrt(len(diff)))},
        "mil_beats_baseline": bool(np.mean(scores[best]) > np.mean(scores["radiomics_logistic"])),
        "mil_fit_seconds_per_fold": {k: v / len(folds) for k, v in seconds.items()},
        "radiomics_columns": list(radiomics.columns),
        "note": "true_latents_logistic uses the simulator's latent tumour phenotype (not observable): the ceiling of "
                "a linear read-out of what the images encode",
    }


def _real_end_to_end(rows: list[dict], modalities: tuple[str, ...], steps: int, batch_size: int,
                     out: Path) -> dict:
    """Preprocess, pretrain (``steps``) and embed real patients; what each step gave."""
    cohort = Cohort({}, pd.DataFrame(rows), name=out.name)
    config = PreprocessConfig(modalities=modalities, size=32, spacing_mm=4.0, margin_mm=10.0)
    t0 = time.perf_counter()
    volumes, masks, ids = preprocess_cohort(cohort, config)
    seconds = time.perf_counter() - t0
    result = pretrain_volumes(volumes, out, width=8, steps=steps, batch_size=batch_size, lr=2e-3,
                              patch_size=8, keep_checkpoint=False, device="cpu")
    features = embed_volumes(result.encoder, volumes, device="cpu")
    losses = result.loss_history
    return {
        "patients": ids, "channels": list(config.modalities), "preprocess_seconds_per_patient": seconds / len(ids),
        "mask_voxels_after_preprocessing": masks.sum(dim=(1, 2, 3, 4)).tolist(),
        "embedding_shape": list(features.shape), "embedding_finite": bool(np.isfinite(features).all()),
        "pretraining_steps": steps, "loss_first5_mean": float(np.mean(losses[:5])), "loss_last5_mean": float(np.mean(losses[-5:])),
        "loss_falls": bool(np.mean(losses[-5:]) < np.mean(losses[:5])),
    }


def bench_real(steps: int, tmp: Path) -> dict:
    rows = []
    for patient in sorted(p.name for p in STS.glob("STS_*")):
        for modality in ("CT", "PET", "MR_T1"):
            rows.append(dict(patient_id=patient, modality=modality, path=str((STS / patient / f"{modality}_image.nii.gz").resolve()),
                             mask_path=str((STS / patient / f"{modality}_mask.nii.gz").resolve()), mask_labels="",
                             roi="gtv", frame_times="", units=""))
    report = _real_end_to_end(rows, ("CT", "PET", "MR_T1"), steps, 3, tmp / "real_enc")
    report["pyradiomics_cases"] = {}
    for modality, cases in PYRADIOMICS_CASES.items():
        rows = [dict(patient_id=case, modality=modality, path=str((PYRADIOMICS / f"{case}_image.nrrd").resolve()),
                     mask_path=str((PYRADIOMICS / f"{case}_label.nrrd").resolve()), mask_labels="", roi="gtv",
                     frame_times="", units="") for case in cases]
        report["pyradiomics_cases"][modality] = _real_end_to_end(rows, (modality,), steps, len(cases),
                                                                 tmp / f"real_{modality}")
    return report


def bench_gpu(tmp: Path) -> dict:
    """Embedding and pretraining throughput of the package's own code at 96^3 on CUDA (bfloat16
    autocast and DataLoader workers, as ``pretrain_volumes`` does on a GPU), with peak memory."""
    if not torch.cuda.is_available():
        return {"status": "not measured: no GPU"}
    volumes = torch.rand(32, 2, 96, 96, 96)
    out = {"device": torch.cuda.get_device_name(0), "volume": "2 x 96^3", "encoder": "resnet width 16",
           "precision": "bfloat16 autocast"}
    torch.cuda.reset_peak_memory_stats()
    result = pretrain_volumes(volumes, tmp / "gpu_enc", encoder="resnet", width=16, steps=24, batch_size=8,
                              device="cuda", keep_checkpoint=False)
    out["pretrain_volumes_per_s"] = result.volumes_per_second
    out["pretrain_peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    embed_volumes(result.encoder, volumes[:8], batch_size=8, device="cuda")  # warm-up
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    embed_volumes(result.encoder, volumes, batch_size=8, device="cuda")
    out["embed_volumes_per_s"] = len(volumes) / (time.perf_counter() - t0)
    out["embed_peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


SECTIONS = ("probe", "saliency", "mil", "real", "gpu")


def run_section(name: str, quick: bool, tmp: Path, report: dict) -> None:
    if name == "probe":
        report["probe"], report["throughput_cpu"] = bench_probe(60 if quick else 120, 60 if quick else PRETRAIN["steps"],
                                                                 1 if quick else 3, tmp)
    elif name == "saliency":
        report["saliency"] = bench_saliency(60 if quick else 300, tmp)
    elif name == "mil":
        report["mil"] = bench_mil(60 if quick else 300, 10 if quick else 40, tmp)
    elif name == "real":
        report["real"] = bench_real(20 if quick else 40, tmp)
    else:
        report["gpu"] = bench_gpu(tmp)
    print(name, json.dumps(report[name])[:2000], flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller cohorts and fewer steps (a smoke run, not the figures)")
    parser.add_argument("--only", choices=SECTIONS, help="re-run one section and update it in the existing imaging.json")
    args = parser.parse_args()
    # one thread: on a shared machine more threads only contend (tiny 3D convolutions)
    torch.set_num_threads(1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "imaging.json"
    started = time.perf_counter()
    if args.only:
        report = json.loads(path.read_text())
        report.setdefault("sections_rerun", []).append({"section": args.only, "machine": machine_info(torch_threads=1)})
    else:
        report = {"benchmark": "imaging", "quick": args.quick, "machine": machine_info(torch_threads=1)}
    with tempfile.TemporaryDirectory() as tmp_name:
        for name in ([args.only] if args.only else SECTIONS):
            run_section(name, args.quick, Path(tmp_name), report)
            path.write_text(json.dumps(report, indent=2))  # keep finished sections if a later one fails
    report.setdefault("seconds_total", time.perf_counter() - started)
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()

"""What two numbers read off the dose map score on a demo's own folds: the reference for the `dose` row.

    .venv/bin/python benchmarks/dose_features.py --home RICE_HOME [--profile quick]

Reads a RICE_HOME after a demo (`benchmarks/demo.py --home DIR`): its cross-validation folds
(`cv_splits`, with the labels) and every development patient's registered dose map
(`registered_volumes/<profile>/<patient>/dose.nii.gz`, Gy on the profile's grid). Two features per
patient stand for the two dose terms of the synthetic generator's risk model
(`rice_models.synth.label_model`): the maximum dose (Gy; the prescription, hence the EQD2 term) and the
volume at or above 90 % of it (ml; the high-dose volume, the PTV term). For each fold, a class-balanced
logistic regression (scikit-learn; features standardised on the fold's training patients) is fit on the
training patients and scored on the validation patients with the pipeline's macro F1
(`rice_models.metrics.classification_metrics`). It prints each fold's macro F1 and their mean, to set
beside the ablation's `dose` row: how much of the planted dose signal these folds let a reader that is
told where to look recover, not a model of the pipeline.
"""

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np

from rice_assets.experiments import read_splits
from rice_models.labels import label_index
from rice_models.metrics import classification_metrics
from rice_models.paths import RicePaths

HIGH_DOSE_FRACTION = 0.9
"""The high-dose volume is the volume at or above this fraction of the map's maximum."""


def dose_features(path: Path) -> tuple[float, float]:
    """(maximum dose in Gy, volume in ml at or above `HIGH_DOSE_FRACTION` of it) of one dose map."""
    image = nib.load(path)
    dose = np.asarray(image.dataobj, dtype=np.float64)  # type: ignore[attr-defined]
    voxel_ml = float(np.prod(image.header.get_zooms()[:3])) / 1000.0  # type: ignore[attr-defined]
    peak = float(dose.max())
    return peak, float(np.count_nonzero(dose >= HIGH_DOSE_FRACTION * peak)) * voxel_ml


def fold_scores(paths: RicePaths, profile: str) -> list[float]:
    """Macro F1 of the two-feature logistic regression on each fold's validation patients."""
    from sklearn.linear_model import LogisticRegression

    splits = read_splits(paths, profile)
    features = {
        pid: dose_features(paths.lake_dir("registered_volumes", pid, profile) / "dose.nii.gz")
        for pid in splits.development
    }
    scores: list[float] = []
    for fold in splits.folds:
        x_train = np.array([features[pid] for pid in fold.train])
        mean, sd = x_train.mean(axis=0), x_train.std(axis=0) + 1e-9
        model = LogisticRegression(class_weight="balanced")
        model.fit((x_train - mean) / sd, [label_index(splits.labels[pid]) for pid in fold.train])
        x_val = (np.array([features[pid] for pid in fold.val]) - mean) / sd
        y_val = [label_index(splits.labels[pid]) for pid in fold.val]
        macro_f1 = classification_metrics(y_val, model.predict_proba(x_val)[:, 1])["macro_f1"]
        assert macro_f1 is not None, "macro F1 is defined for any fold"
        scores.append(float(macro_f1))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="a RICE_HOME after a demo")
    parser.add_argument("--profile", default="quick")
    args = parser.parse_args()
    paths = RicePaths(home=args.home.resolve(), landing=args.home.resolve() / "landing")
    scores = fold_scores(paths, args.profile)
    folds = ", ".join(f"{s:.3f}" for s in scores)
    print(f"{args.home}: maximum dose + high-dose volume, macro F1 per fold {folds}")
    print(f"  mean {np.mean(scores):.3f}")


if __name__ == "__main__":
    main()

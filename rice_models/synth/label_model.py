"""The label model of the synthetic cohort: clinically motivated latent features -> P(RICE) -> label.

Radiation-induced contrast enhancement (RICE, radionecrosis) is a late normal-brain effect: its risk
grows with the biologically effective dose (EQD2 with alpha/beta = 2 Gy) and with the volume of brain
irradiated to a high dose. Tumour recurrence is more likely after an incomplete resection (residual
enhancing tumour on the post-operative scan). The model below turns these into a logistic risk::

    logit P(RICE) = RISK_INTERCEPT
                    + W_DOSE     * (EQD2 - REFERENCE_EQD2_GY) / EQD2_SCALE_GY
                    + W_VOLUME   * (ln V_PTV - LOG_PTV_CENTER) / LOG_PTV_SCALE
                    + W_RESIDUAL * residual_tumour
                    + eps,   eps ~ N(0, RISK_NOISE_SD^2)  (unobserved susceptibility)

The lesion that appears at the event scan follows its label's presentation with probability
P_TYPICAL (RICE: diffuse, patchy, away from the cavity in the high-dose volume; recurrence: solid
nodule at the cavity margin), otherwise the other label's presentation.

Everything here is vectorised numpy, free of images, so the label model can be tested and its
per-channel separability (`bayes_separability`) computed from hundreds of thousands of draws.
"""

import dataclasses
from collections.abc import Mapping

import numpy as np
from scipy.special import expit

from rice_models.channels import COMBINATIONS

RICE = "rice"
RECURRENCE = "recurrence"
NODULAR = "nodular"
DIFFUSE = "diffuse"

# --- radiobiology -------------------------------------------------------------------------------
ALPHA_BETA_GY = 2.0  # late normal-brain effects (radionecrosis)
REFERENCE_EQD2_GY = 60.0
EQD2_SCALE_GY = 4.0

# --- patient & plan features --------------------------------------------------------------------
AGE_MEAN_YEARS = 58.0
AGE_SD_YEARS = 11.0
AGE_RANGE_YEARS = (30.0, 85.0)
P_FEMALE = 0.4
ELDERLY_AGE_YEARS = 65.0  # elderly patients are mostly treated hypofractionated (40.05 Gy / 15)
P_HYPOFRACTIONATED_ELDERLY = 0.6
P_HYPOFRACTIONATED_YOUNGER = 0.05
CAVITY_RADIUS_RANGE_MM = (7.5, 15.0)  # geometric-mean semi-axis: cavities of 15-30 mm diameter
CAVITY_AXIS_LOG_SD = 0.12  # per-axis log-normal elongation around the mean radius
CTV_MARGIN_RANGE_MM = (15.0, 20.0)  # cavity -> CTV isotropic margin (clipped to the brain)
PTV_MARGIN_MM = 3.0  # CTV -> PTV set-up margin
P_RESIDUAL_TUMOUR = 0.3  # residual nodular enhancement at the cavity rim on the post-op scan

# --- risk model ---------------------------------------------------------------------------------
LOG_PTV_CENTER = 4.90  # population median of ln(V_PTV / cc) under the sampling above
LOG_PTV_SCALE = 0.25  # population sd of ln(V_PTV / cc)
RISK_INTERCEPT = 1.3
W_DOSE = 1.5
W_VOLUME = 2.2
W_RESIDUAL = -1.5
RISK_NOISE_SD = 0.4
P_TYPICAL = 0.72  # probability that the event lesion looks like its label


@dataclasses.dataclass(frozen=True)
class FractionationScheme:
    """One prescription: total dose to the PTV in a number of equal fractions.

    Args:
        name: short key.
        prescription_gy: total physical dose prescribed to the PTV.
        n_fractions: number of fractions.
    """

    name: str
    prescription_gy: float
    n_fractions: int

    @property
    def fraction_gy(self) -> float:
        """Dose per fraction."""
        return self.prescription_gy / self.n_fractions

    @property
    def eqd2_gy(self) -> float:
        """Equivalent dose in 2 Gy fractions for late brain effects (alpha/beta = ALPHA_BETA_GY)."""
        return self.prescription_gy * (self.fraction_gy + ALPHA_BETA_GY) / (2.0 + ALPHA_BETA_GY)


# Normofractionated schemes with their relative frequency; the hypofractionated one is age-driven.
STANDARD_SCHEMES: tuple[tuple[FractionationScheme, float], ...] = (
    (FractionationScheme("60Gy/30", 60.0, 30), 0.65),
    (FractionationScheme("59.4Gy/33", 59.4, 33), 0.14),
    (FractionationScheme("54Gy/30", 54.0, 30), 0.12),
    (FractionationScheme("66Gy/33", 66.0, 33), 0.09),
)
HYPOFRACTIONATED_SCHEME = FractionationScheme("40.05Gy/15", 40.05, 15)
SCHEMES: tuple[FractionationScheme, ...] = tuple(s for s, _ in STANDARD_SCHEMES) + (HYPOFRACTIONATED_SCHEME,)


@dataclasses.dataclass(frozen=True)
class LatentTable:
    """Latent features of n patients, one array entry per patient (see module docstring).

    Args:
        age_years: age at radiotherapy.
        female: sex.
        scheme_index: index into SCHEMES.
        cavity_radii_mm: (n, 3) semi-axes of the resection cavity.
        ctv_margin_mm: cavity -> CTV margin.
        residual_tumour: residual enhancing tumour on the post-op scan.
        risk_noise: the unobserved susceptibility term eps.
        p_rice: P(RICE) from the risk model.
        is_rice: the sampled label.
        typical: whether the event lesion looks like its label.
    """

    age_years: np.ndarray
    female: np.ndarray
    scheme_index: np.ndarray
    cavity_radii_mm: np.ndarray
    ctv_margin_mm: np.ndarray
    residual_tumour: np.ndarray
    risk_noise: np.ndarray
    p_rice: np.ndarray
    is_rice: np.ndarray
    typical: np.ndarray

    def __len__(self) -> int:
        return int(self.age_years.shape[0])

    @property
    def eqd2_gy(self) -> np.ndarray:
        """EQD2 of each patient's prescription."""
        return np.array([SCHEMES[i].eqd2_gy for i in self.scheme_index])

    @property
    def prescription_gy(self) -> np.ndarray:
        """Physical prescription (what the dose map shows)."""
        return np.array([SCHEMES[i].prescription_gy for i in self.scheme_index])

    @property
    def ptv_volume_cc(self) -> np.ndarray:
        """PTV volume, approximated as the cavity ellipsoid grown by CTV + PTV margins."""
        return ptv_volume_cc(self.cavity_radii_mm, self.ctv_margin_mm)

    @property
    def presents_diffuse(self) -> np.ndarray:
        """Whether the event lesion is diffuse/remote (RICE-like) rather than a marginal nodule."""
        return np.where(self.typical, self.is_rice, ~self.is_rice)


@dataclasses.dataclass(frozen=True)
class PatientLatents:
    """The latent features of one patient (one row of a LatentTable), JSON-ready via `as_dict`."""

    age_years: float
    female: bool
    scheme: FractionationScheme
    cavity_radii_mm: tuple[float, float, float]
    ctv_margin_mm: float
    residual_tumour: bool
    risk_noise: float
    p_rice: float
    label: str
    presentation: str

    @property
    def ptv_volume_cc(self) -> float:
        """Approximate PTV volume (cavity + CTV + PTV margins)."""
        return float(ptv_volume_cc(np.asarray([self.cavity_radii_mm]), np.asarray([self.ctv_margin_mm]))[0])

    def as_dict(self) -> dict[str, object]:
        """JSON-ready features, including the derived EQD2, PTV volume and risk logit."""
        return {
            "age_years": round(self.age_years, 1),
            "sex": "F" if self.female else "M",
            "scheme": self.scheme.name,
            "prescription_gy": self.scheme.prescription_gy,
            "n_fractions": self.scheme.n_fractions,
            "eqd2_gy": round(self.scheme.eqd2_gy, 2),
            "cavity_radii_mm": [round(r, 2) for r in self.cavity_radii_mm],
            "ctv_margin_mm": round(self.ctv_margin_mm, 2),
            "ptv_volume_cc_model": round(self.ptv_volume_cc, 1),
            "residual_tumour": self.residual_tumour,
            "risk_noise": round(self.risk_noise, 3),
            "p_rice": round(self.p_rice, 4),
            "label": self.label,
            "presentation": self.presentation,
        }


def ptv_volume_cc(cavity_radii_mm: np.ndarray, ctv_margin_mm: np.ndarray) -> np.ndarray:
    """Volume of the cavity ellipsoid grown by the CTV and PTV margins, in cc.

    Args:
        cavity_radii_mm: (n, 3) semi-axes.
        ctv_margin_mm: (n,) CTV margins.
    """
    grown = np.asarray(cavity_radii_mm) + (np.asarray(ctv_margin_mm) + PTV_MARGIN_MM)[:, None]
    return 4.0 / 3.0 * np.pi * np.prod(grown, axis=1) / 1000.0


def risk_logit(
    eqd2_gy: np.ndarray, ptv_cc: np.ndarray, residual_tumour: np.ndarray, risk_noise: np.ndarray
) -> np.ndarray:
    """logit P(RICE) of the risk model (module docstring), vectorised."""
    dose_term = W_DOSE * (np.asarray(eqd2_gy) - REFERENCE_EQD2_GY) / EQD2_SCALE_GY
    volume_term = W_VOLUME * (np.log(ptv_cc) - LOG_PTV_CENTER) / LOG_PTV_SCALE
    residual_term = W_RESIDUAL * np.asarray(residual_tumour, dtype=float)
    return RISK_INTERCEPT + dose_term + volume_term + residual_term + np.asarray(risk_noise)


def _sample_schemes(rng: np.random.Generator, age_years: np.ndarray) -> np.ndarray:
    n = age_years.shape[0]
    p_hypo = np.where(age_years >= ELDERLY_AGE_YEARS, P_HYPOFRACTIONATED_ELDERLY, P_HYPOFRACTIONATED_YOUNGER)
    hypo = rng.random(n) < p_hypo
    weights = np.array([w for _, w in STANDARD_SCHEMES])
    standard = rng.choice(len(STANDARD_SCHEMES), size=n, p=weights / weights.sum())
    return np.where(hypo, len(SCHEMES) - 1, standard)


def _sample_cavity_radii(rng: np.random.Generator, n: int) -> np.ndarray:
    mean_radius = rng.uniform(*CAVITY_RADIUS_RANGE_MM, size=n)
    log_axes = rng.normal(0.0, CAVITY_AXIS_LOG_SD, size=(n, 3))
    log_axes -= log_axes.mean(axis=1, keepdims=True)  # keep the geometric mean at mean_radius
    return mean_radius[:, None] * np.exp(log_axes)


def sample_latent_table(rng: np.random.Generator, n: int) -> LatentTable:
    """Draw n patients' latent features and labels from the generative model.

    Args:
        rng: random generator (consumed in a fixed order, so a seed fixes the draw).
        n: number of patients.
    """
    age = np.clip(rng.normal(AGE_MEAN_YEARS, AGE_SD_YEARS, size=n), *AGE_RANGE_YEARS)
    female = rng.random(n) < P_FEMALE
    scheme_index = _sample_schemes(rng, age)
    radii = _sample_cavity_radii(rng, n)
    margin = rng.uniform(*CTV_MARGIN_RANGE_MM, size=n)
    residual = rng.random(n) < P_RESIDUAL_TUMOUR
    noise = rng.normal(0.0, RISK_NOISE_SD, size=n)
    eqd2 = np.array([SCHEMES[i].eqd2_gy for i in scheme_index])
    p_rice = expit(risk_logit(eqd2, ptv_volume_cc(radii, margin), residual, noise))
    is_rice = rng.random(n) < p_rice
    typical = rng.random(n) < P_TYPICAL
    return LatentTable(age, female, scheme_index, radii, margin, residual, noise, p_rice, is_rice, typical)


def latents_of(table: LatentTable, i: int) -> PatientLatents:
    """Row i of a LatentTable as a PatientLatents."""
    is_rice = bool(table.is_rice[i])
    diffuse = bool(table.presents_diffuse[i])
    radii = table.cavity_radii_mm[i]
    return PatientLatents(
        age_years=float(table.age_years[i]),
        female=bool(table.female[i]),
        scheme=SCHEMES[int(table.scheme_index[i])],
        cavity_radii_mm=(float(radii[0]), float(radii[1]), float(radii[2])),
        ctv_margin_mm=float(table.ctv_margin_mm[i]),
        residual_tumour=bool(table.residual_tumour[i]),
        risk_noise=float(table.risk_noise[i]),
        p_rice=float(table.p_rice[i]),
        label=RICE if is_rice else RECURRENCE,
        presentation=DIFFUSE if diffuse else NODULAR,
    )


def sample_latents(rng: np.random.Generator) -> PatientLatents:
    """Draw one patient's latent features and label (the same model as `sample_latent_table`)."""
    return latents_of(sample_latent_table(rng, 1), 0)


# --- separability --------------------------------------------------------------------------------
# What each input channel reveals about the latent features (an idealised reader):
#   dose   : the physical prescription (hence the scheme and EQD2) and the PTV volume (dose extent);
#   postop : the cavity size and the residual tumour;
#   event  : the cavity size and the lesion's presentation (diffuse/remote vs nodular/marginal).
CHANNEL_COMBINATIONS: tuple[str, ...] = COMBINATIONS  # the ablation's seven keys


def _quantile_bins(values: np.ndarray, n_bins: int) -> np.ndarray:
    edges = np.quantile(values, np.linspace(0.0, 1.0, n_bins + 1)[1:-1])
    return np.searchsorted(edges, values)


def _channel_features(table: LatentTable, n_bins: int) -> Mapping[str, list[np.ndarray]]:
    cavity_size = _quantile_bins(np.exp(np.log(table.cavity_radii_mm).mean(axis=1)), n_bins)
    return {
        "dose": [table.scheme_index, _quantile_bins(np.log(table.ptv_volume_cc), n_bins)],
        "postop": [cavity_size, table.residual_tumour],
        "event": [cavity_size, table.presents_diffuse],
    }


def _bayes_scores(features: list[np.ndarray], is_rice: np.ndarray) -> tuple[float, float]:
    key = np.zeros(is_rice.shape[0], dtype=np.int64)
    for feature in features:
        key = key * 1024 + np.asarray(feature, dtype=np.int64)
    _, cell = np.unique(key, return_inverse=True)
    rice_rate = np.bincount(cell, weights=is_rice) / np.bincount(cell)
    predicted = rice_rate[cell] > 0.5
    f1 = []
    for positive in (True, False):
        tp = np.sum((predicted == positive) & (is_rice == positive))
        wrong = np.sum(predicted != is_rice)
        f1.append(2 * tp / (2 * tp + wrong))
    return float(np.mean(predicted == is_rice)), float(np.mean(f1))


def bayes_separability(
    n_draws: int = 200_000, seed: int = 0, n_bins: int = 20
) -> dict[str, dict[str, float]]:
    """Accuracy and macro F1 of the Bayes-optimal reader of each channel combination.

    Plug-in estimate: the observed features of each combination (see `_channel_features`) are binned
    (continuous ones into `n_bins` quantile bins) and each cell predicts its majority label over
    `n_draws` simulated patients. It is the ceiling a perfect model could reach on the idealised
    features, not what a CNN learns from 40 patients.

    Args:
        n_draws: simulated patients.
        seed: random seed.
        n_bins: quantile bins per continuous feature.

    Returns:
        {combination: {"accuracy": ..., "macro_f1": ...}} for CHANNEL_COMBINATIONS, plus
        "prevalence" -> {"rice": fraction of RICE}.
    """
    if n_draws < 1000:
        raise ValueError(f"n_draws must be >= 1000 for a stable estimate, got {n_draws}")
    table = sample_latent_table(np.random.default_rng(seed), n_draws)
    per_channel = _channel_features(table, n_bins)
    result: dict[str, dict[str, float]] = {}
    for combination in CHANNEL_COMBINATIONS:
        features = [f for channel in combination.split("+") for f in per_channel[channel]]
        accuracy, macro_f1 = _bayes_scores(features, table.is_rice)
        result[combination] = {"accuracy": accuracy, "macro_f1": macro_f1}
    result["prevalence"] = {"rice": float(np.mean(table.is_rice))}
    return result

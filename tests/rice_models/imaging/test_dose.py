import re

import numpy as np
import pytest

from rice_models.imaging.dose import dose_course_problems, dose_sanity, total_dose_gy
from rice_models.imaging.volume import data_of, make_image


def dose_image(values) -> object:
    return make_image(np.asarray(values, dtype=np.float32).reshape(2, 2, 1), np.diag([2.0, 2.0, 2.0, 1.0]))


@pytest.mark.parametrize(
    ("kind", "n_fractions", "factor"),
    [
        ("fraction", 30, 30.0),
        ("fraction", 15, 15.0),
        ("fraction", np.int64(5), 5.0),
        ("total", None, 1.0),
        ("total", 30, 1.0),  # n_fractions is informational for a total dose
    ],
)
def test_total_dose(kind, n_fractions, factor):
    img = dose_image([0.0, 1.0, 2.0, 1.5])
    out = total_dose_gy(img, kind, n_fractions)
    assert np.allclose(data_of(out), data_of(img) * factor)
    assert np.allclose(out.affine, img.affine)


@pytest.mark.parametrize(
    ("kind", "n_fractions", "match"),
    [
        ("fraction", None, "needs n_fractions"),
        ("fraction", 0, "positive integer"),
        ("fraction", -3, "positive integer"),
        ("fraction", 2.5, "positive integer"),
        ("fraction", True, "positive integer"),
        ("total", "30", "positive integer"),
        ("fractions", 30, "dose_kind"),
        ("", None, "dose_kind"),
    ],
)
def test_total_dose_refuses(kind, n_fractions, match):
    with pytest.raises(ValueError, match=match):
        total_dose_gy(dose_image([0, 1, 2, 3]), kind, n_fractions)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.0, 30.0, 60.0, 61.2], []),
        ([0.0, 0.0, 0.0, 0.0], ["all zero"]),
        ([-0.5, 1.0, 60.0, 2.0], ["negative"]),
        ([0.0, 1.0, 2.0, 0.5], []),  # 2 Gy: one fraction is still within 1-120 Gy
        ([0.0, 100.0, 6000.0, 10.0], ["outside the plausible range"]),  # cGy
        ([0.0, 0.1, 0.2, 0.3], ["outside the plausible range"]),
        ([0.0, np.nan, 60.0, 1.0], ["non-finite"]),
        ([np.inf, -1.0, 60.0, 1.0], ["non-finite", "negative"]),
    ],
)
def test_dose_sanity(values, expected):
    problems = dose_sanity(dose_image(values))
    assert len(problems) == len(expected)
    for problem, fragment in zip(problems, expected, strict=True):
        assert fragment in problem


def test_dose_sanity_range_is_checked():
    with pytest.raises(ValueError, match="increasing pair"):
        dose_sanity(dose_image([0, 1, 2, 3]), max_range_gy=(10.0, 5.0))


# --- the dose's header and the cohort's covariates against dose_kind ---------------------------------

COURSE = make_image(np.array([[[0.0, 30.0], [61.8, 45.0]]] * 2), np.eye(4))  # maximum 61.8 Gy
ONE_FRACTION = make_image(data_of(COURSE) / 30.0, np.eye(4))  # maximum 2.06 Gy


@pytest.mark.parametrize(
    ("total", "kind", "n", "rx", "summation", "dose_type", "match"),
    [
        (COURSE, "total", 30, 60.0, "PLAN", "PHYSICAL", None),
        (COURSE, "total", None, None, None, None, None),  # NIfTI without covariates: the range decides
        (COURSE, "total", 30, 60.0, "FRACTION", None, None),  # a fraction group's whole course
        (COURSE, "fraction", 30, None, "FRACTION_SESSION", None, None),  # x30 already applied
        (COURSE, "total", 30, 60.0, "MULTI_PLAN", "EFFECTIVE", None),
        (ONE_FRACTION, "total", 30, None, "FRACTION", None, r"0\.0687 Gy a fraction.*dose_kind=fraction"),
        (ONE_FRACTION, "total", None, 60.0, None, None, r"0\.03 x prescription_gy 60 Gy"),
        (ONE_FRACTION, "total", None, None, "FRACTION", None, "give n_fractions or prescription_gy"),
        (COURSE, "total", 30, None, "FRACTION_SESSION", None, "holds one fraction"),
        (COURSE, "fraction", 30, None, "PLAN", None, "holds the whole course"),
        (COURSE, "total", 30, 60.0, "BEAM", None, "partial dose"),
        (COURSE, "total", 30, 60.0, "CONTROL_POINT", None, "partial dose"),
        (COURSE, "total", 30, 60.0, "PLAN", "ERROR", "DoseType 'ERROR' is not a dose"),
        (COURSE, "total", 30, 60.0, "WHATEVER", None, "not a known summation type"),
        (COURSE, "total", None, 20.0, "PLAN", None, r"3\.09 x prescription_gy 20 Gy.*cGy"),
        (make_image(data_of(COURSE) * 0.5, np.eye(4)), "total", 1, 24.0, None, None, None),  # radiosurgery
        (COURSE, "total", 1, None, None, None, r"61\.8 Gy a fraction"),
        (make_image(data_of(COURSE) * 30, np.eye(4)), "fraction", 30, None, None, None, "holds the course"),
    ],
)
def test_dose_course_problems(total, kind, n, rx, summation, dose_type, match):
    problems = dose_course_problems(total, kind, n, rx, summation, dose_type)
    if match is None:
        assert problems == []
    else:
        assert problems and re.search(match, "; ".join(problems)), problems

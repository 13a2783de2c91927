"""The landing-zone contract: `cohort.csv` plus one folder of inputs per patient.

`validate_landing(landing)` checks a whole cohort and reports *every* problem at once, each
naming the row, the patient and the file, so a user fixes their cohort in one pass. Problems
that concern one patient reject only that patient; the others go on.
"""

import csv
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from rice_models.labels import LABELS
from rice_models.paths import write_text_atomic
from rice_models.pseudonyms import identifier_problems

CHANNELS: tuple[str, ...] = ("mri_postop", "mri_event", "dose")
PLANNING_CT = "planning_ct"  # optional folder: the planning CT series, in the RT Dose's frame
YES_NO: tuple[str, ...] = ("", "yes", "no")
DOSE_KINDS: tuple[str, ...] = ("total", "fraction")
REQUIRED_COLUMNS: tuple[str, ...] = ("patient_id", "label", "split", "dose_kind", "n_fractions")
PATIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with the landing zone.

    Args:
        message: what is wrong, in words a user can act on.
        patient_id: the patient it concerns, or None for cohort-wide problems.
        row: the 1-based line number in cohort.csv (header is line 1), if any.
        file: the file or folder concerned.
    """

    message: str
    patient_id: str | None = None
    row: int | None = None
    file: str | None = None

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"cohort.csv line {self.row}")
        if self.patient_id is not None:
            where.append(f"patient {self.patient_id}")
        if self.file is not None:
            where.append(self.file)
        return f"{', '.join(where)}: {self.message}" if where else self.message


@dataclasses.dataclass(frozen=True)
class PatientEntry:
    """One validated cohort.csv row with the paths of its inputs."""

    patient_id: str
    label: str | None
    split: str | None
    dose_kind: str
    n_fractions: int | None
    inputs: dict[str, Path]
    covariates: dict[str, str]

    @property
    def accept_missing_geometry(self) -> bool:
        """cohort.csv column `accept_missing_geometry` is `yes`: a NIfTI input without world geometry
        (sform_code = qform_code = 0) is used with nibabel's fallback placement instead of refused."""
        return self.covariates.get("accept_missing_geometry", "").strip().lower() == "yes"

    @property
    def prescription_gy(self) -> float | None:
        """The `prescription_gy` covariate (needed for RELATIVE RT Dose files), if given."""
        value = self.covariates.get("prescription_gy", "").strip()
        return float(value) if value else None


@dataclasses.dataclass(frozen=True)
class LandingReport:
    """The outcome of validating a landing zone."""

    patients: list[PatientEntry]
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems

    def rejected_ids(self) -> list[str]:
        return sorted({p.patient_id for p in self.problems if p.patient_id is not None})


class LandingError(ValueError):
    """The landing zone cannot be used at all (no cohort.csv, bad header)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def find_input(patient_dir: Path, channel: str) -> Path | None:
    """The file or DICOM folder holding one channel, following the contract's accepted names."""
    names = [f"{channel}.nii.gz", f"{channel}.nii"]
    names += ["dose.dcm"] if channel == "dose" else [channel]
    for name in names:
        path = patient_dir / name
        if path.is_file() or (path.is_dir() and channel != "dose"):
            return path
    return None


def _check_input(path: Path, channel: str) -> str | None:
    """A reason the input cannot be read, or None. Cheap checks only: no image decoding."""
    if path.is_dir():
        if not any(p.is_file() and not p.name.startswith(".") for p in path.rglob("*")):
            return f"{channel} DICOM folder is empty"
        return None
    if path.stat().st_size == 0:
        return f"{channel} file is empty"
    if path.name.endswith(".gz"):
        with path.open("rb") as fh:
            if fh.read(2) != b"\x1f\x8b":
                return f"{channel} file ends in .gz but is not gzip-compressed"
    return None


def _parse_row(
    row: dict[str, str], line: int, landing: Path, extra: list[str]
) -> tuple[PatientEntry | None, list[Problem]]:
    pid = (row.get("patient_id") or "").strip()
    problems: list[Problem] = []

    def bad(message: str, file: str | None = None) -> None:
        problems.append(Problem(message, patient_id=pid or None, row=line, file=file))

    if not PATIENT_ID.fullmatch(pid):
        bad(f"patient_id {pid!r} must match [A-Za-z0-9_-]{{1,64}}")
        return None, problems
    label = (row.get("label") or "").strip() or None
    if label is not None and label not in LABELS:
        bad(f"unknown label {label!r}; expected one of {list(LABELS)} or empty (unlabelled)")
    split = (row.get("split") or "").strip() or None
    if split is not None and split != "test":
        bad(f"unknown split {split!r}; expected 'test' or empty (development set)")
    if split == "test" and label is None:
        bad("a test-set patient needs a label")
    dose_kind = (row.get("dose_kind") or "").strip()
    if dose_kind not in DOSE_KINDS:
        bad(f"dose_kind {dose_kind!r} must be one of {list(DOSE_KINDS)}")
    n_fractions = _parse_fractions((row.get("n_fractions") or "").strip(), dose_kind, bad)
    covariates = {k: (row.get(k) or "") for k in extra}
    _check_prescription(covariates, bad)
    flag = covariates.get("accept_missing_geometry", "").strip().lower()
    if flag not in YES_NO:
        bad(f"accept_missing_geometry {flag!r} must be 'yes', 'no' or empty")
    inputs = _find_inputs(landing / pid, bad)
    for file, message in identifier_problems(pid, inputs):
        bad(message, file=file)
    if problems:
        return None, problems
    entry = PatientEntry(pid, label, split, dose_kind, n_fractions, inputs, covariates)
    return entry, problems


def _parse_fractions(text: str, dose_kind: str, bad: Any) -> int | None:
    if not text:
        if dose_kind == "fraction":
            bad("dose_kind is 'fraction' but n_fractions is empty: the total dose cannot be computed")
        return None
    if not text.isdigit() or int(text) < 1:
        bad(f"n_fractions {text!r} must be a positive integer")
        return None
    return int(text)


def _check_prescription(covariates: dict[str, str], bad: Any) -> None:
    text = covariates.get("prescription_gy", "").strip()
    if not text:
        return
    try:
        ok = 0 < float(text) <= 120
    except ValueError:
        ok = False
    if not ok:
        bad(f"prescription_gy {text!r} must be a number of Gy in (0, 120]")


def _find_inputs(patient_dir: Path, bad: Any) -> dict[str, Path]:
    if not patient_dir.is_dir():
        bad("patient folder is missing", file=str(patient_dir))
        return {}
    inputs: dict[str, Path] = {}
    for channel in CHANNELS:
        path = find_input(patient_dir, channel)
        if path is None:
            accepted = (
                "dose.nii.gz, dose.nii or dose.dcm"
                if channel == "dose"
                else (f"{channel}.nii.gz, {channel}.nii or a {channel}/ DICOM folder")
            )
            bad(f"missing {channel} (expected {accepted})", file=str(patient_dir))
            continue
        reason = _check_input(path, channel)
        if reason:
            bad(reason, file=str(path))
            continue
        inputs[channel] = path
    planning_ct = patient_dir / PLANNING_CT
    if planning_ct.exists():
        reason = None if planning_ct.is_dir() else "planning_ct must be a folder of one CT series"
        reason = reason or _check_input(planning_ct, PLANNING_CT)
        if reason:
            bad(reason, file=str(planning_ct))
        else:
            inputs[PLANNING_CT] = planning_ct
    return inputs


def read_cohort_rows(cohort_csv: Path) -> tuple[list[dict[str, str]], list[str]]:
    """The rows and the extra (covariate) column names of cohort.csv.

    Raises:
        LandingError: the file is missing, unreadable, or lacks required columns.
    """
    if not cohort_csv.is_file():
        raise LandingError([Problem("cohort.csv not found", file=str(cohort_csv))])
    try:
        with cohort_csv.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in reader.fieldnames or []]
            reader.fieldnames = header
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as err:
        raise LandingError([Problem(f"cannot be read as CSV: {err}", file=str(cohort_csv))]) from err
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise LandingError([Problem(f"missing required column(s) {missing}", file=str(cohort_csv))])
    return rows, [h for h in header if h not in REQUIRED_COLUMNS]


def validate_landing(landing: Path) -> LandingReport:
    """Validate cohort.csv and every patient's inputs; collect all problems.

    Raises:
        LandingError: the cohort as a whole is unusable (see `read_cohort_rows`).
    """
    cohort_csv = landing / "cohort.csv"
    rows, extra = read_cohort_rows(cohort_csv)
    entries: dict[str, PatientEntry] = {}
    problems: list[Problem] = []
    first_line: dict[str, int] = {}
    duplicated: set[str] = set()
    for index, row in enumerate(rows):
        line = index + 2
        pid = (row.get("patient_id") or "").strip()
        if pid in first_line:
            duplicated.add(pid)
            problems.append(
                Problem(f"duplicate patient_id (first on line {first_line[pid]})", patient_id=pid, row=line)
            )
            continue
        first_line[pid] = line
        entry, row_problems = _parse_row(row, line, landing, extra)
        problems.extend(row_problems)
        if entry is not None:
            entries[pid] = entry
    patients = [e for pid, e in entries.items() if pid not in duplicated]
    problems.extend(_unlisted_folders(landing, set(first_line)))
    if not rows:
        problems.append(Problem("cohort.csv has no patients", file=str(cohort_csv)))
    return LandingReport(patients=patients, problems=problems)


def _unlisted_folders(landing: Path, listed: set[str]) -> list[Problem]:
    """Patient folders without a cohort.csv row: reported, never silently ignored."""
    return [
        Problem("patient folder has no row in cohort.csv; it is ignored", patient_id=d.name, file=str(d))
        for d in sorted(landing.iterdir())
        if d.is_dir() and not d.name.startswith(".") and d.name not in listed
    ]


def write_manifest(path: Path, report: LandingReport) -> Path:
    """Write the validated cohort and its problems as JSON, atomically; return the path."""
    payload = {
        "patients": [
            {**dataclasses.asdict(p), "inputs": {k: str(v) for k, v in p.inputs.items()}}
            for p in report.patients
        ],
        "problems": [dataclasses.asdict(p) for p in report.problems],
    }
    return write_text_atomic(path, json.dumps(payload, indent=2))


class PatientRejected(LookupError):
    """The patient is not a valid patient of the landing zone (rejected, or not in cohort.csv)."""


def patient_entry(landing: Path, patient_id: str) -> PatientEntry:
    """The validated entry of one patient, read from the landing zone itself.

    Per-patient assets call this rather than trusting an older manifest, so a partition that
    runs before `cohort_manifest` is re-materialised still sees the current cohort.csv. Only this
    patient's row and folder are checked (the same checks as `validate_landing`, duplicates of its id
    included): the cost does not grow with the other patients' folders. cohort.csv itself is parsed
    once per process and version of the file (`_cohort_rows`), so a process that preprocesses many
    patients reads it once.

    Raises:
        LandingError: the landing zone as a whole is unusable.
        PatientRejected: the patient is not in cohort.csv or fails validation (the reasons are given).
    """
    rows, extra, lines_of = _cohort_rows(landing / "cohort.csv")
    lines = lines_of.get(patient_id, [])
    if not lines:
        raise PatientRejected(
            f"patient {patient_id} is not a valid landing-zone patient: no row in cohort.csv"
        )
    problems = [
        Problem(f"duplicate patient_id (first on line {lines[0]})", patient_id=patient_id, row=line)
        for line in lines[1:]
    ]
    entry, row_problems = _parse_row(rows[lines[0] - 2], lines[0], landing, extra)
    problems = row_problems + problems
    if entry is None or problems:
        detail = "; ".join(str(p) for p in problems)
        raise PatientRejected(f"patient {patient_id} is not a valid landing-zone patient: {detail}")
    return entry


CohortRows = tuple[list[dict[str, str]], list[str], dict[str, list[int]]]
_ROWS_CACHE: dict[tuple[str, int, int, int], CohortRows] = {}


def _cohort_rows(cohort_csv: Path) -> CohortRows:
    """`read_cohort_rows` plus the cohort.csv line numbers of each patient id, memoised on the file's
    path, inode, size and modification time (ns), so a rewritten cohort.csv is read again. Holds the
    latest version only."""
    try:
        stat = cohort_csv.stat()
    except OSError:
        rows, extra = read_cohort_rows(cohort_csv)  # raises the LandingError that names the missing file
        return rows, extra, _lines_by_id(rows)
    key = (str(cohort_csv), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key not in _ROWS_CACHE:
        _ROWS_CACHE.clear()
        rows, extra = read_cohort_rows(cohort_csv)
        _ROWS_CACHE[key] = (rows, extra, _lines_by_id(rows))
    return _ROWS_CACHE[key]


def _lines_by_id(rows: list[dict[str, str]]) -> dict[str, list[int]]:
    lines: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        lines.setdefault((row.get("patient_id") or "").strip(), []).append(index + 2)
    return lines


def cohort_kind(landing: Path) -> str:
    """`synthetic` when the landing zone was written by `rice synth` (its ground_truth.json), else `real`."""
    truth = landing / "ground_truth.json"
    if not truth.is_file():
        return "real"
    try:
        generator = json.loads(truth.read_text()).get("generator", "")
    except (OSError, ValueError):
        return "real"
    return "synthetic" if str(generator).startswith("rice_models.synth") else "real"

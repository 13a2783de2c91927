"""Patient identity at ingestion: keyed pseudonyms (optional) and the folder-name identifier check.

Pseudonyms (off by default). With `RICE_PSEUDONYM_KEY=/secure/place/rice.key` (a file outside
RICE_HOME; created, 0600, on first use), the pipeline reads a *pseudonymised view* of the landing
zone instead of the landing zone itself: `<key folder>/landing/` holds a `cohort.csv` whose
`patient_id` column holds `p` + the first 20 hex digits of HMAC-SHA256(key, patient id), and one
symbolic link per patient, `<pseudonym> -> <landing>/<patient id>`. Partition keys, run keys,
catalog rows, lake paths, MLflow tags, logs and plot titles therefore only ever see the pseudonym;
the mapping lives beside the key (`<key folder>/pseudonyms.csv`, 0600) for `display_id`, which shows
a user their own id (`rice predict`, reports). The view and the mapping are rebuilt from the landing
zone whenever it is read (`RicePaths.from_env`), so a new patient gets its pseudonym on arrival.
The key folder must not lie under RICE_HOME (refused with `PseudonymError`): a copy of RICE_HOME
then holds no original id and no way back to one.

Identifier check (always on). A patient whose folder name equals its own DICOM PatientID,
PatientName or AccessionNumber would carry a hospital identifier into RICE_HOME; with pseudonyms
off such a patient is refused at validation (`identifier_problems`), naming the field and the fix.
"""

import csv
import functools
import hashlib
import hmac
import io
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

KEY_ENV = "RICE_PSEUDONYM_KEY"
"""Environment variable naming the key file; unset = pseudonyms off."""
MAPPING_FILE = "pseudonyms.csv"
VIEW_FOLDER = "landing"
IDENTIFIER_FIELDS: tuple[str, ...] = ("PatientID", "PatientName", "AccessionNumber")
_DIGITS = 20


class PseudonymError(ValueError):
    """The pseudonym setup is unsafe or unusable (key inside RICE_HOME, unreadable key)."""


def pseudonym(key: bytes, patient_id: str) -> str:
    """The keyed pseudonym of a patient id: `p` + 20 hex digits of HMAC-SHA256 (a valid patient id)."""
    return "p" + hmac.new(key, patient_id.encode("utf-8"), hashlib.sha256).hexdigest()[:_DIGITS]


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path` (0600) atomically, only if it changed."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


class Pseudonyms:
    """The key, the mapping and the pseudonymised view of one key folder.

    Args:
        key_path: the key file (hex text); created with 32 random bytes when missing.
    """

    def __init__(self, key_path: Path) -> None:
        self.key_path = Path(key_path).resolve()
        self.folder = self.key_path.parent
        self.mapping_path = self.folder / MAPPING_FILE
        self.view = self.folder / VIEW_FOLDER

    @classmethod
    def from_env(cls) -> "Pseudonyms | None":
        """The configured pseudonyms (`$RICE_PSEUDONYM_KEY`), or None when the option is off."""
        value = os.environ.get(KEY_ENV, "").strip()
        return cls(Path(value)) if value else None

    def key(self) -> bytes:
        """The key, created (0600, folder 0700) on first use.

        Raises:
            PseudonymError: the key file is unreadable or not hex.
        """
        if not self.key_path.is_file():
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            _write_private(self.key_path, secrets.token_hex(32) + "\n")
        try:
            return bytes.fromhex(self.key_path.read_text(encoding="utf-8").strip())
        except (OSError, ValueError) as err:
            raise PseudonymError(f"pseudonym key {self.key_path} is unreadable or not hex: {err}") from err

    def mapping(self) -> dict[str, str]:
        """Pseudonym -> original patient id, as last written (empty before the first ingestion)."""
        if not self.mapping_path.is_file():
            return {}
        with self.mapping_path.open(newline="", encoding="utf-8") as fh:
            return {row["pseudonym"]: row["patient_id"] for row in csv.DictReader(fh)}

    def build_view(self, landing: Path, home: Path) -> Path:
        """Write the pseudonymised view of `landing` (module docstring); return its folder.

        Raises:
            PseudonymError: the key folder lies under `home` (RICE_HOME).
        """
        home = Path(home).resolve()
        if self.folder == home or home in self.folder.parents:
            raise PseudonymError(
                f"the pseudonym key {self.key_path} lies under RICE_HOME {home}: keep it (and its mapping) "
                f"outside, e.g. RICE_PSEUDONYM_KEY=$HOME/.rice-keys/rice.key"
            )
        key = self.key()
        self.view.mkdir(parents=True, exist_ok=True, mode=0o700)
        source = Path(landing) / "cohort.csv"
        if not source.is_file():
            return self.view
        with source.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip() for f in reader.fieldnames or []]
            reader.fieldnames = fields
            rows = list(reader)
        mapping = dict(self.mapping())
        for row in rows:
            original = (row.get("patient_id") or "").strip()
            if original:
                alias = pseudonym(key, original)
                mapping[alias] = original
                row["patient_id"] = alias
        self._link_patients(Path(landing), {p: o for p, o in mapping.items() if p in _ids(rows)})
        _write_private(self.mapping_path, _csv(["pseudonym", "patient_id"], [
            {"pseudonym": p, "patient_id": o} for p, o in sorted(mapping.items())
        ]))  # fmt: skip
        _write_private(self.view / "cohort.csv", _csv(fields, rows))
        return self.view

    def _link_patients(self, landing: Path, current: Mapping[str, str]) -> None:
        """One symbolic link per listed patient; links of patients no longer listed are removed."""
        for entry in self.view.iterdir():
            if entry.is_symlink() and entry.name not in current:
                entry.unlink()
        for alias, original in current.items():
            link, target = self.view / alias, (landing / original).resolve()
            if link.is_symlink() and Path(os.readlink(link)) == target:
                continue
            tmp = self.view / f".{alias}.{os.getpid()}.link"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(target, target_is_directory=True)
            os.replace(tmp, link)


def _ids(rows: list[dict[str, str]]) -> set[str]:
    return {(row.get("patient_id") or "").strip() for row in rows}


def _csv(fields: list[str], rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def pseudonymised_landing(home: Path, landing: Path) -> Path:
    """The landing zone the pipeline reads: `landing` itself, or its pseudonymised view when the option
    is on (`$RICE_PSEUDONYM_KEY`)."""
    pseudonyms = Pseudonyms.from_env()
    return landing if pseudonyms is None else pseudonyms.build_view(landing, home)


def display_id(patient_id: str) -> str:
    """The id to show the user: the original id of a pseudonym (from the mapping beside the key), else
    `patient_id` unchanged."""
    pseudonyms = Pseudonyms.from_env()
    if pseudonyms is None:
        return patient_id
    return pseudonyms.mapping().get(patient_id, patient_id)


@functools.lru_cache(maxsize=4096)
def _dicom_identifiers(path: str, mtime_ns: int) -> dict[str, str]:
    import pydicom  # imported here: landing validation without DICOM inputs never needs it

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(IDENTIFIER_FIELDS))
    except Exception:  # an unreadable file is reported by the readers, with their own message
        return {}
    found = {}
    for field in IDENTIFIER_FIELDS:
        value = str(ds.get(field, "") or "").strip()
        if value:
            found[field] = value
    return found


def _first_dicom(path: Path) -> Path | None:
    if path.is_file():
        return path if path.suffix.lower() == ".dcm" else None
    if path.is_dir():
        for entry in sorted(path.iterdir()):
            if entry.is_file() and not entry.name.startswith("."):
                return entry
    return None


def identifier_problems(patient_id: str, inputs: Mapping[str, Path]) -> list[tuple[str, str]]:
    """(file, message) for each DICOM input whose PatientID, PatientName or AccessionNumber equals the
    patient's folder name (case-insensitive; PatientName also by its `^`-separated parts joined).

    One header per input is read (the first file of a series). Empty when pseudonyms are on: the
    folder name the pipeline sees is then the pseudonym.
    """
    if Pseudonyms.from_env() is not None:
        return []
    name = patient_id.strip().lower()
    problems = []
    for path in inputs.values():
        first = _first_dicom(Path(path))
        if first is None:
            continue
        found = _dicom_identifiers(str(first), first.stat().st_mtime_ns)
        for field, value in found.items():
            candidates = {value.lower(), value.replace("^", "").lower(), value.replace("^", " ").lower()}
            if name in candidates:
                problems.append(
                    (
                        str(path),
                        f"the folder name equals this DICOM's {field}: a hospital identifier would enter "
                        "RICE_HOME (partition keys, catalog, logs). Rename the patient's folder and its "
                        f"cohort.csv patient_id to a study code, or turn on pseudonyms ({KEY_ENV}, README "
                        "'Pseudonyms')",
                    )
                )
                break
    return problems

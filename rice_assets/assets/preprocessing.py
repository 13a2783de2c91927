"""Preprocessing domain, per patient: raw_scans -> dose_maps -> registered_volumes.

Each asset reads the landing zone or the lake, calls `rice_models`, writes its files atomically
under `lake/<asset>/<patient>/` (registered_volumes, which depends on the profile, under
`lake/registered_volumes/<profile>/<patient>/`), records them with their parents in the catalog, and
reports QC as asset checks that name the patient.
"""

from pathlib import Path

import dagster as dg

from data_catalog import ParentRef, ScanRecord
from rice_assets.assets.cohort import cohort_manifest
from rice_assets.config import ProfileConfig
from rice_assets.constants import PREPROCESSING_GROUP
from rice_assets.lineage import patient_record, record_outputs
from rice_assets.partitions import patients_partitions
from rice_assets.resources import CatalogResource, RiceHomeResource
from rice_models.imaging.dose import dose_sanity, total_dose_gy
from rice_models.imaging.pipeline import preprocess_patient
from rice_models.imaging.volume import load_nifti, save_nifti
from rice_models.landing import patient_entry
from rice_models.provenance import sha256_of
from rice_models.sources import SourceScan, read_source, source_format

MRI_CHANNELS = ("mri_postop", "mri_event")


@dg.asset(
    partitions_def=patients_partitions,
    group_name=PREPROCESSING_GROUP,
    deps=[cohort_manifest],
    kinds={"nifti"},
    description="The patient's MRI as canonical float32 RAS NIfTI (DICOM converted, de-identified); "
    "the three source files recorded in the catalog with checksums.",
)
def raw_scans(
    context: dg.AssetExecutionContext, rice_home: RiceHomeResource, catalog: CatalogResource
) -> dg.MaterializeResult:
    pid = context.partition_key
    entry = patient_entry(rice_home.paths.landing, pid)
    scans = {ch: read_source(pid, ch, entry.inputs[ch]) for ch in MRI_CHANNELS}
    out = rice_home.paths.lake_dir("raw_scans", pid)
    files = {ch: save_nifti(scan.image, out / f"{ch}.nii.gz") for ch, scan in scans.items()}
    store = catalog.open()
    store.upsert_patients([patient_record(entry)])
    records = [_scan_record(pid, scan) for scan in scans.values()]
    store.record_scans(pid, [*records, _dose_scan_record(pid, entry.inputs["dose"])])
    record_outputs(context, catalog, "raw_scans", pid, files, {ch: [ParentRef.scan(pid, ch)] for ch in files})
    return dg.MaterializeResult(
        metadata={
            ch: dg.MetadataValue.json({"format": s.format, **s.geometry(), "header": s.header})
            for ch, s in scans.items()
        }
    )


@dg.asset(
    partitions_def=patients_partitions,
    group_name=PREPROCESSING_GROUP,
    deps=[raw_scans],
    kinds={"nifti"},
    check_specs=[
        dg.AssetCheckSpec(
            "dose_plausible",
            asset="dose_maps",
            blocking=True,
            description=(
                "Total dose has no negative or non-finite voxel, is not all zero, and its maximum is "
                "a plausible course dose (1-120 Gy)."
            ),
        )
    ],
    description="Total dose in Gy on its own grid: RT Dose units checked (RELATIVE needs "
    "prescription_gy), a single-fraction file scaled by n_fractions.",
)
def dose_maps(
    context: dg.AssetExecutionContext, rice_home: RiceHomeResource, catalog: CatalogResource
) -> dg.MaterializeResult:
    pid = context.partition_key
    entry = patient_entry(rice_home.paths.landing, pid)
    scan = read_source(pid, "dose", entry.inputs["dose"], prescription_gy=entry.prescription_gy)
    total = total_dose_gy(scan.image, entry.dose_kind, entry.n_fractions)
    path = save_nifti(total, rice_home.paths.lake_dir("dose_maps", pid) / "dose.nii.gz")
    record_outputs(context, catalog, "dose_maps", pid, {"dose": path}, [ParentRef.scan(pid, "dose")])
    problems = dose_sanity(total)
    scale = entry.n_fractions if entry.dose_kind == "fraction" else 1
    return dg.MaterializeResult(
        metadata={
            "dose_max_gy": float(total.get_fdata().max()),
            "dose_kind": entry.dose_kind,
            "scale_factor": scale,
            "source": dg.MetadataValue.json({"format": scan.format, "header": scan.header}),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="dose_plausible",
                passed=not problems,
                description=f"patient {pid}: " + ("; ".join(problems) or "dose plausible"),
            )
        ],
    )


@dg.asset(
    partitions_def=patients_partitions,
    group_name=PREPROCESSING_GROUP,
    deps=[raw_scans, dose_maps],
    kinds={"nifti", "ants"},
    check_specs=[
        dg.AssetCheckSpec(
            "registration_similarity",
            asset="registered_volumes",
            description=(
                "Normalised cross-correlation of registered event MRI and post-op MRI inside the brain "
                "mask is at least the profile's ncc_min."
            ),
        ),
        dg.AssetCheckSpec(
            "brain_mask_volume",
            asset="registered_volumes",
            description=("Brain-mask volume lies in the profile's plausible range (ml)."),
        ),
        dg.AssetCheckSpec(
            "finite_values", asset="registered_volumes", description=("No NaN or Inf in any channel.")
        ),
    ],
    description="All channels on one isotropic grid in the post-op scan's world frame: event MRI "
    "registered (ANTs rigid+affine), dose carried by world coordinates, brain mask (method recorded), "
    "z-scored MRI, cropped to the profile's shape.",
)
def registered_volumes(
    context: dg.AssetExecutionContext,
    config: ProfileConfig,
    rice_home: RiceHomeResource,
    catalog: CatalogResource,
) -> dg.MaterializeResult:
    pid = context.partition_key
    profile = config.resolve()
    lake = rice_home.paths.lake_dir
    inputs = {
        "mri_postop": lake("raw_scans", pid) / "mri_postop.nii.gz",
        "mri_event": lake("raw_scans", pid) / "mri_event.nii.gz",
        "dose": lake("dose_maps", pid) / "dose.nii.gz",
    }
    images = {name: load_nifti(path) for name, path in inputs.items()}
    result = preprocess_patient(images["mri_postop"], images["mri_event"], images["dose"], profile)
    files = result.save(lake("registered_volumes", pid, profile.name))
    postop = ParentRef.artifact("raw_scans", pid, "mri_postop")
    parents = {
        "mri_postop": [postop],
        "mri_event": [ParentRef.artifact("raw_scans", pid, "mri_event"), postop],
        "dose": [ParentRef.artifact("dose_maps", pid, "dose"), postop],
        "brain_mask": [postop],
    }
    qc = result.qc
    record_outputs(context, catalog, "registered_volumes", pid, files, parents, profile, metadata=qc)
    return dg.MaterializeResult(
        metadata={
            "profile": profile.name,
            "settings": dg.MetadataValue.json(profile.as_dict()),
            "mask_method": qc["mask_method"],
            "ncc_event_postop": qc["ncc_event_postop"],
            "brain_volume_ml": qc["brain_volume_ml"],
            "dose_max_gy": qc["dose_max_gy"],
            "seconds": dg.MetadataValue.json(result.timings),
            "files": dg.MetadataValue.json({k: str(v) for k, v in files.items()}),
        },
        check_results=_registration_checks(pid, qc, profile.ncc_min, profile.brain_volume_ml),
    )


def _registration_checks(
    pid: str, qc: dict, ncc_min: float, volume_range: tuple[float, float]
) -> list[dg.AssetCheckResult]:
    bad_channels = [name for name, bad in qc["nonfinite"].items() if bad]
    return [
        dg.AssetCheckResult(
            check_name="registration_similarity",
            passed=qc["ncc_ok"],
            description=f"patient {pid}: NCC {qc['ncc_event_postop']:.3f} (minimum {ncc_min})",
        ),
        dg.AssetCheckResult(
            check_name="brain_mask_volume",
            passed=qc["brain_volume_ok"],
            description=f"patient {pid}: brain mask {qc['brain_volume_ml']:.0f} ml by {qc['mask_method']} "
            f"(plausible {volume_range[0]:.0f}-{volume_range[1]:.0f} ml)",
        ),
        dg.AssetCheckResult(
            check_name="finite_values",
            passed=not bad_channels,
            description=f"patient {pid}: " + (f"NaN/Inf in {bad_channels}" if bad_channels else "all finite"),
        ),
    ]


def _scan_record(pid: str, scan: SourceScan) -> ScanRecord:
    geometry = scan.geometry()
    return ScanRecord(
        patient_id=pid,
        channel=scan.channel,  # type: ignore[arg-type]
        source_path=str(scan.path),
        sha256=scan.sha256,
        format=scan.format,  # type: ignore[arg-type]
        modality=scan.modality,
        shape=tuple(geometry["shape"]),
        spacing=tuple(geometry["spacing_mm"]),
        affine=tuple(tuple(row) for row in geometry["affine"]),
    )


def _dose_scan_record(pid: str, path: Path) -> ScanRecord:
    """The dose source, recorded with its checksum; `dose_maps` reads and converts it."""
    return ScanRecord(
        patient_id=pid,
        channel="dose",
        source_path=str(path),
        sha256=sha256_of(path),
        format=source_format(path),  # type: ignore[arg-type]
        modality="RTDOSE",
    )

"""Preprocessing domain, per patient: raw_scans -> dose_maps -> registered_volumes.

Each asset reads the landing zone or the lake, calls `rice_models`, writes its files atomically
under `lake/<asset>/<patient>/` (registered_volumes, which depends on the profile, under
`lake/registered_volumes/<profile>/<patient>/`), records them with their parents in the catalog, and
reports QC as asset checks that name the patient.
"""

from pathlib import Path

import dagster as dg

from data_catalog import ParentRef, ScanRecord
from rice_assets.assets.landing import landing_scans
from rice_assets.config import ProfileConfig
from rice_assets.constants import PREPROCESSING_GROUP
from rice_assets.lineage import (
    accepted_input,
    landing_relative,
    patient_record,
    record_outputs,
    refusing,
    staged,
)
from rice_assets.partitions import patients_partitions
from rice_assets.resources import CatalogResource, RiceHomeResource
from rice_models.imaging.dose import dose_course_problems, dose_sanity, total_dose_gy
from rice_models.imaging.pipeline import RegistrationFailed, blocking_problems, preprocess_patient
from rice_models.imaging.volume import load_nifti, save_nifti
from rice_models.landing import PLANNING_CT, patient_entry
from rice_models.provenance import sha256_of
from rice_models.sources import InputError, SourceScan, dose_frame, read_source, source_format

MRI_CHANNELS = ("mri_postop", "mri_event")
# what a refusal withdraws: the asset's own outputs and everything per patient made from them
RAW_SCANS_CHAIN = ("registered_volumes", "raw_scans")
DOSE_MAPS_CHAIN = ("registered_volumes", "dose_maps")


@dg.asset(
    partitions_def=patients_partitions,
    group_name=PREPROCESSING_GROUP,
    deps=[landing_scans],
    kinds={"nifti"},
    check_specs=[
        dg.AssetCheckSpec(
            "source_geometry",
            asset="raw_scans",
            description="The inputs' geometry raised no remark (e.g. NIfTI sform and qform that disagree).",
        )
    ],
    description="The patient's MRI (and planning CT, when given) as canonical float32 RAS NIfTI "
    "(DICOM converted, de-identified); the source files recorded in the catalog with checksums. "
    "A file that cannot be used refuses the patient and leaves nothing written.",
)
def raw_scans(
    context: dg.AssetExecutionContext, rice_home: RiceHomeResource, catalog: CatalogResource
) -> dg.MaterializeResult:
    pid = context.partition_key
    paths = rice_home.paths
    with refusing(catalog, paths, pid, RAW_SCANS_CHAIN):
        entry = patient_entry(paths.landing, pid)
        channels = MRI_CHANNELS + ((PLANNING_CT,) if PLANNING_CT in entry.inputs else ())
        scans = {
            ch: read_source(pid, ch, entry.inputs[ch], accept_missing_geometry=entry.accept_missing_geometry)
            for ch in channels
        }
        notes = {ch: list(scan.notes) for ch, scan in scans.items() if scan.notes}
        for ch, lines in notes.items():
            for line in lines:
                context.log.warning(f"patient {pid}, {entry.inputs[ch]}: {line}")
        metadata = {"accepted": True, "notes": notes}
        if PLANNING_CT in scans:  # not a `scans` channel: its source is recorded in the metadata
            ct = scans[PLANNING_CT]
            source = landing_relative(paths.landing, pid, ct.path)
            metadata["planning_ct_source"] = {"path": source, "sha256": ct.sha256, "format": ct.format}
        records = [_scan_record(paths.landing, pid, scans[ch]) for ch in MRI_CHANNELS]
        records.append(_dose_scan_record(paths.landing, pid, entry.inputs["dose"]))
        with staged(paths, "raw_scans", pid) as out:
            files = {ch: save_nifti(scan.image, out.dir / f"{ch}.nii.gz") for ch, scan in scans.items()}
            parents = {ch: [ParentRef.scan(pid, ch)] if ch in MRI_CHANNELS else [] for ch in files}
            with catalog.open().atomic() as store:  # patient, scans and outputs: one transaction
                store.upsert_patients([patient_record(entry)])
                store.record_scans(pid, records)
                record_outputs(
                    context, store, "raw_scans", pid, files, parents, metadata=metadata, staged=out
                )
    return dg.MaterializeResult(
        metadata={
            **{
                ch: dg.MetadataValue.json(
                    {"format": s.format, **s.geometry(), "header": s.header, "notes": list(s.notes)}
                )
                for ch, s in scans.items()
            },
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="source_geometry",
                passed=not notes,
                severity=dg.AssetCheckSeverity.WARN,
                description=f"patient {pid}: "
                + ("; ".join(f"{ch}: {' '.join(lines)}" for ch, lines in notes.items()) or "no remark"),
            )
        ],
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
                "The total dose has no negative or non-finite voxel, is not all zero, its maximum is a "
                "plausible course dose (1-120 Gy), its header (DoseSummationType, DoseType) and the "
                "cohort's dose_kind, n_fractions and prescription_gy agree, and its frame of reference is "
                "the post-op MR's or the planning CT's. A failing dose is refused before anything is written."
            ),
        )
    ],
    description="Total dose in Gy on its own grid: RT Dose units checked (RELATIVE needs "
    "prescription_gy), a single-fraction file scaled by n_fractions, summation type and covariates "
    "checked against dose_kind, frame of reference compared with the post-op MR's.",
)
def dose_maps(
    context: dg.AssetExecutionContext, rice_home: RiceHomeResource, catalog: CatalogResource
) -> dg.MaterializeResult:
    pid = context.partition_key
    paths = rice_home.paths
    with refusing(catalog, paths, pid, DOSE_MAPS_CHAIN):
        entry = patient_entry(paths.landing, pid)
        source = entry.inputs["dose"]
        scan = read_source(
            pid,
            "dose",
            source,
            prescription_gy=entry.prescription_gy,
            accept_missing_geometry=entry.accept_missing_geometry,
        )
        frame = dose_frame(pid, entry.inputs)
        total = total_dose_gy(scan.image, entry.dose_kind, entry.n_fractions)
        problems = dose_sanity(total) + dose_course_problems(
            total,
            entry.dose_kind,
            entry.n_fractions,
            entry.prescription_gy,
            summation_type=scan.header.get("DoseSummationType"),
            dose_type=scan.header.get("DoseType"),
        )
        if problems:
            raise InputError(pid, source, "dose refused: " + "; ".join(problems))
        scale = entry.n_fractions if entry.dose_kind == "fraction" else 1
        dose_max = float(total.get_fdata().max())
        metadata = {
            "accepted": True,
            "frame": frame.as_dict(),
            "dose_max_gy": dose_max,
            "summation_type": scan.header.get("DoseSummationType"),
            "notes": list(scan.notes),
        }
        with staged(paths, "dose_maps", pid) as out:
            path = save_nifti(total, out.dir / "dose.nii.gz")
            record_outputs(
                context,
                catalog,
                "dose_maps",
                pid,
                {"dose": path},
                [ParentRef.scan(pid, "dose")],
                metadata=metadata,
                staged=out,
            )
    return dg.MaterializeResult(
        metadata={
            "dose_max_gy": dose_max,
            "dose_kind": entry.dose_kind,
            "scale_factor": scale,
            "frame": dg.MetadataValue.json(frame.as_dict()),
            "source": dg.MetadataValue.json({"format": scan.format, "header": scan.header}),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="dose_plausible",
                passed=True,
                description=f"patient {pid}: dose plausible ({dose_max:.4g} Gy maximum, {entry.dose_kind}), "
                f"frame: {frame.relation}",
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
                "mask is at least the profile's ncc_min (below ncc_refuse_below the patient is refused, as "
                "when the registered event MRI covers less than event_brain_coverage_min of the brain)."
            ),
        ),
        dg.AssetCheckSpec(
            "brain_mask_volume",
            asset="registered_volumes",
            description=(
                "Brain-mask volume lies in the profile's plausible range (ml); outside "
                "brain_volume_refuse_ml the patient is refused."
            ),
        ),
        dg.AssetCheckSpec(
            "finite_values", asset="registered_volumes", description=("No NaN or Inf in any channel.")
        ),
        dg.AssetCheckSpec(
            "dose_coverage",
            asset="registered_volumes",
            blocking=True,
            description=(
                "The dose grid covers the brain (profile dose_brain_coverage_min), the dose is not all zero "
                "on the MRI's grid and its high-dose region lies in the brain (dose_high_in_brain_min). "
                "A failing patient is refused before anything is written."
            ),
        ),
    ],
    description="All channels on one isotropic grid in the post-op scan's world frame: event MRI "
    "registered (ANTs rigid+affine), dose carried by world coordinates (or through the MRI -> planning CT "
    "registration), brain mask (method recorded), z-scored MRI, cropped to the profile's shape. Only "
    "accepted upstream outputs are consumed; blocking QC refuses the patient before anything is written.",
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
    with refusing(catalog, rice_home.paths, pid, ("registered_volumes",), profile.name):
        inputs = {
            "mri_postop": ("raw_scans", lake("raw_scans", pid) / "mri_postop.nii.gz"),
            "mri_event": ("raw_scans", lake("raw_scans", pid) / "mri_event.nii.gz"),
            "dose": ("dose_maps", lake("dose_maps", pid) / "dose.nii.gz"),
        }
        records = {
            name: accepted_input(catalog, pid, asset, name, path) for name, (asset, path) in inputs.items()
        }
        relation = records["dose"].metadata.get("frame", {}).get("relation")
        planning_ct = None
        if relation == PLANNING_CT:
            ct_path = lake("raw_scans", pid) / f"{PLANNING_CT}.nii.gz"
            accepted_input(catalog, pid, "raw_scans", PLANNING_CT, ct_path)
            planning_ct = load_nifti(ct_path)
        images = {name: load_nifti(path) for name, (_, path) in inputs.items()}
        sources = _source_paths(catalog, pid, {name: path for name, (_, path) in inputs.items()})
        if problems := dose_sanity(images["dose"]):
            raise InputError(pid, sources["dose"], "dose refused: " + "; ".join(problems))
        try:
            result = preprocess_patient(
                images["mri_postop"], images["mri_event"], images["dose"], profile, planning_ct=planning_ct
            )
        except RegistrationFailed as err:
            source = sources.get(err.channel, lake("raw_scans", pid) / f"{err.channel}.nii.gz")
            raise InputError(pid, source, str(err)) from None
        if refusals := blocking_problems(result.qc, profile):
            first = sources[refusals[0][0]]
            reasons = [r if sources[ch] == first else f"{sources[ch]}: {r}" for ch, r in refusals]
            raise InputError(pid, first, "refused by quality control: " + "; ".join(reasons))
        out = staged(rice_home.paths, "registered_volumes", pid, profile.name)
        postop = ParentRef.artifact("raw_scans", pid, "mri_postop")
        dose_parents = [ParentRef.artifact("dose_maps", pid, "dose"), postop]
        if planning_ct is not None:
            dose_parents.append(ParentRef.artifact("raw_scans", pid, PLANNING_CT))
        parents = {
            "mri_postop": [postop],
            "mri_event": [ParentRef.artifact("raw_scans", pid, "mri_event"), postop],
            "dose": dose_parents,
            "brain_mask": [postop],
        }
        qc = result.qc
        with out:
            files = result.save(out.dir)
            record_outputs(
                context,
                catalog,
                "registered_volumes",
                pid,
                files,
                parents,
                profile,
                metadata={**qc, "accepted": True},
                staged=out,
            )
        files = {name: out.path(path) for name, path in files.items()}
    return dg.MaterializeResult(
        metadata={
            "profile": profile.name,
            "settings": dg.MetadataValue.json(profile.as_dict()),
            "mask_method": qc["mask_method"],
            "ncc_event_postop": qc["ncc_event_postop"],
            "brain_volume_ml": qc["brain_volume_ml"],
            "dose_max_gy": qc["dose_max_gy"],
            "dose_grid_brain_coverage": qc["dose_grid_brain_coverage"],
            "dose_frame": qc["dose_frame"],
            "seconds": dg.MetadataValue.json(result.timings),
            "files": dg.MetadataValue.json({k: str(v) for k, v in files.items()}),
        },
        check_results=_registration_checks(pid, qc, profile.ncc_min, profile.brain_volume_ml),
    )


def _source_paths(catalog: CatalogResource, pid: str, fallback: dict[str, Path]) -> dict[str, Path]:
    """The landing-zone source of each channel (from the catalog's scans), else the lake file."""
    recorded = {scan.channel: Path(scan.source_path) for scan in catalog.open().get_scans(pid)}
    return {name: recorded.get(name, path) for name, path in fallback.items()}


def _registration_checks(
    pid: str, qc: dict, ncc_min: float, volume_range: tuple[float, float]
) -> list[dg.AssetCheckResult]:
    bad_channels = [name for name, bad in qc["nonfinite"].items() if bad]
    return [
        dg.AssetCheckResult(
            check_name="registration_similarity",
            passed=qc["ncc_ok"],
            description=f"patient {pid}: NCC {qc['ncc_event_postop']:.3f} (minimum {ncc_min}); the event MRI "
            f"covers {qc['event_grid_brain_coverage']:.0%} of the brain",
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
        dg.AssetCheckResult(
            check_name="dose_coverage",
            passed=True,
            description=f"patient {pid}: the dose grid covers {qc['dose_grid_brain_coverage']:.0%} of the "
            f"brain; {qc['dose_high_in_brain']:.0%} of the high-dose region lies in or near it "
            f"(dose placed by {qc['dose_frame']})",
        ),
    ]


def _scan_record(landing: Path, pid: str, scan: SourceScan) -> ScanRecord:
    geometry = scan.geometry()
    return ScanRecord(
        patient_id=pid,
        channel=scan.channel,  # type: ignore[arg-type]
        source_path=landing_relative(landing, pid, scan.path),
        sha256=scan.sha256,
        format=scan.format,  # type: ignore[arg-type]
        modality=scan.modality,
        shape=tuple(geometry["shape"]),
        spacing=tuple(geometry["spacing_mm"]),
        affine=tuple(tuple(row) for row in geometry["affine"]),
    )


def _dose_scan_record(landing: Path, pid: str, path: Path) -> ScanRecord:
    """The dose source, recorded with its checksum; `dose_maps` reads and converts it."""
    return ScanRecord(
        patient_id=pid,
        channel="dose",
        source_path=landing_relative(landing, pid, path),
        sha256=sha256_of(path),
        format=source_format(path),  # type: ignore[arg-type]
        modality="RTDOSE",
    )

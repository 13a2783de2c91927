"""Framework-free imaging: DICOM/NIfTI I/O, dose handling, resampling, registration, brain masks,
normalisation and the per-patient preprocessing chain of `registered_volumes`.

Every image is a `nibabel.Nifti1Image` holding float32 (masks: uint8) data in RAS+ canonical
orientation with an empty header apart from the geometry (see `volume.make_image`). Submodules are
imported explicitly (`from rice_models.imaging.registration import ...`) so that light callers do
not pay for ANTs or pydicom.
"""

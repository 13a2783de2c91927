import nibabel as nib
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from rice_models.imaging.registration import ncc
from rice_models.imaging.resample import (
    isotropic_grid,
    resample_isotropic,
    resample_to_reference,
    sample_world,
)
from rice_models.imaging.volume import data_of, load_nifti, make_image, save_nifti, world_coordinates

from .conftest import affine_from

COEFFS = np.array([0.7, -1.3, 2.1])
OBLIQUE = Rotation.from_euler("xyz", (12.0, -7.0, 20.0), degrees=True).as_matrix()
GRIDS = {
    "ras": (np.eye(3), (2.0, 2.0, 2.0)),
    "lps_anisotropic": (np.diag([-1.0, -1.0, 1.0]), (1.5, 2.5, 4.0)),
    "permuted": (np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]), (3.0, 2.0, 2.5)),
    "oblique": (OBLIQUE, (2.0, 3.0, 2.0)),
}


def linear_field(img_shape, affine) -> nib.Nifti1Image:
    """An image whose value is a linear function of the world position (linear interpolation is exact)."""
    grid = make_image(np.zeros(img_shape), affine)
    return make_image(world_coordinates(grid) @ COEFFS + 5.0, affine)


def expected_field(img) -> np.ndarray:
    return world_coordinates(img) @ COEFFS + 5.0


@pytest.mark.parametrize("source", list(GRIDS))
@pytest.mark.parametrize("target", list(GRIDS))
def test_resampling_is_by_world_coordinates(source, target):
    directions, spacing = GRIDS[source]
    src = linear_field((30, 28, 26), affine_from(directions, spacing, (0, 0, 0)))
    # centre the source on the world origin so the target grid falls inside it
    src_centre = src.affine[:3, :3] @ ((np.array(src.shape) - 1) / 2) + src.affine[:3, 3]
    src = linear_field(src.shape, affine_from(directions, spacing, tuple(-src_centre)))
    directions, spacing = GRIDS[target]
    ref_aff = affine_from(directions, spacing, (0, 0, 0))
    ref_aff[:3, 3] = -ref_aff[:3, :3] @ ((np.array((10, 9, 8)) - 1) / 2)
    reference = make_image(np.zeros((10, 9, 8)), ref_aff)
    out = resample_to_reference(src, reference, order=1)
    assert np.allclose(data_of(out), expected_field(reference), atol=1e-3)
    assert np.allclose(out.affine, reference.affine)


def test_nothing_is_extrapolated():
    src = make_image(np.full((5, 5, 5), 7.0), affine_from(np.eye(3), (2.0, 2.0, 2.0), (0, 0, 0)))
    # reference: 1 mm grid from -3 to 12 mm along x; source voxel centres span 0..8 mm
    reference = make_image(np.zeros((16, 3, 3)), affine_from(np.eye(3), (1.0, 1.0, 1.0), (-3.0, 2.0, 2.0)))
    for order in (0, 1, 3):
        values = data_of(resample_to_reference(src, reference, order=order, fill=0.0))[:, 1, 1]
        x = np.arange(16) - 3.0
        assert np.all(values[(x >= 0) & (x <= 8)] == pytest.approx(7.0, abs=1e-4))
        assert np.all(values[(x < 0) | (x > 8)] == 0.0)
    filled = resample_to_reference(src, reference, order=1, fill=-1.0)
    assert data_of(filled)[0, 1, 1] == -1.0


def test_identity_resampling_keeps_every_voxel():
    rng = np.random.default_rng(3)
    img = make_image(rng.normal(size=(7, 8, 9)), affine_from(OBLIQUE, (1.1, 1.3, 2.0), (4.0, -3.0, 2.0)))
    for order in (0, 1, 3):
        out = resample_to_reference(img, img, order=order)
        assert np.allclose(data_of(out), data_of(img), atol=1e-5)


def test_world_transform_moves_content(template_coarse):
    shift = np.eye(4)
    shift[:3, 3] = (8.0, 0.0, 0.0)  # one voxel = 4 mm: two voxels
    out = resample_to_reference(template_coarse, template_coarse, world_transform=shift)
    assert np.allclose(data_of(out)[:-2], data_of(template_coarse)[2:], atol=1e-5)
    assert np.all(data_of(out)[-2:] == 0)


def test_lps_anisotropic_copy_realigns_with_its_ras_original(template_coarse, tmp_path):
    """An LPS, anisotropic, obliquely shifted copy written to disk comes back onto the RAS grid."""
    lps_affine = affine_from(np.diag([-1.0, -1.0, 1.0]), (3.0, 2.5, 5.0), (90.0, 120.0, -70.0))
    lps_reference = make_image(np.zeros((62, 90, 36)), lps_affine)
    lps_copy = resample_to_reference(template_coarse, lps_reference, order=3)
    path = save_nifti(lps_copy, tmp_path / "lps.nii.gz")
    raw = nib.load(path)
    assert nib.aff2axcodes(raw.affine) == ("L", "P", "S")
    loaded = load_nifti(path)
    assert nib.aff2axcodes(loaded.affine) == ("R", "A", "S")
    back = resample_to_reference(loaded, template_coarse, order=1)
    inside = data_of(back) > 0
    assert ncc(back, template_coarse, inside) > 0.97
    # and point by point: the same world point holds (nearly) the same intensity
    diff = np.abs(data_of(back) - data_of(template_coarse))[inside]
    assert np.median(diff) < 0.05 * float(data_of(template_coarse).max())


@pytest.mark.parametrize(
    ("spacing", "expected_shape"), [(2.0, (15, 10, 5)), (3.0, (10, 7, 3)), (30.0, (1, 1, 1))]
)
def test_isotropic_grid_covers_the_same_field_of_view(spacing, expected_shape):
    img = make_image(
        np.zeros((30, 20, 10)), affine_from(np.diag([-1.0, 1.0, 1.0]), (1.0, 1.0, 1.0), (5, 6, 7))
    )
    shape, affine = isotropic_grid(img, spacing)
    assert shape == expected_shape
    assert np.allclose(np.linalg.norm(affine[:3, :3], axis=0), spacing)
    centre_old = img.affine @ np.append((np.array(img.shape) - 1) / 2, 1)
    centre_new = affine @ np.append((np.array(shape) - 1) / 2, 1)
    assert np.allclose(centre_old, centre_new)
    assert nib.aff2axcodes(affine) == nib.aff2axcodes(img.affine)


def test_resample_isotropic_preserves_a_linear_field():
    img = linear_field((40, 30, 12), affine_from(np.eye(3), (1.0, 1.0, 3.0), (-20.0, -15.0, -18.0)))
    out = resample_isotropic(img, 2.0, order=1, antialias=False)
    assert out.shape == (20, 15, 18)
    interior = (slice(1, -1), slice(1, -1), slice(1, -1))
    assert np.allclose(data_of(out)[interior], expected_field(out)[interior], atol=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"order": 2}, "order"), ({"order": 5}, "order"), ({"world_transform": np.eye(3)}, "4x4")],
)
def test_resample_refuses(kwargs, match):
    img = make_image(np.zeros((3, 3, 3)), np.eye(4))
    with pytest.raises(ValueError, match=match):
        resample_to_reference(img, img, **kwargs)


@pytest.mark.parametrize("spacing", [0.0, -1.0, float("nan"), "2"])
def test_isotropic_spacing_is_checked(spacing):
    with pytest.raises(ValueError, match="spacing_mm"):
        resample_isotropic(make_image(np.zeros((3, 3, 3)), np.eye(4)), spacing)


def test_sample_world():
    img = linear_field((10, 10, 10), affine_from(np.eye(3), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)))
    pts = np.array([[1.5, 2.25, 3.0], [9.0, 9.0, 9.0], [9.5, 0.0, 0.0]])
    values = sample_world(img, pts)
    assert values[:2] == pytest.approx(pts[:2] @ COEFFS + 5.0, abs=1e-4)
    assert values[2] == 0.0

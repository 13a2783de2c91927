import nibabel as nib
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from rice_models.imaging.registration import (
    _ants,
    from_ants,
    ncc,
    register_rigid_affine,
    to_ants,
)
from rice_models.imaging.resample import resample_isotropic, resample_to_reference
from rice_models.imaging.volume import data_of, make_image, save_nifti, world_coordinates

from .conftest import affine_from, rigid_matrix

ants = _ants()  # through the module that sets ITK's thread default before ITK loads
OBLIQUE = Rotation.from_euler("xyz", (10.0, -5.0, 30.0), degrees=True).as_matrix()


@pytest.mark.parametrize(
    "affine",
    [
        affine_from(np.eye(3), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)),
        affine_from(np.diag([-1.0, -1.0, 1.0]), (1.5, 2.0, 3.0), (90.0, 120.0, -70.0)),
        affine_from(OBLIQUE, (2.0, 2.5, 1.0), (-10.0, 5.0, 30.0)),
    ],
)
def test_ants_round_trip_and_lps_convention(affine, tmp_path):
    rng = np.random.default_rng(1)
    img = make_image(rng.normal(size=(6, 7, 8)), affine)
    image = to_ants(img)
    for ijk in [(0, 0, 0), (5, 6, 7), (2, 1, 3)]:
        ras = affine @ np.append(ijk, 1.0)
        lps = ants.transform_index_to_physical_point(image, ijk)
        assert np.allclose(lps, [-ras[0], -ras[1], ras[2]], atol=1e-4)
    back = from_ants(image)
    assert np.allclose(back.affine, affine, atol=1e-5)
    assert np.array_equal(data_of(back), data_of(img))
    # ITK's own NIfTI reader agrees with the conversion
    read = ants.image_read(str(save_nifti(img, tmp_path / "img.nii.gz")))
    assert np.allclose(read.origin, image.origin, atol=1e-4)
    assert np.allclose(read.direction, image.direction, atol=1e-5)
    assert np.allclose(read.numpy(), image.numpy())


def brain_points(mask: nib.Nifti1Image) -> np.ndarray:
    return world_coordinates(mask)[data_of(mask) > 0]


def displacement_mm(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.linalg.norm(points @ matrix[:3, :3].T + matrix[:3, 3] - points, axis=1)


@pytest.mark.parametrize(
    ("angles", "shift", "transforms", "max_error_mm"),
    [
        ((4.0, -6.0, 8.0), (5.0, -7.0, 3.0), ("Rigid",), 0.5),
        ((0.0, 0.0, -10.0), (-6.0, 4.0, 0.0), ("Rigid", "Affine"), 1.0),
    ],
)
def test_recovers_a_known_rigid_transform(
    template_1mm, template_coarse, template_coarse_mask, angles, shift, transforms, max_error_mm
):
    truth = rigid_matrix(angles, shift)
    # moving(p) = template(truth @ p): registering it back must find inverse(truth)
    moving_grid = make_image(
        np.zeros((60, 70, 60)), affine_from(np.eye(3), (3.0, 3.0, 3.0), (-90, -125, -75))
    )
    moving = resample_to_reference(template_1mm[0], moving_grid, world_transform=truth, antialias=True)
    result = register_rigid_affine(template_coarse, moving, transforms=transforms, seed=7)
    residual = result.fixed_to_moving @ truth  # identity when recovered
    assert displacement_mm(residual, brain_points(template_coarse_mask)).max() < max_error_mm
    assert np.allclose(result.fixed_to_moving[:3, :3], np.linalg.inv(truth)[:3, :3], atol=0.01)
    assert ncc(result.image, template_coarse, template_coarse_mask) > 0.95
    assert result.transforms == transforms and result.seed == 7
    assert result.as_dict()["transforms"] == list(transforms)
    # the unregistered pair is clearly worse
    before = resample_to_reference(moving, template_coarse)
    assert ncc(before, template_coarse, template_coarse_mask) < 0.9


def test_registration_is_reproducible_with_a_seed(template_coarse, template_coarse_mask):
    moving = resample_to_reference(
        template_coarse, template_coarse, world_transform=rigid_matrix((3, 0, 0), (2, 0, 0))
    )
    a = register_rigid_affine(template_coarse, moving, transforms=("Rigid",), seed=3)
    b = register_rigid_affine(template_coarse, moving, transforms=("Rigid",), seed=3)
    # bit-identical only with ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1; 2 threads: within ~0.2 mm (4 mm grid)
    difference = a.fixed_to_moving @ np.linalg.inv(b.fixed_to_moving)
    assert displacement_mm(difference, brain_points(template_coarse_mask)).max() < 0.5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"transforms": ()}, "at least one"),
        ({"transforms": ("Rigid", "SyN")}, "unsupported"),
        ({"seed": 1.5}, "seed"),
        ({"seed": True}, "seed"),
    ],
)
def test_registration_refuses(template_coarse, kwargs, match):
    with pytest.raises(ValueError, match=match):
        register_rigid_affine(template_coarse, template_coarse, **kwargs)


def test_ncc():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(8, 8, 8))
    assert ncc(a, 3 * a + 2) == pytest.approx(1.0)
    assert ncc(a, -a) == pytest.approx(-1.0)
    assert ncc(a, np.ones_like(a)) == 0.0
    mask = np.zeros_like(a)
    mask[:4] = 1
    b = a.copy()
    b[4:] = rng.normal(size=(4, 8, 8))
    assert ncc(a, b, mask) == pytest.approx(1.0)
    assert ncc(a, b) < 0.9
    with pytest.raises(ValueError, match="empty mask"):
        ncc(a, b, np.zeros_like(a))
    with pytest.raises(ValueError, match="one shape"):
        ncc(a, a[:4])
    img = make_image(a, np.eye(4))
    other = resample_isotropic(img, 2.0)
    with pytest.raises(ValueError, match="same grid"):
        ncc(img, other)

import gzip

import nibabel as nib
import numpy as np
import pytest

from rice_models.imaging.volume import (
    canonical,
    data_of,
    image_geometry,
    load_nifti,
    make_image,
    same_grid,
    save_nifti,
    voxel_volume_ml,
    world_coordinates,
    world_geometry_notes,
)

from .conftest import affine_from

LPS_DIRECTIONS = np.diag([-1.0, -1.0, 1.0])
PSR_DIRECTIONS = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # axes: P, S... permuted


@pytest.mark.parametrize(
    ("data", "affine", "match"),
    [
        (np.zeros((4, 4)), np.eye(4), "3D"),
        (np.zeros((4, 4, 4, 2)), np.eye(4), "3D"),
        (np.zeros((4, 4, 4)), np.eye(3), "4x4"),
        (np.zeros((4, 4, 4)), np.full((4, 4), np.nan), "4x4"),
        (np.zeros((4, 4, 4)), np.diag([1.0, 0.0, 1.0, 1.0]), "singular"),
    ],
)
def test_make_image_refuses(data, affine, match):
    with pytest.raises(ValueError, match=match):
        make_image(data, affine)


@pytest.mark.parametrize("directions", [np.eye(3), LPS_DIRECTIONS, PSR_DIRECTIONS])
def test_canonical_is_ras_and_keeps_world_positions(directions):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(5, 6, 7)).astype(np.float32)
    img = nib.Nifti1Image(data, affine_from(directions, (1.0, 2.0, 3.0), (10.0, -20.0, 5.0)))
    img.header["descrip"] = b"patient Jane Doe"
    ras = canonical(img)
    assert nib.aff2axcodes(ras.affine) == ("R", "A", "S")
    assert ras.header["descrip"].item() == b""
    # the same world point holds the same value
    for ijk in [(0, 0, 0), (4, 5, 6), (2, 3, 1)]:
        world = img.affine @ np.append(ijk, 1.0)
        new = np.round(np.linalg.inv(ras.affine) @ world).astype(int)[:3]
        assert data_of(ras)[tuple(new)] == data[ijk]


def test_canonical_drops_singleton_fourth_axis():
    img = nib.Nifti1Image(np.ones((3, 4, 5, 1), dtype=np.int16), np.eye(4))
    out = canonical(img)
    assert out.shape == (3, 4, 5) and out.get_data_dtype() == np.float32


def test_save_load_round_trip_is_atomic_and_clean(tmp_path):
    img = make_image(np.arange(24).reshape(2, 3, 4), affine_from(LPS_DIRECTIONS, (1.5, 1.5, 2.0), (3, 4, 5)))
    path = save_nifti(canonical(img), tmp_path / "sub" / "img.nii.gz")
    assert [p.name for p in path.parent.iterdir()] == ["img.nii.gz"]  # no temporary left behind
    assert gzip.decompress(path.read_bytes())[:4] == (348).to_bytes(4, "little")
    back = load_nifti(path)
    assert same_grid(back, canonical(img))
    assert np.array_equal(data_of(back), data_of(canonical(img)))
    raw = nib.load(path)
    for field in ("descrip", "db_name", "aux_file", "intent_name"):
        assert raw.header[field].item() == b""
    assert raw.header.get_xyzt_units()[0] == "mm"
    assert int(raw.header["sform_code"]) == 1


def test_mask_saved_as_uint8(tmp_path):
    mask = make_image(np.ones((2, 2, 2)), np.eye(4), dtype=np.uint8)
    path = save_nifti(mask, tmp_path / "mask.nii.gz", dtype=np.uint8)
    assert nib.load(path).get_data_dtype() == np.uint8


@pytest.mark.parametrize("name", ["img.mgz", "img.nii.bz2", "img"])
def test_nifti_suffix_is_checked(tmp_path, name):
    img = make_image(np.zeros((2, 2, 2)), np.eye(4))
    with pytest.raises(ValueError, match="NIfTI"):
        save_nifti(img, tmp_path / name)
    with pytest.raises(ValueError, match="NIfTI"):
        load_nifti(tmp_path / name)


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_nifti(tmp_path / "absent.nii.gz")


def test_geometry_helpers():
    img = make_image(np.zeros((2, 3, 4)), affine_from(np.eye(3), (2.0, 2.0, 2.5), (-1.0, 0.0, 1.0)))
    assert voxel_volume_ml(img) == pytest.approx(0.01)
    geometry = image_geometry(img)
    assert geometry["shape"] == [2, 3, 4] and geometry["spacing_mm"] == [2.0, 2.0, 2.5]
    assert geometry["axcodes"] == "RAS"
    assert world_coordinates(img)[1, 2, 3] == pytest.approx([1.0, 4.0, 8.5])


# --- NIfTI world geometry -------------------------------------------------------------------------


def _nifti(tmp_path, sform_code: int, qform_code: int, qform_shift=(0.0, 0.0, 0.0)):
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    affine[:3, 3] = (-10.0, 5.0, 7.0)
    img = nib.Nifti1Image(np.ones((4, 5, 6), dtype=np.float32), affine)
    img.set_sform(affine, code=sform_code)
    qform = affine.copy()
    qform[:3, 3] += qform_shift
    img.set_qform(qform, code=qform_code)
    path = tmp_path / "img.nii.gz"
    nib.save(img, path)
    return path, affine


@pytest.mark.parametrize(
    ("sform_code", "qform_code", "shift", "world", "notes"),
    [
        (1, 1, (0.0, 0.0, 0.0), True, 0),
        (2, 0, (0.0, 0.0, 0.0), True, 0),
        (0, 1, (0.0, 0.0, 0.0), True, 0),
        (1, 1, (0.0, 0.4, 0.0), True, 0),  # within 1 mm: no remark
        (1, 1, (20.0, 0.0, 0.0), True, 1),
        (0, 0, (0.0, 0.0, 0.0), False, 0),
    ],
)
def test_world_geometry_notes(tmp_path, sform_code, qform_code, shift, world, notes):
    path, affine = _nifti(tmp_path, sform_code, qform_code, shift)
    has_world, found = world_geometry_notes(nib.load(path))
    assert has_world is world and len(found) == notes
    if notes:
        assert "sform and qform disagree" in found[0] and "20.0 mm" in found[0]
    if world:
        img = load_nifti(path, require_world_geometry=True)
        assert np.allclose(img.affine, canonical(nib.Nifti1Image(np.ones((4, 5, 6)), affine)).affine)
    else:
        with pytest.raises(ValueError, match="sform_code and qform_code are both 0.*accept_missing_geometry"):
            load_nifti(path, require_world_geometry=True)
        assert load_nifti(path).shape == (4, 5, 6)  # lake files and explicit acceptance

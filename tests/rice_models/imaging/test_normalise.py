import numpy as np
import pytest

from rice_models.imaging.normalise import crop_or_pad, crop_start, zscore_in_mask
from rice_models.imaging.volume import data_of, make_image, world_coordinates

from .conftest import affine_from

AFFINE = affine_from(np.diag([-1.0, 1.0, 1.0]), (2.0, 2.5, 3.0), (40.0, -20.0, 7.0))


def test_zscore_inside_mask():
    rng = np.random.default_rng(0)
    data = rng.normal(100, 15, size=(10, 10, 10))
    mask_data = np.zeros((10, 10, 10), dtype=np.uint8)
    mask_data[2:8, 2:8, 2:8] = 1
    img, mask = make_image(data, AFFINE), make_image(mask_data, AFFINE, dtype=np.uint8)
    out = data_of(zscore_in_mask(img, mask))
    inside = mask_data > 0
    assert out[inside].mean() == pytest.approx(0.0, abs=1e-5)
    assert out[inside].std() == pytest.approx(1.0, abs=1e-4)
    assert np.all(out[~inside] == 0)
    kept = data_of(zscore_in_mask(img, mask, outside="keep"))
    assert np.allclose(kept[inside], out[inside])
    assert not np.all(kept[~inside] == 0)


@pytest.mark.parametrize(
    ("data", "mask", "kwargs", "match"),
    [
        (np.ones((4, 4, 4)), np.ones((4, 4, 4)), {}, "constant"),
        (np.arange(64.0).reshape(4, 4, 4), np.zeros((4, 4, 4)), {}, "no finite voxel"),
        (np.arange(64.0).reshape(4, 4, 4), np.ones((4, 4, 5)), {}, "grid"),
        (np.arange(64.0).reshape(4, 4, 4), np.ones((4, 4, 4)), {"outside": "nan"}, "outside"),
    ],
)
def test_zscore_refuses(data, mask, kwargs, match):
    with pytest.raises(ValueError, match=match):
        zscore_in_mask(make_image(data, AFFINE), make_image(mask, AFFINE, dtype=np.uint8), **kwargs)


@pytest.mark.parametrize(
    ("shape", "out_shape"),
    [
        ((20, 18, 16), (8, 8, 8)),  # crop
        ((6, 5, 4), (9, 10, 11)),  # pad
        ((20, 5, 16), (7, 12, 16)),  # crop, pad, keep
    ],
)
def test_crop_or_pad_keeps_world_positions(shape, out_shape):
    img = make_image(world_coordinates(make_image(np.zeros(shape), AFFINE))[..., 0] + 1000.0, AFFINE)
    out = crop_or_pad(img, out_shape, fill=-1.0)
    assert out.shape == out_shape
    values = data_of(out)
    world_x = world_coordinates(out)[..., 0] + 1000.0
    kept = values != -1.0
    assert kept.any()
    assert np.allclose(values[kept], world_x[kept], atol=1e-3)  # every kept voxel is where it was
    assert kept.sum() == np.prod([min(a, b) for a, b in zip(shape, out_shape, strict=True)])


def test_crop_is_centred_on_the_mask():
    mask_data = np.zeros((40, 40, 40), dtype=np.uint8)
    mask_data[4:12, 20:30, 30:38] = 1
    mask = make_image(mask_data, AFFINE, dtype=np.uint8)
    assert crop_start((40, 40, 40), (16, 16, 16), mask) == (0, 17, 26)
    assert crop_start((40, 40, 40), (16, 16, 16)) == (12, 12, 12)
    cropped = crop_or_pad(mask, (16, 16, 16), centre_on=mask, dtype=np.uint8)
    assert data_of(cropped).sum() == mask_data.sum()
    assert cropped.get_data_dtype() == np.uint8
    nz = np.argwhere(data_of(cropped) > 0)
    box_centre = (nz.min(axis=0) + nz.max(axis=0)) / 2
    assert np.all(np.abs(box_centre - 7.5) <= 0.5)


@pytest.mark.parametrize("shape", [(8, 8), (8, 8, 0), (8, -1, 8), (8.5, 8, 8)])
def test_crop_shape_is_checked(shape):
    with pytest.raises(ValueError, match="shape"):
        crop_or_pad(make_image(np.zeros((4, 4, 4)), AFFINE), shape)


def test_crop_mask_must_share_the_grid():
    img = make_image(np.zeros((4, 4, 4)), AFFINE)
    with pytest.raises(ValueError, match="grid"):
        crop_or_pad(img, (2, 2, 2), centre_on=make_image(np.ones((4, 4, 4)), np.eye(4), dtype=np.uint8))

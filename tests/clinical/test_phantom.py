"""Spine phantom: determinism, boxes that enclose a visible local change, rates, and labels a classifier can see."""

import doctest

import numpy as np
import pytest
import torch

from clinical.labels import LESION_TYPES, NO_FINDING, label_for_image
from clinical.phantom import make_phantom, phantom_images
from clinical.phantom import render as phantom  # The module whose docstrings hold the examples.

LOCAL_TYPES = ('Foraminal stenosis', 'Osteophytes', 'Surgical implant', 'Other lesions')  # Shift nothing else.


def test_deterministic_per_seed_and_index():
    a, b = make_phantom(3, 7, 64), make_phantom(3, 7, 64)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.findings == b.findings
    assert not np.array_equal(a.image, make_phantom(3, 8, 64).image)
    assert not np.array_equal(a.image, make_phantom(4, 7, 64).image)
    first = [p.image for p in phantom_images(3, seed=3, resolution=32)]
    more = [p.image for p in phantom_images(5, seed=3, resolution=32)]
    for x, y in zip(first, more):  # phantom:N is a prefix of phantom:N+k.
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize('resolution, shape', [(64, (64, 64)), ((80, 64), (80, 64)), (128, (128, 128))])
def test_image_shape_and_range(resolution, shape):
    p = make_phantom(0, 1, resolution)
    assert p.image.shape == shape and p.image.dtype == np.float32
    assert 0 <= p.image.min() and p.image.max() <= 1 and p.image.std() > 0.1
    h, w = shape
    assert p.image[:, : w // 4].mean() < p.image[h // 3 : 2 * h // 3, w // 4 : 3 * w // 4].max()


def test_normal_image_has_one_no_finding_row():
    p = make_phantom(0, 0, 64, lesions=[])
    assert p.findings == [(NO_FINDING, None)] and label_for_image(p.lesion_types, 'abnormal') == 0


def _box_mask(shape, boxes):
    mask = np.zeros(shape, dtype=bool)
    for x0, y0, x1, y1 in boxes:
        mask[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))] = True
    return mask


@pytest.mark.parametrize('lesion_type', LESION_TYPES)
def test_lesion_changes_pixels_inside_its_boxes(lesion_type):
    for index in range(3):
        normal = make_phantom(1, index, 96, lesions=[])
        sick = make_phantom(1, index, 96, lesions=[lesion_type])  # Same patient, same noise.
        assert {t for t, _box in sick.findings} == {lesion_type}
        boxes = [box for _t, box in sick.findings]
        for x0, y0, x1, y1 in boxes:
            assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 96 and (x1 - x0) * (y1 - y0) >= 9
        diff = np.abs(sick.image - normal.image)
        inside = _box_mask(diff.shape, boxes)
        assert diff[inside].mean() > 0.03, 'the lesion must be visible inside its box'
        if lesion_type in LOCAL_TYPES:
            assert diff[inside].sum() > 0.9 * diff.sum(), 'a local lesion must not change pixels elsewhere'


def test_prevalence_and_multi_lesion_rate():
    rows = [p.lesion_types for p in phantom_images(300, seed=5, resolution=16, prevalence=0.3, multi_lesion_rate=0.5)]
    abnormal = [r for r in rows if r != [NO_FINDING]]
    assert 0.2 < len(abnormal) / len(rows) < 0.4
    multi = [r for r in abnormal if len(set(r)) > 1]
    assert 0.35 < len(multi) / len(abnormal) < 0.65
    assert {t for r in abnormal for t in r} == set(LESION_TYPES)
    assert all(r == [NO_FINDING] for r in (p.lesion_types for p in phantom_images(20, resolution=16, prevalence=0)))


def _patch_features(images: torch.Tensor, filters: torch.Tensor) -> np.ndarray:
    """Translation-tolerant features: responses to fixed image-patch filters, max-pooled per quadrant."""
    with torch.no_grad():
        r = torch.nn.functional.conv2d(images - images.mean((2, 3), keepdim=True), filters)
        r = torch.nn.functional.avg_pool2d(r, 2)
        pooled = [torch.nn.functional.adaptive_max_pool2d(s, 2).flatten(1) for s in (r, -r)]
        return torch.cat([*pooled, r.abs().mean((2, 3))], dim=1).numpy()


@pytest.mark.slow
def test_abnormal_label_is_visible_to_a_small_classifier():
    """Patch-filter features + logistic regression separate abnormal from normal on held-out phantoms."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    def load(seed, count):
        items = list(phantom_images(count, seed=seed, resolution=64))
        x = torch.from_numpy(np.stack([p.image for p in items]))[:, None]
        return x, np.array([label_for_image(p.lesion_types, 'abnormal') for p in items])

    (x_train, y_train), (x_test, y_test) = load(0, 800), load(1, 400)
    patches = torch.nn.functional.unfold(x_train[:100], 7).transpose(1, 2).reshape(-1, 49)
    filters = patches[torch.randint(len(patches), (64,), generator=torch.Generator().manual_seed(0))]
    filters = filters - filters.mean(1, keepdim=True)
    filters = (filters / (filters.norm(dim=1, keepdim=True) + 1e-3)).reshape(64, 1, 7, 7)
    scaler = StandardScaler().fit(_patch_features(x_train, filters))
    model = LogisticRegression(C=0.05, max_iter=2000).fit(scaler.transform(_patch_features(x_train, filters)), y_train)
    scores = model.decision_function(scaler.transform(_patch_features(x_test, filters)))
    assert roc_auc_score(y_test, scores) > 0.9


def test_docstring_examples():
    assert doctest.testmod(phantom).failed == 0

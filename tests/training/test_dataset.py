"""ImageFolderDataset: zip/folder reading, labels, groups, subsets, x-flips, loud errors; ResumableSampler."""

import itertools
import os
import pickle

import numpy as np
import PIL.Image
import pytest

from training.dataset import ImageFolderDataset, ResumableSampler

# ----------------------------------------------------------------------------
# Helpers: images for conftest's tiny_dataset, and file names as dataset_tool writes them.


def _image(size, mode, value):
    width, height = size if isinstance(size, tuple) else (size, size)
    channels = 1 if mode == 'L' else 3
    array = (np.arange(width * height * channels).reshape(height, width, channels) + value) % 256
    array = array.astype(np.uint8)
    return PIL.Image.fromarray(array[:, :, 0] if mode == 'L' else array, mode)


def _ramps(mode='L', value=None):
    """An `image` for tiny_dataset: image i is _image(size, mode, i), or _image(size, mode, value) for every i."""
    return lambda i, size, rnd: _image(size, mode, i if value is None else value)


NAMES = '00000/img{i:08d}.png'


# ----------------------------------------------------------------------------


@pytest.mark.parametrize('as_zip', [True, False])
def test_grayscale_with_class_labels(tmp_path, tiny_dataset, as_zip):
    path = tiny_dataset(
        6, path=tmp_path / ('d.zip' if as_zip else 'd'), image=_ramps(), names=NAMES, classes=3,
        class_names=['normal', 'fracture', 'lesion'], metadata=dict(label_schema='lesion'),
    )  # fmt: skip
    ds = ImageFolderDataset(path, use_labels=True)
    image, label = ds[4]
    assert image.shape == (1, 16, 16) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[0], np.asarray(_image(16, 'L', 4)))
    np.testing.assert_array_equal(label, [0, 1, 0])
    assert ds.resolution == 16 and ds.num_channels == 1 and ds.label_dim == 3
    assert ds.has_labels and ds.has_onehot_labels
    assert ds.class_names == ['normal', 'fracture', 'lesion'] and ds.label_schema == 'lesion'
    np.testing.assert_array_equal(ds.label_counts(), [2, 2, 2])
    assert ds.format_label_stats().splitlines()[1] == 'class 1 (fracture): 2'
    assert ImageFolderDataset(path).label_dim == 0  # use_labels=False hides labels.


def test_multilabel_vectors_and_rgb(tiny_dataset):
    vectors = [[1, 0, 1], [0, 0, 0], [0, 1, 1], [1, 1, 0]]
    path = tiny_dataset(4, resolution=8, image=_ramps('RGB'), names=NAMES, labels=vectors)
    ds = ImageFolderDataset(path, use_labels=True)
    assert ds[0][0].shape == (3, 8, 8)
    assert not ds.has_onehot_labels and ds.label_shape == [3]
    np.testing.assert_array_equal(ds.get_label(2), np.float32([0, 1, 1]))
    np.testing.assert_array_equal(ds.label_counts(), [2, 2, 2])


def test_subset_and_xflip(tiny_dataset):
    path = tiny_dataset(10, resolution=8, image=_ramps(), names=NAMES, labels=False)
    ds = ImageFolderDataset(path, max_size=4, xflip=True, random_seed=1)
    assert len(ds) == 8
    raw = [ds.get_details(i)['raw_idx'] for i in range(8)]
    assert raw[:4] == raw[4:] and len(set(raw)) == 4
    np.testing.assert_array_equal(ds[5][0], ds[1][0][:, :, ::-1])
    again = ImageFolderDataset(path, max_size=4, random_seed=1)
    assert [again.get_details(i)['raw_idx'] for i in range(4)] == raw[:4]


def test_groups_follow_the_items_through_subset_and_xflip(tiny_dataset):
    groups = [[NAMES.format(i=i), f'patient{i // 2}'] for i in range(10)]
    path = tiny_dataset(10, resolution=8, image=_ramps(), names=NAMES, labels=False, metadata=dict(groups=groups))
    assert ImageFolderDataset(path).groups == [f'patient{i // 2}' for i in range(10)]
    ds = ImageFolderDataset(path, max_size=4, xflip=True, random_seed=1)
    raw = [ds.get_details(i)['raw_idx'] for i in range(len(ds))]
    assert ds.groups == [f'patient{r // 2}' for r in raw] and len(ds.groups) == len(ds) == 8
    assert all(ds[i][0][0, 0, 0] == raw[i] for i in range(4))  # Image i is the ramp starting at its raw index.
    assert 'groups' not in ds.metadata
    assert ImageFolderDataset(tiny_dataset(2, resolution=8, names=NAMES)).groups is None


def test_pickles_with_open_zip(tiny_dataset):
    path = tiny_dataset(3, resolution=8, image=_ramps(), names=NAMES, labels=False)
    ds = ImageFolderDataset(path)
    first = ds[0][0]
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[0][0], first)


# ----------------------------------------------------------------------------
# Loud errors: one-line ValueError naming the file and the problem.


def _expect_error(path, match, **kwargs):
    with pytest.raises(ValueError, match=match) as info:
        _ = ImageFolderDataset(path, **kwargs).label_dim
    assert '\n' not in str(info.value)


def test_error_mixed_shapes(tiny_dataset):
    path = tiny_dataset(2, sizes=[16, 32], image=_ramps(value=0), names=['a.png', 'b.png'], labels=False)
    _expect_error(path, r'mixed image shapes: a\.png is 16x16.*b\.png is 32x32')


def test_error_mixed_channels(tiny_dataset):
    l_then_rgb = lambda i, size, rnd: _image(size, ['L', 'RGB'][i], 0)
    path = tiny_dataset(2, image=l_then_rgb, names=['a.png', 'b.png'], labels=False)
    _expect_error(path, r'mixed image channels: .*b\.png')


def test_error_unsupported_mode(tiny_dataset):
    path = tiny_dataset(1, image=lambda i, size, rnd: PIL.Image.new('RGBA', (8, 8)), names=['a.png'], labels=False)
    _expect_error(path, r"a\.png has PIL mode 'RGBA'")


@pytest.mark.parametrize('size, match', [(12, 'power of two'), ((16, 8), 'must be square')])
def test_error_bad_resolution(tiny_dataset, size, match):
    path = tiny_dataset(1, sizes=[size], image=_ramps(value=0), names=['a.png'], labels=False)
    _expect_error(path, match)


def test_error_missing_labels(tiny_dataset):
    images = dict(resolution=8, image=_ramps(value=0), names=NAMES)
    no_json = tiny_dataset(3, **images, labels=False)
    _expect_error(no_json, r'needs "labels" in dataset\.json', use_labels=True)
    assert ImageFolderDataset(no_json, use_labels=False).label_dim == 0  # Fine without labels.
    partial = tiny_dataset(3, **images, labels=False, metadata=dict(labels=[[NAMES.format(i=0), 1]]))
    _expect_error(partial, r'no label for 2 image\(s\), e\.g\. 00000/img00000001\.png', use_labels=True)
    mixed = tiny_dataset(3, **images, labels=[1, [1, 0], [1, 0]])
    _expect_error(mixed, 'all be ints', use_labels=True)


@pytest.mark.parametrize(
    'groups, match',
    [
        ([[NAMES.format(i=0), 'p0']], r'no group for 1 image\(s\), e\.g\. 00000/img00000001\.png'),
        ([[NAMES.format(i=0), 'p0'], [NAMES.format(i=1), 7]], r'groups must be a list of \[file, group\] pairs'),
        ([[NAMES.format(i=0), 'p0', 'extra'], [NAMES.format(i=1), 'p1']], 'pairs of strings'),
        ({NAMES.format(i=0): 'p0'}, 'pairs of strings'),
    ],
)
def test_error_bad_groups(tiny_dataset, groups, match):
    path = tiny_dataset(2, resolution=8, image=_ramps(), names=NAMES, labels=False, metadata=dict(groups=groups))
    with pytest.raises(ValueError, match=match) as info:
        _ = ImageFolderDataset(path).groups
    assert str(info.value).startswith(path) and '\n' not in str(info.value)


def test_error_not_a_dataset(tmp_path):
    (tmp_path / 'x.txt').write_text('hi')
    _expect_error(str(tmp_path / 'x.txt'), 'directory or a .zip')
    os.makedirs(tmp_path / 'empty')
    _expect_error(str(tmp_path / 'empty'), 'no image files')


# ----------------------------------------------------------------------------
# ResumableSampler: a restart at position k continues the same stream; ranks partition it.


def test_resumable_sampler_restart_and_ranks():
    data = list(range(7))
    full = list(itertools.islice(iter(ResumableSampler(data, seed=3)), 30))
    assert sorted(full[:7]) == data and sorted(full[7:14]) == data and full[:7] != full[7:14]
    resumed = list(itertools.islice(iter(ResumableSampler(data, seed=3, start=11)), 19))
    assert resumed == full[11:]
    rank0 = list(itertools.islice(iter(ResumableSampler(data, rank=0, num_replicas=2, seed=3)), 15))
    rank1 = list(itertools.islice(iter(ResumableSampler(data, rank=1, num_replicas=2, seed=3)), 15))
    assert rank0 == full[0::2] and rank1 == full[1::2]
    resumed1 = list(itertools.islice(iter(ResumableSampler(data, rank=1, num_replicas=2, seed=3, start=5)), 10))
    assert resumed1 == rank1[5:]


# ----------------------------------------------------------------------------


def test_zip_reads_correctly_in_forked_loader_workers(tiny_dataset):
    # Forked workers inherit the parent's open zip handle, and a shared file offset garbles concurrent reads.
    import torch

    path = tiny_dataset(128, resolution=32, image=_ramps(), names=NAMES, labels=False, metadata=dict(labels=None))
    dataset = ImageFolderDataset(path)
    expected = np.stack([dataset[i][0] for i in range(len(dataset))])  # Opens the zip in this process.
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=2, multiprocessing_context='fork')
    for i, (image, _label) in enumerate(loader):
        np.testing.assert_array_equal(image[0].numpy(), expected[i])
        np.testing.assert_array_equal(dataset[(i * 7) % len(dataset)][0], expected[(i * 7) % len(dataset)])


def test_each_process_opens_its_own_zip_handle(tiny_dataset, monkeypatch):
    path = tiny_dataset(2, image=_ramps(value=0), names=NAMES, labels=False, metadata=dict(labels=None))
    dataset = ImageFolderDataset(path)
    parent_handle = dataset._get_zipfile()
    assert dataset._get_zipfile() is parent_handle
    monkeypatch.setattr(os, 'getpid', lambda: -1)  # As seen from a forked loader worker.
    assert dataset._get_zipfile() is not parent_handle

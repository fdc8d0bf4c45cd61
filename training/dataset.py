"""Image datasets for training: a zip or folder of PNGs plus an optional dataset.json of labels.

Same public interface as stylegan2-ada-pytorch (`Dataset`, `ImageFolderDataset`), with loud, one-line
errors for inconsistent data and a few extras: label statistics, `class_names` / `label_schema` metadata,
per-item `groups` (patient ids, for patient-disjoint splits) and a resumable sampler.
"""

import io
import json
import os
import zipfile
import zlib

import numpy as np
import PIL.Image
import torch

# ----------------------------------------------------------------------------
# Image file extensions we read, and PIL modes we accept (mode -> channel count).

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
MODE_CHANNELS = {'L': 1, 'RGB': 3}
READ_ERRORS = (OSError, EOFError, SyntaxError, zipfile.BadZipFile, zlib.error)  # A damaged file or archive.

# ----------------------------------------------------------------------------
# Abstract dataset: subset selection, x-flips, label handling. Subclasses supply raw images and labels.


class Dataset(torch.utils.data.Dataset):
    # fmt: off
    def __init__(
        self,
        name,                    # Name of the dataset.
        raw_shape,               # Shape of the raw image data [N, C, H, W].
        max_size    = None,      # Use at most this many images (random subset); None = all.
        use_labels  = False,     # Expose labels? False = label_dim 0.
        xflip       = False,     # Double the dataset with horizontally mirrored copies.
        random_seed = 0,         # Seed for choosing the subset.
    ):
        # fmt: on
        self._name = name
        self._raw_shape = list(raw_shape)
        self._use_labels = use_labels
        self._raw_labels = None
        self._label_shape = None

        self._raw_idx = np.arange(self._raw_shape[0], dtype=np.int64)
        if max_size is not None and self._raw_idx.size > max_size:
            np.random.RandomState(random_seed).shuffle(self._raw_idx)
            self._raw_idx = np.sort(self._raw_idx[:max_size])

        self._xflip = np.zeros(self._raw_idx.size, dtype=np.uint8)
        if xflip:
            self._raw_idx = np.tile(self._raw_idx, 2)
            self._xflip = np.concatenate([self._xflip, np.ones_like(self._xflip)])

    def _get_raw_labels(self):
        if self._raw_labels is None:
            labels = self._load_raw_labels() if self._use_labels else None
            if labels is None:
                labels = np.zeros([self._raw_shape[0], 0], dtype=np.float32)
            self._raw_labels = labels
        return self._raw_labels

    def close(self):
        pass

    def _load_raw_image(self, raw_idx):  # To be overridden by subclass.
        raise NotImplementedError

    def _load_raw_labels(self):  # To be overridden by subclass.
        raise NotImplementedError

    def __getstate__(self):
        return dict(self.__dict__, _raw_labels=None)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __len__(self):
        return self._raw_idx.size

    def __getitem__(self, idx):
        image = self._load_raw_image(self._raw_idx[idx])
        if self._xflip[idx]:
            image = image[:, :, ::-1]
        return np.ascontiguousarray(image), self.get_label(idx)

    def get_label(self, idx):
        label = self._get_raw_labels()[self._raw_idx[idx]]
        if label.dtype == np.int64:
            onehot = np.zeros(self.label_shape, dtype=np.float32)
            onehot[label] = 1
            label = onehot
        return label.copy()

    def get_details(self, idx):
        return dict(raw_idx=int(self._raw_idx[idx]), xflip=bool(self._xflip[idx] != 0), raw_label=self.get_label(idx))

    @property
    def name(self):
        return self._name

    @property
    def image_shape(self):
        return list(self._raw_shape[1:])

    @property
    def num_channels(self):
        return self.image_shape[0]

    @property
    def resolution(self):
        assert self.image_shape[1] == self.image_shape[2]
        return self.image_shape[1]

    @property
    def label_shape(self):
        if self._label_shape is None:
            raw_labels = self._get_raw_labels()
            if raw_labels.dtype == np.int64:
                num_classes = max(int(raw_labels.max(initial=-1)) + 1, len(self.class_names or []))
                self._label_shape = [num_classes]
            else:
                self._label_shape = list(raw_labels.shape[1:])
        return list(self._label_shape)

    @property
    def label_dim(self):
        return self.label_shape[0]

    @property
    def has_labels(self):
        return any(x != 0 for x in self.label_shape)

    @property
    def has_onehot_labels(self):
        return self._get_raw_labels().dtype == np.int64

    @property
    def class_names(self):
        return None

    @property
    def label_schema(self):
        return None

    def label_counts(self):
        """Number of items per label column over the active items (after --subset, incl. x-flips).

        Returns:
            int64 array [label_dim]: images per class for one-hot labels, positives per column otherwise.
        """
        labels = np.stack([self.get_label(i) for i in range(len(self))]) if len(self) else np.zeros([0, 0])
        if labels.shape[1] == 0:
            return np.zeros([0], dtype=np.int64)
        return (labels > 0).sum(axis=0).astype(np.int64)

    def format_label_stats(self):
        """One line per label column, e.g. 'class 0 (normal): 120', for printing at startup."""
        if not self.has_labels:
            return 'no labels'
        names = self.class_names or []
        lines = []
        for idx, count in enumerate(self.label_counts()):
            title = f'class {idx}' + (f' ({names[idx]})' if idx < len(names) else '')
            lines.append(f'{title}: {count}')
        return '\n'.join(lines)


# ----------------------------------------------------------------------------
# Dataset read from a directory or zip of images, with labels from dataset.json.


class ImageFolderDataset(Dataset):
    # fmt: off
    def __init__(
        self,
        path,                # Path to directory or zip.
        resolution = None,   # Ensure specific resolution, None = highest available.
        **super_kwargs,      # Additional arguments for the Dataset base class.
    ):
        # fmt: on
        self._path = path
        self._zipfile = None
        if os.path.isdir(self._path):
            self._type = 'dir'
            self._all_fnames = {
                os.path.relpath(os.path.join(root, fname), start=self._path)
                for root, _dirs, files in os.walk(self._path)
                for fname in files
            }
        elif self._file_ext(self._path) == '.zip':
            self._type = 'zip'
            try:
                self._all_fnames = set(self._get_zipfile().namelist())
            except (zipfile.BadZipFile, OSError, EOFError) as err:
                raise ValueError(f'{path}: not a readable zip file ({err})') from None
        else:
            raise ValueError(f'{path}: dataset path must be a directory or a .zip file')

        self._all_fnames = {fname.replace('\\', '/') for fname in self._all_fnames}
        self._image_fnames = sorted(f for f in self._all_fnames if self._file_ext(f) in IMAGE_EXTENSIONS)
        if len(self._image_fnames) == 0:
            raise ValueError(f'{path}: no image files found in the dataset')
        self._metadata = self._load_metadata()

        name = os.path.splitext(os.path.basename(os.path.normpath(self._path)))[0]
        raw_shape = [len(self._image_fnames)] + self._scan_image_shape()
        _check_resolution(path, raw_shape, resolution)
        super().__init__(name=name, raw_shape=raw_shape, **super_kwargs)

    @staticmethod
    def _file_ext(fname):
        return os.path.splitext(fname)[1].lower()

    def _get_zipfile(self):
        assert self._type == 'zip'
        if self._zipfile is None or self._zipfile_pid != os.getpid():  # Forked loader workers need their own.
            self._zipfile = zipfile.ZipFile(self._path)
            self._zipfile_pid = os.getpid()
        return self._zipfile

    def _open_file(self, fname):
        if self._type == 'dir':
            return open(os.path.join(self._path, fname), 'rb')
        return self._get_zipfile().open(fname, 'r')

    def close(self):
        try:
            if self._zipfile is not None:
                self._zipfile.close()
        finally:
            self._zipfile = None

    def __getstate__(self):
        return dict(super().__getstate__(), _zipfile=None)

    def _load_metadata(self):
        if 'dataset.json' not in self._all_fnames:
            return {}
        with self._open_file('dataset.json') as f:
            return parse_dataset_json(f, self._path)

    def _scan_image_shape(self):
        # Read every file once (zip CRC, PNG chunk CRCs; no decoding) so bad data fails here, not mid-training.
        first_shape, first_fname = None, None
        for fname in self._image_fnames:
            shape = self._check_image(fname)
            if first_shape is None:
                first_shape, first_fname = shape, fname
            elif shape != first_shape:
                what = 'channels' if shape[0] != first_shape[0] else 'shapes'
                raise ValueError(
                    f'{self._path}: mixed image {what}: {first_fname} is {_describe(first_shape)} '
                    f'but {fname} is {_describe(shape)}'
                )
        return first_shape

    def _check_image(self, fname):
        """[C, H, W] of one image file after checking that it reads completely; ValueError naming the file."""
        try:
            with self._open_file(fname) as f:
                data = f.read()
            with PIL.Image.open(io.BytesIO(data)) as image:
                shape = [_mode_channels(self._path, fname, image.mode), image.height, image.width]
                image.verify()
        except READ_ERRORS as err:
            raise ValueError(f'{self._path}: {fname} is corrupt ({type(err).__name__}: {err})') from None
        return shape

    def _load_raw_image(self, raw_idx):
        fname = self._image_fnames[raw_idx]
        try:
            with self._open_file(fname) as f:
                image = PIL.Image.open(f)
                _mode_channels(self._path, fname, image.mode)
                image = np.array(image)
        except READ_ERRORS as err:
            raise ValueError(f'{self._path}: {fname} is corrupt ({type(err).__name__}: {err})') from None
        if image.ndim == 2:
            image = image[:, :, np.newaxis]  # HW => HWC
        image = image.transpose(2, 0, 1)  # HWC => CHW
        if list(image.shape) != self.image_shape:
            expected = _describe(self.image_shape)
            raise ValueError(f'{self._path}: {fname} is {_describe(image.shape)}, expected {expected}')
        return image

    def _load_raw_labels(self):
        labels = self._metadata.get('labels')
        if labels is None:
            raise ValueError(f'{self._path}: use_labels (--cond=1) needs "labels" in dataset.json')
        labels = dict(labels)
        missing = [fname for fname in self._image_fnames if fname not in labels]
        if missing:
            raise ValueError(f'{self._path}: dataset.json has no label for {len(missing)} image(s), e.g. {missing[0]}')
        array = _labels_to_array(self._path, [labels[fname] for fname in self._image_fnames])
        num_labels = int(array.max(initial=-1)) + 1 if array.dtype == np.int64 else array.shape[1]
        names = self.class_names
        if names is not None and (num_labels > len(names) or (array.dtype != np.int64 and num_labels != len(names))):
            raise ValueError(f'{self._path}: dataset.json has {len(names)} class_names but labels need {num_labels}')
        return array

    @property
    def class_names(self):
        names = self._metadata.get('class_names')
        return list(names) if names is not None else None

    @property
    def label_schema(self):
        return self._metadata.get('label_schema')

    @property
    def groups(self):
        """Group (patient) id of each item, as a list of str in item order (so after max_size and with x-flips);
        None when dataset.json has no "groups". ValueError if they do not cover every image."""
        groups = groups_from_metadata(self._metadata, self._image_fnames, self._path)
        return None if groups is None else [groups[i] for i in self._raw_idx]

    @property
    def metadata(self):
        """Every key of dataset.json except the (large) label and group lists."""
        return {key: value for key, value in self._metadata.items() if key not in ('labels', 'groups')}


# ----------------------------------------------------------------------------
# dataset.json: the one reader (training, dataset_tool, generate, classify and the metrics all use it).


def read_dataset_metadata(path: str) -> dict:
    """Parsed dataset.json of a dataset folder, a dataset zip, or the JSON file itself.

    Raises:
        FileNotFoundError: no dataset.json there.
        ValueError: not valid JSON, or not a JSON object.
    """
    if os.path.isdir(path):
        path = os.path.join(path, 'dataset.json')
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            if 'dataset.json' not in z.namelist():
                raise FileNotFoundError(f'{path} has no dataset.json')
            with z.open('dataset.json') as f:
                return parse_dataset_json(f, path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: no such dataset.json')
    with open(path, 'rb') as f:
        return parse_dataset_json(f, path)


def has_label_list(path: str) -> bool:
    """Whether the dataset (folder, zip or dataset.json) lists labels; False when it has no dataset.json."""
    try:
        return bool(read_dataset_metadata(path).get('labels'))
    except FileNotFoundError:
        return False


def parse_dataset_json(f, where: str) -> dict:
    """dataset.json from an open binary file; `where` names the dataset in errors."""
    try:
        metadata = json.loads(f.read().decode('utf-8-sig'))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f'{where}: dataset.json is not valid JSON ({err})') from None
    if not isinstance(metadata, dict):
        raise ValueError(f'{where}: dataset.json must hold a JSON object')
    return metadata


# ----------------------------------------------------------------------------
# dataset.json "groups": [[file, group id], ...], the patient of each image (dataset_tool writes them).


def groups_from_metadata(metadata: dict, fnames: list[str], where: str) -> list[str] | None:
    """The group of each of `fnames`, in order; None when dataset.json has no "groups".

    Raises:
        ValueError: groups that are not [file, group] pairs of strings, or that miss an image; names `where`.
    """
    groups = metadata.get('groups')
    if groups is None:
        return None
    if not isinstance(groups, list) or not all(_is_str_pair(pair) for pair in groups):
        raise ValueError(f'{where}: dataset.json groups must be a list of [file, group] pairs of strings')
    group_of = dict(groups)
    missing = [fname for fname in fnames if fname not in group_of]
    if missing:
        raise ValueError(f'{where}: dataset.json has no group for {len(missing)} image(s), e.g. {missing[0]}')
    return [group_of[fname] for fname in fnames]


def _is_str_pair(pair):
    return isinstance(pair, list) and len(pair) == 2 and all(isinstance(value, str) for value in pair)


# ----------------------------------------------------------------------------
# Helpers for ImageFolderDataset: shape checks and label conversion.


def _describe(shape):
    return f'{shape[2]}x{shape[1]} with {shape[0]} channel(s)'


def _mode_channels(path, fname, mode):
    if mode not in MODE_CHANNELS:
        raise ValueError(f'{path}: {fname} has PIL mode {mode!r}; only 8-bit grayscale (L) or RGB is supported')
    return MODE_CHANNELS[mode]


def _check_resolution(path, raw_shape, resolution):
    _n, _c, height, width = raw_shape
    if height != width:
        raise ValueError(f'{path}: images must be square, got {width}x{height}')
    if height < 4 or (height & (height - 1)) != 0:
        raise ValueError(f'{path}: image size must be a power of two >= 4, got {width}x{height}')
    if resolution is not None and height != resolution:
        raise ValueError(f'{path}: images are {width}x{height}, expected resolution {resolution}')


def _labels_to_array(path, labels):
    if all(isinstance(label, int) and not isinstance(label, bool) for label in labels):
        array = np.array(labels, dtype=np.int64)
        if array.size and array.min() < 0:
            raise ValueError(f'{path}: dataset.json class labels must be >= 0')
        return array
    if all(isinstance(label, list) for label in labels):
        lengths = sorted({len(label) for label in labels})
        if len(lengths) != 1:
            raise ValueError(f'{path}: dataset.json label vectors have mixed lengths {lengths}')
        return np.array(labels, dtype=np.float32)
    raise ValueError(f'{path}: dataset.json labels must all be ints (class index) or all be lists (label vectors)')


# ----------------------------------------------------------------------------
# Infinite shuffled sampler whose position can be restored exactly: rank r of W takes items r, r+W, ...
# of one global stream made of per-epoch permutations seeded by (seed, epoch).


class ResumableSampler(torch.utils.data.Sampler):
    def __init__(self, dataset, rank=0, num_replicas=1, shuffle=True, seed=0, start=0):
        assert len(dataset) > 0 and 0 <= rank < num_replicas
        self.dataset_size = len(dataset)
        self.rank = rank
        self.num_replicas = num_replicas
        self.shuffle = shuffle
        self.seed = seed
        self.start = start  # Items this rank has already consumed.

    def _epoch_order(self, epoch):
        order = np.arange(self.dataset_size)
        if self.shuffle:
            np.random.RandomState([self.seed % (1 << 31), epoch]).shuffle(order)
        return order

    def __iter__(self):
        pos = self.start * self.num_replicas + self.rank  # Global stream position.
        epoch, order = -1, None
        while True:
            if pos // self.dataset_size != epoch:
                epoch = pos // self.dataset_size
                order = self._epoch_order(epoch)
            yield int(order[pos % self.dataset_size])
            pos += self.num_replicas


# ----------------------------------------------------------------------------

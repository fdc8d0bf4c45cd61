"""Radiograph sources for dataset_tool.py: lazily loaded, labelled items from a VinDr tree, the phantom, a folder
of images or an existing dataset, plus the decoding and squaring every image goes through. Items may carry a group
(patient) id, so that later splits can keep each patient's images together.

Problems with the source itself raise dnnlib.UserError naming the flag; problems with one image raise
ConversionError naming the image. The CLI turns both into one-line errors (exit 2).
"""

import dataclasses
import io
import os
import zipfile
import zlib
from collections.abc import Callable, Iterator

import numpy as np
import PIL.Image
import PIL.ImageOps

import dnnlib
from clinical import labels as schema_lib
from clinical.data.labels_csv import read_labels_csv
from clinical.dicom_io import DicomReadError, read_dicom, read_vindr_annotations, read_vindr_studies, vindr_image_path
from clinical.phantom import make_phantom

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.dcm', '.dicom')
DICOM_EXTENSIONS = ('.dcm', '.dicom')
INFERRED_BITS = (10, 12, 14, 16)  # Depths a 16-bit container's maximum value is matched against, smallest first.
Label = int | list[float] | None


# ----------------------------------------------------------------------------
# Errors. A conversion problem names the image, not a flag; the CLI prints it as one line (exit 2).


class ConversionError(dnnlib.UserError):
    pass


class SkipItem(Exception):  # A label-level reason to leave an image out (always reported, never fatal).
    pass


# ----------------------------------------------------------------------------
# A source: lazily loaded items plus class metadata, where their groups come from, and the skips found listing it.


@dataclasses.dataclass
class Item:
    name: str  # Shown in errors and in the summary.
    load: Callable[[], tuple[np.ndarray, Label]]  # -> (float32 [H, W] in [0, 1], label); raises on failure.
    group: str | None = None  # Patient (or study) id; all items of a source have one, or none has.


@dataclasses.dataclass
class Source:
    items: list[Item]
    class_names: list[str] | None
    schema: str | None
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    group_origin: str | None = None  # Where the items' groups come from, e.g. 'column patient_id'; None = no groups.


# ----------------------------------------------------------------------------
# Any supported image file (or bytes) -> float32 [H, W] in [0, 1]; 16-bit data scaled by its bit depth.


def decode_image(path: str, data: bytes | None = None, bits: int | None = None) -> np.ndarray:
    """Decode DICOM, PNG (8/16-bit), JPEG, BMP or TIFF to a float32 grayscale image in [0, 1].

    Args:
        path: The file, or the name of `data` (shown in errors; its extension picks the decoder).
        data: The file's bytes, when it comes from an archive.
        bits: Bit depth of 16-bit PNG/TIFF data (--bits); None infers it from the maximum value.

    Raises:
        dnnlib.UserError: a value above 2**bits - 1.
    """
    if path.lower().endswith(DICOM_EXTENSIONS):
        if data is not None:
            raise DicomReadError('DICOM inside a dataset archive is not supported')
        return read_dicom(path)
    with PIL.Image.open(io.BytesIO(data) if data is not None else path) as image:
        image = PIL.ImageOps.exif_transpose(image)
        if image.mode.startswith('I'):  # 16-bit PNG/TIFF.
            return scale_by_bit_depth(np.asarray(image, dtype=np.float64), path, bits)
        if image.mode == 'F':
            return np.clip(np.asarray(image, dtype=np.float32), 0, 1)
        if image.mode != 'L':
            image = image.convert('L')
        return np.asarray(image, dtype=np.float32) / 255


# ----------------------------------------------------------------------------
# Integer pixels -> [0, 1] by their real bit depth: 10/12/14-bit radiographs kept in 16-bit words would come out
# nearly black scaled by 65535. `bits` forces the depth; None takes the smallest of INFERRED_BITS that holds the max.


def scale_by_bit_depth(values: np.ndarray, path: str, bits: int | None = None) -> np.ndarray:
    peak = float(values.max()) if values.size else 0.0
    if bits is None:
        bits = next((b for b in INFERRED_BITS if peak <= 2**b - 1), INFERRED_BITS[-1])
    elif peak > 2**bits - 1:
        message = f'{path} holds the value {peak:.0f}, above {2**bits - 1}, the maximum of {bits}-bit data'
        raise dnnlib.UserError(message, param='--bits')
    return np.clip(values / (2**bits - 1), 0, 1).astype(np.float32)


# ----------------------------------------------------------------------------
# Square crop or pad, area/Lanczos resampling in float, rounding to 8 bits once at the end.


def to_square_uint8(image: np.ndarray, resolution: int, transform: str, resample: str) -> np.ndarray:
    h, w = image.shape
    if transform == 'center-crop':
        s = min(h, w)
        image = image[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    else:  # pad-to-square: black borders keep the whole film and its aspect ratio.
        s = max(h, w)
        canvas = np.zeros((s, s), dtype=np.float32)
        canvas[(s - h) // 2 : (s - h) // 2 + h, (s - w) // 2 : (s - w) // 2 + w] = image
        image = canvas
    if image.shape[0] != resolution:
        down = image.shape[0] > resolution
        method = PIL.Image.BOX if resample == 'area' and down else PIL.Image.LANCZOS
        pil = PIL.Image.fromarray(np.ascontiguousarray(image, dtype=np.float32), mode='F')
        image = np.asarray(pil.resize((resolution, resolution), method), dtype=np.float32)
    return np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)


# ----------------------------------------------------------------------------
# vindr:ROOT -> items labelled by the shared schema rules.


def open_vindr(root: str, split: str, schema: str, multi_lesion: str) -> Source:
    csv_path = os.path.join(root, 'annotations', f'{split}.csv')
    if not os.path.isfile(csv_path):
        raise dnnlib.UserError(f'{csv_path} not found (expected a VinDr-SpineXR tree)', param='--source')
    findings = _read_vindr_csv(read_vindr_annotations, csv_path)
    studies = _read_vindr_csv(read_vindr_studies, csv_path)  # {image_id: study_id}; {} without the column.
    source = Source([], schema_lib.class_names(schema), schema, group_origin='study_id' if studies else None)
    for image_id, rows in findings.items():
        path = vindr_image_path(root, split, image_id)
        label = _vindr_label(image_id, [t for t, _box in rows], schema, multi_lesion)
        if label is None:
            source.skipped.append((image_id, 'several lesion types (--multi-lesion drop)'))
            continue
        item = Item(os.path.relpath(path, root), lambda p=path, y=label: (decode_image(p), y), studies.get(image_id))
        source.items.append(item)
    image_dir = os.path.dirname(vindr_image_path(root, split, 'x'))
    for fname in sorted(os.listdir(image_dir)) if os.path.isdir(image_dir) else []:
        if os.path.splitext(fname)[0] not in findings:
            source.skipped.append((fname, f'no rows in annotations/{split}.csv'))
    return source


def _read_vindr_csv(read: Callable, csv_path: str):
    try:
        return read(csv_path)
    except ValueError as e:  # UnicodeDecodeError is one, but does not name the file.
        message = f'{csv_path}: not UTF-8 ({e})' if isinstance(e, UnicodeDecodeError) else str(e)
        raise dnnlib.UserError(message, param='--source') from None


def _vindr_label(image_id: str, lesion_types: list[str], schema: str, multi_lesion: str) -> Label:
    try:
        return schema_lib.label_for_image(lesion_types, schema, multi_lesion)
    except schema_lib.MultiLesionError as e:
        raise ConversionError(f'{image_id}: {e} (--multi-lesion error)') from None
    except ValueError as e:
        raise ConversionError(f'{image_id}: {e}') from None


# ----------------------------------------------------------------------------
# phantom:N -> items rendered at the output resolution; labels follow the same rules as vindr; each phantom is
# its own patient.


def open_phantom(count: int, seed: int, resolution: int, schema: str, multi_lesion: str, **kwargs) -> Source:
    def load(index):
        phantom = make_phantom(seed, index, resolution, **kwargs)
        label = _vindr_label(f'phantom {index}', phantom.lesion_types, schema, multi_lesion)
        if label is None:
            raise SkipItem('several lesion types (--multi-lesion drop)')
        return phantom.image, label

    items = [Item(f'phantom:{index}', lambda i=index: load(i), f'phantom-{seed}-{index}') for index in range(count)]
    return Source(items, schema_lib.class_names(schema), schema, group_origin='one per phantom')


# ----------------------------------------------------------------------------
# A folder of images: labels.csv (with groups from its group column), one sub-folder per class, or unlabelled.


def open_folder(
    path: str,
    file_column: str,
    label_column: str,
    class_names: list[str] | None,
    bits: int | None = None,
    group_column: str | None = None,  # --group-column: a labels.csv column, 'none', or None for patient_id if any.
) -> Source:
    if os.path.isfile(os.path.join(path, 'labels.csv')):
        rows, names, column = read_labels_csv(path, file_column, label_column, class_names, group_column)
        items = [_file_item(path, f, index, bits, group) for f, index, group in rows]
        return Source(items, names, f'csv:{label_column}', group_origin=f'column {column}' if column else None)
    files = sorted(_walk_images(path))
    if not files:
        raise dnnlib.UserError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) found in {path}', param='--source')
    folders = sorted({f.split('/')[0] for f in files if '/' in f})
    if folders and all('/' in f for f in files):  # One sub-folder per class.
        if class_names is not None and len(class_names) != len(folders):
            message = f'{len(class_names)} names for {len(folders)} class folders ({", ".join(folders)})'
            raise dnnlib.UserError(message, param='--class-names')
        items = [_file_item(path, f, folders.index(f.split('/')[0]), bits) for f in files]
        return Source(items, class_names or folders, 'folders')
    return Source([_file_item(path, f, None, bits) for f in files], None, None)


def _walk_images(path: str) -> Iterator[str]:
    for root, _dirs, files in os.walk(path):
        for fname in files:
            if fname.lower().endswith(IMAGE_EXTENSIONS):
                yield os.path.relpath(os.path.join(root, fname), path).replace(os.sep, '/')


def _file_item(root: str, relpath: str, label: Label, bits: int | None, group: str | None = None) -> Item:
    return Item(relpath, lambda: (decode_image(os.path.join(root, relpath), bits=bits), label), group)


# ----------------------------------------------------------------------------
# An existing dataset (zip or folder with dataset.json): re-size, relabel, subset; its groups come along.


def open_dataset(path: str, bits: int | None = None) -> Source:
    archive = _open_zip(path) if zipfile.is_zipfile(path) else None
    names = archive.namelist() if archive is not None else list(_walk_images(path))
    meta = _read_metadata(path)
    label_of = dict(meta.get('labels') or [])
    files = sorted(n for n in names if n.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise dnnlib.UserError(f'no images found in {path}', param='--source')

    def load(fname):
        if archive is None:
            return decode_image(os.path.join(path, fname), bits=bits), label_of.get(fname)
        return decode_image(fname, _read_member(archive, path, fname), bits), label_of.get(fname)

    groups = _read_groups(path, meta, files)
    items = [Item(f, lambda f=f: load(f), group) for f, group in zip(files, groups or [None] * len(files))]
    origin = 'dataset.json' if groups is not None else None
    return Source(items, schema_lib.class_names_from_dataset_json(meta), meta.get('label_schema'), group_origin=origin)


def _open_zip(path: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:  # is_zipfile() reads only the end record; the directory may be bad.
        raise dnnlib.UserError(f'{path} is not a readable zip archive ({e})', param='--source') from None


def _read_member(archive: zipfile.ZipFile, path: str, fname: str) -> bytes:
    try:
        return archive.read(fname)
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:  # An OSError is a decode failure (--on-error).
        raise OSError(f'corrupt in {path} ({e})') from None


def _read_metadata(path: str) -> dict:
    from training.dataset import read_dataset_metadata  # Here, so dataset_tool starts without importing torch.

    try:
        return read_dataset_metadata(path)
    except FileNotFoundError:
        return {}  # A zip of images without dataset.json: unlabelled.
    except ValueError as e:
        raise dnnlib.UserError(str(e), param='--source') from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
        raise dnnlib.UserError(f'{path}: cannot read dataset.json ({e})', param='--source') from None


def _read_groups(path: str, meta: dict, files: list[str]) -> list[str] | None:
    from training.dataset import groups_from_metadata

    try:
        return groups_from_metadata(meta, files, path)
    except ValueError as e:
        raise dnnlib.UserError(str(e), param='--source') from None


# ----------------------------------------------------------------------------
# --labels on a folder or dataset source: none drops labels, a schema relabels through the class names.


def relabel_source(source: Source, schema: str, multi_lesion: str) -> Source:
    if schema == 'none':
        items = [dataclasses.replace(it, load=lambda it=it: (it.load()[0], None)) for it in source.items]
        return dataclasses.replace(source, items=items, class_names=None, schema=None)
    if source.class_names is None:
        raise dnnlib.UserError('the source has no labels to derive them from', param='--labels')
    names = source.class_names

    def load(item):
        image, label = item.load()
        if label is None:
            raise SkipItem('no label in the source')
        try:
            new = schema_lib.relabel(label, names, schema, multi_lesion)
        except schema_lib.MultiLesionError as e:
            raise ConversionError(f'{item.name}: {e} (--multi-lesion error)') from None
        if new is None:
            raise SkipItem('several lesion types (--multi-lesion drop)')
        return image, new

    try:
        schema_lib.relabel(0, names, schema, multi_lesion)  # Fail early if the classes cannot map.
    except ValueError as e:
        raise dnnlib.UserError(str(e), param='--labels') from None
    items = [dataclasses.replace(it, load=lambda it=it: load(it)) for it in source.items]
    return dataclasses.replace(source, items=items, class_names=schema_lib.class_names(schema), schema=schema)


# ----------------------------------------------------------------------------
# --keep-classes on any labelled source, after --labels: images of the named classes, re-indexed in the order given;
# the others are left out (counted, not listed). Multi-hot labels are refused rather than cut down to fewer dims.


class LeftOut(SkipItem):  # An image of a class not in --keep-classes; its message is that class's name.
    pass


def keep_classes(source: Source, keep: list[str]) -> Source:
    names = source.class_names
    if names is None:
        raise dnnlib.UserError('the source has no labels to choose classes from', param='--keep-classes')
    if source.schema == 'lesion-multi':
        raise dnnlib.UserError('lesion-multi labels are multi-hot; use --labels lesion', param='--keep-classes')
    unknown = [name for name in keep if name not in names]
    if unknown:
        message = f'unknown class {", ".join(unknown)}; the source has {", ".join(names)}'
        raise dnnlib.UserError(message, param='--keep-classes')
    new_index = {names.index(name): i for i, name in enumerate(keep)}

    def load(item):
        image, label = item.load()
        if label is None:
            raise SkipItem('no label in the source')
        if not isinstance(label, int):
            raise ConversionError(f'{item.name}: multi-hot label; --keep-classes needs one class per image')
        if label not in new_index:
            raise LeftOut(names[label])
        return image, new_index[label]

    # A fixed schema (abnormal, lesion) promises its class list; a subset or reordering of it is no longer that schema.
    schema = source.schema if source.schema not in schema_lib.SCHEMAS or keep == names else None
    items = [dataclasses.replace(it, load=lambda it=it: load(it)) for it in source.items]
    return dataclasses.replace(source, items=items, class_names=list(keep), schema=schema)


# ----------------------------------------------------------------------------
# --source parsing: vindr:ROOT, phantom:N, a dataset (zip, or folder with dataset.json), or an image folder;
# then --keep-classes filters the labels of any source and --group-column none drops its groups.


def open_source(spec: str, opts: dnnlib.EasyDict) -> Source:
    source, group_column = _open_source(spec, opts), opts.get('group_column')
    if opts.get('keep_classes'):
        source = keep_classes(source, opts.keep_classes)
    if group_column == 'none':
        items = [dataclasses.replace(it, group=None) for it in source.items]
        return dataclasses.replace(source, items=items, group_origin=None)
    if group_column is not None and source.group_origin != f'column {group_column}':
        raise dnnlib.UserError(f'{spec} has no labels.csv to take column {group_column!r} from', param='--group-column')
    return source


def _open_source(spec: str, opts: dnnlib.EasyDict) -> Source:
    schema = opts.labels or 'abnormal'
    if spec.startswith(('vindr:', 'phantom:')) and schema == 'none':
        raise dnnlib.UserError('vindr: and phantom: sources need a label schema', param='--labels')
    if spec.startswith('vindr:'):
        root = os.path.expanduser(spec[len('vindr:') :])
        if not os.path.isdir(root):
            raise dnnlib.UserError(f'{root} is not a folder', param='--source')
        return open_vindr(root, opts.split, schema, opts.multi_lesion)
    if spec.startswith('phantom:'):
        kwargs = dict(prevalence=opts.prevalence, multi_lesion_rate=opts.multi_rate)
        return open_phantom(phantom_count(spec), opts.seed, opts.resolution, schema, opts.multi_lesion, **kwargs)
    path = os.path.expanduser(spec)
    if not os.path.exists(path):
        raise dnnlib.UserError(f'{path} does not exist', param='--source')
    bits = opts.get('bits')
    if zipfile.is_zipfile(path) or os.path.isfile(os.path.join(path, 'dataset.json')):
        source = open_dataset(path, bits)
    elif os.path.isdir(path):
        group_column = opts.get('group_column')
        source = open_folder(path, opts.file_column, opts.label_column, opts.class_names, bits, group_column)
    else:
        hint = 'not a readable zip archive (truncated or corrupt?)' if path.lower().endswith('.zip') else 'a file'
        raise dnnlib.UserError(f'{path} is {hint}; give a folder or a dataset zip', param='--source')
    return relabel_source(source, opts.labels, opts.multi_lesion) if opts.labels else source


def phantom_count(spec: str) -> int:
    count = spec[len('phantom:') :]
    if not count.isdigit() or int(count) < 1:
        raise dnnlib.UserError(f'expected phantom:N with N >= 1, got {spec!r}', param='--source')
    return int(count)

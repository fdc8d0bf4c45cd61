"""Convert radiograph sources into the dataset format train.py reads: PNGs plus dataset.json, in a zip or folder.

Sources: `vindr:ROOT` (VinDr-SpineXR DICOM tree), `phantom:N` (the procedural spine phantom), a folder of
images (labels.csv or one sub-folder per class; DICOM, PNG, JPEG, 16-bit PNG) or an existing dataset zip/folder
(resize, relabel, subset). Nothing is dropped silently: every skipped file is reported with its reason.

Examples:
    python dataset_tool.py --source phantom:1000 --dest data/phantom-64.zip --resolution 64 --labels lesion
    python dataset_tool.py --source vindr:~/vindr-spinexr --split train --labels abnormal --dest spine-256.zip
    python dataset_tool.py --source ../shared/data/kermany-cxr-256 --dest cxr-64.zip --resolution 64
"""

import collections
import csv
import dataclasses
import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator

import click
import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import PIL.ImageOps
from tqdm import tqdm

import dnnlib
from clinical import labels as schema_lib
from clinical.dicom_io import DicomReadError, read_dicom, read_vindr_annotations, vindr_image_path, write_vindr_tree
from clinical.phantom import make_phantom

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.dcm', '.dicom')
DICOM_EXTENSIONS = ('.dcm', '.dicom')
TRANSFORMS = ['center-crop', 'pad-to-square']
LABEL_CHOICES = ['abnormal', 'lesion', 'lesion-multi', 'none']
MULTI_LESION = list(schema_lib.MULTI_LESION_POLICIES)
Label = int | list[float] | None


# ----------------------------------------------------------------------------
# Errors. Conversion problems exit with code 2 like usage errors, with one line naming the file.


class ConversionError(click.ClickException):
    exit_code = 2


class SkipItem(Exception):  # A label-level reason to leave an image out (always reported, never fatal).
    pass


# ----------------------------------------------------------------------------
# A source: lazily loaded items plus class metadata and the skips found while listing it.


@dataclasses.dataclass
class Item:
    name: str  # Shown in errors and in the summary.
    load: Callable[[], tuple[np.ndarray, Label]]  # -> (float32 [H, W] in [0, 1], label); raises on failure.


@dataclasses.dataclass
class Source:
    items: list[Item]
    class_names: list[str] | None
    schema: str | None
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)


# ----------------------------------------------------------------------------
# Any supported image file (or bytes) -> float32 [H, W] in [0, 1]; 16-bit data scaled as floats.


def decode_image(path: str, data: bytes | None = None) -> np.ndarray:
    """Decode DICOM, PNG (8/16-bit), JPEG, BMP or TIFF to a float32 grayscale image in [0, 1]."""
    if path.lower().endswith(DICOM_EXTENSIONS):
        if data is not None:
            raise DicomReadError('DICOM inside a dataset archive is not supported')
        return read_dicom(path)
    with PIL.Image.open(io.BytesIO(data) if data is not None else path) as image:
        image = PIL.ImageOps.exif_transpose(image)
        if image.mode.startswith('I'):  # 16-bit PNG/TIFF: full uint16 range -> [0, 1].
            return np.clip(np.asarray(image, dtype=np.float64) / 65535, 0, 1).astype(np.float32)
        if image.mode == 'F':
            return np.clip(np.asarray(image, dtype=np.float32), 0, 1)
        if image.mode != 'L':
            image = image.convert('L')
        return np.asarray(image, dtype=np.float32) / 255


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
        raise click.BadParameter(f'{csv_path} not found (expected a VinDr-SpineXR tree)', param_hint='--source')
    try:
        findings = read_vindr_annotations(csv_path)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint='--source') from None
    source = Source([], schema_lib.class_names(schema), schema)
    for image_id, rows in findings.items():
        path = vindr_image_path(root, split, image_id)
        label = _vindr_label(image_id, [t for t, _box in rows], schema, multi_lesion)
        if label is None:
            source.skipped.append((image_id, 'several lesion types (--multi-lesion drop)'))
            continue
        source.items.append(Item(os.path.relpath(path, root), lambda p=path, y=label: (decode_image(p), y)))
    image_dir = os.path.dirname(vindr_image_path(root, split, 'x'))
    for fname in sorted(os.listdir(image_dir)) if os.path.isdir(image_dir) else []:
        if os.path.splitext(fname)[0] not in findings:
            source.skipped.append((fname, f'no rows in annotations/{split}.csv'))
    return source


def _vindr_label(image_id: str, lesion_types: list[str], schema: str, multi_lesion: str) -> Label:
    try:
        return schema_lib.label_for_image(lesion_types, schema, multi_lesion)
    except schema_lib.MultiLesionError as e:
        raise ConversionError(f'{image_id}: {e} (--multi-lesion error)') from None
    except ValueError as e:
        raise ConversionError(f'{image_id}: {e}') from None


# ----------------------------------------------------------------------------
# phantom:N -> items rendered at the output resolution; labels follow the same rules as vindr.


def open_phantom(count: int, seed: int, resolution: int, schema: str, multi_lesion: str, **kwargs) -> Source:
    def load(index):
        phantom = make_phantom(seed, index, resolution, **kwargs)
        label = _vindr_label(f'phantom {index}', phantom.lesion_types, schema, multi_lesion)
        if label is None:
            raise SkipItem('several lesion types (--multi-lesion drop)')
        return phantom.image, label

    items = [Item(f'phantom:{index}', lambda i=index: load(i)) for index in range(count)]
    return Source(items, schema_lib.class_names(schema), schema)


# ----------------------------------------------------------------------------
# A folder of images: labels.csv, one sub-folder per class, or unlabelled.


def open_folder(path: str, file_column: str, label_column: str, class_names: list[str] | None) -> Source:
    csv_path = os.path.join(path, 'labels.csv')
    if os.path.isfile(csv_path):
        return _open_labels_csv(path, csv_path, file_column, label_column, class_names)
    files = sorted(_walk_images(path))
    if not files:
        raise click.BadParameter(f'no images ({", ".join(IMAGE_EXTENSIONS)}) found in {path}', param_hint='--source')
    folders = sorted({f.split('/')[0] for f in files if '/' in f})
    if folders and all('/' in f for f in files):  # One sub-folder per class.
        items = [_file_item(path, f, folders.index(f.split('/')[0])) for f in files]
        return Source(items, class_names or folders, 'folders')
    return Source([_file_item(path, f, None) for f in files], None, None)


def _walk_images(path: str) -> Iterator[str]:
    for root, _dirs, files in os.walk(path):
        for fname in files:
            if fname.lower().endswith(IMAGE_EXTENSIONS):
                yield os.path.relpath(os.path.join(root, fname), path).replace(os.sep, '/')


def _file_item(root: str, relpath: str, label: Label) -> Item:
    return Item(relpath, lambda: (decode_image(os.path.join(root, relpath)), label))


def _open_labels_csv(path, csv_path, file_column, label_column, class_names) -> Source:
    with open(csv_path, newline='', encoding='utf-8') as f:
        reader = csv.DictReader(f)
        rows, columns = list(reader), reader.fieldnames or []
    for column, flag in ((file_column, '--file-column'), (label_column, '--label-column')):
        if column not in columns:
            raise click.BadParameter(
                f'{csv_path} has no column {column!r} (columns: {", ".join(columns)})', param_hint=flag
            )
    if not rows:
        raise click.BadParameter(f'{csv_path} lists no images', param_hint='--source')
    values = [row[label_column].strip() for row in rows]
    if all(v.lstrip('-').isdigit() for v in values):
        indices = [int(v) for v in values]
        names = (
            class_names or _names_from_column(rows, label_column, indices) or [str(i) for i in range(max(indices) + 1)]
        )
    else:
        names = class_names or sorted(set(values))
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise click.BadParameter(f'labels {unknown} are not in --class-names', param_hint='--class-names')
        indices = [names.index(v) for v in values]
    items = [_file_item(path, row[file_column], index) for row, index in zip(rows, indices)]
    return Source(items, names, f'csv:{label_column}')


def _names_from_column(rows, label_column, indices) -> list[str] | None:
    name_column = f'{label_column}_name'  # e.g. label -> label_name, when present and consistent.
    if name_column not in rows[0]:
        return None
    mapping = {}
    for row, index in zip(rows, indices):
        if mapping.setdefault(index, row[name_column]) != row[name_column]:
            return None
    return [mapping.get(i, str(i)) for i in range(max(indices) + 1)]


# ----------------------------------------------------------------------------
# An existing dataset (zip or folder with dataset.json): re-size, relabel, subset.


def open_dataset(path: str) -> Source:
    is_zip = zipfile.is_zipfile(path)
    archive = zipfile.ZipFile(path) if is_zip else None
    names = archive.namelist() if is_zip else list(_walk_images(path))
    meta = schema_lib.read_dataset_json(path) if (not is_zip or 'dataset.json' in names) else {}
    label_of = dict(meta.get('labels') or [])
    files = sorted(n for n in names if n.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise click.BadParameter(f'no images found in {path}', param_hint='--source')

    def load(fname):
        data = archive.read(fname) if is_zip else None
        return decode_image(fname if is_zip else os.path.join(path, fname), data), label_of.get(fname)

    items = [Item(f, lambda f=f: load(f)) for f in files]
    return Source(items, schema_lib.class_names_from_dataset_json(meta), meta.get('label_schema'))


# ----------------------------------------------------------------------------
# --labels on a folder or dataset source: none drops labels, a schema relabels through the class names.


def relabel_source(source: Source, schema: str, multi_lesion: str) -> Source:
    if schema == 'none':
        items = [Item(it.name, lambda it=it: (it.load()[0], None)) for it in source.items]
        return Source(items, None, None, source.skipped)
    if source.class_names is None:
        raise click.BadParameter('the source has no labels to derive them from', param_hint='--labels')
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
        raise click.BadParameter(str(e), param_hint='--labels') from None
    items = [Item(it.name, lambda it=it: load(it)) for it in source.items]
    return Source(items, schema_lib.class_names(schema), schema, source.skipped)


# ----------------------------------------------------------------------------
# Output: a zip or folder written under a temporary name and renamed into place only on success.


class DatasetWriter:
    def __init__(self, dest: str):
        self.dest, self.is_zip = dest, dest.lower().endswith('.zip')
        parent = os.path.dirname(os.path.abspath(dest))
        os.makedirs(parent, exist_ok=True)
        prefix = '.' + os.path.basename(os.path.normpath(dest)) + '.'
        if self.is_zip:
            fd, self.tmp = tempfile.mkstemp(dir=parent, prefix=prefix, suffix='.tmp')
            os.close(fd)
            self.zip = zipfile.ZipFile(self.tmp, 'w', compression=zipfile.ZIP_STORED)
        else:
            self.tmp = tempfile.mkdtemp(dir=parent, prefix=prefix, suffix='.tmp')

    def add(self, relpath: str, data: bytes) -> None:
        if self.is_zip:
            self.zip.writestr(relpath, data)
            return
        os.makedirs(os.path.dirname(os.path.join(self.tmp, relpath)), exist_ok=True)
        with open(os.path.join(self.tmp, relpath), 'wb') as f:
            f.write(data)

    def commit(self) -> None:
        if self.is_zip:
            self.zip.close()
        elif os.path.isdir(self.dest):
            os.rmdir(self.dest)  # Empty (checked up front), so the rename below can take its place.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, (0o666 if self.is_zip else 0o777) & ~umask)  # mkstemp/mkdtemp create owner-only.
        os.replace(self.tmp, self.dest)

    def abort(self) -> None:
        if self.is_zip:
            self.zip.close()
            os.remove(self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


# ----------------------------------------------------------------------------
# The conversion loop: decode, label, square, write; failures follow --on-error, skips are recorded.


def convert(source: Source, writer: DatasetWriter | None, opts: dnnlib.EasyDict, preview: dict) -> dict:
    labels, skipped, counts = [], list(source.skipped), collections.Counter()
    limit = opts.max_images if opts.max_images is not None else len(source.items)
    with tqdm(total=min(limit, len(source.items)), unit='img', disable=None) as bar:
        for item in source.items:
            if len(labels) >= limit:
                break
            try:
                image, label = item.load()
            except SkipItem as e:
                skipped.append((item.name, str(e)))
                continue
            except click.ClickException:
                raise
            except Exception as e:  # Decoders raise many types; the reason is reported either way.
                reason = f'{type(e).__name__}: {e}' if not isinstance(e, (DicomReadError, OSError)) else str(e)
                if opts.on_error == 'fail':
                    raise ConversionError(f'cannot decode {item.name}: {reason} (use --on-error skip)') from None
                skipped.append((item.name, f'undecodable: {reason}'))
                continue
            pixels = to_square_uint8(image, opts.resolution, opts.transform, opts.resample)
            relpath = f'{len(labels) // 1000:05d}/img{len(labels):08d}.png'
            if writer is not None:
                writer.add(relpath, _png_bytes(pixels))
            labels.append([relpath, label])
            _count_label(counts, label)
            _add_preview(preview, pixels, label, opts.preview_per_class)
            bar.update(1)
    return dict(labels=labels, skipped=skipped, counts=counts)


def _png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(pixels, mode='L').save(buffer, format='png', compress_level=1)
    return buffer.getvalue()


def _active_classes(label: Label) -> list[int]:
    if label is None:
        return [-1]
    return [label] if isinstance(label, int) else [i for i, v in enumerate(label) if v > 0.5]


def _count_label(counts: collections.Counter, label: Label) -> None:
    for index in _active_classes(label):
        counts[index] += 1


def _add_preview(preview: dict, pixels: np.ndarray, label: Label, per_class: int) -> None:
    for index in _active_classes(label):
        if len(preview.setdefault(index, [])) < per_class:
            preview[index].append(pixels)


# ----------------------------------------------------------------------------
# Preview: one row per class, its name on the left (PIL's default font).


def write_preview(path: str, preview: dict, class_names: list[str] | None, per_class: int, resolution: int) -> None:
    rows = [(-1, 'all images')] if class_names is None else list(enumerate(class_names))
    font = PIL.ImageFont.load_default()
    draw = PIL.ImageDraw.Draw(PIL.Image.new('L', (1, 1)))
    margin = int(max(draw.textlength(name, font=font) for _i, name in rows)) + 12
    grid = PIL.Image.new('L', (margin + per_class * resolution, len(rows) * resolution), color=32)
    draw = PIL.ImageDraw.Draw(grid)
    for r, (index, name) in enumerate(rows):
        draw.text((6, r * resolution + resolution // 2), name, fill=255, font=font, anchor='lm')
        for c, pixels in enumerate(preview.get(index, [])):
            grid.paste(PIL.Image.fromarray(pixels, mode='L'), (margin + c * resolution, r * resolution))
    with dnnlib.util.atomic_write(path) as f:
        grid.save(f, format='png')


# ----------------------------------------------------------------------------
# One summary at the end: what was written, per-label counts, and every skipped file with its reason.


def print_summary(result: dict, source: Source, dest: str | None, resolution: int, max_listed: int = 100) -> None:
    written = len(result['labels'])
    click.echo(f'Wrote {written} images ({resolution}x{resolution})' + (f' to {dest}' if dest else ' (preview only)'))
    if source.class_names is not None:
        counts = ', '.join(f'{name} {result["counts"][i]}' for i, name in enumerate(source.class_names))
        click.echo(f'Labels ({source.schema}): {counts}')
    skipped = result['skipped']
    reasons = collections.Counter(reason.split(':')[0] for _name, reason in skipped)
    click.echo(
        f'Skipped {len(skipped)} images' + (': ' + ', '.join(f'{n} {r}' for r, n in reasons.items()) if skipped else '')
    )
    for name, reason in skipped[:max_listed]:
        click.echo(f'  skipped {name}: {reason}')
    if len(skipped) > max_listed:
        click.echo(f'  ... and {len(skipped) - max_listed} more')


# ----------------------------------------------------------------------------
# --source parsing: vindr:ROOT, phantom:N, a dataset (zip, or folder with dataset.json), or an image folder.


def open_source(spec: str, opts: dnnlib.EasyDict) -> Source:
    schema = opts.labels or 'abnormal'
    if spec.startswith(('vindr:', 'phantom:')) and schema == 'none':
        raise click.BadParameter('vindr: and phantom: sources need a label schema', param_hint='--labels')
    if spec.startswith('vindr:'):
        root = os.path.expanduser(spec[len('vindr:') :])
        if not os.path.isdir(root):
            raise click.BadParameter(f'{root} is not a folder', param_hint='--source')
        return open_vindr(root, opts.split, schema, opts.multi_lesion)
    if spec.startswith('phantom:'):
        kwargs = dict(prevalence=opts.prevalence, multi_lesion_rate=opts.multi_rate)
        return open_phantom(phantom_count(spec), opts.seed, opts.resolution, schema, opts.multi_lesion, **kwargs)
    path = os.path.expanduser(spec)
    if not os.path.exists(path):
        raise click.BadParameter(f'{path} does not exist', param_hint='--source')
    if zipfile.is_zipfile(path) or os.path.isfile(os.path.join(path, 'dataset.json')):
        source = open_dataset(path)
    elif os.path.isdir(path):
        source = open_folder(path, opts.file_column, opts.label_column, opts.class_names)
    else:
        raise click.BadParameter(f'{path} is neither a folder nor a dataset zip', param_hint='--source')
    return relabel_source(source, opts.labels, opts.multi_lesion) if opts.labels else source


def phantom_count(spec: str) -> int:
    count = spec[len('phantom:') :]
    if not count.isdigit() or int(count) < 1:
        raise click.BadParameter(f'expected phantom:N with N >= 1, got {spec!r}', param_hint='--source')
    return int(count)


# ----------------------------------------------------------------------------
# --vindr-tree: write phantoms as a VinDr-SpineXR-shaped DICOM tree (portrait films, boxes in pixels).


def export_vindr_tree(count: int, dest: str, opts: dnnlib.EasyDict) -> None:
    for existing in (
        os.path.join(dest, f'{opts.split}_images'),
        os.path.join(dest, 'annotations', f'{opts.split}.csv'),
    ):
        if os.path.exists(existing):
            raise click.BadParameter(f'{existing} already exists', param_hint='--dest')
    shape = (opts.resolution * 5 // 4, opts.resolution)
    kwargs = dict(prevalence=opts.prevalence, multi_lesion_rate=opts.multi_rate)
    phantoms = (make_phantom(opts.seed, i, shape, **kwargs) for i in tqdm(range(count), unit='img', disable=None))
    staging = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(dest)), prefix='.vindr-tree.')
    try:
        written = write_vindr_tree(staging, opts.split, ((p.image, p.findings) for p in phantoms), seed=opts.seed)
        os.makedirs(os.path.join(dest, 'annotations'), exist_ok=True)
        os.replace(
            os.path.join(staging, 'annotations', f'{opts.split}.csv'),
            os.path.join(dest, 'annotations', f'{opts.split}.csv'),
        )
        os.replace(os.path.join(staging, f'{opts.split}_images'), os.path.join(dest, f'{opts.split}_images'))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    click.echo(f'Wrote {written} phantom DICOMs ({shape[1]}x{shape[0]}) and annotations/{opts.split}.csv to {dest}')


# ----------------------------------------------------------------------------
# Option checks that need more than one flag.


def _power_of_two(_ctx, _param, value):
    if value is not None and (value < 4 or value & (value - 1)):
        raise click.BadParameter(f'{value} is not a power of two >= 4')
    return value


def _check_dest(dest: str | None, preview: str | None, vindr_tree: bool, source: str) -> None:
    if dest is None and preview is None:
        raise click.UsageError('give --dest, --preview, or both')
    if vindr_tree and (dest is None or not source.startswith('phantom:')):
        raise click.UsageError('--vindr-tree needs --source phantom:N and a --dest folder')
    if dest and not vindr_tree and not dest.lower().endswith('.zip') and os.path.isdir(dest) and os.listdir(dest):
        raise click.BadParameter(f'folder {dest} is not empty', param_hint='--dest')
    if dest and not vindr_tree and os.path.isfile(dest) and not dest.lower().endswith('.zip'):
        raise click.BadParameter(f'{dest} is a file; use a .zip name or a folder', param_hint='--dest')


# ----------------------------------------------------------------------------
# Command line.


@click.command(context_settings=dict(help_option_names=['-h', '--help']))
@click.option('--source', required=True, metavar='SPEC', help='vindr:ROOT, phantom:N, folder, or dataset')
@click.option('--dest', metavar='PATH', help='Output .zip or folder')
@click.option(
    '--resolution', type=int, default=256, metavar='INT', show_default=True, callback=_power_of_two, help='Output size'
)
@click.option('--transform', type=click.Choice(TRANSFORMS), default=TRANSFORMS[0], show_default=True, help='Squaring')
@click.option(
    '--resample', type=click.Choice(['lanczos', 'area']), default='lanczos', show_default=True, help='Resampling'
)
@click.option('--max-images', type=click.IntRange(min=1), metavar='INT', help='Stop after this many images')
@click.option('--labels', type=click.Choice(LABEL_CHOICES), help='Label schema  [default: abnormal]')
@click.option('--split', type=click.Choice(['train', 'test']), default='train', show_default=True, help='VinDr split')
@click.option(
    '--multi-lesion', type=click.Choice(MULTI_LESION), default='drop', show_default=True, help='lesion, 2+ types'
)
@click.option('--label-column', default='label', metavar='NAME', show_default=True, help='labels.csv column')
@click.option('--file-column', default='file', metavar='NAME', show_default=True, help='labels.csv column')
@click.option('--class-names', metavar='A,B,..', help='Names of integer classes')
@click.option('--seed', type=int, default=0, metavar='INT', show_default=True, help='Phantom seed')
@click.option(
    '--prevalence', type=click.FloatRange(0, 1), default=0.5, show_default=True, help='Phantom: abnormal rate'
)
@click.option('--multi-rate', type=click.FloatRange(0, 1), default=0.2, show_default=True, help='Phantom: 2+ types')
@click.option(
    '--on-error', type=click.Choice(['fail', 'skip']), default='fail', show_default=True, help='Undecodable files'
)
@click.option('--preview', metavar='PNG', help='Also write a grid of samples, one row per class')
@click.option(
    '--preview-per-class',
    type=click.IntRange(1, 64),
    default=8,
    metavar='INT',
    show_default=True,
    help='Preview row length',
)
@click.option('--vindr-tree', is_flag=True, help='Write phantom:N as a VinDr-SpineXR DICOM tree in --dest')
def main(**kwargs):
    """Convert a radiograph source into a training dataset (PNG + dataset.json, zip or folder).

    \b
    --source      vindr:ROOT (VinDr-SpineXR tree; --split), phantom:N (--seed, --prevalence,
                  --multi-rate), a folder (labels.csv with --file-column/--label-column, or one
                  sub-folder per class), or a dataset zip/folder with dataset.json.
    --labels      abnormal (normal iff every row says "No finding"), lesion (8 classes, one label;
                  --multi-lesion drop|first|error), lesion-multi (8-dim multi-hot), none. On folders
                  and datasets it relabels through their class names.
    --class-names for integer CSV labels; default: the <label-column>_name column, else 0..K-1.
    --transform   center-crop, or pad-to-square keeping the whole film; --resample lanczos|area.
    --on-error    fail (exit 2 naming the file) or skip (listed in the summary).
    --vindr-tree  with phantom:N, write DICOMs + annotations/<split>.csv into the --dest folder.
    """
    opts = dnnlib.EasyDict(kwargs)
    opts.class_names = [n.strip() for n in opts.class_names.split(',')] if opts.class_names else None
    _check_dest(opts.dest, opts.preview, opts.vindr_tree, opts.source)
    if opts.vindr_tree:
        return export_vindr_tree(phantom_count(opts.source), opts.dest, opts)
    source = open_source(opts.source, opts)
    writer, preview = (DatasetWriter(opts.dest) if opts.dest else None), {}
    try:
        result = convert(source, writer, opts, preview)
        if not result['labels']:
            print_summary(result, source, None, opts.resolution)
            raise ConversionError('no images were written (every image was skipped)')
        if writer is not None:
            meta = dict(labels=result['labels'] if source.class_names is not None else None)
            if source.class_names is not None:
                meta.update(class_names=source.class_names, label_schema=source.schema)
            writer.add('dataset.json', json.dumps(meta).encode())
            writer.commit()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if opts.preview:
        write_preview(opts.preview, preview, source.class_names, opts.preview_per_class, opts.resolution)
    print_summary(result, source, opts.dest, opts.resolution)


if __name__ == '__main__':
    main()

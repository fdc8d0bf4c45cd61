"""Writing a source out as a training dataset: the conversion loop, the zip or folder of PNGs plus dataset.json
(renamed into place only on success) and the per-class preview grid.
"""

import collections
import io
import json
import os
import shutil
import tempfile
import zipfile

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
from tqdm import tqdm

import dnnlib
from clinical.data.sources import ConversionError, Label, LeftOut, SkipItem, Source, to_square_uint8
from clinical.dicom_io import DicomReadError

# ----------------------------------------------------------------------------
# Output: a zip or folder written under a temporary name and renamed into place only on success.


class DatasetWriter:
    def __init__(self, dest: str):
        self.dest, self.is_zip = dest, dest.lower().endswith('.zip')
        parent = os.path.dirname(os.path.abspath(dest))
        prefix = '.' + os.path.basename(os.path.normpath(dest)) + '.'
        try:
            os.makedirs(parent, exist_ok=True)
            if self.is_zip:
                fd, self.tmp = tempfile.mkstemp(dir=parent, prefix=prefix, suffix='.tmp')
                os.close(fd)
            else:
                self.tmp = tempfile.mkdtemp(dir=parent, prefix=prefix, suffix='.tmp')
        except OSError as e:  # A file where a parent folder should be, no permission, ...
            raise dnnlib.UserError(f'cannot write next to {dest}: {e}', param='--dest') from None
        if self.is_zip:
            self.zip = zipfile.ZipFile(self.tmp, 'w', compression=zipfile.ZIP_STORED)

    def add(self, relpath: str, data: bytes) -> None:
        if self.is_zip:
            self.zip.writestr(relpath, data)
            return
        os.makedirs(os.path.dirname(os.path.join(self.tmp, relpath)), exist_ok=True)
        with open(os.path.join(self.tmp, relpath), 'wb') as f:
            f.write(data)

    def commit(self, labels: list, class_names: list[str] | None, schema: str | None, groups: list = ()) -> None:
        """Add dataset.json (labels only when the source has classes; groups, [[relpath, group id], ...], only
        when the items have them) and rename the output into place."""
        meta = dict(labels=labels if class_names is not None else None)
        if class_names is not None:
            meta.update(class_names=class_names, label_schema=schema)
        known = [group is not None for _relpath, group in groups]
        assert all(known) or not any(known), 'a source gives every item a group, or none'
        if any(known):
            meta.update(groups=groups)
        self.add('dataset.json', json.dumps(meta).encode())
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
# Returns labels and groups ([relpath, label or group id] per written image), skips, per-class counts and the
# images left out by --keep-classes (count per source class name).


def convert(source: Source, writer: DatasetWriter | None, opts: dnnlib.EasyDict, preview: dict) -> dict:
    labels, groups, skipped, counts = [], [], list(source.skipped), collections.Counter()
    left_out = collections.Counter()
    limit = opts.max_images if opts.max_images is not None else len(source.items)
    with tqdm(total=min(limit, len(source.items)), unit='img', disable=None) as bar:
        for item in source.items:
            if len(labels) >= limit:
                break
            try:
                image, label = item.load()
            except LeftOut as e:
                left_out[str(e)] += 1
                continue
            except SkipItem as e:
                skipped.append((item.name, str(e)))
                continue
            except dnnlib.UserError:  # ConversionError from labelling: fatal whatever --on-error says.
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
            groups.append([relpath, item.group])
            _count_label(counts, label)
            _add_preview(preview, pixels, label, opts.preview_per_class)
            bar.update(1)
    return dict(labels=labels, groups=groups, skipped=skipped, counts=counts, left_out=left_out)


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

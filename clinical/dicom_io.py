"""DICOM radiographs <-> display-ready float images, and the VinDr-SpineXR folder layout.

Reading follows the DICOM display pipeline (PS3.3 C.11): stored values -> modality LUT (rescale) ->
VOI LUT or window -> MONOCHROME1 inversion, then float scaling of the windowed range. Without VOI tags a
robust percentile window is used. The result is float32 in [0, 1] with bone bright.
"""

import csv
import hashlib
import os
import warnings
from collections.abc import Iterable, Sequence

import numpy as np

try:
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing, get_decoder
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
except ImportError:  # Optional extra; read_dicom() explains what to install.
    pydicom = None

ANNOTATION_COLUMNS = ('study_id', 'series_id', 'image_id', 'rad_id', 'lesion_type', 'xmin', 'ymin', 'xmax', 'ymax')
SECONDARY_CAPTURE_UID = '1.2.840.10008.5.1.4.1.1.7'
Box = tuple[float, float, float, float]


# ----------------------------------------------------------------------------
# A file that cannot be turned into pixels; the message is the reason shown to the user.


class DicomReadError(ValueError):
    pass


# ----------------------------------------------------------------------------
# Which VOI transform applies, with the same precedence as pydicom.pixels.apply_voi_lut.


def _voi_mode(ds) -> str:
    seq = ds.get('VOILUTSequence')
    if seq and seq[0].get('LUTDescriptor') is not None and seq[0].get('LUTData') is not None:
        return 'lut'
    if ds.get('WindowCenter') is not None and ds.get('WindowWidth') is not None:
        return 'window'
    return 'percentile'


# ----------------------------------------------------------------------------
# Output range of the VOI transform, found by probing it, so scaling matches what pydicom computed.


def _voi_output_range(ds, mode: str) -> tuple[float, float]:
    if mode == 'lut':
        descriptor = ds.VOILUTSequence[0].LUTDescriptor
        entries = descriptor[0] or 2**16
        probe = np.arange(descriptor[1], descriptor[1] + entries, dtype=np.int64)
        table = apply_voi(probe, ds).astype(np.float64)
        return float(table.min()), float(table.max())
    with np.errstate(over='ignore'):
        ends = apply_windowing(np.array([-1e30, 1e30]), ds)
    return float(ends.min()), float(ends.max())


# ----------------------------------------------------------------------------
# Dataset -> float display image.


def display_pixels(ds, percentiles: tuple[float, float] = (0.5, 99.5)) -> tuple[np.ndarray, str]:
    """Convert a pydicom dataset to a display image.

    Args:
        ds: A single-frame grayscale dataset with Pixel Data.
        percentiles: Window used when the file has neither a VOI LUT nor window tags.

    Returns:
        (float32 [H, W] image in [0, 1], bone bright; the VOI path used: 'lut' | 'window' | 'percentile').

    Raises:
        DicomReadError: no pixel data, colour, multi-frame, or a decoding failure.
    """
    photometric = str(ds.get('PhotometricInterpretation', '')).strip()
    if photometric not in ('MONOCHROME1', 'MONOCHROME2'):
        raise DicomReadError(f'unsupported PhotometricInterpretation {photometric!r}')
    if 'PixelData' not in ds:
        raise DicomReadError('no Pixel Data element')
    try:
        stored = ds.pixel_array
    except Exception as e:  # pydicom raises many types for truncated or compressed data.
        raise DicomReadError(_decode_failure(ds, e)) from e
    if stored.ndim != 2:
        raise DicomReadError(f'expected one 2-D frame, got pixel array of shape {stored.shape}')
    values = apply_modality_lut(stored, ds)
    mode = _voi_mode(ds)
    if mode == 'percentile':
        lo, hi = np.percentile(values, percentiles)
    else:
        if mode == 'lut':
            values = apply_voi(np.rint(values).astype(np.int64), ds)  # LUT inputs are integers.
        else:
            values = apply_windowing(values, ds)
        lo, hi = _voi_output_range(ds, mode)
    image = (values.astype(np.float64) - lo) / max(hi - lo, 1e-12)
    image = np.clip(image, 0, 1)
    if photometric == 'MONOCHROME1':
        image = 1 - image
    return image.astype(np.float32), mode


# ----------------------------------------------------------------------------
# Why Pixel Data did not decode, on one line; a compressed syntax without an installed decoder says what to install.


def _decode_failure(ds, err: Exception) -> str:
    syntax = ds.file_meta.get('TransferSyntaxUID') if hasattr(ds, 'file_meta') else None
    try:
        missing = syntax is not None and not get_decoder(syntax).is_available
    except Exception:  # No decoder exists for this syntax: pydicom's message says so.
        missing = False
    if missing:
        return f'no decoder installed for {syntax.name}, transfer syntax {syntax}; pip install -e ".[dicom]"'
    return 'cannot decode pixel data: ' + ' '.join(str(err).split())


# ----------------------------------------------------------------------------
# File -> float display image.


def read_dicom(path: str) -> np.ndarray:
    """Read a DICOM radiograph as float32 [H, W] in [0, 1], bone bright (see `display_pixels`).

    Raises:
        DicomReadError: unreadable file or unsupported content; the message gives the reason.
    """
    if pydicom is None:
        raise DicomReadError('pydicom is not installed (pip install -e ".[dicom]")')
    if not os.path.isfile(path):
        raise DicomReadError('file not found')
    with warnings.catch_warnings():  # pydicom warns per odd tag; failures are reported with their reason.
        warnings.simplefilter('ignore', UserWarning)
        try:
            ds = pydicom.dcmread(path, force=True)
        except Exception as e:
            raise DicomReadError(f'not a readable DICOM file: {e}') from e
        return display_pixels(ds)[0]


# ----------------------------------------------------------------------------
# Float image -> DICOM file with a chosen storage variant (used by the phantom's VinDr-shaped export).


def write_dicom(
    path: str,
    image: np.ndarray,  # [H, W] float in [0, 1], bone bright.
    *,
    bits_stored: int = 12,  # 10, 12 or 16 (stored in 16-bit words).
    photometric: str = 'MONOCHROME2',  # MONOCHROME1 stores inverted values.
    voi: str = 'none',  # 'none' | 'window' | 'lut': how the display range is declared.
    value_range: tuple[float, float] = (0.0, 1.0),  # Fraction of the stored range the image occupies.
    rescale: tuple[float, float] | None = None,  # (slope, intercept) written as Rescale tags.
    uids: Sequence[str] | None = None,  # (study, series, sop) instance UIDs; generated if None.
) -> None:
    """Write a single-frame uncompressed grayscale DICOM whose display pipeline reproduces `image`."""
    max_value = 2**bits_stored - 1
    lo, hi = round(value_range[0] * max_value), round(value_range[1] * max_value)
    shown = np.clip(image, 0, 1) if photometric == 'MONOCHROME2' else 1 - np.clip(image, 0, 1)
    stored = np.rint(lo + shown * (hi - lo)).astype(np.uint16)
    study, series, sop = uids or (generate_uid(), generate_uid(), generate_uid())

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE_UID
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SECONDARY_CAPTURE_UID, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.Modality, ds.BodyPartExamined = 'DX', 'LSPINE'
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
    slope, intercept = rescale or (1.0, 0.0)
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = f'{slope:g}', f'{intercept:g}'
    if voi == 'window':
        # LINEAR windowing maps [c - 0.5 - (w-1)/2, c - 0.5 + (w-1)/2] onto the output range.
        lo_m, hi_m = lo * slope + intercept, hi * slope + intercept
        ds.WindowCenter, ds.WindowWidth = f'{(lo_m + hi_m) / 2 + 0.5:.2f}', f'{hi_m - lo_m + 1:.2f}'
    elif voi == 'lut':
        _add_voi_lut(ds, lo, hi)
    ds.PixelData = stored.tobytes()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


# ----------------------------------------------------------------------------
# A linear VOI LUT Sequence covering stored values [lo, hi] with 12-bit output.


def _add_voi_lut(ds, lo: int, hi: int) -> None:
    entries = hi - lo + 1
    item = pydicom.Dataset()
    table = np.rint(np.linspace(0, 4095, entries)).astype('<u2')
    item.add_new('LUTDescriptor', 'US', [entries % 2**16, lo, 12])  # Explicit VRs: both tags are ambiguous.
    item.add_new('LUTData', 'OW', table.tobytes())  # OW, since a US value is capped at 64 KiB.
    item.LUTExplanation = 'LINEAR'
    ds.VOILUTSequence = pydicom.Sequence([item])


# ----------------------------------------------------------------------------
# annotations/<split>.csv -> {image_id: [(lesion_type, box or None), ...]} in file order.


def read_vindr_annotations(csv_path: str) -> dict[str, list[tuple[str, Box | None]]]:
    """Group VinDr-SpineXR annotation rows by image, keeping row order.

    Raises:
        ValueError: missing columns, a ragged row or a malformed box.
    """
    with open(csv_path, newline='', encoding='utf-8') as f:
        reader = csv.DictReader(f)
        needed = ('image_id', 'lesion_type', 'xmin', 'ymin', 'xmax', 'ymax')
        missing = [c for c in needed if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f'{csv_path} lacks column(s) {", ".join(missing)}')
        findings: dict[str, list] = {}
        for line, row in enumerate(reader, start=2):
            if None in row or any(row[c] is None for c in needed):
                raise ValueError(f'{csv_path}:{line}: ragged row (the header has {len(reader.fieldnames)} columns)')
            coords = [row[c].strip() for c in ('xmin', 'ymin', 'xmax', 'ymax')]
            try:
                box = tuple(float(v) for v in coords) if all(coords) else None
            except ValueError:
                raise ValueError(f'{csv_path}:{line}: malformed box {coords}') from None
            findings.setdefault(row['image_id'].strip(), []).append((row['lesion_type'].strip(), box))
    return findings


# ----------------------------------------------------------------------------
# annotations/<split>.csv -> {image_id: study_id}, the group (patient) each image belongs to.


def read_vindr_studies(csv_path: str) -> dict[str, str]:
    """The study of each image; {} when the file has no study_id column.

    Raises:
        ValueError: a blank study_id, or rows of one image that name different studies.
    """
    with open(csv_path, newline='', encoding='utf-8') as f:
        reader = csv.DictReader(f)
        if 'study_id' not in (reader.fieldnames or []):
            return {}
        studies, first_line = {}, {}
        for line, row in enumerate(reader, start=2):
            image_id, study_id = (row.get('image_id') or '').strip(), (row['study_id'] or '').strip()
            if not study_id:
                raise ValueError(f'{csv_path}:{line}: blank study_id for image {image_id}')
            if studies.setdefault(image_id, study_id) != study_id:
                lines = f'lines {first_line[image_id]} and {line}: {studies[image_id]}, {study_id}'
                raise ValueError(f'{csv_path}: image {image_id} has two study_ids ({lines})')
            first_line.setdefault(image_id, line)
    return studies


# ----------------------------------------------------------------------------
# Where one image of a VinDr-SpineXR tree lives.


def vindr_image_path(root: str, split: str, image_id: str) -> str:
    return os.path.join(root, f'{split}_images', f'{image_id}.dicom')


# ----------------------------------------------------------------------------
# Write (image, findings) pairs as a VinDr-SpineXR-shaped tree with varied DICOM storage.


def write_vindr_tree(
    root: str,
    split: str,
    samples: Iterable[tuple[np.ndarray, list[tuple[str, Box | None]]]],  # Boxes in pixels of the image.
    seed: int = 0,
) -> int:
    """Write `<root>/<split>_images/<id>.dicom` and `<root>/annotations/<split>.csv`; return the image count.

    Each file draws its storage variant from `seed`: 12 or 16 bits, MONOCHROME1 or 2, VOI LUT, window tags
    or neither, with or without Rescale tags, so readers meet the mix found in the real dataset.
    """
    rows, count = [], 0
    for index, (image, findings) in enumerate(samples):
        count += 1
        rng = np.random.default_rng([seed, index, 7])
        study_id, series_id, image_id = (_hex_id(seed, split, index, kind) for kind in ('study', 'series', 'image'))
        lo = rng.uniform(0.0, 0.15)
        write_dicom(
            vindr_image_path(root, split, image_id),
            image,
            bits_stored=int(rng.choice([12, 16])),
            photometric=str(rng.choice(['MONOCHROME1', 'MONOCHROME2'])),
            voi=str(rng.choice(['none', 'window', 'lut'], p=[0.4, 0.4, 0.2])),
            value_range=(lo, rng.uniform(lo + 0.5, 0.95)),
            rescale=(1.0, 0.0) if rng.random() < 0.5 else None,
            uids=[_uid(seed, split, index, kind) for kind in ('study', 'series', 'sop')],
        )
        for lesion_type, box in findings:
            coords = ['' if box is None else f'{v:.1f}' for v in (box or (0, 0, 0, 0))]
            rows.append([study_id, series_id, image_id, 'rad_phantom', lesion_type, *coords])
    csv_path = os.path.join(root, 'annotations', f'{split}.csv')
    os.makedirs(os.path.dirname(csv_path), exist_ok=True)
    with open(csv_path, 'w', newline='', encoding='utf-8') as f:
        writer = csv.writer(f)
        writer.writerow(ANNOTATION_COLUMNS)
        writer.writerows(rows)
    return count


# ----------------------------------------------------------------------------
# Deterministic identifiers: 32-hex ids like VinDr's, and DICOM UIDs under the 2.25 (UUID) root.


def _hex_id(*parts) -> str:
    return hashlib.sha1('/'.join(map(str, parts)).encode()).hexdigest()[:32]


def _uid(*parts) -> str:
    return '2.25.' + str(int(_hex_id(*parts), 16))

"""DICOM display pipeline: polarity, VOI LUT / window / percentile paths, compressed transfer syntaxes, errors, and
the VinDr tree layout."""

import itertools

import numpy as np
import pytest

pydicom = pytest.importorskip('pydicom')
from pydicom.dataset import FileMetaDataset  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402
from pydicom.pixels import get_decoder  # noqa: E402
from pydicom.uid import (  # noqa: E402
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    generate_uid,
)

from clinical.dicom_io import (  # noqa: E402
    DicomReadError,
    display_pixels,
    read_dicom,
    read_vindr_annotations,
    write_dicom,
    write_vindr_tree,
)


def truth_image(h=40, w=32):
    """Soft-tissue background 0.25 with a bright 'bone' block 0.85 in the middle."""
    image = np.full((h, w), 0.25, dtype=np.float32)
    image[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 0.85
    return image


def bone_minus_background(image):
    h, w = image.shape
    return image[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3].mean() - image[:3, :3].mean()


def encode_frame(stored, bits, syntax):
    """One losslessly compressed frame, encoded by imagecodecs (not by the decoders pydicom reads it with)."""
    imagecodecs = pytest.importorskip('imagecodecs')
    if syntax == JPEG2000Lossless:
        return imagecodecs.jpeg2k_encode(stored, codecformat='J2K', reversible=True, bitspersample=bits)
    if syntax == JPEGLSLossless:
        return imagecodecs.jpegls_encode(stored, level=0)
    return imagecodecs.jpeg8_encode(stored, lossless=True, predictor=1, bitspersample=bits)  # SV1: predictor 1.


def raw_dicom(path, stored, photometric, bits, window=None, lut=None, rescale=None, syntax=ExplicitVRLittleEndian):
    """Hand-built DICOM, independent of clinical.dicom_io.write_dicom; 8 or 16 bits allocated as `stored` is."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = '1.2.840.10008.5.1.4.1.1.7'
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8 * stored.itemsize, bits, bits - 1, 0
    if rescale:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if lut is not None:
        item = pydicom.Dataset()
        item.add_new('LUTDescriptor', 'US', [len(lut[1]), lut[0], 12])
        item.add_new('LUTData', 'OW', np.asarray(lut[1], dtype='<u2').tobytes())
        ds.VOILUTSequence = pydicom.Sequence([item])
    if syntax == ExplicitVRLittleEndian:
        ds.PixelData = stored.astype(f'<u{stored.itemsize}').tobytes()
    else:
        ds.PixelData = encapsulate([encode_frame(stored, bits, syntax)])
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize('photometric, bits', list(itertools.product(['MONOCHROME1', 'MONOCHROME2'], [12, 16])))
@pytest.mark.parametrize('voi', ['none', 'window', 'lut'])
def test_bone_is_bright_in_both_photometric_interpretations(tmp_path, photometric, bits, voi):
    truth = truth_image()
    top = 2**bits - 1
    shown = truth if photometric == 'MONOCHROME2' else 1 - truth  # MONOCHROME1: high stored value = dark.
    stored = np.rint(100 + shown * (top // 2)).astype(np.uint16)
    window = (str(100 + top // 4), str(top // 2)) if voi == 'window' else None
    lut = (100, np.linspace(0, 4095, top // 2 + 1).astype(np.uint16)) if voi == 'lut' else None
    path = raw_dicom(str(tmp_path / 'a.dcm'), stored, photometric, bits, window=window, lut=lut)
    raw = pydicom.dcmread(path).pixel_array
    assert (bone_minus_background(raw.astype(float)) > 0) == (photometric == 'MONOCHROME2')
    image, mode = display_pixels(pydicom.dcmread(path))
    assert mode == {'none': 'percentile', 'window': 'window', 'lut': 'lut'}[voi]
    assert image.dtype == np.float32 and image.min() >= 0 and image.max() <= 1
    assert bone_minus_background(image) > 0.4


def test_window_is_applied_not_min_max(tmp_path):
    """A narrow window saturates values outside it; per-image min-max scaling would not."""
    stored = np.tile(np.arange(0, 4096, 64, dtype=np.uint16), (8, 1))  # 0..4032 ramp.
    path = raw_dicom(str(tmp_path / 'w.dcm'), stored, 'MONOCHROME2', 12, window=('2048', '1024'))
    image = read_dicom(path)
    assert image[0, 0] == 0 and image[0, -1] == 1
    mid = stored[0] == 2048
    np.testing.assert_allclose(image[0, mid], 0.5, atol=0.01)
    assert 0.1 < (image[0] > 0).mean() < 0.9 and (image[0] == 1).sum() > 10


def test_rescale_slope_intercept_is_applied_before_the_window(tmp_path):
    stored = np.tile(np.arange(0, 1000, 10, dtype=np.uint16), (4, 1))
    # Modality values are 2 * stored - 500; the window [0, 1000) covers stored 250..750.
    path = raw_dicom(str(tmp_path / 'r.dcm'), stored, 'MONOCHROME2', 12, window=('500', '1000'), rescale=('2', '-500'))
    image = read_dicom(path)
    assert image[0, stored[0] <= 240].max() == 0 and image[0, stored[0] >= 760].min() == 1
    np.testing.assert_allclose(image[0, stored[0] == 500], 0.5, atol=0.01)


@pytest.mark.parametrize(
    'bits, photometric, voi',
    list(itertools.product([12, 16], ['MONOCHROME1', 'MONOCHROME2'], ['none', 'window', 'lut'])),
)
def test_write_dicom_round_trip(tmp_path, bits, photometric, voi):
    truth = np.linspace(0, 1, 48 * 40, dtype=np.float32).reshape(48, 40)
    path = str(tmp_path / 'x.dicom')
    write_dicom(path, truth, bits_stored=bits, photometric=photometric, voi=voi, value_range=(0.1, 0.7))
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == photometric and ds.BitsStored == bits
    tolerance = 0.01 if voi == 'none' else 0.002  # The percentile fallback clips 0.5 % at each end.
    np.testing.assert_allclose(read_dicom(path), truth, atol=tolerance)


@pytest.mark.parametrize(
    'content',
    [b'', b'not a dicom at all' * 10, b'\0' * 128 + b'DICM' + b'\x02\x00' * 20],
    ids=['empty', 'text', 'header'],
)
def test_undecodable_files_raise_with_a_reason(tmp_path, content):
    path = tmp_path / 'bad.dicom'
    path.write_bytes(content)
    with pytest.raises(DicomReadError) as info:
        read_dicom(str(path))
    assert str(info.value)


def test_truncated_pixel_data(tmp_path):
    path = raw_dicom(str(tmp_path / 't.dcm'), np.zeros((32, 32), np.uint16), 'MONOCHROME2', 12)
    data = open(path, 'rb').read()
    open(path, 'wb').write(data[:-700])
    with pytest.raises(DicomReadError, match='pixel data'):
        read_dicom(path)


@pytest.mark.parametrize('syntax', [JPEG2000Lossless, JPEGLSLossless, JPEGLosslessSV1], ids=['j2k', 'jpegls', 'ljpeg'])
@pytest.mark.parametrize(
    'bits, photometric', [(12, 'MONOCHROME2'), (16, 'MONOCHROME1'), (8, 'MONOCHROME1')], ids=['12', '16', '8']
)
def test_lossless_compressed_files_decode_exactly(tmp_path, syntax, bits, photometric):
    top = 2**bits - 1
    noise = np.random.default_rng(bits).integers(-8, 9, size=(40, 32))
    stored = np.clip(np.rint(truth_image() * top) + noise, 0, top).astype(np.uint8 if bits == 8 else np.uint16)
    stored[0, :2] = 0, top  # Both ends of the stored range.
    plain = raw_dicom(str(tmp_path / 'plain.dcm'), stored, photometric, bits)
    packed = raw_dicom(str(tmp_path / 'packed.dcm'), stored, photometric, bits, syntax=syntax)
    ds = pydicom.dcmread(packed)
    assert ds.file_meta.TransferSyntaxUID == syntax and len(ds.PixelData) < stored.nbytes
    np.testing.assert_array_equal(ds.pixel_array, stored)
    np.testing.assert_array_equal(read_dicom(packed), read_dicom(plain))


def test_missing_decoder_is_one_line_naming_syntax_and_extra(tmp_path, monkeypatch):
    stored = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32)
    path = raw_dicom(str(tmp_path / 'j2k.dcm'), stored, 'MONOCHROME2', 12, syntax=JPEG2000Lossless)
    monkeypatch.setattr(get_decoder(JPEG2000Lossless), '_available', {})  # As without pylibjpeg and pillow.
    with pytest.raises(DicomReadError) as info:
        read_dicom(path)
    message = str(info.value)
    assert 'JPEG 2000' in message and JPEG2000Lossless in message and 'pip install -e ".[dicom]"' in message
    assert '\n' not in message


def test_vindr_annotations_group_rows_per_image(tmp_path):
    csv_path = tmp_path / 'train.csv'
    csv_path.write_text(
        'study_id,series_id,image_id,rad_id,lesion_type,xmin,ymin,xmax,ymax\n'
        's1,r1,img1,rad1,No finding,,,,\n'
        's2,r2,img2,rad2,Osteophytes,1,2,3.5,4\n'
        's2,r2,img2,rad2,Surgical implant,5,6,7,8\n'
    )
    findings = read_vindr_annotations(str(csv_path))
    assert list(findings) == ['img1', 'img2']
    assert findings['img1'] == [('No finding', None)]
    assert findings['img2'] == [('Osteophytes', (1.0, 2.0, 3.5, 4.0)), ('Surgical implant', (5.0, 6.0, 7.0, 8.0))]
    (tmp_path / 'bad.csv').write_text('image_id,lesion_type\nimg1,No finding\n')
    with pytest.raises(ValueError, match='xmin'):
        read_vindr_annotations(str(tmp_path / 'bad.csv'))


def test_write_vindr_tree_mixes_storage_variants(tmp_path):
    truth = truth_image(48, 40)
    samples = [(truth, [('No finding', None)])] * 12 + [
        (truth, [('Osteophytes', (1, 2, 3, 4)), ('Osteophytes', (5, 6, 7, 8))])
    ]
    assert write_vindr_tree(str(tmp_path), 'test', samples, seed=3) == 13
    findings = read_vindr_annotations(str(tmp_path / 'annotations' / 'test.csv'))
    assert len(findings) == 13 and list(findings.values())[-1][1] == ('Osteophytes', (5.0, 6.0, 7.0, 8.0))
    variants = set()
    for image_id in findings:
        path = tmp_path / 'test_images' / f'{image_id}.dicom'
        ds = pydicom.dcmread(path)
        variants.add((ds.PhotometricInterpretation, ds.BitsStored, display_pixels(ds)[1]))
        assert bone_minus_background(read_dicom(str(path))) > 0.4
    assert {v[0] for v in variants} == {'MONOCHROME1', 'MONOCHROME2'} and {v[1] for v in variants} == {12, 16}
    assert len({v[2] for v in variants}) >= 2


def test_ragged_annotation_row_is_named(tmp_path):
    path = tmp_path / 'train.csv'
    path.write_text('image_id,lesion_type,xmin,ymin,xmax,ymax\na,No finding,,,,\nb,Osteophytes\n')
    with pytest.raises(ValueError, match=r'train.csv:3: ragged row \(the header has 6 columns\)'):
        read_vindr_annotations(str(path))

"""dataset_tool.py end to end: VinDr trees, folders, datasets, phantoms, groups, previews, and one-line errors."""

import csv
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

import dataset_tool
from clinical.dicom_io import write_dicom
from clinical.labels import SCHEMAS, label_for_image
from clinical.phantom import make_phantom
from training.dataset import ImageFolderDataset

REPO = Path(__file__).resolve().parents[1]
KERMANY = REPO / '..' / 'shared' / 'data' / 'kermany-cxr-256'
HEADER = ['study_id', 'series_id', 'image_id', 'rad_id', 'lesion_type', 'xmin', 'ymin', 'xmax', 'ymax']

# image_id, rows of lesion types, DICOM storage variant.
VINDR_IMAGES = [
    ('n1', ['No finding'], dict(photometric='MONOCHROME2', bits_stored=12, voi='window')),
    ('n2', ['No finding'], dict(photometric='MONOCHROME1', bits_stored=16, voi='lut')),
    ('a1', ['Osteophytes'], dict(photometric='MONOCHROME1', bits_stored=12, voi='none')),
    ('a2', ['Disc space narrowing'] * 2, dict(photometric='MONOCHROME2', bits_stored=16, rescale=(1.0, -10.0))),
    ('m1', ['Osteophytes', 'Surgical implant'], dict(photometric='MONOCHROME1', bits_stored=16, voi='window')),
    ('bad', ['No finding'], None),  # Corrupt file.
]


def film(h=80, w=64):
    """Portrait film: background 0.2, bright 'bone' block 0.8 in the centre."""
    image = np.full((h, w), 0.2, dtype=np.float32)
    image[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 0.8
    return image


@pytest.fixture(scope='module')
def vindr_root(tmp_path_factory):
    pytest.importorskip('pydicom')
    root = tmp_path_factory.mktemp('vindr')
    (root / 'train_images').mkdir()
    (root / 'annotations').mkdir()
    rows = []
    for image_id, lesions, variant in VINDR_IMAGES:
        path = root / 'train_images' / f'{image_id}.dicom'
        if variant is None:
            path.write_bytes(b'\0' * 128 + b'DICM' + b'garbage' * 10)
        else:
            write_dicom(str(path), film(), value_range=(0.05, 0.8), **variant)
        for lesion in lesions:
            box = ['', '', '', ''] if lesion == 'No finding' else ['10', '20', '30', '40']
            rows.append(['st', 'se', image_id, 'rad1', lesion, *box])
    write_dicom(str(root / 'train_images' / 'extra.dicom'), film())  # In the folder but not in the CSV.
    with open(root / 'annotations' / 'train.csv', 'w', newline='') as f:
        csv.writer(f).writerows([HEADER, *rows])
    return root


def run(*args):
    result = CliRunner().invoke(dataset_tool.main, [str(a) for a in args])
    assert 'Traceback' not in result.output
    return result


def read_zip(path):
    with zipfile.ZipFile(path) as z:
        meta = json.loads(z.read('dataset.json'))
        images = {name: np.asarray(PIL.Image.open(z.open(name))) for name, _label in meta['labels'] or []}
    return meta, images


def leftovers(folder):
    return [name for name in os.listdir(folder) if name.endswith('.tmp') or name.startswith('.')]


# ----------------------------------------------------------------------------
# VinDr-SpineXR trees.


def test_vindr_corrupt_file_fails_by_default_naming_it(vindr_root, tmp_path):
    result = run('--source', f'vindr:{vindr_root}', '--dest', tmp_path / 'out.zip', '--resolution', 32)
    assert result.exit_code == 2
    assert 'bad.dicom' in result.output and '--on-error skip' in result.output
    assert os.listdir(tmp_path) == []  # No partial zip, no temp file.


def test_vindr_abnormal_skip_polarity_and_loader(vindr_root, tmp_path):
    dest = tmp_path / 'abnormal.zip'
    result = run('--source', f'vindr:{vindr_root}', '--dest', dest, '--resolution', 32, '--on-error', 'skip')
    assert result.exit_code == 0, result.output
    meta, images = read_zip(dest)
    assert [label for _name, label in meta['labels']] == [0, 0, 1, 1, 1]  # a1 has one row and is abnormal.
    assert meta['class_names'] == ['normal', 'abnormal'] and meta['label_schema'] == 'abnormal'
    assert 'bad.dicom' in result.output and 'undecodable' in result.output
    assert 'extra.dicom: no rows' in result.output and 'Skipped 2 images' in result.output
    assert 'normal 2, abnormal 3' in result.output
    assert {group for _name, group in meta['groups']} == {'st'} and 'Groups: 1 patient (study_id)' in result.output
    for pixels in images.values():  # Bone brighter than background, MONOCHROME1 and 2 alike.
        assert pixels.shape == (32, 32) and pixels.dtype == np.uint8
        assert pixels[12:20, 12:20].mean() > pixels[:, :3].mean() + 100
    dataset = ImageFolderDataset(str(dest), use_labels=True)
    assert len(dataset) == 5 and dataset.label_dim == 2 and dataset.resolution == 32


@pytest.mark.parametrize(
    'labels, policy, expected, dim',
    [
        ('lesion', 'drop', [0, 0, 3, 1], 8),
        ('lesion', 'first', [0, 0, 3, 1, 3], 8),
        ('lesion-multi', 'drop', None, 8),
    ],
)
def test_vindr_lesion_modes(vindr_root, tmp_path, labels, policy, expected, dim):
    dest = tmp_path / 'lesion.zip'
    args = ['--labels', labels, '--multi-lesion', policy, '--on-error', 'skip', '--resolution', 16]
    result = run('--source', f'vindr:{vindr_root}', '--dest', dest, *args)
    assert result.exit_code == 0, result.output
    meta, _images = read_zip(dest)
    got = [label for _name, label in meta['labels']]
    if labels == 'lesion-multi':
        assert got[4] == [0, 0, 0, 1, 0, 1, 0, 0] and got[0] == [1] + [0] * 7 and got[3][1] == 1
    else:
        assert got == expected
    if policy == 'drop' and labels == 'lesion':
        assert 'm1: several lesion types' in result.output
    assert meta['class_names'] == SCHEMAS[labels]
    assert ImageFolderDataset(str(dest), use_labels=True).label_dim == dim


def test_vindr_multi_lesion_error_names_the_image(vindr_root, tmp_path):
    result = run(
        '--source', f'vindr:{vindr_root}', '--dest', tmp_path / 'x.zip', '--labels', 'lesion', '--multi-lesion', 'error'
    )
    assert result.exit_code == 2 and 'm1' in result.output and os.listdir(tmp_path) == []


def test_phantom_vindr_tree_round_trip(tmp_path):
    pytest.importorskip('pydicom')
    tree = tmp_path / 'tree'
    result = run('--source', 'phantom:12', '--dest', tree, '--vindr-tree', '--resolution', 64, '--seed', 4)
    assert result.exit_code == 0, result.output
    assert len(os.listdir(tree / 'train_images')) == 12
    dest = tmp_path / 'from-tree.zip'
    args = ['--transform', 'pad-to-square', '--labels', 'abnormal', '--resolution', 32]
    result = run('--source', f'vindr:{tree}', '--dest', dest, *args)
    assert result.exit_code == 0, result.output
    meta, images = read_zip(dest)
    truth = [label_for_image(make_phantom(4, i, (80, 64)).lesion_types, 'abnormal') for i in range(12)]
    assert [label for _name, label in meta['labels']] == truth
    with open(tree / 'annotations' / 'train.csv', newline='') as f:
        study_of = {row['image_id']: row['study_id'] for row in csv.DictReader(f)}
    assert len(set(study_of.values())) == 12 and 'Groups: 12 patients (study_id)' in result.output
    assert meta['groups'] == [[name, study] for (name, _y), study in zip(meta['labels'], study_of.values())]
    rerun = run('--source', 'phantom:3', '--dest', tree, '--vindr-tree')
    assert rerun.exit_code == 2 and 'already exists' in rerun.output


# ----------------------------------------------------------------------------
# Folders, existing datasets, phantoms.


@pytest.mark.skipif(not KERMANY.is_dir(), reason='../shared/data/kermany-cxr-256 is not present on this machine')
def test_kermany_folder_with_labels_csv(tmp_path):
    dest = tmp_path / 'cxr-64.zip'
    result = run('--source', KERMANY, '--dest', dest, '--resolution', 64)
    assert result.exit_code == 0, result.output
    assert 'Wrote 1250 images' in result.output and 'normal 319, pneumonia 931' in result.output
    assert 'Groups: 962 patients (column patient_id)' in result.output  # PROVENANCE.md: 1,250 films, 962 patients.
    dataset = ImageFolderDataset(str(dest), use_labels=True)
    assert len(dataset) == 1250 and dataset.resolution == 64 and dataset.num_channels == 1
    assert dataset.class_names == ['normal', 'pneumonia']
    assert dataset.label_counts().tolist() == [319, 931]


@pytest.mark.skipif(not KERMANY.is_dir(), reason='../shared/data/kermany-cxr-256 is not present on this machine')
def test_kermany_groups_are_the_patient_id_column(tmp_path):
    dest = tmp_path / 'cxr-32.zip'
    result = run('--source', KERMANY, '--dest', dest, '--resolution', 32, '--max-images', 20)
    assert result.exit_code == 0, result.output
    with open(KERMANY / 'labels.csv', newline='', encoding='utf-8') as f:
        rows = list(csv.DictReader(f))[:20]
    meta = read_zip_unlabelled(dest)[0]
    assert meta['groups'] == [[name, row['patient_id']] for (name, _y), row in zip(meta['labels'], rows)]
    assert f'Groups: {len({row["patient_id"] for row in rows})} patients (column patient_id)' in result.output
    assert ImageFolderDataset(str(dest)).groups == [row['patient_id'] for row in rows]


def kermany_like(folder, patients):
    """labels.csv with patient_id and site columns; image i is flat grey 40 * i, so it can be found again."""
    folder.mkdir()
    lines = ['file,label,label_name,patient_id,site']
    for i, patient in enumerate(patients):
        PIL.Image.fromarray(np.full((40, 48), 40 * i, np.uint8)).save(folder / f'{i}.png')
        lines.append(f'{i}.png,{i % 2},{["normal", "pneumonia"][i % 2]},{patient},site{i % 2}')
    (folder / 'labels.csv').write_text('\n'.join(lines) + '\n')
    return folder


def image_index(image):
    return int(round(image.mean() / 40))


PATIENTS = ['IM-0129', 'person1', 'IM-0129', 'person2', 'person1']


@pytest.mark.parametrize(
    'args, expected, summary',
    [
        ([], PATIENTS, 'Groups: 3 patients (column patient_id)'),
        (['--group-column', 'site'], ['site0', 'site1'] * 2 + ['site0'], 'Groups: 2 patients (column site)'),
        (['--group-column', 'none'], None, 'Groups: none'),
    ],
)
def test_labels_csv_groups_go_into_dataset_json(tmp_path, args, expected, summary):
    src = kermany_like(tmp_path / 'src', PATIENTS)
    dest = tmp_path / 'out.zip'
    result = run('--source', src, '--dest', dest, '--resolution', 8, *args)
    assert result.exit_code == 0, result.output
    assert summary in result.output
    meta, images = read_zip(dest)
    if expected is None:
        assert 'groups' not in meta and ImageFolderDataset(str(dest)).groups is None
        return
    assert [name for name, _group in meta['groups']] == [name for name, _y in meta['labels']]
    assert [expected[image_index(images[name])] for name, _group in meta['groups']] == expected
    assert [group for _name, group in meta['groups']] == expected


def test_reconverting_a_dataset_keeps_each_images_group(tmp_path):
    first = tmp_path / 'first'
    assert run('--source', kermany_like(tmp_path / 'src', PATIENTS), '--dest', first, '--resolution', 16).exit_code == 0
    second = tmp_path / 'second.zip'
    args = ['--resolution', 8, '--labels', 'none', '--max-images', 4]
    result = run('--source', first, '--dest', second, *args)
    assert result.exit_code == 0, result.output
    assert 'Groups: 3 patients (dataset.json)' in result.output
    meta, images = read_zip_unlabelled(second)
    assert meta['labels'] is None and len(meta['groups']) == 4
    assert all(group == PATIENTS[image_index(images[name])] for name, group in meta['groups'])
    dropped = run('--source', first, '--dest', tmp_path / 'third.zip', '--resolution', 8, '--group-column', 'none')
    assert dropped.exit_code == 0 and 'groups' not in read_zip(tmp_path / 'third.zip')[0]


def test_folder_per_class_with_16_bit_png_jpeg_and_dicom(tmp_path):
    pytest.importorskip('pydicom')
    src = tmp_path / 'src'
    (src / 'healthy').mkdir(parents=True)
    (src / 'sick').mkdir()
    ramp = np.tile(np.linspace(0, 65535, 64), (64, 1)).astype(np.uint16)
    PIL.Image.fromarray(ramp).save(src / 'healthy' / 'ramp16.png')
    PIL.Image.fromarray((film(64, 64) * 255).astype(np.uint8)).save(src / 'healthy' / 'film.jpg', quality=95)
    write_dicom(str(src / 'sick' / 'film.dcm'), film(96, 64), photometric='MONOCHROME1', voi='window')
    dest = tmp_path / 'out'
    result = run('--source', src, '--dest', dest, '--resolution', 32, '--resample', 'area')
    assert result.exit_code == 0, result.output
    meta = json.loads((dest / 'dataset.json').read_text())
    assert meta['class_names'] == ['healthy', 'sick'] and [y for _f, y in meta['labels']] == [0, 0, 1]
    assert 'groups' not in meta and 'Groups: none' in result.output
    ramp8 = np.asarray(PIL.Image.open(dest / meta['labels'][1][0])).astype(int)
    assert abs(ramp8[:, 16].mean() - 128) < 8  # Float scaling, not truncation to the low byte.
    assert np.all(np.diff(ramp8[16]) >= 0) and ramp8[16, -1] > 245
    sick = np.asarray(PIL.Image.open(dest / meta['labels'][2][0])).astype(int)
    assert sick[12:20, 12:20].mean() > sick[:, :3].mean() + 100
    assert ImageFolderDataset(str(dest), use_labels=True).label_dim == 2


def test_12_bit_data_in_16_bit_pngs_keeps_its_brightness(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    rng = np.random.default_rng(0)
    films = [np.rint(film(32, 32) * rng.uniform(3000, 4095) + rng.normal(0, 40, (32, 32))).clip(0, 4095) for _ in '12']
    for i, values in enumerate(films):
        PIL.Image.fromarray(values.astype(np.uint16)).save(src / f'{i}.png')
    for bits, scale in ((None, 4095), (16, 65535)):
        dest = tmp_path / f'{bits}.zip'
        result = run('--source', src, '--dest', dest, '--resolution', 32, *(['--bits', bits] if bits else []))
        assert result.exit_code == 0, result.output
        _meta, images = read_zip_unlabelled(dest)
        got = np.mean([images[name].mean() for name in sorted(images)])
        want = np.mean([values * 255 / scale for values in films])
        assert abs(got - want) < 5, (bits, got, want)  # 12-bit: ~100 grey levels; scaled by 65535 it was ~6.


def test_existing_dest_zip_is_replaced_only_with_overwrite(tmp_path):
    dest = tmp_path / 'd.zip'
    dest.write_bytes(b'old')
    refused = run('--source', 'phantom:2', '--dest', dest, '--resolution', 8)
    assert refused.exit_code == 2 and '--overwrite' in refused.output and dest.read_bytes() == b'old'
    result = run('--source', 'phantom:2', '--dest', dest, '--resolution', 8, '--overwrite')
    assert result.exit_code == 0, result.output
    assert len(read_zip(dest)[0]['labels']) == 2 and leftovers(tmp_path) == []


def test_labels_csv_with_string_labels_and_columns(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    for i in range(4):
        PIL.Image.fromarray(np.full((40, 60), 60 * i, np.uint8)).save(src / f'{i}.png')
    (src / 'labels.csv').write_text('path,finding\n0.png,cyst\n1.png,none\n2.png,cyst\n3.png,none\n')
    dest = tmp_path / 'o.zip'
    result = run(
        '--source', src, '--dest', dest, '--resolution', 8, '--file-column', 'path', '--label-column', 'finding'
    )
    assert result.exit_code == 0, result.output
    meta, _ = read_zip(dest)
    assert meta['class_names'] == ['cyst', 'none'] and [y for _f, y in meta['labels']] == [0, 1, 0, 1]


def test_pad_to_square_keeps_the_whole_film(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    PIL.Image.fromarray(np.full((64, 32), 255, np.uint8)).save(src / 'tall.png')
    for transform, black_columns in (('pad-to-square', True), ('center-crop', False)):
        dest = tmp_path / f'{transform}.zip'
        assert run('--source', src, '--dest', dest, '--resolution', 16, '--transform', transform).exit_code == 0
        _meta, images = read_zip_unlabelled(dest)
        pixels = next(iter(images.values()))
        assert (pixels[:, 0].max() < 10) == black_columns and pixels[:, 8].min() > 245


def read_zip_unlabelled(path):
    with zipfile.ZipFile(path) as z:
        names = [n for n in z.namelist() if n.endswith('.png')]
        return json.loads(z.read('dataset.json')), {n: np.asarray(PIL.Image.open(z.open(n))) for n in names}


def test_phantom_lesion_multi_then_relabel_resize_subset(tmp_path):
    multi = tmp_path / 'multi.zip'
    result = run('--source', 'phantom:24', '--dest', multi, '--resolution', 32, '--labels', 'lesion-multi', '--seed', 2)
    assert result.exit_code == 0, result.output
    meta, _ = read_zip(multi)
    truth = [label_for_image(make_phantom(2, i, 32).lesion_types, 'lesion-multi') for i in range(24)]
    assert [y for _f, y in meta['labels']] == truth
    small = tmp_path / 'small.zip'
    result = run('--source', multi, '--dest', small, '--resolution', 16, '--labels', 'abnormal', '--max-images', 10)
    assert result.exit_code == 0, result.output
    meta, images = read_zip(small)
    assert [y for _f, y in meta['labels']] == [int(v[0] == 0) for v in truth[:10]]
    assert all(im.shape == (16, 16) for im in images.values()) and meta['class_names'] == ['normal', 'abnormal']
    bad = run('--source', small, '--dest', tmp_path / 'x.zip', '--labels', 'lesion')
    assert bad.exit_code == 2 and 'cannot derive' in bad.output


def test_phantom_groups_follow_their_images_through_relabel_skips_and_subset(tmp_path):
    multi = tmp_path / 'multi.zip'
    args = ['--resolution', 16, '--labels', 'lesion-multi', '--seed', 3, '--prevalence', 1, '--multi-rate', 0.5]
    result = run('--source', 'phantom:16', '--dest', multi, *args)
    assert result.exit_code == 0 and 'Groups: 16 patients (one per phantom)' in result.output
    meta, _ = read_zip(multi)
    assert meta['groups'] == [[name, f'phantom-3-{i}'] for i, (name, _y) in enumerate(meta['labels'])]
    single = [i for i, (_name, y) in enumerate(meta['labels']) if sum(y) == 1]
    assert single[4] > 4  # A multi-lesion film is dropped before the fifth one kept.
    lesion = tmp_path / 'lesion.zip'
    args = ['--labels', 'lesion', '--multi-lesion', 'drop', '--max-images', 5, '--resolution', 8]
    result = run('--source', multi, '--dest', lesion, *args)
    assert result.exit_code == 0 and 'several lesion types' in result.output, result.output
    assert ImageFolderDataset(str(lesion)).groups == [f'phantom-3-{i}' for i in single[:5]]


def test_preview_grid_has_a_row_per_class(tmp_path):
    preview = tmp_path / 'grid.png'
    args = ['--labels', 'lesion', '--multi-lesion', 'first', '--preview-per-class', 3]
    result = run('--source', 'phantom:40', '--resolution', 16, '--preview', preview, *args)
    assert result.exit_code == 0, result.output
    assert 'preview only' in result.output
    grid = np.asarray(PIL.Image.open(preview))
    assert grid.shape[0] == 8 * 16 and grid.shape[1] > 3 * 16
    assert grid[:16, :40].max() > 200  # Class name text in the margin.


# ----------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing left behind.


@pytest.mark.parametrize(
    'case, args, message',
    [
        ('missing', ['--source', '{tmp}/nope'], 'does not exist'),
        ('empty', ['--source', '{tmp}/empty'], 'no images'),
        ('column', ['--source', '{tmp}/csvsrc', '--label-column', 'grade'], "no column 'grade'"),
        ('power', ['--source', 'phantom:2', '--resolution', '48'], 'not a power of two'),
        ('phantom', ['--source', 'phantom:x'], 'phantom:N'),
        ('vindr', ['--source', 'vindr:{tmp}/empty'], 'train.csv not found'),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, case, args, message):
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'csvsrc').mkdir()
    PIL.Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / 'csvsrc' / 'a.png')
    (tmp_path / 'csvsrc' / 'labels.csv').write_text('file,label\na.png,1\n')
    out = tmp_path / 'out'
    out.mkdir()
    result = run(*[a.format(tmp=tmp_path) for a in args], '--dest', out / 'd.zip')
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len([line for line in result.output.splitlines() if line.startswith('Error')]) == 1
    assert os.listdir(out) == []


def test_cli_subprocess_error_has_no_traceback(tmp_path):
    cmd = [sys.executable, str(REPO / 'dataset_tool.py'), '--source', str(tmp_path / 'missing'), '--dest', 'x.zip']
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith('Error: Invalid value')
    assert not (tmp_path / 'x.zip').exists()


def test_relabel_with_multi_lesion_error_names_the_image(tmp_path):
    multi = tmp_path / 'multi.zip'
    assert run('--source', 'phantom:30', '--dest', multi, '--resolution', 8, '--labels', 'lesion-multi').exit_code == 0
    result = run('--source', multi, '--dest', tmp_path / 'x.zip', '--labels', 'lesion', '--multi-lesion', 'error')
    assert result.exit_code == 2 and 'several lesion types' in result.output and 'img000000' in result.output
    assert not (tmp_path / 'x.zip').exists()


# ----------------------------------------------------------------------------
# --keep-classes: only the named classes, re-indexed in the order given; the rest left out and counted.

SUBTYPES = ['normal', 'bacteria', 'virus', 'bacteria', 'normal', 'virus', 'bacteria']
SUBTYPE_PATIENTS = ['p0', 'p1', 'p1', 'p2', 'p3', 'p4', 'p4']


def subtype_folder(folder):
    """labels.csv with label/label_name (normal, pneumonia), a 3-class subtype column and patient_id; image i is
    flat grey 30 * i."""
    folder.mkdir()
    lines = ['file,label,label_name,subtype,patient_id']
    for i, (subtype, patient) in enumerate(zip(SUBTYPES, SUBTYPE_PATIENTS)):
        PIL.Image.fromarray(np.full((40, 48), 30 * i, np.uint8)).save(folder / f'{i}.png')
        sick = int(subtype != 'normal')
        lines.append(f'{i}.png,{sick},{["normal", "pneumonia"][sick]},{subtype},{patient}')
    (folder / 'labels.csv').write_text('\n'.join(lines) + '\n')
    return folder


def kept_images(dest):
    """[(source image index, label, group)] per written image (zip or folder), and dataset.json."""
    if dest.suffix == '.zip':
        meta, images = read_zip(dest)
    else:
        meta = json.loads((dest / 'dataset.json').read_text())
        images = {name: np.asarray(PIL.Image.open(dest / name)) for name, _y in meta['labels']}
    group_of = dict(meta.get('groups') or [])
    return [(int(round(images[name].mean() / 30)), y, group_of.get(name)) for name, y in meta['labels']], meta


def expected_subtypes(keep):
    return [(i, keep.index(s), SUBTYPE_PATIENTS[i]) for i, s in enumerate(SUBTYPES) if s in keep]


def test_keep_classes_from_labels_csv_reindexes_in_the_given_order(tmp_path):
    dest = tmp_path / 'out.zip'
    args = ['--label-column', 'subtype', '--keep-classes', 'virus, bacteria', '--resolution', 8]
    result = run('--source', subtype_folder(tmp_path / 'src'), '--dest', dest, *args)
    assert result.exit_code == 0, result.output
    kept, meta = kept_images(dest)
    assert meta['class_names'] == ['virus', 'bacteria'] and meta['label_schema'] == 'csv:subtype'
    assert kept == expected_subtypes(['virus', 'bacteria'])
    assert 'Labels (csv:subtype): virus 2, bacteria 3' in result.output
    assert 'Left out 2 images by --keep-classes: normal 2' in result.output and 'Skipped 0 images' in result.output
    assert 'Groups: 3 patients (column patient_id)' in result.output
    dataset = ImageFolderDataset(str(dest), use_labels=True)
    assert dataset.class_names == ['virus', 'bacteria'] and dataset.label_counts().tolist() == [2, 3]


def test_keep_classes_from_class_folders(tmp_path):
    src = tmp_path / 'src'
    for i, cls in enumerate(['a', 'b', 'c', 'c', 'a']):
        (src / cls).mkdir(parents=True, exist_ok=True)
        PIL.Image.fromarray(np.full((16, 16), 30 * i, np.uint8)).save(src / cls / f'{i}.png')
    dest = tmp_path / 'out'
    result = run('--source', src, '--dest', dest, '--resolution', 8, '--keep-classes', 'c,a')
    assert result.exit_code == 0, result.output
    kept, meta = kept_images(dest)
    assert meta['class_names'] == ['c', 'a'] and meta['label_schema'] == 'folders'
    assert sorted(kept) == [(0, 1, None), (2, 0, None), (3, 0, None), (4, 1, None)]
    assert 'Left out 1 images by --keep-classes: b 1' in result.output


def test_keep_classes_from_a_dataset_keeps_groups(tmp_path):
    first = tmp_path / 'first.zip'
    args = ['--resolution', 8, '--label-column', 'subtype']
    assert run('--source', subtype_folder(tmp_path / 'src'), '--dest', first, *args).exit_code == 0
    assert read_zip(first)[0]['class_names'] == ['bacteria', 'normal', 'virus']  # Sorted names.
    dest = tmp_path / 'second.zip'
    result = run('--source', first, '--dest', dest, '--resolution', 8, '--keep-classes', 'bacteria,virus')
    assert result.exit_code == 0, result.output
    kept, meta = kept_images(dest)
    assert meta['class_names'] == ['bacteria', 'virus']
    assert kept == expected_subtypes(['bacteria', 'virus'])
    assert 'Left out 2 images by --keep-classes: normal 2' in result.output
    assert 'Groups: 3 patients (dataset.json)' in result.output


def test_keep_classes_of_a_fixed_schema_drops_the_schema_name(tmp_path):
    dest = tmp_path / 'out.zip'
    args = ['--labels', 'lesion', '--multi-lesion', 'first', '--prevalence', 0.6, '--resolution', 8, '--seed', 1]
    result = run('--source', 'phantom:12', '--dest', dest, *args, '--keep-classes', 'No finding,Osteophytes')
    assert result.exit_code == 0, result.output
    meta, _ = read_zip(dest)
    truth = [label_for_image(make_phantom(1, i, 8, prevalence=0.6).lesion_types, 'lesion', 'first') for i in range(12)]
    kept = [i for i, y in enumerate(truth) if y in (0, 3)]
    assert [y for _f, y in meta['labels']] == [[0, 3].index(truth[i]) for i in kept] and len(set(truth)) > 2
    assert meta['class_names'] == ['No finding', 'Osteophytes']
    assert meta['label_schema'] is None  # 2 of the 8 lesion classes are not the 'lesion' schema.
    assert [group for _f, group in meta['groups']] == [f'phantom-1-{i}' for i in kept]
    assert f'Left out {12 - len(kept)} images by --keep-classes' in result.output


@pytest.mark.parametrize(
    'args, message',
    [
        (['--keep-classes', 'bacteria,flu,cold'], 'unknown class flu, cold; the source has bacteria, normal, virus'),
        (['--keep-classes', 'virus'], 'at least 2 classes'),
        (['--keep-classes', 'virus,bacteria,virus'], 'virus given twice'),
        (['--keep-classes', 'virus,,bacteria'], 'empty class name'),
        (['--keep-classes', 'virus,bacteria', '--labels', 'none'], '--labels none'),
    ],
)
def test_keep_classes_bad_input_is_one_line_exit_2(tmp_path, args, message):
    src = subtype_folder(tmp_path / 'src')
    out = tmp_path / 'out'
    out.mkdir()
    result = run('--source', src, '--label-column', 'subtype', '--dest', out / 'd.zip', *args)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith('Error')]
    assert len(errors) == 1 and '--keep-classes' in errors[0] and message in errors[0], result.output
    assert os.listdir(out) == []


def test_keep_classes_refuses_multi_hot_labels(tmp_path):
    multi = tmp_path / 'multi.zip'
    assert run('--source', 'phantom:4', '--dest', multi, '--resolution', 8, '--labels', 'lesion-multi').exit_code == 0
    args = ['--dest', tmp_path / 'x.zip', '--resolution', 8, '--keep-classes', 'No finding,Osteophytes']
    for source in ('phantom:4', multi):
        result = run('--source', source, '--labels', 'lesion-multi', *args)
        assert result.exit_code == 2 and 'multi-hot' in result.output and '--keep-classes' in result.output
    result = run('--source', multi, *args)
    assert result.exit_code == 2 and 'multi-hot' in result.output  # The dataset's own lesion-multi labels.
    assert not (tmp_path / 'x.zip').exists()

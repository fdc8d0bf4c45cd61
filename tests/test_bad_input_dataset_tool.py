"""dataset_tool.py on bad input, as a user runs it: one 'Error' line naming the problem, no traceback, exit 2,
and the output location exactly as it was (no partial dest, no temp files, an existing dest file untouched)."""

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

REPO = Path(__file__).resolve().parents[1]
OLD_BYTES = b'not a dataset, and it must survive'

# ----------------------------------------------------------------------------
# Inputs, built once: name -> folder or file under the module's tmp folder ({src} in the cases below).

CSV_CASES = {
    'csv-duplicate': 'file,label\na.png,0\nb.png,1\na.png,1\n',
    'csv-blank-label': 'file,label\na.png,0\nb.png,\n',
    'csv-fraction': 'file,label\na.png,0\nb.png,0.5\n',
    'csv-word-among-integers': 'file,label\na.png,0\nb.png,abc\n',
    'csv-negative': 'file,label\na.png,0\nb.png,-1\n',
    'csv-ragged': 'file,label,note\na.png,0,x\nb.png,1\n',
    'csv-parent': 'file,label\na.png,0\n../outside.png,1\n',
    'csv-absolute': 'file,label\na.png,0\n/etc/hostname,1\n',
    'csv-symlink': 'file,label\na.png,0\nlink.png,1\n',
    'csv-blank-file': 'file,label\na.png,0\n ,1\n',
    'csv-blank-group': 'file,label,patient_id\na.png,0,IM-0129\nb.png,1, \n',
    'csv-ok': 'file,label\na.png,0\nb.png,2\n',
}


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(array).save(buffer, format='PNG')
    return buffer.getvalue()


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def build_csv_folders(src: Path, gray: bytes) -> None:
    write(src / 'outside.png', gray)
    for name, text in CSV_CASES.items():
        write(src / name / 'a.png', gray)
        write(src / name / 'b.png', gray)
        write(src / name / 'labels.csv', text)
    os.symlink(src / 'outside.png', src / 'csv-symlink' / 'link.png')
    write(src / 'csv-latin1' / 'b\xe9.png', gray)
    write(src / 'csv-latin1' / 'labels.csv', 'file,label\nb\xe9.png,0\n'.encode('latin-1'))


def build_broken_images(src: Path, gray: bytes) -> None:
    noise = png_bytes(np.random.default_rng(0).integers(0, 256, (64, 64)).astype(np.uint8))
    write(src / 'truncated-png' / 'x.png', noise[: len(noise) * 6 // 10])  # Header intact, pixel data cut.
    write(src / 'random-png' / 'x.png', np.random.default_rng(0).bytes(400))
    write(src / 'corrupt-dicom' / 'x.dcm', b'\0' * 128 + b'DICM' + b'garbage' * 10)
    twelve = np.random.default_rng(1).integers(0, 4096, (16, 16)).astype(np.uint16)
    twelve[0, 0] = 4095
    write(src / 'twelve-bit' / 'x.png', png_bytes(twelve))
    write(src / 'class-folders' / 'x' / 'a.png', gray)
    write(src / 'class-folders' / 'y' / 'a.png', gray)
    write(src / 'bad-json' / 'a.png', gray)
    write(src / 'bad-json' / 'dataset.json', '{not json')
    write(src / 'groups-missing' / 'a.png', gray)
    write(src / 'groups-missing' / 'b.png', gray)
    write(src / 'groups-missing' / 'dataset.json', '{"groups": [["a.png", "p1"]]}')
    header = 'study_id,series_id,image_id,rad_id,lesion_type,xmin,ymin,xmax,ymax\n'
    rows = 's1,se,i1,r1,No finding,,,,\ns2,se,i1,r2,No finding,,,,\n'  # One image, two studies.
    write(src / 'vindr-two-studies' / 'annotations' / 'train.csv', header + rows)
    (src / 'empty').mkdir()


def build_broken_zips(src: Path, dataset: str) -> None:
    data = Path(dataset).read_bytes()
    write(src / 'truncated.zip', data[: len(data) // 2])
    directory = data.rfind(b'PK\x01\x02')
    write(src / 'bad-directory.zip', data[:directory] + b'XXXX' + data[directory + 4 :])
    with zipfile.ZipFile(dataset) as z:
        info = z.infolist()[0]
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    flipped = bytearray(data)
    flipped[start + info.compress_size // 2] ^= 0xFF  # Inside the first image's data: a CRC error on reading.
    write(src / 'bad-member.zip', bytes(flipped))


@pytest.fixture(scope='module')
def src(tmp_path_factory, tiny_dataset):
    root = tmp_path_factory.mktemp('bad-inputs')
    gray = png_bytes(np.full((16, 16), 128, np.uint8))
    build_csv_folders(root, gray)
    build_broken_images(root, gray)
    dataset = tiny_dataset(4, path=root / 'abnormal.zip', class_names=['normal', 'abnormal'])
    build_broken_zips(root, dataset)
    return root


# ----------------------------------------------------------------------------
# The table: (case, arguments, what the one error line must say, what is at --dest beforehand).
# {src} is the inputs folder; {dest} is the --dest path, absent unless the last column puts something there.

NEW, NONE, FILE, FOLDER = 'new', 'none', 'file', 'folder'
CASES = [
    # --source, whatever its kind.
    ('missing-source', '--source {src}/nope', 'does not exist', NEW),
    ('empty-folder', '--source {src}/empty', 'no images', NEW),
    ('file-not-dataset', '--source {src}/outside.png', 'is a file; give a folder or a dataset zip', NEW),
    ('phantom-count', '--source phantom:x', 'phantom:N', NEW),
    ('phantom-without-schema', '--source phantom:2 --labels none', 'need a label schema', NEW),
    ('vindr-not-a-folder', '--source vindr:{src}/nope', 'is not a folder', NEW),
    ('vindr-without-annotations', '--source vindr:{src}/empty', 'train.csv not found', NEW),
    ('multi-lesion-error', '--source phantom:4 --labels lesion --multi-lesion error --multi-rate 1', 'several', NEW),
    ('labels-without-labels', '--source {src}/class-folders/x --labels lesion', 'no labels to derive', NEW),
    ('labels-cannot-derive', '--source {src}/abnormal.zip --labels lesion', 'cannot derive', NEW),
    ('class-names-count', '--source {src}/class-folders --class-names a,b,c', '3 names for 2 class folders', NEW),
    # labels.csv.
    ('csv-duplicate', '--source {src}/csv-duplicate', 'a.png is listed twice (lines 2 and 4)', NEW),
    ('csv-blank-label', '--source {src}/csv-blank-label', "labels.csv:3: blank 'label'", NEW),
    ('csv-fraction', '--source {src}/csv-fraction', "'0.5' is not a non-negative integer", NEW),
    ('csv-word-among-integers', '--source {src}/csv-word-among-integers', "'abc' is not an integer", NEW),
    ('csv-negative', '--source {src}/csv-negative', "'-1' is not a non-negative integer", NEW),
    ('csv-ragged', '--source {src}/csv-ragged', 'labels.csv:3: 2 fields, the header has 3', NEW),
    ('csv-parent', '--source {src}/csv-parent', '../outside.png points outside', NEW),
    ('csv-absolute', '--source {src}/csv-absolute', '/etc/hostname points outside', NEW),
    ('csv-symlink', '--source {src}/csv-symlink', 'link.png points outside', NEW),
    ('csv-blank-file', '--source {src}/csv-blank-file', "labels.csv:3: blank 'file'", NEW),
    ('csv-latin1', '--source {src}/csv-latin1', 'labels.csv:2: not UTF-8 (byte 0xe9', NEW),
    ('csv-no-column', '--source {src}/csv-ok --label-column grade', "no column 'grade'", NEW),
    ('csv-class-names', '--source {src}/csv-ok --class-names p,q', 'label 2 needs more than the 2 --class-names', NEW),
    ('csv-no-group-column', '--source {src}/csv-ok --group-column pid', "no column 'pid' (columns: file, label)", NEW),
    ('csv-blank-group', '--source {src}/csv-blank-group', "labels.csv:3: blank 'patient_id'", NEW),
    # Groups from other sources.
    ('group-column-phantom', '--source phantom:2 --group-column patient_id', 'no labels.csv to take column', NEW),
    ('vindr-two-studies', '--source vindr:{src}/vindr-two-studies', 'image i1 has two study_ids (lines 2 and 3', NEW),
    ('dataset-groups-missing', '--source {src}/groups-missing', 'no group for 1 image(s), e.g. b.png', NEW),
    # Images and archives that do not decode.
    ('truncated-png', '--source {src}/truncated-png', 'cannot decode x.png: image file is truncated', NEW),
    ('random-bytes-png', '--source {src}/random-png', 'cannot decode x.png', NEW),
    ('corrupt-dicom', '--source {src}/corrupt-dicom', 'cannot decode x.dcm', NEW),
    ('all-skipped', '--source {src}/random-png --on-error skip', 'no images were written', NEW),
    ('truncated-zip', '--source {src}/truncated.zip', 'truncated.zip is not a readable zip archive', NEW),
    ('zip-bad-directory', '--source {src}/bad-directory.zip', 'bad-directory.zip is not a readable zip', NEW),
    ('zip-bad-member', '--source {src}/bad-member.zip', 'corrupt in', NEW),
    ('dataset-bad-json', '--source {src}/bad-json', 'not valid JSON', NEW),
    ('bits-too-low', '--source {src}/twelve-bit --bits 10', 'x.png holds the value 4095, above 1023', NEW),
    ('bits-out-of-range', '--source {src}/twelve-bit --bits 7', "'--bits'", NEW),
    # Options.
    ('resolution', '--source phantom:2 --resolution 48', 'not a power of two', NEW),
    ('prevalence-nan', '--source phantom:2 --prevalence nan', 'not a finite number', NEW),
    ('prevalence-inf', '--source phantom:2 --prevalence inf', "'--prevalence'", NEW),
    ('prevalence-negative', '--source phantom:2 --prevalence -1', "'--prevalence'", NEW),
    ('multi-rate-nan', '--source phantom:2 --multi-rate nan', 'not a finite number', NEW),
    ('vindr-tree-needs-phantom', '--source {src}/empty --vindr-tree', '--vindr-tree needs', NEW),
    # --dest.
    ('no-dest', '--source phantom:2', 'give --dest, --preview', NONE),
    ('dest-empty', '--source phantom:2 --dest=', '--dest: the path is empty', NEW),
    ('dest-exists', '--source phantom:2', 'already exists; add --overwrite', FILE),
    ('dest-exists-overwrite-bad-source', '--source {src}/truncated-png --overwrite', 'cannot decode x.png', FILE),
    ('dest-folder-not-empty', '--source phantom:2', 'is not empty', FOLDER),
    ('dest-zip-is-folder', '--source phantom:2', 'is a folder', 'zip-folder'),
    ('dest-plain-file', '--source phantom:2 --dest {dest}.txt', 'is a file; use a .zip name', 'txt'),
    ('dest-under-a-file', '--source phantom:2 --dest {dest}.txt/out.zip', 'cannot write next to', 'txt'),
]


def prepare_dest(out: Path, kind: str) -> Path:
    dest = out / 'dest.zip'
    if kind == FILE:
        dest.write_bytes(OLD_BYTES)
    elif kind == 'zip-folder':
        dest.mkdir()
    elif kind == FOLDER:
        return write(out / 'dest' / 'keep.txt', OLD_BYTES).parent
    elif kind == 'txt':
        write(out / 'dest.zip.txt', OLD_BYTES)
    return dest


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob('*'))}


def run_tool(args: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(REPO))
    cmd = [sys.executable, 'dataset_tool.py', *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize('case, args, message, dest_kind', CASES, ids=[case[0] for case in CASES])
def test_bad_input_one_line_exit_2_output_unchanged(src, tmp_path, case, args, message, dest_kind):
    out = tmp_path / 'out'
    out.mkdir()
    dest = prepare_dest(out, dest_kind)
    before = snapshot(out)
    args = args.format(src=src, dest=dest).split()
    if dest_kind != NONE and not any(a.startswith('--dest') for a in args):
        args += ['--dest', str(dest)]
    proc = run_tool(args)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert 'Traceback' not in output
    errors = [line for line in output.splitlines() if line.startswith('Error')]
    assert len(errors) == 1, output
    assert message in errors[0], errors[0]
    assert snapshot(out) == before  # No dest, no temp file, an existing dest byte-identical.

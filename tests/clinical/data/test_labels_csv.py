"""labels.csv read strictly: what it accepts (BOM, name columns, --class-names, blank lines, symlinks inside the
folder, group columns) and how each refusal names the file and line. The CLI side is in
tests/test_bad_input_dataset_tool.py."""

import os

import pytest

import dnnlib
from clinical.data.labels_csv import read_labels_csv


def folder_with(tmp_path, text: str | bytes, files=('a.png', 'b.png', 'c.png')):
    for name in files:
        (tmp_path / name).write_bytes(b'')
    (tmp_path / 'labels.csv').write_bytes(text.encode() if isinstance(text, str) else text)
    return str(tmp_path)


def read(folder, class_names=None, label_column='label'):
    """(rows as (file, class index), class names), for the cases without a group column."""
    rows, names, group_column = read_labels_csv(folder, 'file', label_column, class_names)
    assert group_column is None and all(group is None for _file, _index, group in rows)
    return [(file, index) for file, index, _group in rows], names


# ----------------------------------------------------------------------------
# Accepted.


def test_bom_and_the_label_name_column(tmp_path):
    folder = folder_with(tmp_path, '\ufefffile,label,label_name\na.png,1,sick\nb.png,0,healthy\nc.png,1,sick\n')
    assert read(folder) == ([('a.png', 1), ('b.png', 0), ('c.png', 1)], ['healthy', 'sick'])


def test_class_names_win_over_the_name_column_and_cover_missing_classes(tmp_path):
    folder = folder_with(tmp_path, 'file,label,label_name\na.png,2,x\nb.png,0,y\n')
    assert read(folder, ['p', 'q', 'r'])[1] == ['p', 'q', 'r']
    assert read(folder)[1] == ['y', '1', 'x']


def test_name_labels_are_sorted_or_indexed_into_class_names(tmp_path):
    folder = folder_with(tmp_path, 'file,grade\na.png,high\nb.png,low\nc.png,high\n')
    assert read(folder, label_column='grade') == ([('a.png', 0), ('b.png', 1), ('c.png', 0)], ['high', 'low'])
    assert read(folder, ['low', 'high'], label_column='grade')[0] == [('a.png', 1), ('b.png', 0), ('c.png', 1)]


def test_blank_lines_spaces_crlf_and_quotes_are_fine(tmp_path):
    folder = folder_with(tmp_path, 'file, label\r\n\r\n"a.png", 0\r\n  \r\nb.png ,1\r\n')
    assert read(folder) == ([('a.png', 0), ('b.png', 1)], ['0', '1'])


def test_symlink_inside_the_folder_is_fine(tmp_path):
    folder = folder_with(tmp_path, 'file,label\na.png,0\nlink.png,1\n')
    os.symlink(tmp_path / 'b.png', tmp_path / 'link.png')
    assert read(folder)[0] == [('a.png', 0), ('link.png', 1)]


# ----------------------------------------------------------------------------
# Refused, naming labels.csv, the line and the flag.


@pytest.mark.parametrize(
    'text, message, param',
    [
        ('file,label\na.png,0\n./a.png,1\n', 'a.png is listed twice (lines 2 and 3)', '--source'),
        ('file,label\na.png,0\nsub/../b.png,1\nb.png,0\n', 'b.png is listed twice (lines 3 and 4)', '--source'),
        ('file,label\na.png,1e3\n', "labels.csv:2: label '1e3' is not a non-negative integer", '--source'),
        ('file,label\na.png,x\nb.png,1\n', "labels.csv:2: label 'x' is not an integer", '--source'),
        ('file,label\na.png,0,extra\n', 'labels.csv:2: 3 fields, the header has 2', '--source'),
        ('file,label,file\na.png,0,b.png\n', 'labels.csv:1: column(s) file appear twice', '--source'),
        ('file,label\n', 'lists no images', '--source'),
        ('', 'labels.csv is empty', '--source'),
        ('path,label\na.png,0\n', "no column 'file' (columns: path, label)", '--file-column'),
        (b'file,label\n\na.png,0\nb\xe9.png,1\n', 'labels.csv:4: not UTF-8 (byte 0xe9 at offset 21)', '--source'),
        (b'\xef\xbb\xbffile,label\nb\xff.png,1\n', 'labels.csv:2: not UTF-8 (byte 0xff at offset 15)', '--source'),
    ],
)
def test_refusals_name_the_file_and_line(tmp_path, text, message, param):
    folder = folder_with(tmp_path, text)
    with pytest.raises(dnnlib.UserError) as info:
        read(folder)
    assert message in str(info.value) and info.value.param == param


# ----------------------------------------------------------------------------
# Groups: patient_id by default, another column on request, none on request; never blank.

PATIENTS = 'file,label,patient_id,site\na.png,0,IM-0129,x\nb.png,1,person1,x\nc.png,1,IM-0129,y\n'


@pytest.mark.parametrize(
    'text, group_column, used, groups',
    [
        (PATIENTS, None, 'patient_id', ['IM-0129', 'person1', 'IM-0129']),
        (PATIENTS, 'site', 'site', ['x', 'x', 'y']),
        (PATIENTS, 'none', None, [None, None, None]),
        ('file,label\na.png,0\nb.png,1\n', None, None, [None, None]),
        ('file,label,patient_id\na.png,0, 007 \nb.png,1,8\n', None, 'patient_id', ['007', '8']),  # Strings, stripped.
    ],
)
def test_group_column(tmp_path, text, group_column, used, groups):
    rows, _names, column = read_labels_csv(folder_with(tmp_path, text), 'file', 'label', None, group_column)
    assert column == used and [group for _file, _index, group in rows] == groups


@pytest.mark.parametrize(
    'text, group_column, message',
    [
        (PATIENTS, 'pid', "no column 'pid' (columns: file, label, patient_id, site)"),
        ('file,label\na.png,0\n', 'patient_id', "no column 'patient_id' (columns: file, label)"),
        ('file,label,patient_id\na.png,0,p1\nb.png,1, \n', None, "labels.csv:3: blank 'patient_id'"),
    ],
)
def test_group_column_refusals(tmp_path, text, group_column, message):
    folder = folder_with(tmp_path, text)
    with pytest.raises(dnnlib.UserError) as info:
        read_labels_csv(folder, 'file', 'label', None, group_column)
    assert message in str(info.value) and info.value.param == '--group-column'


def test_name_labels_outside_class_names_are_refused(tmp_path):
    folder = folder_with(tmp_path, 'file,label\na.png,cyst\nb.png,none\n')
    with pytest.raises(dnnlib.UserError, match=r"labels.csv:3: label 'none' is not in --class-names"):
        read(folder, ['cyst'])

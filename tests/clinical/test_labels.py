"""Label schemas: class order, the abnormal rule, multi-lesion policies, class specs and dataset.json names."""

import doctest
import json
import zipfile

import numpy as np
import pytest

from clinical import labels
from clinical.labels import SCHEMAS, MultiLesionError, label_for_image, resolve_class

VINDR_NAMES = [
    'No finding',
    'Disc space narrowing',
    'Foraminal stenosis',
    'Osteophytes',
    'Spondylolysthesis',
    'Surgical implant',
    'Vertebral collapse',
    'Other lesions',
]


def test_schemas_fix_names_and_order():
    assert SCHEMAS['abnormal'] == ['normal', 'abnormal']
    assert SCHEMAS['lesion'] == VINDR_NAMES
    assert SCHEMAS['lesion-multi'] == VINDR_NAMES
    with pytest.raises(ValueError, match='unknown label schema'):
        labels.class_names('birads')


@pytest.mark.parametrize(
    'rows, expected',
    [
        (['No finding'], 0),
        (['Osteophytes'], 1),  # One row with a lesion is abnormal (the original study needed two rows).
        (['Osteophytes', 'Osteophytes'], 1),
        (['Disc space narrowing', 'Surgical implant'], 1),
        (['No finding', 'No finding'], 0),
        (['No finding', 'Other lesions'], 1),  # Normal only if every row says "No finding".
    ],
)
def test_abnormal_rule(rows, expected):
    assert label_for_image(rows, 'abnormal') == expected


def test_lesion_single_label_and_policies():
    assert label_for_image(['No finding'], 'lesion') == 0
    assert label_for_image(['Vertebral collapse', 'Vertebral collapse'], 'lesion') == 6
    two = ['Surgical implant', 'Osteophytes', 'Surgical implant']
    assert label_for_image(two, 'lesion', multi_lesion='drop') is None
    assert label_for_image(two, 'lesion', multi_lesion='first') == 5  # Earliest row wins.
    with pytest.raises(MultiLesionError, match='Surgical implant, Osteophytes'):
        label_for_image(two, 'lesion', multi_lesion='error')


def test_lesion_multi_hot():
    assert label_for_image(['No finding'], 'lesion-multi') == [1.0] + [0.0] * 7
    vector = label_for_image(['Osteophytes', 'No finding', 'Spondylolysthesis'], 'lesion-multi')
    assert vector == [0, 0, 0, 1, 1, 0, 0, 0]


@pytest.mark.parametrize('rows', [[], ['Fracture'], ['osteophytes']])
def test_label_for_image_rejects_bad_rows(rows):
    with pytest.raises(ValueError):
        label_for_image(rows, 'abnormal')


@pytest.mark.parametrize(
    'spec, names, hot',
    [
        (1, SCHEMAS['abnormal'], [1]),
        ('0', SCHEMAS['abnormal'], [0]),
        ('ABNORMAL', SCHEMAS['abnormal'], [1]),
        ('Osteophytes', VINDR_NAMES, [3]),
        ('disc-space_narrowing', VINDR_NAMES, [1]),
        ('spondylolisthesis', VINDR_NAMES, [4]),  # Correct spelling maps to the dataset's.
        ('normal', VINDR_NAMES, [0]),
        ('No finding', SCHEMAS['abnormal'], [0]),
        ('Osteophytes, surgical implant,3', VINDR_NAMES, [3, 5]),
    ],
)
def test_resolve_class(spec, names, hot):
    vector = resolve_class(spec, names)
    assert vector.dtype == np.float32 and vector.shape == (len(names),)
    assert np.flatnonzero(vector).tolist() == hot


@pytest.mark.parametrize('spec', ['fracture', '9', '', 'normal,abnormal'])
def test_resolve_class_errors_name_the_choices(spec):
    with pytest.raises(ValueError) as info:
        resolve_class(spec, SCHEMAS['abnormal'], allow_multi=False)
    assert spec == '' or 'abnormal' in str(info.value) or 'range' in str(info.value)


def test_class_names_from_dataset_json(tmp_path):
    meta = {'labels': [['a.png', 0], ['b.png', 2]], 'class_names': ['x', 'y', 'z'], 'label_schema': 'custom'}
    assert labels.class_names_from_dataset_json(meta) == ['x', 'y', 'z']
    assert labels.class_names_from_dataset_json({'labels': [['a.png', 0], ['b.png', 2]]}) == ['0', '1', '2']
    assert labels.class_names_from_dataset_json({'labels': [['a.png', [0.0, 1.0]]]}) == ['0', '1']
    assert labels.class_names_from_dataset_json({'labels': None}) is None
    (tmp_path / 'folder').mkdir()
    (tmp_path / 'folder' / 'dataset.json').write_text(json.dumps(meta))
    with zipfile.ZipFile(tmp_path / 'd.zip', 'w') as z:
        z.writestr('dataset.json', json.dumps(meta))
    for path in (tmp_path / 'folder', tmp_path / 'd.zip', tmp_path / 'folder' / 'dataset.json'):
        assert labels.class_names_from_dataset_json(str(path)) == ['x', 'y', 'z']


def test_relabel_between_schemas():
    multi = [0, 0, 1, 0, 0, 1, 0, 0]
    assert labels.relabel(multi, VINDR_NAMES, 'abnormal') == 1
    assert labels.relabel(0, VINDR_NAMES, 'abnormal') == 0
    assert labels.relabel(multi, VINDR_NAMES, 'lesion', 'first') == 2
    assert labels.relabel(multi, VINDR_NAMES, 'lesion', 'drop') is None
    assert labels.relabel(1, SCHEMAS['abnormal'], 'abnormal') == 1
    with pytest.raises(ValueError, match='cannot derive'):
        labels.relabel(1, SCHEMAS['abnormal'], 'lesion')


def test_docstring_examples():
    assert doctest.testmod(labels).failed == 0

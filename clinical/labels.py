"""Label schemas shared by every tool: one place decides class order, names and the abnormal rule.

VinDr-SpineXR (Nguyen et al. 2021) annotates each image with one CSV row per box; a normal image has a
single "No finding" row without a box. The study's original rule (abnormal iff two or more rows) is wrong:
an image is abnormal as soon as one row names a lesion.
"""

import re
from collections.abc import Iterable, Sequence

import numpy as np

# ----------------------------------------------------------------------------
# The VinDr-SpineXR `lesion_type` strings, in the order used for every label vector.

NO_FINDING = 'No finding'
LESION_TYPES = (
    'Disc space narrowing',
    'Foraminal stenosis',
    'Osteophytes',
    'Spondylolysthesis',  # (sic) spelled as in the VinDr-SpineXR annotations.
    'Surgical implant',
    'Vertebral collapse',
    'Other lesions',
)
VINDR_CLASSES = (NO_FINDING, *LESION_TYPES)

# ----------------------------------------------------------------------------
# Schema name -> class names (index order). `lesion-multi` is a multi-hot vector over the same names.

SCHEMAS = {
    'abnormal': ['normal', 'abnormal'],
    'lesion': list(VINDR_CLASSES),
    'lesion-multi': list(VINDR_CLASSES),
}
MULTI_LESION_POLICIES = ('drop', 'first', 'error')

# Friendly spellings accepted by resolve_class(), applied only when the target name is in the class list.
_ALIASES = {'spondylolisthesis': 'Spondylolysthesis', 'normal': NO_FINDING, 'nofinding': 'normal'}


# ----------------------------------------------------------------------------
# Raised when an image has several lesion types and the policy is 'error'.


class MultiLesionError(ValueError):
    pass


# ----------------------------------------------------------------------------
# Schema metadata.


def class_names(schema: str) -> list[str]:
    """Class names of a schema in index order.

    Raises:
        ValueError: unknown schema.
    """
    if schema not in SCHEMAS:
        raise ValueError(f'unknown label schema {schema!r}; expected one of {", ".join(SCHEMAS)}')
    return list(SCHEMAS[schema])


# ----------------------------------------------------------------------------
# The lesion types found on one image, in row order, without duplicates and without "No finding".


def distinct_lesions(lesion_types: Iterable[str]) -> list[str]:
    """Distinct lesion types of an image's annotation rows, first occurrence first.

    Raises:
        ValueError: a string that is not a VinDr-SpineXR lesion type.
    """
    found = []
    for name in lesion_types:
        name = name.strip()
        if name not in VINDR_CLASSES:
            raise ValueError(f'unknown lesion type {name!r}; expected one of {", ".join(VINDR_CLASSES)}')
        if name != NO_FINDING and name not in found:
            found.append(name)
    return found


# ----------------------------------------------------------------------------
# One image's rows -> its label in a schema.


def label_for_image(
    lesion_types: Sequence[str],  # The `lesion_type` of every annotation row of one image.
    schema: str,  # 'abnormal' | 'lesion' | 'lesion-multi'.
    multi_lesion: str = 'drop',  # 'lesion' schema with several distinct types: 'drop' | 'first' | 'error'.
) -> int | list[float] | None:  # Class index, multi-hot list, or None when the image is dropped.
    """Label of one image: normal iff every row says "No finding" (a single lesion row is abnormal).

    Args:
        lesion_types: Row values of `lesion_type`, in CSV order; must not be empty.
        schema: Label schema name from `SCHEMAS`.
        multi_lesion: What the single-label `lesion` schema does with several distinct lesion types:
            'drop' returns None, 'first' keeps the type of the earliest row, 'error' raises.

    Returns:
        An int class index ('abnormal', 'lesion'), a multi-hot list of floats ('lesion-multi'), or None.

    Raises:
        ValueError: empty rows, unknown lesion type, schema or policy.
        MultiLesionError: several lesion types under `multi_lesion='error'`.

    Example:
        >>> label_for_image(['Osteophytes'], 'abnormal')
        1
        >>> label_for_image(['No finding'], 'lesion')
        0
        >>> label_for_image(['Osteophytes', 'Surgical implant'], 'lesion', multi_lesion='first')
        3
        >>> label_for_image(['Osteophytes', 'Surgical implant'], 'lesion-multi')
        [0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    """
    names = class_names(schema)
    if multi_lesion not in MULTI_LESION_POLICIES:
        raise ValueError(f'unknown multi-lesion policy {multi_lesion!r}')
    if len(lesion_types) == 0:
        raise ValueError('an image needs at least one annotation row')
    lesions = distinct_lesions(lesion_types)
    if schema == 'abnormal':
        return int(len(lesions) > 0)
    if schema == 'lesion-multi':
        return [float(name in (lesions or [NO_FINDING])) for name in names]
    if len(lesions) > 1:
        if multi_lesion == 'drop':
            return None
        if multi_lesion == 'error':
            raise MultiLesionError(f'image has several lesion types: {", ".join(lesions)}')
    return names.index(lesions[0] if lesions else NO_FINDING)


# ----------------------------------------------------------------------------
# Class spec from the command line (index, name or comma list) -> label vector.


def _normalize(name: str) -> str:
    return re.sub(r'[^a-z0-9]', '', name.lower())


def _class_index(token: str, class_names: Sequence[str]) -> int:
    token = token.strip()
    if re.fullmatch(r'\d+', token):
        index = int(token)
        if index >= len(class_names):
            raise ValueError(f'class index {index} out of range for {len(class_names)} classes')
        return index
    lookup = {_normalize(name): i for i, name in enumerate(class_names)}
    key = _normalize(token)
    alias = _ALIASES.get(key)
    if key not in lookup and alias is not None:
        key = _normalize(alias)
    if key not in lookup:
        raise ValueError(f'unknown class {token!r}; expected an index or one of: {", ".join(class_names)}')
    return lookup[key]


def resolve_class(spec: int | str, class_names: Sequence[str], allow_multi: bool = True) -> np.ndarray:
    """Turn a class spec into a float32 label vector over `class_names`.

    Names match case-insensitively and ignore spaces, hyphens and underscores ("disc-space-narrowing");
    "Spondylolisthesis" and "normal" (for "No finding") are accepted as aliases.

    Args:
        spec: Index (int or digits), class name, or comma-separated list of those (multi-hot).
        class_names: Class names in index order, e.g. from `class_names_from_dataset_json`.
        allow_multi: Whether a comma list may select more than one class.

    Returns:
        float32 vector of length len(class_names), one-hot or multi-hot.

    Raises:
        ValueError: unknown name, index out of range, empty spec, or a list when `allow_multi` is False.

    Example:
        >>> resolve_class('Abnormal', ['normal', 'abnormal'])
        array([0., 1.], dtype=float32)
        >>> resolve_class('osteophytes,2', SCHEMAS['lesion']).nonzero()[0].tolist()
        [2, 3]
    """
    tokens = [spec] if isinstance(spec, int) else [t for t in str(spec).split(',') if t.strip()]
    if not tokens:
        raise ValueError('empty class spec')
    indices = sorted({_class_index(str(t), class_names) for t in tokens})
    if len(indices) > 1 and not allow_multi:
        raise ValueError(f'{spec!r} names several classes but the labels are single-class')
    vector = np.zeros(len(class_names), dtype=np.float32)
    vector[indices] = 1
    return vector


# ----------------------------------------------------------------------------
# Class names of a dataset, with generic names ("0", "1", ...) for datasets written without them.


def class_names_from_dataset_json(source: str | dict) -> list[str] | None:
    """Class names stored by dataset_tool, else '0'..'K-1' from the label dimension, else None (unlabelled).

    Args:
        source: A parsed dataset.json dict, or a dataset folder, zip or dataset.json path.

    Raises:
        FileNotFoundError: a path with no dataset.json.
        ValueError: a dataset.json that is not valid JSON, or not a JSON object.
    """
    if isinstance(source, dict):
        meta = source
    else:
        from training.dataset import read_dataset_metadata  # Here, so the schemas (and the phantom) need no torch.

        meta = read_dataset_metadata(source)
    if meta.get('class_names'):
        return [str(name) for name in meta['class_names']]
    labels = meta.get('labels')
    if not labels:
        return None
    values = [label for _fname, label in labels]
    if isinstance(values[0], list):
        return [str(i) for i in range(len(values[0]))]
    return [str(i) for i in range(int(max(values)) + 1)]


# ----------------------------------------------------------------------------
# Relabelling an existing dataset: stored label -> class names -> label in another schema.


def names_in_label(label: int | Sequence[float], class_names: Sequence[str]) -> list[str]:
    """Class names switched on by a stored label (a class index or a multi-hot vector)."""
    if isinstance(label, (int, np.integer)):
        return [class_names[int(label)]]
    return [name for name, value in zip(class_names, label, strict=True) if value > 0.5]


def relabel(
    label: int | Sequence[float],
    source_class_names: Sequence[str],
    schema: str,
    multi_lesion: str = 'drop',
) -> int | list[float] | None:
    """Map a label stored over `source_class_names` into `schema` (e.g. lesion-multi -> abnormal).

    Raises:
        ValueError: the source classes carry too little information for the target schema.
    """
    names = names_in_label(label, source_class_names)
    if set(source_class_names) == set(VINDR_CLASSES):
        return label_for_image(names, schema, multi_lesion)
    if list(source_class_names) == SCHEMAS['abnormal'] and schema == 'abnormal':
        return SCHEMAS['abnormal'].index(names[0])
    raise ValueError(f'cannot derive {schema!r} labels from classes {", ".join(source_class_names)}')

"""labels.csv of a folder source, read strictly: UTF-8 (a BOM is fine), one row per image, every row as wide as
the header, each image inside the folder and listed once, every label a class name or a non-negative integer,
and every group (patient) id, when there is a group column, not blank.

Any problem raises dnnlib.UserError naming labels.csv and the line, so nothing is guessed or dropped silently.
"""

import csv
import io
import os
import re

import dnnlib

INTEGER = re.compile(r'\d+')
NUMBER = re.compile(r'[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?')  # Numeric-looking, so not a class name.
GROUP_COLUMN = 'patient_id'  # The group column used when --group-column is not given and labels.csv has it.
Row = tuple[int, dict[str, str]]  # (line number, column -> value)


# ----------------------------------------------------------------------------
# The whole file: (relative image path, class index, group or None) per row, the class names, the group column.


def read_labels_csv(
    folder: str,  # The source folder; labels.csv is at its top.
    file_column: str,  # --file-column.
    label_column: str,  # --label-column.
    class_names: list[str] | None,  # --class-names, or None.
    group_column: str | None = None,  # --group-column: a column, 'none', or None for GROUP_COLUMN if present.
) -> tuple[list[tuple[str, int, str | None]], list[str], str | None]:  # (rows, class names, group column used).
    """Read `<folder>/labels.csv`; integer labels take their names from --class-names, the `<label>_name`
    column or '0'..'K-1'; name labels are sorted, or indexed into --class-names. Groups (patient ids) come
    from `group_column`; every row's group is None when no group column is used.

    Raises:
        dnnlib.UserError: any malformed row, label, group or path, naming labels.csv and the line.
    """
    csv_path = os.path.join(folder, 'labels.csv')
    header, rows = _read_rows(csv_path)
    for column, flag in ((file_column, '--file-column'), (label_column, '--label-column')):
        if column not in header:
            columns = ', '.join(header)
            raise dnnlib.UserError(f'{csv_path} has no column {column!r} (columns: {columns})', param=flag)
    group_column = _group_column(csv_path, header, group_column)
    if not rows:
        raise dnnlib.UserError(f'{csv_path} lists no images', param='--source')
    files = _checked_files(folder, csv_path, rows, file_column)
    indices, names = _checked_labels(csv_path, rows, label_column, class_names)
    groups = _checked_groups(csv_path, rows, group_column)
    return list(zip(files, indices, groups)), names, group_column


# ----------------------------------------------------------------------------
# Bytes -> header and rows: blank lines skipped, ragged rows refused.


def _read_rows(csv_path: str) -> tuple[list[str], list[Row]]:
    with open(csv_path, 'rb') as f:
        text = _decode(csv_path, f.read())
    reader, rows, header = csv.reader(io.StringIO(text, newline='')), [], None
    try:
        for fields in reader:
            if not ''.join(fields).strip():
                continue
            if header is None:
                header = _header(csv_path, reader.line_num, fields)
                continue
            if len(fields) != len(header):
                where = f'{csv_path}:{reader.line_num}'
                raise dnnlib.UserError(f'{where}: {len(fields)} fields, the header has {len(header)}', param='--source')
            rows.append((reader.line_num, dict(zip(header, fields))))
    except csv.Error as e:
        raise dnnlib.UserError(f'{csv_path}:{reader.line_num}: {e}', param='--source') from None
    if header is None:
        raise dnnlib.UserError(f'{csv_path} is empty', param='--source')
    return header, rows


def _decode(csv_path: str, data: bytes) -> str:
    bom = 3 if data.startswith(b'\xef\xbb\xbf') else 0
    try:
        return data[bom:].decode('utf-8')
    except UnicodeDecodeError as e:
        at = bom + e.start
        line = data.count(b'\n', 0, at) + 1
        message = f'{csv_path}:{line}: not UTF-8 (byte 0x{data[at]:02x} at offset {at}); save it as UTF-8'
        raise dnnlib.UserError(message, param='--source') from None


def _header(csv_path: str, line: int, fields: list[str]) -> list[str]:
    header = [name.strip() for name in fields]
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise dnnlib.UserError(f'{csv_path}:{line}: column(s) {", ".join(repeated)} appear twice', param='--source')
    return header


# ----------------------------------------------------------------------------
# Image paths: not blank, inside the folder once symlinks are resolved, and listed once.


def _checked_files(folder: str, csv_path: str, rows: list[Row], file_column: str) -> list[str]:
    root, first_line, files = os.path.realpath(folder), {}, []
    for line, row in rows:
        name, where = row[file_column].strip(), f'{csv_path}:{line}'
        if not name:
            raise dnnlib.UserError(f'{where}: blank {file_column!r}', param='--source')
        real = os.path.realpath(os.path.join(folder, name))
        if os.path.commonpath([root, real]) != root:
            raise dnnlib.UserError(f'{where}: {name} points outside {folder}', param='--source')
        key = os.path.normpath(name)
        if key in first_line:
            message = f'{csv_path}: {name} is listed twice (lines {first_line[key]} and {line})'
            raise dnnlib.UserError(message, param='--source')
        first_line[key] = line
        files.append(name)
    return files


# ----------------------------------------------------------------------------
# Groups: the column asked for (refused if absent), else GROUP_COLUMN when present; never blank.


def _group_column(csv_path: str, header: list[str], group_column: str | None) -> str | None:
    if group_column is None:
        return GROUP_COLUMN if GROUP_COLUMN in header else None
    if group_column == 'none':
        return None
    if group_column not in header:
        message = f'{csv_path} has no column {group_column!r} (columns: {", ".join(header)})'
        raise dnnlib.UserError(message, param='--group-column')
    return group_column


def _checked_groups(csv_path: str, rows: list[Row], group_column: str | None) -> list[str | None]:
    if group_column is None:
        return [None] * len(rows)
    for line, row in rows:
        if not row[group_column].strip():
            raise dnnlib.UserError(f'{csv_path}:{line}: blank {group_column!r}', param='--group-column')
    return [row[group_column].strip() for _line, row in rows]


# ----------------------------------------------------------------------------
# Labels: all non-negative integers (as soon as one looks numeric) or all class names; never blank.


def _checked_labels(csv_path, rows, label_column, class_names) -> tuple[list[int], list[str]]:
    values = [(line, row[label_column].strip()) for line, row in rows]
    for line, value in values:
        if not value:
            raise dnnlib.UserError(f'{csv_path}:{line}: blank {label_column!r}', param='--source')
    if any(NUMBER.fullmatch(value) for _line, value in values):
        return _integer_labels(csv_path, rows, values, label_column, class_names)
    names = class_names or sorted({value for _line, value in values})
    for line, value in values:
        if value not in names:
            raise dnnlib.UserError(f'{csv_path}:{line}: label {value!r} is not in --class-names', param='--class-names')
    return [names.index(value) for _line, value in values], names


def _integer_labels(csv_path, rows, values, label_column, class_names) -> tuple[list[int], list[str]]:
    for line, value in values:
        if not INTEGER.fullmatch(value):
            kind = 'a non-negative integer' if NUMBER.fullmatch(value) else 'an integer, like the other labels'
            raise dnnlib.UserError(f'{csv_path}:{line}: label {value!r} is not {kind}', param='--source')
    indices = [int(value) for _line, value in values]
    if class_names is not None and max(indices) >= len(class_names):
        line = values[indices.index(max(indices))][0]
        message = f'{csv_path}:{line}: label {max(indices)} needs more than the {len(class_names)} --class-names'
        raise dnnlib.UserError(message, param='--class-names')
    names = class_names or _names_from_column(rows, label_column, indices)
    return indices, names or [str(i) for i in range(max(indices) + 1)]


def _names_from_column(rows: list[Row], label_column: str, indices: list[int]) -> list[str] | None:
    name_column = f'{label_column}_name'  # e.g. label -> label_name, when present and consistent.
    if name_column not in rows[0][1]:
        return None
    mapping = {}
    for (_line, row), index in zip(rows, indices):
        if mapping.setdefault(index, row[name_column]) != row[name_column]:
            return None
    return [mapping.get(i, str(i)) for i in range(max(indices) + 1)]

"""Convert radiograph sources into the dataset format train.py reads: PNGs plus dataset.json, in a zip or folder.

Sources: `vindr:ROOT` (VinDr-SpineXR DICOM tree), `phantom:N` (the procedural spine phantom), a folder of
images (labels.csv or one sub-folder per class; DICOM, PNG, JPEG, 16-bit PNG) or an existing dataset zip/folder
(resize, relabel, subset). Nothing is dropped silently: every skipped file is reported with its reason. The group
(patient) of each image, when the source knows it, goes into dataset.json as "groups" for patient-disjoint splits.

Examples:
    python dataset_tool.py --source phantom:1000 --dest data/phantom-64.zip --resolution 64 --labels lesion
    python dataset_tool.py --source vindr:~/vindr-spinexr --split train --labels abnormal --dest spine-256.zip
    python dataset_tool.py --source ../shared/data/kermany-cxr-256 --dest cxr-64.zip --resolution 64
"""

import collections
import os
import shutil
import tempfile

import click
from tqdm import tqdm

import dnnlib
from cli_utils import finite_float, user_errors
from clinical import labels as schema_lib
from clinical.data import ConversionError, DatasetWriter, Source, convert, open_source, phantom_count, write_preview
from clinical.dicom_io import write_vindr_tree
from clinical.phantom import make_phantom

TRANSFORMS = ['center-crop', 'pad-to-square']
LABEL_CHOICES = ['abnormal', 'lesion', 'lesion-multi', 'none']
MULTI_LESION = list(schema_lib.MULTI_LESION_POLICIES)


# ----------------------------------------------------------------------------
# One summary at the end: what was written, per-label counts, groups, and every skipped file with its reason.


def print_summary(result: dict, source: Source, dest: str | None, opts: dnnlib.EasyDict, max_listed: int = 100) -> None:
    written, resolution = len(result['labels']), opts.resolution
    click.echo(f'Wrote {written} images ({resolution}x{resolution})' + (f' to {dest}' if dest else ' (preview only)'))
    if source.class_names is not None:
        counts = ', '.join(f'{name} {result["counts"][i]}' for i, name in enumerate(source.class_names))
        click.echo(f'Labels ({source.schema}): {counts}')
    if opts.keep_classes:
        left_out = result['left_out']
        by_class = ': ' + ', '.join(f'{name} {n}' for name, n in left_out.items()) if left_out else ''
        click.echo(f'Left out {left_out.total()} images by --keep-classes' + by_class)
    groups = {group for _relpath, group in result['groups'] if group is not None}
    patients = f'{len(groups)} patient' + ('s' if len(groups) != 1 else '')
    click.echo(f'Groups: {patients} ({source.group_origin})' if groups else 'Groups: none')
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
# The conversion behind main, once the options are checked: open the source, write it, preview, summarize.


def convert_source(opts: dnnlib.EasyDict) -> None:
    if opts.vindr_tree:
        return export_vindr_tree(phantom_count(opts.source), opts.dest, opts)
    source = open_source(opts.source, opts)
    writer, preview = (DatasetWriter(opts.dest) if opts.dest else None), {}
    try:
        result = convert(source, writer, opts, preview)
        if not result['labels']:
            print_summary(result, source, None, opts)
            raise ConversionError('no images were written (every image was skipped)')
        if writer is not None:
            writer.commit(result['labels'], source.class_names, source.schema, result['groups'])
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if opts.preview:
        write_preview(opts.preview, preview, source.class_names, opts.preview_per_class, opts.resolution)
    print_summary(result, source, opts.dest, opts)


# ----------------------------------------------------------------------------
# Option checks that need more than one flag.


def _power_of_two(_ctx, _param, value):
    if value is not None and (value < 4 or value & (value - 1)):
        raise click.BadParameter(f'{value} is not a power of two >= 4')
    return value


def _class_list(_ctx, _param, value):
    if value is None:
        return None
    names = [name.strip() for name in value.split(',')]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if '' in names:
        raise click.BadParameter(f'empty class name in {value!r}')
    if repeated:
        raise click.BadParameter(f'{", ".join(repeated)} given twice')
    if len(names) < 2:
        raise click.BadParameter(f'give at least 2 classes, comma-separated (got {value!r})')
    return names


def _check_labels(opts: dnnlib.EasyDict) -> None:
    if opts.keep_classes and opts.labels == 'none':
        raise click.BadParameter('--labels none leaves no classes to keep', param_hint='--keep-classes')


def _check_dest(opts: dnnlib.EasyDict) -> None:
    if opts.dest is None and opts.preview is None:
        raise click.UsageError('give --dest, --preview, or both')
    if opts.vindr_tree and (opts.dest is None or not opts.source.startswith('phantom:')):
        raise click.UsageError('--vindr-tree needs --source phantom:N and a --dest folder')
    if opts.dest is not None and not opts.vindr_tree:
        _check_output(opts.dest, opts.overwrite)


def _check_output(dest: str, overwrite: bool) -> None:
    if not dest.strip():
        raise click.BadParameter('the path is empty', param_hint='--dest')
    is_zip = dest.lower().endswith('.zip')
    if os.path.isdir(dest) and is_zip:
        raise click.BadParameter(f'{dest} is a folder; give a .zip file name or a folder name', param_hint='--dest')
    if os.path.isdir(dest) and os.listdir(dest):
        raise click.BadParameter(f'folder {dest} is not empty', param_hint='--dest')
    if os.path.lexists(dest) and not os.path.isdir(dest) and not is_zip:
        raise click.BadParameter(f'{dest} is a file; use a .zip name or a folder', param_hint='--dest')
    if os.path.lexists(dest) and not os.path.isdir(dest) and not overwrite:
        raise click.BadParameter(f'{dest} already exists; add --overwrite to replace it', param_hint='--dest')


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
@click.option('--group-column', metavar='NAME', help='labels.csv patient column  [default: patient_id if present]')
@click.option('--class-names', metavar='A,B,..', help='Names of integer classes')
@click.option('--keep-classes', metavar='A,B,..', callback=_class_list, help='Only these classes, in this order')
@click.option('--seed', type=int, default=0, metavar='INT', show_default=True, help='Phantom seed')
@click.option(
    '--bits', type=click.IntRange(8, 16), metavar='INT', help='Bit depth of 16-bit PNG/TIFF  [default: from the max]'
)
@click.option(
    '--prevalence',
    type=finite_float(0, 1),
    default=0.5,
    metavar='FLOAT',
    show_default=True,
    help='Phantom: abnormal rate',
)
@click.option(
    '--multi-rate', type=finite_float(0, 1), default=0.2, metavar='FLOAT', show_default=True, help='Phantom: 2+ types'
)
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
@click.option('--overwrite', is_flag=True, help='Replace an existing --dest zip (atomically, once written)')
def main(**kwargs):
    """Convert a radiograph source into a training dataset (PNG + dataset.json, zip or folder).

    \b
    --source      vindr:ROOT (VinDr-SpineXR tree; --split), phantom:N (--seed, --prevalence,
                  --multi-rate), a folder (labels.csv with --file-column/--label-column, or one
                  sub-folder per class), or a dataset zip/folder with dataset.json.
    --group-column
                  labels.csv column of each image's patient (default: patient_id if present; none:
                  no groups), kept in dataset.json "groups" for patient-disjoint splits. vindr:
                  study_id; phantom: one patient each; datasets keep theirs; class folders: none.
    --labels      abnormal (normal iff every row says "No finding"), lesion (8 classes, one label;
                  --multi-lesion drop|first|error), lesion-multi (8-dim multi-hot), none. On folders
                  and datasets it relabels through their class names.
    --class-names for integer CSV labels; default: the <label-column>_name column, else 0..K-1.
                  labels.csv is strict: UTF-8, one row per image inside the folder, labels all
                  names or all non-negative integers.
    --keep-classes
                  write only images of these classes (exact names, as in the summary's Labels
                  line, after --labels), relabelled 0..K-1 in the order given; the others are left
                  out and counted in the summary. Groups are kept. Single-label only: lesion-multi
                  (multi-hot) is refused; use --labels lesion.
    --bits        16-bit PNG/TIFF scale by their bit depth: by default the smallest of 10, 12, 14,
                  16 bits that holds the image's maximum; --bits N forces N (larger values fail).
    --transform   center-crop, or pad-to-square keeping the whole film; --resample lanczos|area.
    --on-error    fail (exit 2 naming the file) or skip (listed in the summary).
    --vindr-tree  with phantom:N, write DICOMs + annotations/<split>.csv into the --dest folder.
    --dest        a new .zip, a new or empty folder; an existing zip only with --overwrite.
    """
    opts = dnnlib.EasyDict(kwargs)
    opts.class_names = [n.strip() for n in opts.class_names.split(',')] if opts.class_names else None
    _check_labels(opts)
    _check_dest(opts)
    with user_errors():
        convert_source(opts)


if __name__ == '__main__':
    main()

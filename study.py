"""How useful, and how private, is the synthetic data? The synthetic-learning study in one command.

Stages, each cached under OUTDIR/stages/ by a hash of its inputs (a rerun skips finished stages; a killed GAN run
resumes exactly from its last snapshot; changed inputs redo a stage and what depends on it):
    data            dataset_tool.py on the source, then a patient-aware split into GAN-train, test and holdout
    baseline        a classifier trained on GAN-train (validation split inside it), judged on test
    gan-<arm>       conditional StyleGAN2-ADA, SpineGAN (+ clinical loss, the baseline as its classifier),
                    lesion-type conditional (phantom and VinDr sources), DP arms
    clf-<arm>-<set> classifiers on synthetic-only and real+synthetic sets, judged on test against the baseline
Each classifier is an ensemble of --clf-ensemble members trained with consecutive seeds (one in the demo): a single
classifier's test AUC moves by several hundredths with its seed alone.
Writes OUTDIR/report.md, OUTDIR/report.json and OUTDIR/auc.png. No GAN and no model choice ever sees test.

Examples:
    python study.py --preset demo --outdir runs/study-demo
    python study.py --preset cpu --data ../shared/data/kermany-cxr-256 --label-column subtype \\
        --keep-classes bacteria,virus --outdir runs/kermany-subtype
"""

import functools
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile

import click
import numpy as np
import sklearn.model_selection
import torch

import dnnlib
from cli_utils import user_errors
from clinical import classifier_report
from clinical.classifier_data import assemble_training_set
from clinical.classifier_training import fit_ensemble
from clinical.data.writer import DatasetWriter
from clinical.dp import describe_release
from generate import save_png
from metrics import metric_main
from metrics.features import load_feature_net
from study_report import write_report
from training.checkpoint import load_snapshot
from training.config import setup_training_config
from training.launch import launch_training
from training.sampling import generate_images

REPO = os.path.dirname(os.path.abspath(__file__))

# ----------------------------------------------------------------------------
# Presets: plain dicts; the user's options replace single entries.

ARMS = {
    'conditional': dict(),
    'spinegan': dict(clinical=True),
    'lesion': dict(lesion=True),  # Conditioned on lesion type; only where the source has lesion labels.
    'dp': dict(dp=True),
    'dp-clip-only': dict(dp=True, dp_mode='clip-only'),
    'dp-noise-only': dict(dp=True, dp_mode='noise-only'),
}

# The measured best short-run recipe at 32 px on 2 CPU cores (the recipe table in the README): half the channels of
# cfg=cpu and batch 8 (twice the steps per kimg); no path-length regularisation, style mixing or ADA, none of
# which pays back within minutes. The demo runs it in fp32: bfloat16 (train.py's default on CPUs that have it) makes
# these small networks only ~6% faster at 32 px and left the demo's FIDs a little worse in every arm (README). The
# cpu preset runs it at 64 px (channel base doubled: 64 channels in every block) at train.py's default precision.
SMALL_GAN = dict(channel_base=2048, channel_max=64, batch=8, pl_weight=0, style_mixing=0, aug='noaug')
PRESETS = {
    'demo': dict(data='phantom:2000', resolution=32, cfg='cpu', kimg=8, tick=2, gpus=1,
                 arms='conditional,spinegan,lesion,dp', dp_epsilon=10, clf_epochs=10, clf_ensemble=1,
                 synthetic_counts='all', mix_counts='500', test_fraction=0.2, holdout_fraction=0.1,
                 gan=dict(SMALL_GAN, cpu_bf16=False)),
    'cpu': dict(data='phantom:4000', resolution=64, cfg='cpu', kimg=20, tick=4, gpus=1, arms=','.join(ARMS),
                dp_epsilon=10, clf_epochs=20, clf_ensemble=3, synthetic_counts='500,1600,all',
                mix_counts='500,1600,all', test_fraction=0.2, holdout_fraction=0.1,
                gan=dict(SMALL_GAN, channel_base=4096)),
    'paper': dict(data='phantom:10000', resolution=256, cfg='paper256', kimg=3000, tick=20, gpus=None,
                  arms=','.join(ARMS), dp_epsilon=10, clf_epochs=30, clf_ensemble=5,
                  synthetic_counts='500,1600,all', mix_counts='500,1600,all', test_fraction=0.2, holdout_fraction=0.1,
                  gan=dict(batch=16, gamma=0.8192, target=0.6, augpipe='bgcfnc')),
}  # fmt: skip
CLINICAL_WEIGHT = 0.1  # The study's lambda.


def study_config(preset: str, **user) -> dnnlib.EasyDict:
    """The preset with the user's options (those not None) on top; gpus None = every visible GPU."""
    c = dnnlib.EasyDict(PRESETS[preset], **{key: value for key, value in user.items() if value is not None})
    c.gpus = c.gpus or max(1, torch.cuda.device_count())
    c.arms = [arm for arm in c.arms.split(',') if arm]
    unknown = [arm for arm in c.arms if arm not in ARMS]
    if unknown:
        raise dnnlib.UserError(f'unknown arm {", ".join(unknown)}; expected some of {", ".join(ARMS)}', param='--arms')
    return c


# ----------------------------------------------------------------------------
# Cached stages: OUTDIR/stages/NAME holds inputs.json while it runs and done.json (with its result) once finished.


def run_stage(outdir, name, inputs, work):
    folder = os.path.join(outdir, 'stages', name)
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]
    done_path, inputs_path = os.path.join(folder, 'done.json'), os.path.join(folder, 'inputs.json')
    if os.path.exists(done_path):
        done = json.load(open(done_path))
        if done['key'] == key:
            return done['result']
    if os.path.exists(inputs_path) and json.load(open(inputs_path))['key'] != key:
        shutil.rmtree(folder)  # Other inputs: this stage's partial work does not continue.
    os.makedirs(folder, exist_ok=True)
    if not os.path.exists(inputs_path):
        with dnnlib.util.atomic_write(inputs_path, 'w') as f:
            json.dump(dict(key=key, inputs=inputs), f, indent=2, default=str)
    click.echo(f'\n=== {name} ===')
    result = work(folder)
    with dnnlib.util.atomic_write(done_path, 'w') as f:
        json.dump(dict(key=key, result=result), f, indent=2)
    return result


# ----------------------------------------------------------------------------
# Data: the source as one dataset, then GAN-train / test / holdout with no patient in two splits.


def prepare_data(folder, c):
    whole = _convert(c, os.path.join(folder, 'all.zip'))
    with zipfile.ZipFile(whole) as z:
        meta = json.loads(z.read('dataset.json'))
    files = [name for name, _label in meta['labels']]
    labels = np.array([label if isinstance(label, int) else int(np.argmax(label)) for _name, label in meta['labels']])
    groups = dict(meta.get('groups') or [])
    group_ids = np.array([groups.get(name, name) for name in files])
    rest, test = _group_split(labels, group_ids, c.test_fraction, c.seed)
    train, holdout = _group_split(labels[rest], group_ids[rest], c.holdout_fraction / (1 - c.test_fraction), c.seed)
    splits = dict(gan_train=rest[train], test=test, holdout=rest[holdout])
    paths = {name: _write_subset(whole, meta, [files[i] for i in idx], folder, name) for name, idx in splits.items()}
    num_classes = len(meta['class_names'])
    counts = {name: np.bincount(labels[idx], minlength=num_classes).tolist() for name, idx in splits.items()}
    result = dict(paths=paths, counts=counts, class_names=meta['class_names'], patients=len(set(group_ids)))
    if c.data.startswith(LESION_SOURCES):
        result['lesion'] = _lesion_splits(folder, c, files, splits)
    return result


LESION_SOURCES = ('phantom:', 'vindr:')  # Sources whose annotations name the lesion type.


def _convert(c, dest, *extra):
    if not os.path.exists(dest):
        args = ['--source', c.data, '--resolution', str(c.resolution), '--dest', dest, *extra]
        args += sum(([flag, str(c[key])] for flag, key in DATA_FLAGS if c.get(key)), [])
        tool = [sys.executable, os.path.join(REPO, 'dataset_tool.py'), *args]
        result = subprocess.run(tool, stderr=subprocess.PIPE, text=True)  # Its progress still shows.
        if result.returncode != 0:
            reason = ([line for line in result.stderr.splitlines() if line.strip()] or ['?'])[-1]
            reason = reason.removeprefix('Error: ')
            raise dnnlib.UserError(f'dataset_tool.py could not convert {c.data}: {reason}', param='--data')
    return dest


def _lesion_splits(folder, c, files, splits):
    """The same images and splits labelled by lesion type (an image with several types keeps its first)."""
    whole = _convert(c, os.path.join(folder, 'all-lesion.zip'), '--labels', 'lesion', '--multi-lesion', 'first')
    with zipfile.ZipFile(whole) as z:
        meta = json.loads(z.read('dataset.json'))
    if [name for name, _label in meta['labels']] != files:
        raise dnnlib.UserError(f'{c.data}: the lesion-labelled conversion holds other images', param='--data')
    labels = np.array([label for _name, label in meta['labels']])
    paths = {name: _write_subset(whole, meta, [files[i] for i in idx], folder, f'{name}-lesion')
             for name, idx in splits.items()}  # fmt: skip
    counts = np.bincount(labels[splits['gan_train']], minlength=len(meta['class_names'])).tolist()
    return dict(paths=paths, gan_train_counts=counts, class_names=meta['class_names'])


DATA_FLAGS = [('--label-column', 'label_column'), ('--keep-classes', 'keep_classes')]


def _group_split(labels, groups, fraction, seed):
    folds = max(2, int(round(1 / fraction)))
    splitter = sklearn.model_selection.StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    keep, held = next(splitter.split(np.zeros(len(labels)), labels, groups))
    return np.sort(keep), np.sort(held)


def _write_subset(whole, meta, names, folder, split):
    """The named images of `whole` as their own dataset (dataset_tool's writer: same format, renamed into place)."""
    path, kept = os.path.join(folder, f'{split}.zip'), set(names)
    writer = DatasetWriter(path)
    with zipfile.ZipFile(whole) as src:
        for name in names:
            writer.add(name, src.read(name))
    rows = lambda key: [row for row in meta.get(key) or [] if row[0] in kept]  # noqa: E731
    writer.commit(rows('labels'), meta['class_names'], meta.get('label_schema'), rows('groups'))
    return path


# ----------------------------------------------------------------------------
# Classifiers: trained on one set, judged on the test split, compared (DeLong) with the real baseline.


def train_and_judge(folder, c, test, baseline=None, arch='resnet', seed_offset=0, ensemble=1, **training_set):
    """An ensemble of `ensemble` classifiers (seeds seed, seed+1, ...; one = a single classifier) on one set."""
    seed = c.seed + seed_offset
    with user_errors():
        image_set = assemble_training_set(seed=seed, **training_set)
        meta = fit_ensemble(image_set, folder, seeds=range(seed, seed + ensemble), keep_finished=True, arch=arch,
                            epochs=c.clf_epochs, resolution=c.resolution)  # fmt: skip
        pkl = os.path.join(folder, 'classifier.pkl')
        report = classifier_report.evaluate(pkl, test, folder, seed=c.seed)
        result = dict(classifier=pkl, eval=os.path.join(folder, 'eval.json'), num_images=len(image_set),
                      auc=report['auc'], ci_low=report['ci_low'], ci_high=report['ci_high'])  # fmt: skip
        if 'members' in meta:  # How much one classifier's AUC moves with its seed alone.
            result['member_aucs'] = [classifier_report.evaluate(member['path'], test, seed=c.seed)['auc']
                                     for member in meta['members']]  # fmt: skip
        if baseline is not None:
            rows, _curves = classifier_report.compare([baseline, pkl], test, seed=c.seed)
            result.update({key: rows[1][key] for key in ('diff', 'diff_low', 'diff_high', 'p_value')})
    click.echo(f'AUC {result["auc"]:.3f} [{result["ci_low"]:.3f}, {result["ci_high"]:.3f}]')
    return result


# ----------------------------------------------------------------------------
# GAN arms: train.py's config function; a rerun resumes from the arm's last snapshot.


def train_gan(folder, c, arm, data, clinical_pkl, feature_pkl):
    fid = metric_main.metric_spec('fid', feature_net=feature_pkl)  # At every snapshot: the metric-vs-kimg curve.
    opts = dict(
        data=data, cond=True, kimg=c.kimg, tick=c.tick, snap=1, seed=c.seed, gpus=c.gpus, metrics=[fid], **c.gan
    )
    spec = ARMS[arm]
    if spec.get('clinical'):
        opts.update(clinical_loss=clinical_pkl, clinical_weight=CLINICAL_WEIGHT)
    if spec.get('dp'):
        opts.update(dp=True, dp_mode=spec.get('dp_mode', 'full'), gpus=1, cond_sampling='balanced')
        opts.update(dp_epsilon=c.dp_epsilon if opts['dp_mode'] != 'clip-only' else None)
        opts.update({key: None for key in ('target', 'augpipe')})  # ADA reads D's outputs on reals: off under DP.
    snapshots = sorted(glob.glob(os.path.join(folder, '*', 'network-snapshot-*.pkl')))
    if snapshots:
        opts['resume'] = snapshots[-1]
    with user_errors():
        launch_training(setup_training_config(c.cfg, **opts), folder)
    snapshot = sorted(glob.glob(os.path.join(folder, '*', 'network-snapshot-*.pkl')))[-1]
    privacy = load_snapshot(snapshot)['privacy']
    rows = [json.loads(line) for path in sorted(glob.glob(os.path.join(folder, '*', 'metric-fid.jsonl')))
            for line in open(path)]  # fmt: skip
    curve = sorted({_snapshot_kimg(row['snapshot_pkl']): row['results']['fid'] for row in rows}.items())
    curve = [dict(kimg=kimg, fid=fid) for kimg, fid in curve]  # One point per kimg, across resumed runs.
    return dict(snapshot=snapshot, privacy=describe_release(privacy), epsilon=(privacy or {}).get('epsilon'),
                fid_curve=curve)  # fmt: skip


def _snapshot_kimg(name):
    return float(os.path.splitext(name)[0][len('network-snapshot-') :])


# ----------------------------------------------------------------------------
# The last snapshot measured: FID, precision/recall, density/coverage (overall and per class) in the feature
# classifier's space, and the privacy audit (memorisation, membership inference) against the holdout split.


def measure_gan(folder, c, gan, paths, feature_pkl):
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    data = load_snapshot(gan['snapshot'], require=('G_ema', 'D'))
    G, D = data['G_ema'].eval().requires_grad_(False).to(device), data['D'].eval().to(device)
    net, results = load_feature_net(feature_pkl, device), {}
    for name in ('fid', 'pr', 'dc', 'privacy'):
        result = metric_main.calc_metric(name, G, data=paths['gan_train'], feature_net=net, holdout=paths['holdout'],
                                         D=D, outdir=folder, tag='privacy', seed=c.seed, device=device)  # fmt: skip
        results.update(result['results'])
    write_samples(G, os.path.join(folder, 'samples.png'), device)
    files = dict(audit='privacy.md', pairs='privacy-pairs.png', samples='samples.png')
    return dict(results=results, **{key: os.path.join(folder, name) for key, name in files.items()})


def write_samples(G, path, device, per_class=8):
    """A grid, one row per class (seeds 0..per_class-1 in every row)."""
    rows = [generate_images(G, range(per_class), np.eye(G.c_dim, dtype=np.float32)[k], device=device)
            for k in range(G.c_dim)]  # fmt: skip
    save_png(np.concatenate([np.concatenate(list(row), axis=1) for row in rows], axis=0), path)


def synthetic_sets(c, gan, real, num_real, lesion=None):
    """{name: assemble_training_set kwargs}: synthetic-only and real+synthetic at each count ('all' = as many
    synthetic images as real GAN-train images). A lesion-type generator draws its classes in GAN-train's lesion
    shares with normal at one half, and its images are labelled normal/abnormal."""
    count = lambda text: num_real if text == 'all' else int(text)  # noqa: E731
    drawn = dict(synthetic=gan['snapshot'])
    if lesion is not None:
        shares = np.array(lesion['gan_train_counts'][1:], dtype=np.float64)
        drawn.update(prior=[0.5, *(0.5 * shares / shares.sum()).tolist()], schema='abnormal')
    sets = {f'synthetic-{n}': dict(drawn, num=count(n)) for n in _counts(c.synthetic_counts)}
    sets.update({f'mix-{n}': dict(drawn, data=real, num=count(n)) for n in _counts(c.mix_counts)})
    return sets


def _counts(text):
    return [part.strip() for part in str(text).split(',') if part.strip()]


# ----------------------------------------------------------------------------
# The study.


def run_study(c, outdir):
    data = run_stage(outdir, 'data', _data_inputs(c), functools.partial(prepare_data, c=c))
    paths, num_real = data['paths'], sum(data['counts']['gan_train'])
    judge = functools.partial(train_and_judge, c=c, test=paths['test'], ensemble=c.clf_ensemble)
    clf_inputs = dict(data=data, seed=c.seed, epochs=c.clf_epochs, resolution=c.resolution)
    judged = dict(clf_inputs, ensemble=c.clf_ensemble)
    baseline = run_stage(outdir, 'baseline', judged, functools.partial(judge, data=paths['gan_train']))
    features = run_stage(outdir, 'features', dict(clf_inputs, arch='vgg'),  # Not the clinical loss's classifier.
                         functools.partial(judge, data=paths['gan_train'], arch='vgg', seed_offset=1,
                                           ensemble=1))  # fmt: skip
    arms = {}
    for arm in c.arms:
        lesion = data.get('lesion') if ARMS[arm].get('lesion') else None
        if ARMS[arm].get('lesion') and lesion is None:
            click.echo(f'\n=== gan-{arm}: skipped, {c.data} has no lesion labels ===')
            continue
        arm_paths = paths if lesion is None else lesion['paths']
        gan_inputs = dict(clf_inputs, arm=ARMS[arm], cfg=c.cfg, kimg=c.kimg, gan=c.gan)
        if ARMS[arm].get('dp'):
            gan_inputs['dp_epsilon'] = c.dp_epsilon
        if ARMS[arm].get('clinical'):
            gan_inputs['clinical_ensemble'] = c.clf_ensemble  # The baseline is the clinical loss's classifier.
        train = functools.partial(train_gan, c=c, arm=arm, data=arm_paths['gan_train'],
                                  clinical_pkl=baseline['classifier'], feature_pkl=features['classifier'])  # fmt: skip
        gan = run_stage(outdir, f'gan-{arm}', gan_inputs, train)
        measure = functools.partial(measure_gan, c=c, gan=gan, paths=arm_paths, feature_pkl=features['classifier'])
        arms[arm] = dict(gan=gan, metrics=run_stage(outdir, f'metrics-{arm}', dict(gan_inputs, gan=gan), measure))
        arms[arm]['classifiers'] = {}
        for name, kwargs in synthetic_sets(c, gan, paths['gan_train'], num_real, lesion).items():
            work = functools.partial(judge, baseline=baseline['classifier'], **kwargs)
            inputs = dict(judged, gan=gan, set=kwargs)
            arms[arm]['classifiers'][name] = run_stage(outdir, f'clf-{arm}-{name}', inputs, work)
    report = dict(config=c, data=data, baseline=baseline, features=features, arms=arms)
    write_report(outdir, report)
    return report


def _data_inputs(c):
    return dict(data=c.data, resolution=c.resolution, seed=c.seed, test=c.test_fraction, holdout=c.holdout_fraction,
                **{key: c.get(key) for _flag, key in DATA_FLAGS})  # fmt: skip


# ----------------------------------------------------------------------------


@click.command(context_settings=dict(help_option_names=['-h', '--help']))
@click.option('--preset', type=click.Choice(list(PRESETS)), default='demo', show_default=True, help='Study size')
@click.option('--outdir', required=True, metavar='DIR', help='Where stages, report.md and figures go')
@click.option('--data', metavar='SPEC', help='phantom:N, vindr:ROOT, a labelled folder or a dataset zip')
@click.option('--label-column', metavar='NAME', help='labels.csv column of a folder source')
@click.option('--keep-classes', metavar='A,B', help='Only these two classes of the label column')
@click.option('--resolution', type=click.IntRange(min=4), metavar='INT', help='Image size')
@click.option('--kimg', type=click.FloatRange(min=0, min_open=True), metavar='KIMG', help='GAN training length')
@click.option('--arms', metavar='LIST', help=f'GAN arms to run, of {",".join(ARMS)}')
@click.option('--clf-epochs', type=click.IntRange(min=1), metavar='INT', help='Classifier training epochs')
@click.option('--clf-ensemble', type=click.IntRange(min=1), metavar='INT',
              help='Classifiers per training set (seeds), judged as one: their mean probability')  # fmt: skip
@click.option('--dp-epsilon', type=click.FloatRange(min=0, min_open=True), metavar='FLOAT', help='DP arm budget')
@click.option('--gpus', type=click.IntRange(min=1), metavar='INT', help='GPUs per GAN run [default: all visible]')
@click.option('--seed', type=click.IntRange(min=0), default=0, show_default=True, metavar='INT', help='Random seed')
def main(preset, outdir, **user):
    """The synthetic-learning study: a real-data baseline, GAN arms, synthetic-only and mixed classifiers judged on
    a real test split, fidelity metrics and a privacy audit per arm, in OUTDIR/report.md.

    \b
    Presets (the options given here replace the preset's entries):
      demo   the embedded phantom at 32 px on a CPU: conditional, SpineGAN, lesion-type and DP arms, 8 kimg
             each of a small GAN (half cfg=cpu's channels, batch 8, no ADA): about 12 minutes on 2 cores
      cpu    the phantom at 64 px, every arm, 20 kimg each of the demo's small GAN (64 channels in every
             block), in bfloat16 where the CPU has it (train.py's default): hours on 2 cores (2 h for the
             five arms of the Kermany subtype task with single classifiers; ensembles of 3 triple the
             classifiers' 7-9 min per arm; the phantom has six arms and more images per classifier)
      paper  256 px on every visible GPU with the study's settings: batch 16, gamma 0.8192, ADA target 0.6,
             augpipe bgcfnc, clinical weight 0.1
    Classifiers are ensembles of 3 (cpu) or 5 (paper) seeds; the demo trains single classifiers.
    OUTDIR/stages/ holds every stage's files; a rerun skips finished stages and resumes a killed GAN run.
    """
    torch.set_num_threads(min(torch.get_num_threads(), os.cpu_count() or 1))
    with user_errors():
        c = study_config(preset, **user)
    os.makedirs(outdir, exist_ok=True)
    with user_errors():
        report = run_study(c, outdir)
    click.echo(f'\nWrote {os.path.join(outdir, "report.md")} ({len(report["arms"])} arms)')


if __name__ == '__main__':
    main()

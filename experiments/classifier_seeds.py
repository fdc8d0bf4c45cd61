"""How much of a study's synthetic-vs-real gap is the classifier's own seed? For a finished study.py OUTDIR, the
real baseline and one arm's synthetic-only classifier (its "all" set) are trained again with several seeds, with the
study's data, epochs and resolution. A seed sets the initial weights, the validation split and which synthetic images
are drawn; the study's own --seed repeats its two classifiers. Each seed's two test AUCs and their paired difference
(DeLong) are printed, then the means. Finished classifiers in OUT are skipped on a rerun. Writes OUT/results-ARM.json.

Example (about a minute per classifier at 64 px on 2 cores):
    python experiments/classifier_seeds.py --study runs/kermany-subtype --arm conditional
"""

import json
import os
import sys

import click
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import dnnlib  # noqa: E402
from clinical import classifier_report  # noqa: E402
from clinical.classifier_data import assemble_training_set  # noqa: E402
from clinical.classifier_training import fit_and_save  # noqa: E402


def stage_inputs(study, name):
    folder = os.path.join(study, 'stages', name)
    if not os.path.exists(os.path.join(folder, 'done.json')):
        raise click.ClickException(f'{folder}: not a finished study stage')
    return json.load(open(os.path.join(folder, 'inputs.json')))['inputs']


def train(folder, training_set, inputs, seed):
    pkl = os.path.join(folder, 'classifier.pkl')
    if not os.path.exists(pkl):
        image_set = assemble_training_set(seed=seed, **training_set)
        fit_and_save(image_set, folder, seed=seed, epochs=inputs['epochs'], resolution=inputs['resolution'])
    return pkl


@click.command()
@click.option('--study', required=True, help='A finished study.py OUTDIR')
@click.option('--arm', default='conditional', show_default=True, help='Arm whose synthetic-only classifier to retrain')
@click.option('--seeds', default='0,1,2,3,4', show_default=True, help='Classifier seeds')
@click.option('--out', help='Output folder  [default: STUDY/classifier-seeds]')
def main(study, arm, seeds, out):
    out = out or os.path.join(study, 'classifier-seeds')
    baseline = stage_inputs(study, 'baseline')
    synthetic = stage_inputs(study, f'clf-{arm}-synthetic-all')
    paths = baseline['data']['paths']
    rows = []
    for seed in [int(s) for s in seeds.split(',')]:
        real = train(os.path.join(out, f'real-{seed}'), dict(data=paths['gan_train']), baseline, seed)
        fake = train(os.path.join(out, f'{arm}-{seed}'), synthetic['set'], synthetic, seed)
        (ref, row), _curves = classifier_report.compare([real, fake], paths['test'], seed=baseline['seed'])
        rows.append(dict(seed=seed, real=ref['auc'], synthetic=row['auc'], diff=row['diff'],
                         diff_low=row['diff_low'], diff_high=row['diff_high']))  # fmt: skip
        ci = f'{row["diff_low"]:+.3f} to {row["diff_high"]:+.3f}'
        print(f'seed {seed}: real {ref["auc"]:.3f}, {arm} synthetic only {row["auc"]:.3f}, '
              f'difference {row["diff"]:+.3f} ({ci})', flush=True)  # fmt: skip
    means = {key: float(np.mean([row[key] for row in rows])) for key in ('real', 'synthetic', 'diff')}
    print(f'mean over {len(rows)} seeds: real {means["real"]:.3f}, synthetic only {means["synthetic"]:.3f}, '
          f'difference {means["diff"]:+.3f}')  # fmt: skip
    with dnnlib.util.atomic_write(os.path.join(out, f'results-{arm}.json'), 'w') as f:
        json.dump(dict(study=study, arm=arm, seeds=rows, means=means), f, indent=2)


if __name__ == '__main__':
    main()

"""Which small-GAN recipe makes useful synthetic data soonest on a CPU? One conditional GAN per recipe on the phantom
at 32 px (train.py options on top of --cfg=cpu), judged at chosen snapshots by synthetic learning: the test AUC on
real phantoms of another seed of a classifier trained only on that snapshot's images. Finished runs and judged
snapshots are skipped on a rerun. Writes OUT/results.md and OUT/results.json.

Example (the README's table: 8 kimg per recipe, about 1.5 hours on 2 cores):
    python experiments/short_run_recipe.py --out runs/recipes --kimg 8 --judge 4,8 --threads 1
"""

import glob
import json
import os
import sys

import click
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import dnnlib  # noqa: E402
from clinical.classifier import load_classifier  # noqa: E402
from clinical.classifier_data import assemble_training_set, load_image_set  # noqa: E402
from clinical.classifier_training import fit_and_save, predict, score_auc  # noqa: E402
from experiments.clinical_loss import make_data  # noqa: E402
from training.config import setup_training_config  # noqa: E402
from training.launch import launch_training  # noqa: E402

LEAN = dict(aug='noaug', pl_weight=0, style_mixing=0)
SMALL = dict(LEAN, channel_base=2048, channel_max=64)
RECIPES = {
    'cfg-cpu': dict(),
    'lean': LEAN,  # No ADA, path-length regularisation or style mixing.
    'small-b8': dict(SMALL, batch=8),  # study.py's demo recipe.
    'small-b16-lr5': dict(SMALL, batch=16, lr=0.005),
    'small-b4': dict(SMALL, batch=4),
    'small-b8-gamma1': dict(SMALL, batch=8, gamma=1),
    'small-b8-gamma10': dict(SMALL, batch=8, gamma=10),
}


def train(out, name, data, kimg):
    folder = os.path.join(out, name)
    if not os.path.exists(os.path.join(folder, 'done')):
        # In fp32 (cpu_bf16=False), as the README's table was measured.
        opts = dict(RECIPES[name], data=data, cond=True, kimg=kimg, tick=1, snap=1, seed=0, workers=1, cpu_bf16=False)
        snapshots = sorted(glob.glob(os.path.join(folder, '*', 'network-snapshot-*.pkl')))
        launch_training(setup_training_config('cpu', **opts, resume=snapshots[-1] if snapshots else None), folder)
        open(os.path.join(folder, 'done'), 'w').close()
    return folder


def read_results(path):
    return json.load(open(path)) if os.path.exists(path) else {}


def synthetic_auc(snapshot, test_set, num):
    synthetic = assemble_training_set(synthetic=snapshot, num=num, seed=2)
    outdir = snapshot[: -len('.pkl')] + '-synthetic-clf'
    fit_and_save(synthetic, outdir, seed=0, epochs=10, progress=False)
    net, _meta = load_classifier(os.path.join(outdir, 'classifier.pkl'))
    return score_auc(test_set.labels, predict(net, test_set.images), net.kind)


@click.command()
@click.option('--out', required=True, help='Output folder (reruns continue)')
@click.option('--recipes', default=','.join(RECIPES), show_default=True, help='Recipes to run')
@click.option('--kimg', type=float, default=8, show_default=True, help='GAN training length per recipe')
@click.option('--judge', default='4,8', show_default=True, help='Snapshots (kimg) to judge')
@click.option('--threads', type=int, default=1, show_default=True, help='torch threads')
def main(out, recipes, kimg, judge, threads):
    torch.set_num_threads(threads)
    os.makedirs(out, exist_ok=True)
    data = make_data(out, 32, 1400, 400)
    test_set = load_image_set(data['test'])
    results_path = os.path.join(out, 'results.json')
    results = read_results(results_path)
    for name in recipes.split(','):
        folder = train(out, name, data['train'], kimg)
        for k in judge.split(','):
            key = f'{name} @ {int(k)} kimg'
            if key not in results:
                snapshot = glob.glob(os.path.join(folder, '*', f'network-snapshot-{int(k):06d}.pkl'))[-1]
                auc = round(synthetic_auc(snapshot, test_set, 1400), 4)
                results = {**read_results(results_path), key: auc}  # Another recipe may run beside this one.
                with dnnlib.util.atomic_write(results_path, 'w') as f:
                    json.dump(results, f, indent=2)
            print(f'{key}: synthetic-only test AUC {results[key]:.3f}')
    lines = ['| recipe | options | kimg | synthetic-only test AUC |', '|---|---|---|---|']
    for key, auc in results.items():
        name, kimg_text = key.split(' @ ')
        lines.append(f'| {name} | {json.dumps(RECIPES[name])} | {kimg_text.split()[0]} | {auc:.3f} |')
    with dnnlib.util.atomic_write(os.path.join(out, 'results.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()

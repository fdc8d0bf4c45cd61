"""What does differential privacy cost? Conditional GANs on the phantom from the same seed and kimg: non-private,
full DP-SGD at epsilon 10 and 1, clip-only (sigma = 0) and noise-only (the epsilon-10 arm's noise, no clipping).

Per arm (final snapshot): a held-out judge classifier's accuracy on generated images per requested class, the
test AUC on real phantoms (another seed) of a classifier trained only on synthetic images, and the epsilon the
snapshot states. Stages are skipped when their output exists, so a rerun continues. Writes OUT/results.{json,md}.

Example (about an hour on 2 CPU cores):
    python experiments/dp_ablation.py --out runs/dp-ablation --kimg 6 --res 32
"""

import glob
import json
import os
import subprocess
import sys

import click
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import dnnlib  # noqa: E402
from clinical.classifier import load_classifier  # noqa: E402
from clinical.classifier_data import load_image_set  # noqa: E402
from clinical.classifier_training import predict, score_auc  # noqa: E402
from clinical.dp import describe_release  # noqa: E402
from experiments.clinical_loss import judge_snapshot, make_data, train_classifier  # noqa: E402
from training.checkpoint import load_snapshot  # noqa: E402
from training.config import setup_training_config  # noqa: E402
from training.launch import launch_training  # noqa: E402

ARMS = {
    'non-private': dict(cond_sampling='balanced'),
    'dp-eps10': dict(dp=True, dp_epsilon=10),
    'dp-eps1': dict(dp=True, dp_epsilon=1),
    'clip-only': dict(dp=True, dp_mode='clip-only'),
    'noise-only': dict(dp=True, dp_mode='noise-only', dp_epsilon=10),  # sigma of the epsilon-10 arm.
}


def make_judge_data(out, res, count):
    path = os.path.join(out, 'phantom-judge.zip')  # A third seed: the judge shares no image with GAN or test.
    if not os.path.exists(path):
        args = ['--source', f'phantom:{count}', '--seed', '3', '--resolution', str(res), '--dest', path]
        subprocess.run([sys.executable, os.path.join(REPO, 'dataset_tool.py'), *args], check=True)
    return path


def train_arm(out, arm, data, kimg, seed):
    arm_dir = os.path.join(out, arm)
    if not os.path.exists(os.path.join(arm_dir, 'done')):
        # In fp32 (cpu_bf16=False), as the README's table was measured.
        opts = dict(data=data, cond=True, kimg=kimg, tick=kimg / 2, snap=1, seed=seed, workers=1, cpu_bf16=False)
        opts.update(ARMS[arm])
        launch_training(setup_training_config('cpu', **opts), arm_dir)
        open(os.path.join(arm_dir, 'done'), 'w').close()
    return sorted(glob.glob(os.path.join(arm_dir, '*', 'network-snapshot-*.pkl')))[-1]


def write_report(out, results, meta):
    lines = [f'Judge: {meta["judge"]} (test AUC {meta["judge_auc"]:.3f}); {meta["kimg"]:g} kimg per arm, seed 0', '',
             '| arm | privacy | judge acc. normal | judge acc. abnormal | synthetic-only AUC (real test) |',
             '|---|---|---|---|---|']  # fmt: skip
    for arm, row in results.items():
        acc = row['judge_accuracy']
        lines.append(f'| {arm} | {row["privacy"]} | {acc["normal"]:.3f} | {acc["abnormal"]:.3f} | '
                     f'{row["synthetic_only_auc"]:.3f} |')  # fmt: skip
    with dnnlib.util.atomic_write(os.path.join(out, 'results.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    with dnnlib.util.atomic_write(os.path.join(out, 'results.json'), 'w') as f:
        json.dump(dict(meta=meta, arms=results), f, indent=2)
    print('\n'.join(lines))


@click.command()
@click.option('--out', required=True, help='Output folder (reruns continue)')
@click.option('--kimg', type=float, default=6, show_default=True, help='GAN training length per arm')
@click.option('--res', type=int, default=32, show_default=True, help='Resolution')
@click.option('--num-train', type=int, default=2000, show_default=True, help='Real training phantoms')
@click.option('--num-test', type=int, default=500, show_default=True, help='Real test phantoms (other seed)')
@click.option('--num-gen', type=int, default=600, show_default=True, help='Generated images per arm')
@click.option('--arms', default=','.join(ARMS), show_default=True, help='Comma list of arms to run')
def main(out, kimg, res, num_train, num_test, num_gen, arms):
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    data = make_data(out, res, num_train, num_test)
    judge_path = train_classifier(out, 'clf-judge-vgg', make_judge_data(out, res, num_train), 'vgg', 1, 20)
    judge, _ = load_classifier(judge_path)
    test_set = load_image_set(data['test'])
    judge_auc = score_auc(test_set.labels, predict(judge, test_set.images), judge.kind)
    results_path = os.path.join(out, 'results.json')
    results = json.load(open(results_path))['arms'] if os.path.exists(results_path) else {}
    meta = dict(judge=judge_path, judge_auc=judge_auc, kimg=kimg, res=res)
    for arm in arms.split(','):
        snapshot = train_arm(out, arm, data['train'], kimg, seed=0)
        if arm not in results:
            privacy = describe_release(load_snapshot(snapshot)['privacy'])
            results[arm] = dict(privacy=privacy, **judge_snapshot(snapshot, judge, test_set, num_gen, seed=2))
            write_report(out, results, meta)


if __name__ == '__main__':
    main()

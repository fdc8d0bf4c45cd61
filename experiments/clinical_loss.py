"""Does the clinical loss help? Two conditional GANs on the phantom from the same seed and kimg, with and
without `--clinical-loss`, judged per snapshot by a DIFFERENT classifier (other seed and architecture than the
one inside the loss: G can learn to fool the classifier it trains against) and by synthetic learning.

Per snapshot and arm: the judge's accuracy on generated images per requested class, and the test AUC on real
phantoms (another seed) of a classifier trained only on synthetic images. Every stage is skipped when its
output exists, so a rerun continues. Writes OUT/results.json, OUT/results.md and OUT/results.png.

Example (about an hour on 2 CPU cores):
    python experiments/clinical_loss.py --out runs/clinical-exp --kimg 12 --res 32
"""

import glob
import json
import os
import subprocess
import sys

import click
import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import dnnlib  # noqa: E402
from clinical.classifier import load_classifier  # noqa: E402
from clinical.classifier_data import ImageSet, assemble_training_set, load_image_set  # noqa: E402
from clinical.classifier_training import fit_and_save, predict, score_auc  # noqa: E402
from clinical.synthetic import load_network, sample_synthetic  # noqa: E402
from training.config import setup_training_config  # noqa: E402
from training.launch import launch_training  # noqa: E402

# ----------------------------------------------------------------------------
# Stages: data, the two classifiers, the two GAN arms.


def make_data(out, res, num_train, num_test):
    paths = dict(train=os.path.join(out, 'phantom-train.zip'), test=os.path.join(out, 'phantom-test.zip'))
    for split, seed, count in (('train', 0, num_train), ('test', 1, num_test)):
        if not os.path.exists(paths[split]):
            tool = os.path.join(REPO, 'dataset_tool.py')
            args = [
                '--source',
                f'phantom:{count}',
                '--seed',
                str(seed),
                '--resolution',
                str(res),
                '--dest',
                paths[split],
            ]
            subprocess.run([sys.executable, tool, *args], check=True)
    return paths


def train_classifier(out, name, data, arch, seed, epochs):
    path = os.path.join(out, name, 'classifier.pkl')
    if not os.path.exists(path):
        image_set = assemble_training_set(data=data, seed=seed)
        fit_and_save(image_set, os.path.dirname(path), seed=seed, arch=arch, epochs=epochs, progress=False)
    return path


def train_gan(out, arm, data, kimg, tick, clinical_pkl, seed):
    arm_dir = os.path.join(out, arm)
    if glob.glob(os.path.join(arm_dir, '*', 'network-snapshot-*.pkl')) and os.path.exists(
        os.path.join(arm_dir, 'done')
    ):
        return arm_dir
    # In fp32 (cpu_bf16=False), as the README's numbers were measured.
    opts = dict(data=data, cond=True, kimg=kimg, tick=tick, snap=1, seed=seed, workers=1, cpu_bf16=False)
    if clinical_pkl is not None:
        opts.update(clinical_loss=clinical_pkl, clinical_weight=0.1)
    launch_training(setup_training_config('cpu', **opts), arm_dir)
    open(os.path.join(arm_dir, 'done'), 'w').close()
    return arm_dir


# ----------------------------------------------------------------------------
# Judging one snapshot: judge accuracy per requested class, synthetic-only classifier AUC on real test data.


def judge_snapshot(snapshot, judge, test_set, num, seed):
    G, class_names = load_network(snapshot, torch.device('cpu'), verbose=False)
    images, labels = sample_synthetic(G, num, seed=seed)
    probs = predict(judge, images)
    requested = labels.argmax(1)
    predicted = (probs > 0.5).astype(int) if judge.kind == 'binary' else probs.argmax(1)
    accuracy = {name: float((predicted[requested == k] == k).mean()) for k, name in enumerate(class_names)}
    synthetic = ImageSet(images, labels, np.array([f's{i}' for i in range(num)]), list(class_names), True, snapshot)
    outdir = os.path.join(os.path.dirname(snapshot), 'synthetic-clf-' + os.path.basename(snapshot)[:-4])
    meta = fit_and_save(synthetic, outdir, seed=seed, epochs=10, progress=False)
    net, _meta = load_classifier(os.path.join(outdir, 'classifier.pkl'))
    auc = score_auc(test_set.labels, predict(net, test_set.images), net.kind)
    return dict(judge_accuracy=accuracy, synthetic_only_auc=auc, synthetic_val_auc=meta['val_auc'])


def judge_arm(arm_dir, judge, test_set, num, seed):
    results_path = os.path.join(arm_dir, 'judged.json')
    results = json.load(open(results_path)) if os.path.exists(results_path) else {}
    for snapshot in sorted(glob.glob(os.path.join(arm_dir, '*', 'network-snapshot-*.pkl'))):
        key = os.path.basename(snapshot)
        if key not in results:
            kimg = float(key[len('network-snapshot-') : -4])
            results[key] = dict(kimg=kimg, **judge_snapshot(snapshot, judge, test_set, num, seed))
            with dnnlib.util.atomic_write(results_path, 'w') as f:
                json.dump(results, f, indent=2)
            print(f'{arm_dir} {key}: {results[key]}')
    return [results[k] for k in sorted(results, key=lambda k: results[k]['kimg'])]


# ----------------------------------------------------------------------------
# Report: a markdown table and one figure.


def write_report(out, arms, meta):
    lines = [f'Judge: {meta["judge"]}; loss classifier: {meta["loss_classifier"]}', '',
             '| arm | kimg | judge acc. normal | judge acc. abnormal | synthetic-only AUC (real test) |',
             '|---|---|---|---|---|']  # fmt: skip
    for arm, rows in arms.items():
        for row in rows:
            acc = row['judge_accuracy']
            lines.append(f'| {arm} | {row["kimg"]:g} | {acc["normal"]:.3f} | {acc["abnormal"]:.3f} | '
                         f'{row["synthetic_only_auc"]:.3f} |')  # fmt: skip
    with dnnlib.util.atomic_write(os.path.join(out, 'results.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    with dnnlib.util.atomic_write(os.path.join(out, 'results.json'), 'w') as f:
        json.dump(dict(meta=meta, arms=arms), f, indent=2)
    import matplotlib.figure

    fig = matplotlib.figure.Figure(figsize=(9, 3.5), dpi=100)
    ax1, ax2 = fig.subplots(1, 2)
    for arm, rows in arms.items():
        kimg = [r['kimg'] for r in rows]
        ax1.plot(kimg, [np.mean(list(r['judge_accuracy'].values())) for r in rows], marker='o', label=arm)
        ax2.plot(kimg, [r['synthetic_only_auc'] for r in rows], marker='o', label=arm)
    ax1.set(xlabel='kimg', ylabel='judge accuracy (mean over classes)', ylim=(0, 1))
    ax2.set(xlabel='kimg', ylabel='synthetic-only AUC on real test', ylim=(0.4, 1))
    ax1.legend()
    fig.tight_layout()
    with dnnlib.util.atomic_write(os.path.join(out, 'results.png')) as f:
        fig.savefig(f, format='png')
    print('\n'.join(lines))


# ----------------------------------------------------------------------------


@click.command()
@click.option('--out', required=True, help='Output folder (reruns continue)')
@click.option('--kimg', type=float, default=12, show_default=True, help='GAN training length per arm')
@click.option('--tick', type=float, default=2, show_default=True, help='kimg between snapshots')
@click.option('--res', type=int, default=32, show_default=True, help='Resolution')
@click.option('--num-train', type=int, default=1000, show_default=True, help='Real training phantoms')
@click.option('--num-test', type=int, default=500, show_default=True, help='Real test phantoms (other seed)')
@click.option('--num-gen', type=int, default=600, show_default=True, help='Generated images per snapshot')
def main(out, kimg, tick, res, num_train, num_test, num_gen):
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    data = make_data(out, res, num_train, num_test)
    loss_clf = train_classifier(out, 'clf-loss-resnet-seed0', data['train'], 'resnet', 0, 20)
    judge_path = train_classifier(out, 'clf-judge-vgg-seed1', data['train'], 'vgg', 1, 20)
    judge, _ = load_classifier(judge_path)
    test_set = load_image_set(data['test'])
    print(f'judge test AUC {score_auc(test_set.labels, predict(judge, test_set.images), judge.kind):.4f}')
    arms = {}
    for arm, clinical in (('baseline', None), ('clinical', loss_clf)):
        arm_dir = train_gan(out, arm, data['train'], kimg, tick, clinical, seed=0)
        arms[arm] = judge_arm(arm_dir, judge, test_set, num_gen, seed=2)
    write_report(out, arms, dict(judge=judge_path, loss_classifier=loss_clf, kimg=kimg, res=res))


if __name__ == '__main__':
    main()

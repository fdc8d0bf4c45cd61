"""The radiograph classifier on real films: ../shared/data/kermany-cxr-256 (pediatric chest X-rays), converted at
64 px with dataset_tool.py (patient_id kept as the group), split by patient into train+validation and a held-out
test part, then normal vs pneumonia and bacterial vs viral pneumonia, each with a bootstrap 95% CI.

Nothing here is tuned to this set: the classifier uses classify.py's defaults. Writes OUT/results.json.

Example (a few minutes on 2 CPU cores):
    python experiments/kermany_classifier.py --out runs/kermany
"""

import json
import os
import subprocess
import sys

import click
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import dnnlib  # noqa: E402
from clinical import evaluation  # noqa: E402
from clinical.classifier import load_classifier  # noqa: E402
from clinical.classifier_data import load_image_set, select_classes, split_validation  # noqa: E402
from clinical.classifier_training import fit_and_save, predict  # noqa: E402

# ----------------------------------------------------------------------------


def convert(source, dest, resolution, label_column):
    if not os.path.exists(dest):
        args = ['--source', source, '--dest', dest, '--resolution', str(resolution), '--label-column', label_column]
        subprocess.run([sys.executable, os.path.join(REPO, 'dataset_tool.py'), *args], check=True)
    return load_image_set(dest)


def run_task(name, image_set, train_idx, test_idx, out, seed, epochs):
    outdir = os.path.join(out, name)
    if not os.path.exists(os.path.join(outdir, 'classifier.pkl')):
        fit_and_save(image_set.subset(train_idx), outdir, seed=seed, epochs=epochs)
    net, meta = load_classifier(os.path.join(outdir, 'classifier.pkl'))
    test = image_set.subset(test_idx)
    result = evaluation.auc_with_ci(test.labels[:, 1], predict(net, test.images), seed=seed)
    result.update(val_auc=meta['val_auc'], train_images=len(train_idx), test_patients=len(set(test.groups)))
    print(f'{name}: test AUC {result["auc"]:.4f} [{result["ci_low"]:.4f}, {result["ci_high"]:.4f}] on '
          f'{result["n"]} films of {result["test_patients"]} held-out patients')  # fmt: skip
    return result


@click.command()
@click.option('--out', required=True, help='Output folder')
@click.option('--source', default=os.path.join(REPO, '..', 'shared', 'data', 'kermany-cxr-256'), show_default=True)
@click.option('--resolution', type=int, default=64, show_default=True)
@click.option('--epochs', type=int, default=20, show_default=True)
@click.option('--seed', type=int, default=0, show_default=True)
def main(out, source, resolution, epochs, seed):
    os.makedirs(out, exist_ok=True)
    results = {}
    films = convert(source, os.path.join(out, f'kermany-{resolution}.zip'), resolution, 'label')
    assert len(set(films.groups)) < len(films), 'patient_id did not come through dataset_tool'
    train_idx, test_idx = split_validation(films, 0.2, seed)  # Patient-disjoint, stratified.
    results['normal_vs_pneumonia'] = run_task('normal-vs-pneumonia', films, train_idx, test_idx, out, seed, epochs)
    subtypes = convert(source, os.path.join(out, f'kermany-subtype-{resolution}.zip'), resolution, 'subtype')
    assert np.array_equal(subtypes.groups, films.groups)  # Same films, same order: the same patient split.
    keep = np.flatnonzero(subtypes.labels[:, subtypes.class_names.index('normal')] < 0.5)
    pneumonia = select_classes(subtypes, ['bacteria', 'virus'])
    train_p = np.searchsorted(keep, np.intersect1d(train_idx, keep))
    test_p = np.searchsorted(keep, np.intersect1d(test_idx, keep))
    results['bacteria_vs_virus'] = run_task('bacteria-vs-virus', pneumonia, train_p, test_p, out, seed, epochs)
    with dnnlib.util.atomic_write(os.path.join(out, 'results.json'), 'w') as f:
        json.dump(results, f, indent=2)


if __name__ == '__main__':
    main()

"""study.py at toy size: every stage runs once and the report links real files; a rerun runs no stage; changed
inputs redo what depends on them and nothing else; no patient is in two splits; bad options are one line."""

import json
import os
import signal
import subprocess
import sys
import time
import zipfile

import PIL.Image
import pytest
from click.testing import CliRunner

import study
from clinical.classifier import load_classifier

TOY = [
    '--data',
    'phantom:120',
    '--resolution',
    '16',
    '--kimg',
    '0.016',
    '--arms',
    'conditional,lesion,dp',
    '--clf-epochs',
    '1',
]


def _run(outdir, *extra):
    result = CliRunner().invoke(study.main, ['--outdir', str(outdir), *TOY, *extra], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope='module')
def toy_study(tmp_path_factory):
    outdir = tmp_path_factory.mktemp('study')
    return outdir, _run(outdir)


def _stages_run(output):
    return [line.strip('= ') for line in output.splitlines() if line.startswith('=== ')]


def test_every_stage_runs_once_and_the_report_links_real_files(toy_study):
    outdir, output = toy_study
    assert _stages_run(output) == ['data', 'baseline', 'features', 'gan-conditional', 'metrics-conditional',
                                   'clf-conditional-synthetic-all', 'clf-conditional-mix-500', 'gan-lesion',
                                   'metrics-lesion', 'clf-lesion-synthetic-all', 'clf-lesion-mix-500', 'gan-dp',
                                   'metrics-dp', 'clf-dp-synthetic-all', 'clf-dp-mix-500']  # fmt: skip
    report = json.loads((outdir / 'report.json').read_text())
    dp_arm = report['arms']['dp']
    assert 0 < dp_arm['gan']['epsilon'] <= 10 and report['arms']['conditional']['gan']['privacy'] == 'no DP'
    mix = report['arms']['conditional']['classifiers']['mix-500']
    assert mix['num_images'] == sum(report['data']['counts']['gan_train']) + 500
    assert 0 <= mix['auc'] <= 1 and mix['ci_low'] <= mix['auc'] <= mix['ci_high'] and 0 <= mix['p_value'] <= 1
    assert {'fid', 'precision', 'coverage', 'auc_blackbox/features'} <= set(dp_arm['metrics']['results'])
    markdown = (outdir / 'report.md').read_text()
    links = [part.split(')')[0] for part in markdown.split('](')[1:]]
    assert links and all((outdir / link).exists() for link in links), [l for l in links if not (outdir / l).exists()]
    assert 'epsilon 10.00' in markdown or 'epsilon 9.9' in markdown
    for figure in ('auc.png', 'roc.png', 'fid_kimg.png', 'epsilon_auc.png'):
        assert (outdir / figure).stat().st_size > 1000


def test_the_lesion_arm_learns_lesion_types_and_its_classifiers_normal_vs_abnormal(toy_study):
    outdir, _output = toy_study
    data = outdir / 'stages' / 'data'
    for split in ('gan_train', 'test', 'holdout'):
        with zipfile.ZipFile(data / f'{split}.zip') as plain, zipfile.ZipFile(data / f'{split}-lesion.zip') as lesion:
            plain_meta, lesion_meta = (json.loads(z.read('dataset.json')) for z in (plain, lesion))
        assert [name for name, _ in plain_meta['labels']] == [name for name, _ in lesion_meta['labels']]
        assert all((lesion == 0) == (normal == 0) for (_, normal), (_, lesion) in  # No finding = normal.
                   zip(plain_meta['labels'], lesion_meta['labels']))  # fmt: skip
        assert len(lesion_meta['class_names']) == 8
    report = json.loads((outdir / 'report.json').read_text())
    samples = PIL.Image.open(report['arms']['lesion']['metrics']['samples'])
    assert samples.size == (8 * 16, 8 * 16)  # One row per lesion class.
    net, _meta = load_classifier(report['arms']['lesion']['classifiers']['synthetic-all']['classifier'])
    assert list(net.class_names) == ['normal', 'abnormal']


def test_no_patient_is_in_two_splits(toy_study):
    outdir, _output = toy_study
    groups = {}
    for split in ('gan_train', 'test', 'holdout'):
        with zipfile.ZipFile(outdir / 'stages' / 'data' / f'{split}.zip') as z:
            groups[split] = {group for _name, group in json.loads(z.read('dataset.json'))['groups']}
    assert sum(len(g) for g in groups.values()) == 120 == len(set.union(*groups.values()))
    assert len(groups['test']) == 24 and len(groups['holdout']) == 12


def test_a_rerun_runs_no_stage_and_changed_inputs_redo_their_dependants(toy_study):
    outdir, _output = toy_study
    before = (outdir / 'report.json').read_text()
    assert _stages_run(_run(outdir)) == [] and (outdir / 'report.json').read_text() == before
    rerun = _stages_run(_run(outdir, '--dp-epsilon', '5'))
    assert rerun == ['gan-dp', 'metrics-dp', 'clf-dp-synthetic-all', 'clf-dp-mix-500']
    assert 0 < json.loads((outdir / 'report.json').read_text())['arms']['dp']['gan']['epsilon'] <= 5


def test_classifier_ensembles_redo_only_the_classifiers(toy_study):
    outdir, _output = toy_study  # Runs after the tests above: it leaves a one-arm report behind.
    rerun = _stages_run(_run(outdir, '--arms', 'conditional', '--clf-ensemble', '2'))
    assert rerun == ['baseline', 'clf-conditional-synthetic-all', 'clf-conditional-mix-500']
    report = json.loads((outdir / 'report.json').read_text())
    for row in (report['baseline'], report['arms']['conditional']['classifiers']['mix-500']):
        net, meta = load_classifier(row['classifier'])
        assert len(net.members) == 2 and [m['seed'] for m in meta['members']] == [0, 1]
        assert len(row['member_aucs']) == 2 and all(0 <= auc <= 1 for auc in row['member_aucs'])
    markdown = (outdir / 'report.md').read_text()
    assert 'an ensemble of 2' in markdown and '| test AUC (95% CI) | members | minus real' in markdown


def _numbers(tree, path=''):
    """{key path: number} of every number in a report (paths and run-folder names left out)."""
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _numbers(value, f'{path}/{key}').items()}
    if isinstance(tree, list):
        return {k: v for i, value in enumerate(tree) for k, v in _numbers(value, f'{path}/{i}').items()}
    return {path: tree} if isinstance(tree, (int, float)) and not isinstance(tree, bool) else {}


def test_a_study_killed_during_gan_training_resumes_to_the_same_numbers(tmp_path):
    args = [*TOY[:4], '--kimg', '0.4', '--arms', 'conditional', '--clf-epochs', '1']
    whole = CliRunner().invoke(study.main, ['--outdir', str(tmp_path / 'whole'), *args], catch_exceptions=False)
    assert whole.exit_code == 0, whole.output
    killed = tmp_path / 'killed'
    process = subprocess.Popen([sys.executable, 'study.py', '--outdir', str(killed), *args], cwd=os.path.dirname(
        os.path.dirname(os.path.abspath(__file__))), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    gan_stage = killed / 'stages' / 'gan-conditional'
    while process.poll() is None and not any(path.stat().st_size for path in gan_stage.glob('*/metric-fid.jsonl')):
        time.sleep(0.01)  # Killed once the first snapshot is measured, well before the run's last step.
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL and not (gan_stage / 'done.json').exists()
    resumed = CliRunner().invoke(study.main, ['--outdir', str(killed), *args], catch_exceptions=False)
    assert resumed.exit_code == 0 and _stages_run(resumed.output)[0] == 'gan-conditional', resumed.output
    assert len(list(gan_stage.glob('*/network-snapshot-*.pkl'))) >= 2  # The resumed run continued the first.
    reports = [json.loads((tmp_path / name / 'report.json').read_text()) for name in ('whole', 'killed')]
    assert _numbers(reports[0]) == _numbers(reports[1]) and len(_numbers(reports[0])) > 20


@pytest.mark.parametrize('extra, message', [
    (['--arms', 'conditional,magic'], 'unknown arm magic'),
    (['--data', '/nonexistent/folder'], 'could not convert /nonexistent/folder'),
])  # fmt: skip
def test_bad_options_are_one_line(tmp_path, extra, message):
    result = CliRunner().invoke(study.main, ['--outdir', str(tmp_path / 'out'), *TOY, *extra])
    errors = [line for line in result.output.splitlines() if line.startswith('Error')]
    assert result.exit_code == 2 and len(errors) == 1 and message in errors[0], result.output
    assert 'Traceback' not in result.output and not os.path.exists(tmp_path / 'out' / 'report.md')

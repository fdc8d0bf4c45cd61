"""The clinical generator term: a frozen classifier (never trained, never in an optimizer, always in eval mode)
whose loss reaches G; the promised value (weight x BCE / CE / per-class BCE); schema checks; a CLI run."""

import hashlib
import json
import math
import os
import pickle

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import dnnlib
import train
from clinical.classifier import ClassifierEnsemble, RadiographClassifier, save_classifier
from clinical.clinical_loss import ClinicalLoss
from training.loss import StyleGAN2Loss
from training.networks import Discriminator, Generator
from training.phases import setup_phases

TINY = ['--cfg=cpu', '--channel-base=256', '--channel-max=16', '--batch=4', '--workers=0', '--tick=0.008', '--snap=1']
BINARY = ['normal', 'abnormal']
LESIONS = ['a', 'b', 'c']

# ----------------------------------------------------------------------------
# Helpers: a tiny untrained classifier pickle, tiny conditional networks at 16x16, and inputs.


def _classifier(path, class_names=BINARY, kind='binary', seed=0):
    torch.manual_seed(seed)
    net = RadiographClassifier(class_names, kind, resolution=16, channels=(8, 16))
    save_classifier(str(path), net, dict(seed=seed))
    return str(path), net


def _nets(c_dim=2):
    torch.manual_seed(0)
    common = dict(c_dim=c_dim, img_resolution=16, img_channels=1)
    small = dict(channel_base=256, channel_max=16, num_fp16_res=0)
    G = Generator(z_dim=16, w_dim=16, mapping_kwargs=dict(num_layers=2), synthesis_kwargs=small, **common)
    D = Discriminator(epilogue_kwargs=dict(mbstd_group_size=2), **small, **common)
    return G.train().requires_grad_(False), D.train().requires_grad_(False)


def _labels(kind, n=4):
    if kind == 'binary':
        return F.one_hot(torch.arange(n) % 2, 2).float()
    if kind == 'multiclass':
        return F.one_hot(torch.arange(n) % 3, 3).float()
    return torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])[:n]


def _G_grads(loss, G, z, c, seed=5):
    G.requires_grad_(True)
    torch.manual_seed(seed)
    loss.accumulate_gradients('Gmain', real_img=None, real_c=None, gen_z=z, gen_c=c, sync=True, gain=1)
    G.requires_grad_(False)
    grads = {name: p.grad.clone() for name, p in G.named_parameters() if p.grad is not None}
    for p in G.parameters():
        p.grad = None
    return grads


# ----------------------------------------------------------------------------
# Frozen: after a G step through the training loop's phases, the classifier is bit-identical, has no grads,
# belongs to no optimizer and stays in eval mode.


def test_classifier_stays_frozen_through_a_G_step(tmp_path):
    pkl, _net = _classifier(tmp_path / 'clf.pkl')
    G, D = _nets()
    spec = dict(class_name='clinical.clinical_loss.ClinicalLoss', classifier_pkl=pkl, weight=1.0,
                class_names=BINARY, is_onehot=True)  # fmt: skip
    adam = dict(class_name='torch.optim.Adam', lr=0.01, betas=[0.0, 0.99], eps=1e-8)
    opts = dnnlib.EasyDict(
        loss_kwargs=dict(class_name='training.loss.StyleGAN2Loss', r1_gamma=1, extra_G_terms=[spec]),
        G_opt_kwargs=adam, D_opt_kwargs=adam, G_reg_interval=None, D_reg_interval=None,
        G_step_kwargs=None, D_step_kwargs=None, num_gpus=1,
    )  # fmt: skip
    loss, phases = setup_phases(opts, dnnlib.EasyDict(G=G, D=D, augment_pipe=None), torch.device('cpu'))
    (term,) = loss.extra_G_terms
    before = {name: t.clone() for name, t in term.classifier.state_dict().items()}
    G_before = [p.clone() for p in G.parameters()]
    torch.manual_seed(1)
    z, c = torch.randn([4, 16]), _labels('binary')
    phases[0].step([torch.zeros([4, 1, 16, 16])], [c], [z], [c])  # Gboth: the adversarial and clinical terms.
    assert phases[0].name == 'Gboth'
    assert any(not torch.equal(a, b) for a, b in zip(G_before, G.parameters()))  # G did take a step.
    after = term.classifier.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[key], after[key]) for key in before)
    assert all(p.grad is None and not p.requires_grad for p in term.classifier.parameters())
    in_optimizers = {id(p) for phase in phases for group in phase.opt.param_groups for p in group['params']}
    assert not in_optimizers & {id(p) for p in term.classifier.parameters()}
    term.train()
    assert term.training and not term.classifier.training
    assert not any(module.training for module in term.classifier.modules())


# ----------------------------------------------------------------------------
# The term's gradient reaches G: G's grads with the term = without it + the term's own.


def test_clinical_gradient_reaches_G(tmp_path):
    pkl, _net = _classifier(tmp_path / 'clf.pkl')
    term = ClinicalLoss(pkl, weight=1.0, class_names=BINARY, is_onehot=True)
    G, D = _nets()
    torch.manual_seed(1)
    z, c = torch.randn([4, 16]), _labels('binary')
    plain = StyleGAN2Loss('cpu', G.mapping, G.synthesis, D)
    clinical = StyleGAN2Loss('cpu', G.mapping, G.synthesis, D, extra_G_terms=[term])
    without, with_term = _G_grads(plain, G, z, c), _G_grads(clinical, G, z, c)
    G.requires_grad_(True)
    torch.manual_seed(5)  # The same style-mixing draw as inside _G_grads.
    img, _ws = clinical.run_G(z, c, sync=True)
    term_only = torch.autograd.grad(term(img, c).mean(), [p for _n, p in G.named_parameters()], allow_unused=True)
    G.requires_grad_(False)
    assert with_term.keys() == without.keys()
    assert any(not torch.allclose(with_term[k], without[k]) for k in without)
    for (name, _p), grad in zip(G.named_parameters(), term_only):
        if name in without:
            expected = without[name] + (0 if grad is None else grad)
            torch.testing.assert_close(with_term[name], expected, rtol=1e-4, atol=1e-6)

    gen_img = (torch.rand([4, 1, 16, 16]) * 2 - 1).requires_grad_(True)
    term(gen_img, c).sum().backward()
    assert gen_img.grad.abs().sum() > 0  # d(term)/d(gen_img) != 0.


# ----------------------------------------------------------------------------
# The value: weight x BCE(sigmoid(logit), label[:, 1]) (binary), x CE (multiclass), x mean per-class BCE
# (multilabel), computed by hand from the same (saved) classifier.


@pytest.mark.parametrize('members', [1, 3])  # A ClassifierEnsemble (study.py --clf-ensemble): its mean probability.
@pytest.mark.parametrize('kind, class_names, is_onehot', [
    ('binary', BINARY, True), ('multiclass', LESIONS, True), ('multilabel', LESIONS, False),
])  # fmt: skip
def test_value_is_weight_times_the_classifier_loss(tmp_path, kind, class_names, is_onehot, members):
    pkl, net = _classifier(tmp_path / 'clf.pkl', class_names, kind)
    if members > 1:
        net = ClassifierEnsemble([_classifier(tmp_path / f'{i}.pkl', class_names, kind, seed=i)[1]
                                  for i in range(members)])  # fmt: skip
        save_classifier(pkl, net, {})
    term = ClinicalLoss(pkl, weight=0.3, class_names=class_names, is_onehot=is_onehot)
    torch.manual_seed(2)
    images, labels = torch.rand([4, 1, 16, 16]) * 2 - 1, _labels(kind)
    with torch.no_grad():
        probabilities = net.eval().probabilities(images)
        value = term(images, labels)
    if kind == 'multiclass':
        expected = -torch.log(probabilities[torch.arange(4), labels.argmax(1)])
    else:
        expected = F.binary_cross_entropy(probabilities, labels[:, 1] if kind == 'binary' else labels, reduction='none')
        expected = expected if kind == 'binary' else expected.mean(dim=1)
    assert value.shape == (4,)
    torch.testing.assert_close(value, 0.3 * expected, rtol=1e-5, atol=1e-6)
    assert term.record['weight'] == 0.3 and term.record['kind'] == kind
    assert term.record['sha256'] == hashlib.sha256(open(pkl, 'rb').read()).hexdigest()


# ----------------------------------------------------------------------------
# A classifier for other classes or another head is refused, naming --clinical-loss.


@pytest.mark.parametrize('clf_names, kind, data_names, is_onehot, message', [
    (BINARY, 'binary', ['healthy', 'sick'], True, 'predicts normal, abnormal but the dataset has healthy, sick'),
    (LESIONS, 'multiclass', ['a', 'c', 'b'], True, 'but the dataset has a, c, b'),
    (BINARY, 'binary', BINARY, False, 'is a binary classifier; the labels need multilabel'),
    (LESIONS, 'multilabel', LESIONS, True, 'is a multilabel classifier; the labels need multiclass'),
    (BINARY, 'binary', None, True, 'the dataset has no class names'),
])  # fmt: skip
def test_mismatched_schema_is_refused(tmp_path, clf_names, kind, data_names, is_onehot, message):
    pkl, _net = _classifier(tmp_path / 'clf.pkl', clf_names, kind)
    with pytest.raises(dnnlib.UserError, match=message) as info:
        ClinicalLoss(pkl, class_names=data_names, is_onehot=is_onehot)
    assert info.value.param == '--clinical-loss'


# ----------------------------------------------------------------------------
# train.py --clinical-loss: Loss/G/clinical in stats.jsonl, the classifier's sha256 and weight in the snapshot.


def test_training_run_records_the_clinical_term(tmp_path, tiny_dataset):
    data = tiny_dataset(path=tmp_path / 'data.zip', class_names=BINARY)
    pkl, _net = _classifier(tmp_path / 'clf.pkl')
    outdir = tmp_path / 'out'
    args = [f'--outdir={outdir}', f'--data={data}', '--cond=1', f'--clinical-loss={pkl}', '--clinical-weight=0.25']
    result = CliRunner().invoke(train.main, [*args, '--kimg=0.012', *TINY], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (run_name,) = os.listdir(outdir)
    assert '-cond-clinical0.25-cpu' in run_name
    run_dir = outdir / run_name
    lines = [json.loads(line) for line in open(run_dir / 'stats.jsonl')]
    assert len(lines) >= 2 and all(math.isfinite(line['Loss/G/clinical']['mean']) for line in lines)
    assert all(line['Loss/G/clinical']['mean'] > 0 for line in lines)
    options = json.load(open(run_dir / 'training_options.json'))
    assert options['loss_kwargs']['extra_G_terms'][0]['classifier_pkl'] == pkl
    with open(run_dir / 'network-snapshot-000000.012.pkl', 'rb') as f:
        record = pickle.load(f)['loss_terms']['clinical']
    assert record['sha256'] == hashlib.sha256(open(pkl, 'rb').read()).hexdigest()
    assert record['weight'] == 0.25 and record['class_names'] == BINARY and record['kind'] == 'binary'


# ----------------------------------------------------------------------------

"""The radiograph classifier: one preprocessing path for PNGs, dataset batches and generator output; heads;
per-sample losses; the self-contained pickle; the patient-aware validation split."""

import os
import pickle
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch

import dnnlib
from clinical import classifier as clf
from clinical import classifier_data, labels
from clinical.classifier_data import ImageSet, load_image_set, select_classes, split_validation
from training.dataset import ImageFolderDataset

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tiny(class_names=('normal', 'abnormal'), kind='binary', resolution=16, **kwargs):
    torch.manual_seed(0)
    return clf.RadiographClassifier(list(class_names), kind, resolution, channels=(8, 16), **kwargs).eval()


# ----------------------------------------------------------------------------
# Preprocessing: a PNG read from disk (uint8) and the same image as generator output in [-1, 1] give the
# same classifier input, at any stored resolution and channel count.


@pytest.mark.parametrize('size, channels', [(16, 1), (64, 1), (32, 3)])
def test_png_and_generator_output_preprocess_identically(tmp_path, size, channels):
    pixels = np.random.RandomState(size).randint(0, 256, [size, size, channels], dtype=np.uint8)
    path = tmp_path / 'x.png'
    PIL.Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels).save(path)
    from_disk = np.array(PIL.Image.open(path))
    from_disk = torch.from_numpy(from_disk.reshape(size, size, channels)).permute(2, 0, 1)[None]  # uint8 [1CHW]
    as_generator_output = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 127.5 - 1  # [-1, 1]
    a, b = clf.preprocess(from_disk, 16), clf.preprocess(as_generator_output, 16)
    assert a.shape == (1, 1, 16, 16) and a.dtype == torch.float32
    assert torch.allclose(a, b, atol=1e-6)
    net = _tiny()
    assert torch.allclose(net(from_disk), net(as_generator_output), atol=1e-5)


def test_dataset_batch_preprocesses_like_the_png(tmp_path, tiny_dataset):
    data = tiny_dataset(4, path=str(tmp_path / 'd'), resolution=32, class_names=['normal', 'abnormal'])
    first_png = sorted(ImageFolderDataset(data)._image_fnames)[0]
    png = torch.from_numpy(np.asarray(PIL.Image.open(os.path.join(data, first_png))).copy())[None, None]
    batch = torch.from_numpy(load_image_set(data).images[:1])
    assert torch.equal(batch, png)
    assert torch.allclose(clf.preprocess(batch, 16), clf.preprocess(png.float() / 127.5 - 1, 16), atol=1e-6)


def test_out_of_range_generator_values_clip_like_the_png_conversion():
    x = torch.tensor([-3.0, -1.0, 0.0, 1.0, 3.0]).reshape(1, 1, 1, 5)
    assert clf.preprocess(x, 1).shape == (1, 1, 1, 1)
    wide = clf.preprocess(x.expand(1, 1, 5, 5), 5)
    assert wide.min() == -1 and wide.max() == 1


def test_preprocess_is_differentiable_for_generator_output():
    x = torch.rand(2, 1, 32, 32, requires_grad=True)
    clf.preprocess(x * 1.8 - 0.9, 16).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# ----------------------------------------------------------------------------
# Heads, features and losses.


@pytest.mark.parametrize(
    'kind, names, shape',
    [('binary', ['n', 'a'], (3,)), ('multiclass', list('abcd'), (3, 4)), ('multilabel', list('abcd'), (3, 4))],
)
def test_heads(kind, names, shape):
    net = _tiny(names, kind)
    images = torch.randint(0, 256, [3, 1, 24, 24], dtype=torch.uint8)
    assert net(images).shape == shape and net.features(images).shape == (3, net.num_features)
    probs = net.probabilities(images)
    assert probs.shape == shape and bool(((probs >= 0) & (probs <= 1)).all())
    if kind == 'multiclass':
        assert torch.allclose(probs.sum(1), torch.ones(3))


def test_per_sample_losses_match_the_formulas():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, -0.3]])
    onehot = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    ce = clf.per_sample_loss(logits, clf.targets_from_labels(onehot, 'multiclass'), 'multiclass')
    assert torch.allclose(ce, -(torch.log_softmax(logits, 1) * onehot).sum(1))
    bce = clf.per_sample_loss(logits, onehot, 'multilabel')
    p = torch.sigmoid(logits)
    assert torch.allclose(bce, -(onehot * p.log() + (1 - onehot) * (1 - p).log()).mean(1), atol=1e-6)
    binary = clf.per_sample_loss(logits[:, 0], clf.targets_from_labels(onehot[:, :2], 'binary'), 'binary')
    assert torch.allclose(binary, -torch.log(1 - p[:, 0]), atol=1e-6)


def test_label_kind():
    assert clf.label_kind(['n', 'a'], True) == 'binary'
    assert clf.label_kind(list('abc'), True) == 'multiclass'
    assert clf.label_kind(['n', 'a'], False) == 'multilabel'
    with pytest.raises(ValueError, match='2 class names'):
        clf.RadiographClassifier(['a', 'b', 'c'], 'binary')


@pytest.mark.parametrize('kind, names', [('binary', ['n', 'a']), ('multiclass', ['a', 'b', 'c']),
                                         ('multilabel', ['a', 'b', 'c'])])  # fmt: skip
def test_an_ensemble_is_the_mean_of_its_members_probabilities(kind, names):
    members = [_tiny(names, kind) for _ in range(3)]
    for i, net in enumerate(members):  # Members as different as trained ones, with confident (large) logits.
        torch.manual_seed(i)
        torch.nn.init.normal_(net.head.weight, std=30.0)
    ensemble = clf.ClassifierEnsemble(members).eval()
    images = torch.randint(0, 256, [5, 1, 16, 16], dtype=torch.uint8)
    mean = torch.stack([net.probabilities(images) for net in members]).mean(0)
    assert torch.allclose(ensemble.probabilities(images), mean, atol=1e-6)
    logits = ensemble(images)  # The logits of the mean, as the clinical loss and training losses take them.
    as_probabilities = torch.softmax(logits, 1) if kind == 'multiclass' else torch.sigmoid(logits)
    assert torch.allclose(as_probabilities, mean, atol=1e-5) and torch.isfinite(logits).all()
    assert ensemble.features(images).shape == (5, 3 * members[0].num_features) == (5, ensemble.num_features)
    x = (torch.rand(2, 1, 16, 16) * 2 - 1).requires_grad_(True)
    ensemble(x).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_an_ensemble_refuses_members_of_other_tasks():
    with pytest.raises(ValueError, match='share classes'):
        clf.ClassifierEnsemble([_tiny(), _tiny(['normal', 'pneumonia'])])


# ----------------------------------------------------------------------------
# The pickle: self-contained (loads where `clinical` cannot be imported), frozen on load, with metadata.


def test_pickle_is_self_contained_and_loads_frozen(tmp_path):
    net = _tiny(label_schema='abnormal')
    path = str(tmp_path / 'classifier.pkl')
    clf.save_classifier(path, net, dict(val_auc=0.9))
    loaded, meta = clf.load_classifier(path)
    assert meta['val_auc'] == 0.9 and len(meta['sha256']) == 64
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training
    images = torch.randint(0, 256, [2, 1, 16, 16], dtype=torch.uint8)
    assert torch.equal(loaded(images), net(images)) and loaded.label_schema == 'abnormal'
    code = (
        'import sys, pickle, torch; sys.modules["clinical"] = None\n'
        f'data = pickle.load(open({path!r}, "rb"))\n'
        'net = data["classifier"]; print(net.class_names, net.kind, net(torch.zeros(1, 1, 16, 16)).shape)'
    )
    result = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "['normal', 'abnormal'] binary torch.Size([1])" in result.stdout


@pytest.mark.parametrize('content', [b'not a pickle', pickle.dumps({'G_ema': 1}), pickle.dumps([1, 2])])
def test_load_refuses_what_is_not_a_classifier(tmp_path, content):
    path = tmp_path / 'x.pkl'
    path.write_bytes(content)
    with pytest.raises(dnnlib.UserError) as info:
        clf.load_classifier(str(path))
    assert info.value.param == '--classifier' and str(path) in str(info.value)


# ----------------------------------------------------------------------------
# Image sets: the validation split never splits a patient, and keeps both classes.


def _image_set(n=120, per_group=3, seed=0):
    rnd = np.random.RandomState(seed)
    groups = np.repeat(np.arange(n // per_group), per_group).astype(str)
    classes = (rnd.rand(n // per_group) < 0.3).astype(int).repeat(per_group)
    labels = np.eye(2, dtype=np.float32)[classes]
    images = rnd.randint(0, 256, [n, 1, 8, 8]).astype(np.uint8)
    return ImageSet(images, labels, groups, ['normal', 'abnormal'], True, 'test')


def test_validation_split_is_group_disjoint_and_stratified():
    image_set = _image_set()
    train, val = split_validation(image_set, 0.2, seed=1)
    assert len(train) + len(val) == len(image_set) and not set(train) & set(val)
    assert not set(image_set.groups[train]) & set(image_set.groups[val])
    assert 0.1 < len(val) / len(image_set) < 0.3
    assert image_set.labels[val, 1].sum() > 0 and image_set.labels[val, 0].sum() > 0
    assert np.array_equal(split_validation(image_set, 0.2, seed=1)[1], val)


def test_select_classes_relabels_and_fingerprint_changes():
    image_set = _image_set()
    image_set = ImageSet(image_set.images, np.eye(3, dtype=np.float32)[np.arange(120) % 3], image_set.groups,
                         ['bacteria', 'normal', 'virus'], True, 'x')  # fmt: skip
    kept = select_classes(image_set, ['bacteria', 'virus'])
    assert len(kept) == 80 and kept.class_names == ['bacteria', 'virus'] and kept.labels.shape == (80, 2)
    assert kept.fingerprint() != image_set.fingerprint() and kept.fingerprint() == kept.subset(range(80)).fingerprint()
    with pytest.raises(ValueError, match='unknown class'):
        select_classes(image_set, ['bacteria', 'fungus'])


def test_lesion_labels_relabel_to_normal_vs_abnormal():
    image_set = _image_set()
    lesion_types = np.arange(120) % 8  # 0 = No finding.
    lesion_set = ImageSet(image_set.images, np.eye(8, dtype=np.float32)[lesion_types], image_set.groups,
                          list(labels.VINDR_CLASSES), True, 'x')  # fmt: skip
    relabelled = classifier_data._relabel(lesion_set, 'abnormal')
    assert relabelled.class_names == ['normal', 'abnormal'] and relabelled.label_schema == 'abnormal'
    assert np.array_equal(relabelled.labels.argmax(1), (lesion_types > 0).astype(int))
    with pytest.raises(dnnlib.UserError, match='cannot derive'):
        classifier_data._relabel(image_set, 'lesion')  # Normal/abnormal says nothing of the lesion type.


# ----------------------------------------------------------------------------
# User-supplied starting weights: from our pickle, a torch state_dict file or safetensors; nothing else.


@pytest.mark.parametrize('fmt', ['pkl', 'pt', 'safetensors'])
def test_load_weights_copies_matching_tensors(tmp_path, fmt):
    import safetensors.torch

    source = _tiny()
    path = str(tmp_path / f'w.{fmt}')
    if fmt == 'pkl':
        clf.save_classifier(path, source, {})
    elif fmt == 'pt':
        torch.save({'state_dict': source.state_dict()}, path)
    else:
        safetensors.torch.save_file({k: v.contiguous() for k, v in source.state_dict().items()}, path)
    torch.manual_seed(5)
    target = clf.RadiographClassifier(['a', 'b', 'c'], 'multiclass', 16, channels=(8, 16)).eval()
    skipped = clf.load_weights(target, path)
    assert skipped == ['head.weight', 'head.bias']  # The head has another shape: left as initialised.
    assert torch.equal(target.stem[0].weight, source.stem[0].weight)


@pytest.mark.parametrize('content', [b'garbage', pickle.dumps({'G_ema': 1})])
def test_load_weights_refuses_foreign_files(tmp_path, content):
    path = tmp_path / 'w.pt'
    path.write_bytes(content)
    with pytest.raises(dnnlib.UserError) as info:
        clf.load_weights(_tiny(), str(path))
    assert info.value.param in ('--init', '--classifier') and str(path) in str(info.value)

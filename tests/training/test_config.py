"""setup_training_config() without click: presets fill only what is unset; errors name their flag."""

import json

import pytest

import dnnlib
from clinical.classifier import RadiographClassifier, save_classifier
from training import config, launch


def test_preset_fills_only_unset_options(tiny_dataset):
    data = tiny_dataset(resolution=32)
    c = config.setup_training_config('cpu', data=data, device='cpu', gamma=None, batch=8, channel_max=32)
    assert c.batch_size == 8 and c.G_kwargs.synthesis_kwargs.channel_max == 32 == c.D_kwargs.channel_max
    assert c.G_kwargs.synthesis_kwargs.channel_base == config.CONFIG_PRESETS['cpu']['channel_base']
    assert c.loss_kwargs.r1_gamma == pytest.approx(0.0002 * 32**2 / 16)  # Preset's auto rule, preset batch.
    assert c.total_kimg == 500 and c.kimg_per_tick == 4 and c.desc == 'data-cpu-channelmax32-batch8'
    assert c.D_kwargs.mapping_kwargs.num_layers == 1


@pytest.mark.parametrize(
    'opts, param',
    [
        (dict(data='/nonexistent.zip'), '--data'),
        (dict(cond=True, labels=False), '--cond'),
        (dict(gpus=3), '--gpus'),
        (dict(p=0.5), '--p'),
        (dict(aug='noaug', augpipe='bgc'), '--augpipe'),
        (dict(resume='/nonexistent.pkl'), '--resume'),
    ],
)
def test_errors_carry_their_parameter(tiny_dataset, tmp_path, opts, param):
    labels = opts.pop('labels', True)
    opts.setdefault('data', tiny_dataset(path=tmp_path / 'd.zip', labels=labels))
    with pytest.raises(dnnlib.UserError) as info:
        config.setup_training_config('cpu', device='cpu', **opts)
    assert info.value.param == param


def test_foreign_resume_pickle_is_refused_before_training(tiny_dataset, tmp_path):
    (tmp_path / 'x.pkl').write_bytes(b'\x80\x04K\x01.')  # pickle of the int 1
    with pytest.raises(dnnlib.UserError, match='not a network snapshot') as info:
        config.setup_training_config('cpu', data=tiny_dataset(), device='cpu', resume=str(tmp_path / 'x.pkl'))
    assert info.value.param == '--resume'


def test_cpu_bf16_is_on_by_default_only_where_it_pays_and_is_tested(tiny_dataset, monkeypatch):
    data = tiny_dataset()

    def setup(native, **opts):
        monkeypatch.setattr(config, 'cpu_has_native_bf16', lambda: native)
        return config.setup_training_config('cpu', data=data, device='cpu', **opts)

    c = setup(True)
    assert c.cpu_bf16 and c.G_kwargs.synthesis_kwargs.num_fp16_res == 4 and not c.desc.endswith('-bf16')
    assert launch.precision_summary(c).startswith('bfloat16 in the 4 highest-resolution blocks')
    assert setup(True, cpu_bf16=True).desc.endswith('-bf16')
    assert setup(True, dp=True, dp_noise=1.0, kimg=0.1).cpu_bf16  # Per-sample gradients are tested in bfloat16 too.
    for native, opts in [(False, {}), (True, dict(fp32=True)), (True, dict(cpu_bf16=False))]:
        c = setup(native, **opts)
        assert not c.cpu_bf16 and launch.precision_summary(c) == 'fp32', (native, opts)
    for opts, native, message in [(dict(fp32=True), True, 'drop --fp32'), (dict(), False, 'without avx512_bf16')]:
        with pytest.raises(dnnlib.UserError, match=message) as info:
            setup(native, cpu_bf16=True, **opts)
        assert info.value.param == '--cpu-bf16'


def test_unknown_option_is_a_type_error(tiny_dataset):
    with pytest.raises(TypeError, match='unknown option'):
        config.setup_training_config('cpu', data=tiny_dataset(), colour='blue')


# ----------------------------------------------------------------------------
# --cond-sampling and --clinical-loss: checked against the data's labels before anything runs.


def _classifier_pkl(path, class_names, kind):
    save_classifier(str(path), RadiographClassifier(class_names, kind, resolution=16, channels=(8, 16)), {})
    return str(path)


def test_cond_sampling_and_clinical_loss_reach_the_config(tiny_dataset, tmp_path):
    data = tiny_dataset(path=tmp_path / 'd.zip', class_names=['normal', 'abnormal'])
    pkl = _classifier_pkl(tmp_path / 'clf.pkl', ['normal', 'abnormal'], 'binary')
    c = config.setup_training_config('cpu', data=data, device='cpu', cond=True, cond_sampling='balanced',
                                     clinical_loss=pkl, clinical_weight=0.5)  # fmt: skip
    assert c.cond_sampling == 'balanced' and c.desc == 'd-cond-condbalanced-clinical0.5-cpu'
    (spec,) = c.loss_kwargs.extra_G_terms
    assert spec == dict(class_name='clinical.clinical_loss.ClinicalLoss', classifier_pkl=pkl, weight=0.5,
                        class_names=['normal', 'abnormal'], is_onehot=True)  # fmt: skip
    json.dumps(c)  # training_options.json
    c = config.setup_training_config('cpu', data=data, device='cpu', cond=True, cond_sampling='1,3')
    assert c.cond_sampling == [1.0, 3.0] and c.desc == 'd-cond-condmarginal-cpu'
    assert 'extra_G_terms' not in c.loss_kwargs
    assert config.setup_training_config('cpu', data=data, device='cpu').cond_sampling == 'data'


@pytest.mark.parametrize(
    'opts, param, message',
    [
        (dict(cond=True, cond_sampling='1,2,3'), '--cond-sampling', 'must be 2 non-negative numbers'),
        (dict(cond=True, cond_sampling='0,0'), '--cond-sampling', 'at least one positive weight'),
        (dict(cond=True, cond_sampling='uniform'), '--cond-sampling', 'expected data, balanced'),
        (dict(cond_sampling='balanced'), '--cond-sampling', 'needs --cond=1'),
        (dict(clinical_loss='{clf}'), '--clinical-loss', 'needs --cond=1'),
        (dict(cond=True, clinical_loss='{tmp}/nope.pkl'), '--clinical-loss', 'no such file'),
        (dict(cond=True, clinical_loss='{tmp}/d.zip'), '--clinical-loss', 'cannot load classifier'),
        (dict(cond=True, clinical_loss='{other}'), '--clinical-loss', 'but the dataset has normal, abnormal'),
    ],
)
def test_conditioning_errors_name_their_flag(tiny_dataset, tmp_path, opts, param, message):
    data = tiny_dataset(path=tmp_path / 'd.zip', class_names=['normal', 'abnormal'])
    paths = dict(tmp=tmp_path, clf=_classifier_pkl(tmp_path / 'clf.pkl', ['normal', 'abnormal'], 'binary'),
                 other=_classifier_pkl(tmp_path / 'other.pkl', ['a', 'b', 'c'], 'multiclass'))  # fmt: skip
    opts = {key: value.format(**paths) if key == 'clinical_loss' else value for key, value in opts.items()}
    with pytest.raises(dnnlib.UserError, match=message) as info:
        config.setup_training_config('cpu', data=data, device='cpu', **opts)
    assert info.value.param == param

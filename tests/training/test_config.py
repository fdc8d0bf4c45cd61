"""setup_training_config() without click: presets fill only what is unset; errors name their flag."""

import pytest

import dnnlib
from training import config


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


def test_unknown_option_is_a_type_error(tiny_dataset):
    with pytest.raises(TypeError, match='unknown option'):
        config.setup_training_config('cpu', data=tiny_dataset(), colour='blue')

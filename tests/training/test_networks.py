"""StyleGAN2-ADA networks on CPU: shapes per architecture, mapping/truncation maths, modulation against a naive
reference, fp16 fall-back, label projection, resolution checks, gradients and pickling."""

import copy
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training import networks

SMALL = dict(channel_base=256, channel_max=16)


def make_G(res=16, img_channels=1, c_dim=0, architecture='skip', **synthesis_kwargs):
    torch.manual_seed(0)
    synthesis_kwargs = {**SMALL, 'architecture': architecture, **synthesis_kwargs}
    return networks.Generator(z_dim=8, c_dim=c_dim, w_dim=8, img_resolution=res, img_channels=img_channels,
                              mapping_kwargs=dict(num_layers=2), synthesis_kwargs=synthesis_kwargs)  # fmt: skip


def make_D(res=16, img_channels=1, c_dim=0, architecture='resnet', **kwargs):
    torch.manual_seed(1)
    return networks.Discriminator(c_dim=c_dim, img_resolution=res, img_channels=img_channels,
                                  architecture=architecture, **{**SMALL, **kwargs})  # fmt: skip


def labels(batch_size, c_dim, multi_hot, seed=0):
    if c_dim == 0:
        return torch.zeros([batch_size, 0])
    gen = torch.Generator().manual_seed(seed)
    if multi_hot:
        return (torch.rand([batch_size, c_dim], generator=gen) < 0.4).float()
    return F.one_hot(torch.randint(0, c_dim, [batch_size], generator=gen), c_dim).float()


# ----------------------------------------------------------------------------


@pytest.mark.parametrize('architecture', ['orig', 'skip', 'resnet'])
@pytest.mark.parametrize('res', [16, 32])
@pytest.mark.parametrize('img_channels', [1, 3])
@pytest.mark.parametrize('c_dim', [0, 2, 8])
def test_generator_and_discriminator_shapes(architecture, res, img_channels, c_dim):
    G = make_G(res, img_channels, c_dim, architecture)
    D = make_D(res, img_channels, c_dim, architecture)
    c = labels(4, c_dim, multi_hot=(c_dim == 8))
    img = G(torch.randn([4, G.z_dim]), c)
    assert img.shape == (4, img_channels, res, res) and img.dtype == torch.float32
    logits = D(img, c)
    assert logits.shape == (4, 1) and torch.isfinite(logits).all()
    assert G.num_ws == G.mapping.num_ws == G.synthesis.num_ws == 2 * int(np.log2(res)) - 2


def test_truncation_psi_zero_gives_w_avg_and_cutoff_limits_layers():
    G = make_G(c_dim=2)
    G.mapping.w_avg.copy_(torch.randn([G.w_dim]))
    z, c = torch.randn([3, G.z_dim]), labels(3, 2, multi_hot=False)
    ws = G.mapping(z, c, truncation_psi=0)
    assert torch.equal(ws, G.mapping.w_avg.expand(3, G.num_ws, -1))
    full = G.mapping(z, c)
    half = G.mapping(z, c, truncation_psi=0.5, truncation_cutoff=2)
    torch.testing.assert_close(half[:, :2], (full[:, :2] + G.mapping.w_avg) / 2)
    assert torch.equal(half[:, 2:], full[:, 2:])


def test_w_avg_tracks_batch_mean_only_in_training():
    mapping = make_G().mapping.train()
    old = torch.randn([mapping.w_dim])
    mapping.w_avg.copy_(old)
    ws = mapping(torch.randn([16, mapping.z_dim]), None)
    batch_mean = ws[:, 0].mean(dim=0)
    torch.testing.assert_close(mapping.w_avg, batch_mean + mapping.w_avg_beta * (old - batch_mean))
    assert (mapping.w_avg - batch_mean).norm() < (old - batch_mean).norm()

    frozen = mapping.w_avg.clone()
    mapping(torch.randn([16, mapping.z_dim]), None, skip_w_avg_update=True)
    mapping.eval()(torch.randn([16, mapping.z_dim]), None)
    assert torch.equal(mapping.w_avg, frozen)


def test_noise_modes():
    G = make_G().eval()
    for name, param in G.named_parameters():
        if name.endswith('noise_strength'):
            param.data.fill_(1.0)
    z = torch.randn([2, G.z_dim])
    const = [G(z, None, noise_mode='const') for _ in range(2)]
    assert torch.equal(const[0], const[1])
    assert not torch.equal(G(z, None, noise_mode='random'), G(z, None, noise_mode='random'))
    assert not torch.equal(G(z, None, noise_mode='none'), const[0])


def test_fp16_and_clamp_settings_run_in_fp32_on_cpu():
    G16 = make_G(num_fp16_res=4, conv_clamp=256)
    G32 = make_G(conv_clamp=256)
    G32.load_state_dict(G16.state_dict())
    D16 = make_D(num_fp16_res=4, conv_clamp=256)
    D32 = make_D(conv_clamp=256)
    D32.load_state_dict(D16.state_dict())
    assert G16.synthesis.b16.use_fp16 and D16.b16.use_fp16
    z = torch.randn([2, G16.z_dim])
    img = G16(z, None, noise_mode='const')
    assert img.dtype == torch.float32 and torch.isfinite(img).all()
    assert torch.equal(img, G32(z, None, noise_mode='const'))
    assert torch.equal(D16(img, None), D32(img, None))


def test_label_projection_changes_logits():
    D = make_D(c_dim=3)
    img = torch.randn([2, 1, 16, 16])
    a = D(img, torch.tensor([[1.0, 0, 0], [1, 0, 0]]))
    b = D(img, torch.tensor([[0.0, 1, 0], [0, 1, 1]]))
    assert (a - b).abs().min() > 0


def test_discriminator_label_mapping_is_small_and_configurable():
    assert make_D(c_dim=2).mapping.num_layers == 1
    D = make_D(c_dim=2, cmap_dim=6, mapping_kwargs=dict(num_layers=2))
    assert D.mapping.num_layers == 2 and D.mapping.fc1.weight.shape == (6, 6)
    assert not hasattr(make_D(c_dim=0), 'mapping')


@pytest.mark.parametrize('res', [24, 2, 100])
def test_non_power_of_two_resolution_raises(res):
    with pytest.raises(ValueError, match='power of two'):
        make_G(res)
    with pytest.raises(ValueError, match='power of two'):
        make_D(res)


def test_smallest_resolutions():
    assert make_G(res=4)(torch.randn([2, 8]), None).shape == (2, 1, 4, 4)
    assert make_D(res=8)(torch.randn([2, 1, 8, 8]), None).shape == (2, 1)
    with pytest.raises(ValueError, match='>= 8'):
        make_D(res=4)


@pytest.mark.parametrize('architecture', ['orig', 'skip', 'resnet'])
def test_gradients_reach_every_parameter(architecture):
    G, D = make_G(architecture=architecture, c_dim=2), make_D(architecture=architecture, c_dim=2)
    c = labels(4, 2, multi_hot=False)
    loss = F.softplus(-D(G(torch.randn([4, G.z_dim]), c), c)).mean()
    loss.backward()
    for name, param in [*G.named_parameters(), *D.named_parameters()]:
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert name.endswith('noise_strength') or param.grad.abs().sum() > 0, name


@pytest.mark.parametrize('up', [1, 2])
@pytest.mark.parametrize('demodulate', [True, False])
def test_modulated_conv2d_matches_naive_per_sample_conv(up, demodulate):
    torch.manual_seed(0)
    x, weight, styles = torch.randn([3, 4, 8, 8]), torch.randn([5, 4, 3, 3]), torch.randn([3, 4])
    noise = torch.randn([3, 1, 8 * up, 8 * up])
    outs = []
    for fused in [True, False]:
        kwargs = dict(up=up, padding=1, demodulate=demodulate, flip_weight=(up == 1), fused_modconv=fused)
        resample_filter = networks.upfirdn2d.setup_filter([1, 3, 3, 1]) if up > 1 else None
        outs.append(networks.modulated_conv2d(x, weight, styles, noise, resample_filter=resample_filter, **kwargs))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-4)
    if up == 1:  # Naive reference: per-sample weights w'_ijk = s_i w_ijk / sqrt(sum (s_i w_ijk)^2).
        for n in range(3):
            w = weight * styles[n].reshape(1, -1, 1, 1)
            if demodulate:
                w = w / (w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
            ref = F.conv2d(x[n : n + 1], w, padding=1) + noise[n]
            torch.testing.assert_close(outs[0][n : n + 1], ref, rtol=1e-4, atol=1e-4)


def test_minibatch_std_matches_naive_and_handles_indivisible_batch():
    x = torch.randn([8, 6, 4, 4])
    y = networks.MinibatchStdLayer(group_size=4, num_channels=2)(x)
    assert y.shape == (8, 8, 4, 4)
    groups = x.reshape(4, 2, 2, 3, 4, 4)  # [G, n, F, c, H, W]: sample i belongs to group member i // 2.
    ref = (groups.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=[2, 3, 4])  # [n, F]
    torch.testing.assert_close(y[:, 6:, 0, 0], ref.repeat(4, 1))
    assert networks.MinibatchStdLayer(group_size=4)(torch.randn([6, 3, 4, 4])).shape == (6, 4, 4, 4)


def test_freeze_layers_turns_early_discriminator_layers_into_buffers():
    D = make_D(block_kwargs=dict(freeze_layers=2))
    assert 'b16.fromrgb.weight' in dict(D.named_buffers()) and 'b16.conv0.weight' in dict(D.named_buffers())
    assert 'b16.conv1.weight' in dict(D.named_parameters())


def test_pickle_round_trip_keeps_outputs():
    G = make_G(c_dim=2).eval()
    G2 = pickle.loads(pickle.dumps(copy.deepcopy(G)))
    z, c = torch.randn([2, G.z_dim]), labels(2, 2, multi_hot=True)
    assert torch.equal(G(z, c, noise_mode='const'), G2(z, c, noise_mode='const'))
    assert G2.init_kwargs['img_resolution'] == 16

"""StyleGAN2Loss: phases, R1 through augmentation (double backward), path-length mean, extra G terms."""

import pytest
import torch

from torch_utils import training_stats
from training.augment import AugmentPipe
from training.loss import StyleGAN2Loss
from training.networks import Discriminator, Generator

# ----------------------------------------------------------------------------
# Tiny conditional networks at 16x16, one thread, gradfix on (as in the training loop).


def _nets(c_dim=2):
    torch.manual_seed(0)
    common = dict(c_dim=c_dim, img_resolution=16, img_channels=1)
    small = dict(channel_base=256, channel_max=16, num_fp16_res=0)
    G = Generator(z_dim=16, w_dim=16, mapping_kwargs=dict(num_layers=2), synthesis_kwargs=small, **common)
    D = Discriminator(epilogue_kwargs=dict(mbstd_group_size=2), **small, **common)
    return G.train().requires_grad_(False), D.train().requires_grad_(False)


def _inputs(n=4, c_dim=2, seed=1):
    gen = torch.Generator().manual_seed(seed)
    real = torch.rand([n, 1, 16, 16], generator=gen) * 2 - 1
    c = torch.nn.functional.one_hot(torch.arange(n) % c_dim, c_dim).float()
    return real, c, torch.randn([n, 16], generator=gen), c


def _run(loss, module, phase, seed=5, gain=1, **inputs):
    module.requires_grad_(True)
    torch.manual_seed(seed)
    loss.accumulate_gradients(phase, **inputs, sync=True, gain=gain)
    module.requires_grad_(False)
    grads = {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}
    for p in module.parameters():
        p.grad = None
    return grads


def _collector():
    return training_stats.Collector(regex='Loss/.*')  # Sees only what is reported after its creation.


# ----------------------------------------------------------------------------


def test_phases_touch_only_their_network():
    G, D = _nets()
    loss = StyleGAN2Loss('cpu', G.mapping, G.synthesis, D, r1_gamma=1)
    real, c, z, gc = _inputs()
    inputs = dict(real_img=real, real_c=c, gen_z=z, gen_c=gc)
    assert _run(loss, G, 'Gmain', **inputs) and all(p.grad is None for p in D.parameters())
    assert _run(loss, D, 'Dmain', **inputs) and all(p.grad is None for p in G.parameters())
    with pytest.raises(ValueError, match='unknown loss phase'):
        loss.accumulate_gradients('Gfoo', real, c, z, gc, sync=True, gain=1)


def test_r1_through_augmentation_matches_reference():
    G, D = _nets()
    pipe = AugmentPipe(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1, brightness=1, contrast=1)
    pipe.p.copy_(torch.tensor(1.0))
    r1_gamma = 3.0
    loss = StyleGAN2Loss('cpu', G.mapping, G.synthesis, D, augment_pipe=pipe, r1_gamma=r1_gamma)
    real, c, z, gc = _inputs()
    stats = _collector()
    grads = _run(loss, D, 'Dreg', seed=7, gain=2, real_img=real, real_c=c, gen_z=z, gen_c=gc)
    stats.update()
    reported = stats.mean('Loss/r1_penalty')

    # Reference: same augmentation draw (same seed), plain autograd with create_graph.
    D.requires_grad_(True)
    torch.manual_seed(7)
    x = real.detach().requires_grad_(True)
    (r1_grads,) = torch.autograd.grad(D(pipe(x), c).sum(), [x], create_graph=True)
    penalty = r1_grads.square().sum([1, 2, 3])
    ref = torch.autograd.grad((penalty * (r1_gamma / 2)).mean() * 2, list(D.parameters()), allow_unused=True)
    D.requires_grad_(False)
    assert reported == pytest.approx(penalty.mean().item(), rel=1e-5) and reported > 0
    for (name, _param), g in zip(D.named_parameters(), ref):
        if g is not None:
            torch.testing.assert_close(grads[name], g, rtol=1e-4, atol=1e-7, msg=name)
    assert len(grads) >= sum(g is not None for g in ref) > 0


def test_path_length_mean_updates():
    G, D = _nets()
    loss = StyleGAN2Loss('cpu', G.mapping, G.synthesis, D, style_mixing_prob=0, pl_decay=0.01, pl_batch_shrink=2)
    real, c, z, gc = _inputs()
    assert float(loss.pl_mean) == 0
    grads = _run(loss, G, 'Greg', seed=3, real_img=real, real_c=c, gen_z=z, gen_c=gc)
    assert any(name.startswith('synthesis') for name in grads) and any(name.startswith('mapping') for name in grads)

    # Reference pl_mean after one step: 0.01 * mean |J_w^T y| over the shrunk batch, same noise draws.
    torch.manual_seed(3)
    ws = G.mapping(z[:2], gc[:2], skip_w_avg_update=True).requires_grad_(True)
    img = G.synthesis(ws)
    noise = torch.randn_like(img) / 16
    (pl_grads,) = torch.autograd.grad((img * noise).sum(), [ws])
    lengths = pl_grads.square().sum(2).mean(1).sqrt()
    assert float(loss.pl_mean) == pytest.approx(0.01 * lengths.mean().item(), rel=1e-4)
    first = float(loss.pl_mean)
    _run(loss, G, 'Greg', seed=4, real_img=real, real_c=c, gen_z=z, gen_c=gc)
    assert float(loss.pl_mean) != first
    state = loss.state_dict()
    other = StyleGAN2Loss('cpu', G.mapping, G.synthesis, D)
    other.load_state_dict(state)
    assert float(other.pl_mean) == float(loss.pl_mean)


class _MeanBrightness:
    name = 'brightness'

    def __call__(self, gen_img, gen_c):
        return gen_img.mean([1, 2, 3]) * 5  # [N]


def test_extra_generator_term_is_added_and_reported():
    G, D = _nets()
    real, c, z, gc = _inputs()
    inputs = dict(real_img=real, real_c=c, gen_z=z, gen_c=gc)
    plain = StyleGAN2Loss('cpu', G.mapping, G.synthesis, D, style_mixing_prob=0)
    extra = StyleGAN2Loss('cpu', G.mapping, G.synthesis, D, style_mixing_prob=0, extra_G_terms=[_MeanBrightness()])
    grads_plain = _run(plain, G, 'Gmain', seed=9, **inputs)
    stats = _collector()
    grads_extra = _run(extra, G, 'Gmain', seed=9, **inputs)
    stats.update()

    # The term's own gradient, from the same generator draw.
    G.requires_grad_(True)
    torch.manual_seed(9)
    img = G.synthesis(G.mapping(z, gc))
    term = _MeanBrightness()(img, gc)
    ref = dict(
        zip(
            [n for n, _ in G.named_parameters()],
            torch.autograd.grad(term.mean(), list(G.parameters()), allow_unused=True),
        )
    )
    G.requires_grad_(False)
    assert stats.mean('Loss/G/brightness') == pytest.approx(term.mean().item(), rel=1e-5)
    assert stats.mean('Loss/G/total') == pytest.approx(stats.mean('Loss/G/loss') + term.mean().item(), rel=1e-5)
    for name, g in ref.items():
        if g is not None:
            torch.testing.assert_close(grads_extra[name] - grads_plain[name], g, rtol=1e-3, atol=1e-6, msg=name)


def test_extra_term_needs_a_name():
    G, D = _nets()
    with pytest.raises(TypeError, match='must be callable and have a str `.name`'):
        StyleGAN2Loss('cpu', G.mapping, G.synthesis, D, extra_G_terms=[lambda img, c: img.mean([1, 2, 3])])


def test_style_mixing_switches_latents_after_cutoff():
    G, D = _nets()
    loss = StyleGAN2Loss('cpu', G.mapping, G.synthesis, D, style_mixing_prob=1)
    _real, _c, z, gc = _inputs()
    torch.manual_seed(2)
    _img, ws = loss.run_G(z, gc, sync=True)
    plain = G.mapping(z, gc, skip_w_avg_update=True)
    same = [torch.equal(ws[:, i], plain[:, i]) for i in range(ws.shape[1])]
    assert same[0] and not all(same)
    cutoff = same.index(False)
    assert not any(same[cutoff:])


def test_real_sign_statistics_for_ada():
    G, D = _nets()
    loss = StyleGAN2Loss('cpu', G.mapping, G.synthesis, D)
    real, c, z, gc = _inputs()
    _run(loss, D, 'Dmain', real_img=real, real_c=c, gen_z=z, gen_c=gc)
    signs = D(real, c).sign()
    total, count = loss.take_real_sign_stats().tolist()
    assert count == 4 and total == signs.sum().item()
    assert loss.take_real_sign_stats().tolist() == [0, 0]


# ----------------------------------------------------------------------------


def test_cpu_bfloat16_keeps_every_phase_close_to_fp32(monkeypatch):
    """train.py --cpu-bf16: the mixed-precision blocks run in bfloat16 on the CPU; losses of every phase (R1 and
    path length included) stay within 3% of the fp32 reference and gradients point the same way."""
    from training import networks

    real, c, z, gc = _inputs()
    inputs = dict(real_img=real, real_c=c, gen_z=z, gen_c=gc)
    results = {}
    for bf16 in (False, True):
        monkeypatch.setattr(networks, 'cpu_bfloat16', bf16)
        torch.manual_seed(0)
        common = dict(c_dim=2, img_resolution=16, img_channels=1)
        mixed = dict(channel_base=256, channel_max=16, num_fp16_res=2, conv_clamp=256)
        G = Generator(z_dim=16, w_dim=16, mapping_kwargs=dict(num_layers=2), synthesis_kwargs=mixed, **common)
        D = Discriminator(epilogue_kwargs=dict(mbstd_group_size=2), **mixed, **common)
        G, D = G.train().requires_grad_(False), D.train().requires_grad_(False)
        loss = StyleGAN2Loss('cpu', G.mapping, G.synthesis, D, r1_gamma=1, pl_weight=2, pl_batch_shrink=2)
        collector = _collector()
        phases = ('Gmain', 'Greg', 'Dmain', 'Dreg')
        grads = {phase: _run(loss, G if phase[0] == 'G' else D, phase, **inputs) for phase in phases}
        collector.update()
        results[bf16] = grads, {name: collector.mean(name) for name in collector.names() if collector.num(name)}
        assert (networks._block_dtype(True, False, torch.device('cpu')) == torch.bfloat16) == bf16
    (grads32, stats32), (grads16, stats16) = results[False], results[True]
    assert stats32.keys() == stats16.keys() and 'Loss/r1_penalty' in stats32 and 'Loss/pl_penalty' in stats32
    for name, value in stats32.items():
        assert abs(stats16[name] - value) <= 0.03 * abs(value) + 1e-3, name  # Measured: within 2%.
    for phase, reference in grads32.items():
        flat32 = torch.cat([g.flatten() for g in reference.values()])
        flat16 = torch.cat([grads16[phase][name].flatten() for name in reference])
        assert not torch.equal(flat16, flat32)  # bfloat16 really ran.
        # Measured: relative error 0.02-0.07, cosine 0.998-0.9998 (bfloat16 keeps 8 bits of mantissa).
        assert (flat16 - flat32).norm() <= 0.1 * flat32.norm(), phase
        assert torch.nn.functional.cosine_similarity(flat16, flat32, dim=0) >= 0.995, phase

"""StyleGAN2-ADA loss (Karras et al. 2020): non-saturating logistic loss, lazy R1 on reals seen through the
augmentation pipe, path-length regularisation and style mixing, plus pluggable extra generator terms."""

import numpy as np
import torch

import dnnlib
from torch_utils import misc, training_stats
from torch_utils.ops import conv2d_gradfix

# ----------------------------------------------------------------------------
# Loss interface used by the training loop.


class Loss:
    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, sync, gain):  # to be overridden
        raise NotImplementedError


# ----------------------------------------------------------------------------
# Phases: 'Gmain'/'Dmain' = adversarial terms, 'Greg'/'Dreg' = lazy regularisers, '*both' = both at once.

PHASES = ('Gmain', 'Greg', 'Gboth', 'Dmain', 'Dreg', 'Dboth')


class StyleGAN2Loss(Loss):
    # fmt: off
    def __init__(
        self,
        device,                      # torch.device the networks live on.
        G_mapping,                   # z, c -> ws.
        G_synthesis,                 # ws -> image.
        D,                           # image, c -> logits [N, 1].
        augment_pipe      = None,    # ADA pipe applied to every image D sees; None = no augmentation.
        style_mixing_prob = 0.9,     # Probability of mixing two latents at a random layer.
        r1_gamma          = 10,      # R1 weight (gamma); 0 = off.
        pl_batch_shrink   = 2,       # Path-length batch is this many times smaller.
        pl_decay          = 0.01,    # EMA decay of the path-length mean.
        pl_weight         = 2,       # Path-length weight; 0 = off.
        extra_G_terms     = (),      # Callables term(gen_img, gen_c) -> [N] loss with a `.name`, or
                                     # class_name dicts that build one (e.g. the clinical loss).
    ):
        # fmt: on
        super().__init__()
        self.device = device
        self.G_mapping = G_mapping
        self.G_synthesis = G_synthesis
        self.D = D
        self.augment_pipe = augment_pipe
        self.style_mixing_prob = style_mixing_prob
        self.r1_gamma = r1_gamma
        self.pl_batch_shrink = pl_batch_shrink
        self.pl_decay = pl_decay
        self.pl_weight = pl_weight
        self.pl_mean = torch.zeros([], device=device)
        self.real_sign_acc = torch.zeros([2], dtype=torch.float64, device=device)  # [sum, count] for ADA.
        self.extra_G_terms = [_build_term(term, device) for term in extra_G_terms]

    def run_G(self, z, c, sync):
        with misc.ddp_sync(self.G_mapping, sync):
            ws = self.G_mapping(z, c)
            if self.style_mixing_prob > 0:
                ws = self._mix_styles(ws, z, c)
        with misc.ddp_sync(self.G_synthesis, sync):
            img = self.G_synthesis(ws)
        return img, ws

    def _mix_styles(self, ws, z, c):
        # Past a random cutoff layer, take the styles of a second latent (with probability style_mixing_prob).
        with torch.autograd.profiler.record_function('style_mixing'):
            num_ws = ws.shape[1]
            cutoff = torch.empty([], dtype=torch.int64, device=ws.device).random_(1, num_ws)
            cutoff = torch.where(torch.rand([], device=ws.device) < self.style_mixing_prob, cutoff, num_ws)
            ws_other = self.G_mapping(torch.randn_like(z), c, skip_w_avg_update=True)
            use_other = torch.arange(num_ws, device=ws.device)[None, :, None] >= cutoff  # [1, num_ws, 1]
            return torch.where(use_other, ws_other, ws)

    def run_D(self, img, c, sync):
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        with misc.ddp_sync(self.D, sync):
            logits = self.D(img, c)
        return logits

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, sync, gain):
        """Run one phase on one batch and accumulate (gain-scaled) gradients into the networks' .grad."""
        if phase not in PHASES:
            raise ValueError(f'unknown loss phase {phase!r}; expected one of {PHASES}')
        do_Gmain = phase in ('Gmain', 'Gboth')
        do_Dmain = phase in ('Dmain', 'Dboth')
        do_Gpl = phase in ('Greg', 'Gboth') and self.pl_weight != 0
        do_Dr1 = phase in ('Dreg', 'Dboth') and self.r1_gamma != 0

        if do_Gmain:
            with torch.autograd.profiler.record_function('Gmain_forward'):
                loss_G = self._generator_loss(gen_z, gen_c, sync=(sync and not do_Gpl))
            with torch.autograd.profiler.record_function('Gmain_backward'):
                loss_G.mean().mul(gain).backward()
        if do_Gpl:
            self._path_length_step(gen_z, gen_c, sync, gain)
        loss_Dgen = 0
        if do_Dmain:
            loss_Dgen = self._fake_logits_step(gen_z, gen_c, gain)
        if do_Dmain or do_Dr1:
            self._real_logits_step(real_img, real_c, sync, gain, loss_Dgen, do_Dmain, do_Dr1)

    def _generator_loss(self, gen_z, gen_c, sync):
        # Gmain: maximise D's logits for generated images, plus any extra generator terms. -> [N]
        gen_img, _gen_ws = self.run_G(gen_z, gen_c, sync=sync)
        gen_logits = self.run_D(gen_img, gen_c, sync=False)
        training_stats.report('Loss/scores/fake', gen_logits)
        training_stats.report('Loss/signs/fake', gen_logits.sign())
        loss_G = torch.nn.functional.softplus(-gen_logits).flatten()  # -log(sigmoid(logits))
        training_stats.report('Loss/G/loss', loss_G)
        for term in self.extra_G_terms:
            loss_term = term(gen_img, gen_c)
            misc.assert_shape(loss_term, [gen_img.shape[0]])
            training_stats.report(f'Loss/G/{term.name}', loss_term)
            loss_G = loss_G + loss_term
        if self.extra_G_terms:
            training_stats.report('Loss/G/total', loss_G)
        return loss_G

    def _path_length_step(self, gen_z, gen_c, sync, gain):
        # Greg: penalise deviation of |J_w^T y| from its running mean (StyleGAN2 Sec. 3.2).
        with torch.autograd.profiler.record_function('Gpl_forward'):
            batch_size = max(gen_z.shape[0] // self.pl_batch_shrink, 1)
            gen_img, gen_ws = self.run_G(gen_z[:batch_size], gen_c[:batch_size], sync=sync)
            pl_noise = torch.randn_like(gen_img) / np.sqrt(gen_img.shape[2] * gen_img.shape[3])
            with torch.autograd.profiler.record_function('pl_grads'), conv2d_gradfix.no_weight_gradients():
                (pl_grads,) = torch.autograd.grad(
                    outputs=[(gen_img * pl_noise).sum()], inputs=[gen_ws], create_graph=True, only_inputs=True
                )
            pl_lengths = pl_grads.square().sum(2).mean(1).sqrt()  # [N]
            pl_mean = self.pl_mean.lerp(pl_lengths.mean(), self.pl_decay)
            self.pl_mean.copy_(pl_mean.detach())
            pl_penalty = (pl_lengths - pl_mean).square()
            training_stats.report('Loss/pl_penalty', pl_penalty)
            loss_Gpl = pl_penalty * self.pl_weight
            training_stats.report('Loss/G/reg', loss_Gpl)
        with torch.autograd.profiler.record_function('Gpl_backward'):
            # The `gen_img * 0` keeps every synthesis parameter in the graph (uniform DDP behaviour).
            (gen_img[:, 0, 0, 0] * 0 + loss_Gpl).mean().mul(gain).backward()

    def _fake_logits_step(self, gen_z, gen_c, gain):
        # Dmain, fake half: minimise D's logits for generated images. -> [N] loss for reporting.
        with torch.autograd.profiler.record_function('Dgen_forward'):
            gen_img, _gen_ws = self.run_G(gen_z, gen_c, sync=False)
            gen_logits = self.run_D(gen_img, gen_c, sync=False)  # Synced by the real half below.
            training_stats.report('Loss/scores/fake', gen_logits)
            training_stats.report('Loss/signs/fake', gen_logits.sign())
            loss_Dgen = torch.nn.functional.softplus(gen_logits)  # -log(1 - sigmoid(logits))
        with torch.autograd.profiler.record_function('Dgen_backward'):
            loss_Dgen.mean().mul(gain).backward()
        return loss_Dgen.detach()

    def _real_logits_step(self, real_img, real_c, sync, gain, loss_Dgen, do_Dmain, do_Dr1):
        # Dmain, real half: maximise D's logits for reals. Dreg: R1 = |grad_x D(aug(x))|^2 through the pipe.
        name = 'Dreal_Dr1' if do_Dmain and do_Dr1 else 'Dreal' if do_Dmain else 'Dr1'
        with torch.autograd.profiler.record_function(name + '_forward'):
            real_img_tmp = real_img.detach().requires_grad_(do_Dr1)
            real_logits = self.run_D(real_img_tmp, real_c, sync=sync)
            training_stats.report('Loss/scores/real', real_logits)
            training_stats.report('Loss/signs/real', real_logits.sign())
            self._accumulate_real_signs(real_logits)
            loss_Dreal = 0
            if do_Dmain:
                loss_Dreal = torch.nn.functional.softplus(-real_logits)
                training_stats.report('Loss/D/loss', loss_Dgen + loss_Dreal)
            loss_Dr1 = 0
            if do_Dr1:
                with torch.autograd.profiler.record_function('r1_grads'), conv2d_gradfix.no_weight_gradients():
                    (r1_grads,) = torch.autograd.grad(
                        outputs=[real_logits.sum()], inputs=[real_img_tmp], create_graph=True, only_inputs=True
                    )
                r1_penalty = r1_grads.square().sum([1, 2, 3])
                loss_Dr1 = r1_penalty * (self.r1_gamma / 2)
                training_stats.report('Loss/r1_penalty', r1_penalty)
                training_stats.report('Loss/D/reg', loss_Dr1)
        with torch.autograd.profiler.record_function(name + '_backward'):
            (real_logits * 0 + loss_Dreal + loss_Dr1).mean().mul(gain).backward()

    def _accumulate_real_signs(self, real_logits):
        signs = real_logits.detach().sign().to(torch.float64)
        self.real_sign_acc += torch.stack([signs.sum(), torch.tensor(float(signs.numel()), device=signs.device)])

    def take_real_sign_stats(self):
        """Return (sum, count) of sign(D(real)) since the last call, and reset; feeds the ADA heuristic r_t."""
        stats = self.real_sign_acc.clone()
        self.real_sign_acc.zero_()
        return stats

    def state_dict(self):
        """Loss state that exact resume needs (pl_mean, pending ADA sign statistics)."""
        return dict(pl_mean=self.pl_mean.detach().cpu().clone(), real_sign_acc=self.real_sign_acc.cpu().clone())

    def load_state_dict(self, state):
        self.pl_mean.copy_(state['pl_mean'].to(self.device))
        self.real_sign_acc.copy_(state['real_sign_acc'].to(self.device))


# ----------------------------------------------------------------------------
# Extra generator terms: accept a ready callable or a dnnlib class_name spec; move modules to the device.


def _build_term(term, device):
    if isinstance(term, dict):
        term = dnnlib.util.construct_class_by_name(**term)
    if not callable(term) or not isinstance(getattr(term, 'name', None), str):
        raise TypeError(f'extra generator term {term!r} must be callable and have a str `.name`')
    if isinstance(term, torch.nn.Module):
        term = term.to(device)
    return term


# ----------------------------------------------------------------------------

"""Training phases (Gmain, Greg, Dmain, Dreg, or *both without lazy regularisation) and their optimizer step.

Each phase's step is built from a class_name config (`G_step_kwargs`, `D_step_kwargs`), so that a private
discriminator step (DP-SGD) can replace the standard one without touching the loop.
"""

import torch

import dnnlib

# ----------------------------------------------------------------------------
# Loss and phases. Lazy regularisation rescales Adam's lr and betas (StyleGAN2 Appendix B).


def setup_phases(opts, nets, device):
    loss = dnnlib.util.construct_class_by_name(
        device=device, G_mapping=nets.G.mapping, G_synthesis=nets.G.synthesis, D=nets.D,
        augment_pipe=nets.augment_pipe, **opts.loss_kwargs,
    )  # fmt: skip
    phases = []
    for name, module, opt_kwargs, reg_interval, step_kwargs in [
        ('G', nets.G, opts.G_opt_kwargs, opts.G_reg_interval, opts.G_step_kwargs),
        ('D', nets.D, opts.D_opt_kwargs, opts.D_reg_interval, opts.D_step_kwargs),
    ]:
        opt_kwargs = dnnlib.EasyDict(opt_kwargs)
        intervals = {name + 'both': 1} if reg_interval is None else {name + 'main': 1, name + 'reg': reg_interval}
        if reg_interval is not None:
            mb_ratio = reg_interval / (reg_interval + 1)
            opt_kwargs.lr = opt_kwargs.lr * mb_ratio
            opt_kwargs.betas = [beta**mb_ratio for beta in opt_kwargs.betas]
        opt = dnnlib.util.construct_class_by_name(module.parameters(), **opt_kwargs)
        for phase_name, interval in intervals.items():
            phase = dnnlib.EasyDict(name=phase_name, module=module, opt=opt, interval=interval)
            step_kwargs = step_kwargs or dict(class_name='training.phases.PhaseStep')
            phase.step = dnnlib.util.construct_class_by_name(
                **step_kwargs, phase=phase, loss=loss, num_gpus=opts.num_gpus
            )
            phases.append(phase)
    return loss, phases


# ----------------------------------------------------------------------------
# The standard step: accumulate gradients over rounds, average them across ranks, take an optimizer step.


class PhaseStep:
    def __init__(self, phase, loss, num_gpus):
        self.phase, self.loss, self.num_gpus = phase, loss, num_gpus

    def __call__(self, real_img, real_c, gen_z, gen_c):
        """One optimizer step; each argument is a list of per-round chunks of batch_gpu items."""
        phase = self.phase
        phase.opt.zero_grad(set_to_none=True)
        phase.module.requires_grad_(True)
        num_rounds = len(real_img)
        for round_idx, (r_img, r_c, g_z, g_c) in enumerate(zip(real_img, real_c, gen_z, gen_c)):
            self.loss.accumulate_gradients(
                phase=phase.name, real_img=r_img, real_c=r_c, gen_z=g_z, gen_c=g_c,
                sync=round_idx == num_rounds - 1, gain=phase.interval,
            )  # fmt: skip
        phase.module.requires_grad_(False)
        with torch.autograd.profiler.record_function(phase.name + '_opt'):
            self.average_gradients(num_rounds)
            phase.opt.step()

    def average_gradients(self, num_rounds):
        params = [param for param in self.phase.module.parameters() if param.grad is not None]
        if not params:
            return
        flat = torch.cat([param.grad.flatten() for param in params]) / num_rounds
        if self.num_gpus > 1:
            torch.distributed.all_reduce(flat)
            flat /= self.num_gpus
        torch.nan_to_num(flat, nan=0, posinf=1e5, neginf=-1e5, out=flat)
        for param, grad in zip(params, flat.split([param.numel() for param in params])):
            param.grad = grad.reshape(param.shape)


# ----------------------------------------------------------------------------

"""Differential privacy by DP-SGD (Abadi et al. 2016) for the discriminator and for classifiers.

Only D reads private images; G learns from D's outputs and inherits D's guarantee by post-processing. The
privacy unit is one image, or one patient when the dataset has groups: units are Poisson-sampled (rate q) and
each unit's gradient is clipped as a whole. Per-sample gradients come from torch.func (vmap of grad over
functional_call, R1 nested inside); opacus' DPOptimizer clips each row to C, adds N(0, (sigma C)^2) to the sum
and divides by the expected batch size; an accountant turns (sigma, q, steps) into epsilon at delta.

Modes (the ablation arms, --dp-mode):
    full        clip each unit's gradient to C and add the noise: DP.
    clip-only   clip, no noise (sigma = 0): not DP, epsilon = inf.
    noise-only  the full arm's noise N(0, (sigma C)^2) on the unclipped sum: not DP (unbounded sensitivity).
"""

import contextlib
import math
import warnings

import numpy as np
import torch
from opacus.accountants import create_accountant
from opacus.accountants.utils import get_noise_multiplier
from opacus.optimizers import DPOptimizer
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from torch.func import functional_call, grad, grad_and_value, vmap

import dnnlib
from torch_utils import training_stats

MODES = ('full', 'clip-only', 'noise-only')
ACCOUNTANTS = ('rdp', 'prv')

# ----------------------------------------------------------------------------
# Accounting. A history is a list of (sigma, q, steps), as opacus' accountants keep it; composing two trainings
# (e.g. the clinical classifier's and the GAN's) is concatenating their histories.


def epsilon_of(history, delta: float, accountant: str = 'prv') -> float:
    """Epsilon at `delta` of the composed history; inf when any entry has no noise."""
    history = [tuple(entry) for entry in history if entry[2] > 0]
    if not history:
        return 0.0
    if any(sigma <= 0 for sigma, _, _ in history):
        return math.inf
    counter = create_accountant(accountant)
    counter.history = history
    with _valid_rdp_bound():
        return float(counter.get_epsilon(delta))


@contextlib.contextmanager
def _valid_rdp_bound():
    """Silences RDP's "optimal order is the largest alpha" on large budgets: the bound is loose but valid."""
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='Optimal order')
        yield


def default_delta(num_units: int) -> float:
    return 0.1 / num_units  # Well below 1/N, the level at which releasing one random unit would be "private".


def noise_for_budget(epsilon, delta, q, steps, accountant, prior=()) -> float:
    """Smallest sigma (within opacus' tolerance) whose history, composed with `prior`, stays within epsilon."""
    if not prior:
        with _valid_rdp_bound():
            sigma = get_noise_multiplier(
                target_epsilon=epsilon, target_delta=delta, sample_rate=q, steps=steps, accountant=accountant
            )
        return float(sigma)
    if epsilon_of(prior, delta, accountant) >= epsilon:
        raise ValueError(f'the earlier DP training already spends epsilon {epsilon_of(prior, delta, accountant):.3g} '
                         f'of the {epsilon:g} budget')  # fmt: skip
    low, high = 0.0, 1.0
    while epsilon_of([*prior, (high, q, steps)], delta, accountant) > epsilon:
        low, high = high, high * 2
        if high > 1e6:
            raise ValueError(f'epsilon {epsilon:g} cannot be reached')
    while high - low > 1e-3 * high:
        mid = (low + high) / 2
        low, high = (mid, high) if epsilon_of([*prior, (mid, q, steps)], delta, accountant) > epsilon else (low, mid)
    return high


def max_steps_within(epsilon, delta, sigma, q, accountant, prior=()) -> int:
    """The most steps at (sigma, q) that keep the composition within epsilon (the budget's stopping point)."""
    spent = lambda steps: epsilon_of([*prior, (sigma, q, steps)], delta, accountant)  # noqa: E731
    if spent(1) > epsilon:
        return 0
    low, high = 1, 2
    while spent(high) <= epsilon and high < 10**9:
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if spent(mid) <= epsilon else (low, mid)
    return low


# ----------------------------------------------------------------------------
# The plan: sigma, q, delta and the budget's step limit from the flags (train.py and classify.py --dp-*).


def plan_privacy(num_units, num_items, batch_size, steps, *, mode='full', epsilon=None, noise=None, delta=None,
                 clip=1.0, accountant='prv', unit='image', prior=()) -> dict:  # fmt: skip
    """A plain dict describing the DP-SGD run; ValueError names the flag that is wrong. `prior`: release records
    (e.g. the clinical classifier's) of earlier DP trainings on the same private data, composed with this one."""
    if mode not in MODES:
        raise ValueError(f'--dp-mode: {mode!r} is not one of {", ".join(MODES)}')
    if accountant not in ACCOUNTANTS:
        raise ValueError(f'--dp-accountant: {accountant!r} is not one of {", ".join(ACCOUNTANTS)}')
    if mode != 'clip-only' and epsilon is None and noise is None:
        raise ValueError('--dp: give a target --dp-epsilon or a noise multiplier --dp-noise')
    if not 0 < batch_size <= num_items:
        raise ValueError(f'--batch: {batch_size} must be between 1 and the {num_items} training images')
    if delta is not None and not 0 < delta < 1:
        raise ValueError(f'--dp-delta: {delta} must be in (0, 1)')
    q = batch_size / num_items  # Expected images per step = batch_size, whether units are images or patients.
    delta = default_delta(num_units) if delta is None else float(delta)
    composed_with, prior = list(prior), [tuple(entry) for record in prior for entry in record['history']]
    sigma = 0.0 if mode == 'clip-only' else noise
    if sigma is None:
        sigma = noise_for_budget(epsilon, delta, q, steps, accountant, prior)
    max_steps = None
    if mode == 'full' and epsilon is not None:
        max_steps = max_steps_within(epsilon, delta, sigma, q, accountant, prior)
        if max_steps == 0:
            raise ValueError(f'--dp-epsilon: {epsilon:g} is spent before the first step at sigma {sigma:g}')
    planned = epsilon_of([*prior, (sigma, q, steps)], delta, accountant) if mode == 'full' else math.inf
    return dict(mode=mode, sigma=float(sigma), clip=float(clip), sample_rate=q, delta=delta, batch_size=batch_size,
                planned_steps=int(steps), max_steps=max_steps, target_epsilon=epsilon, planned_epsilon=planned,
                accountant=accountant, unit=unit, num_units=num_units, num_items=num_items, prior=prior,
                composed_with=composed_with)  # fmt: skip


def describe_plan(plan: dict) -> str:
    parts = [
        f'mode {plan["mode"]}', f'sigma {plan["sigma"]:.4g}', f'C {plan["clip"]:g}', f'q {plan["sample_rate"]:.4g}',
        f'delta {plan["delta"]:.3g}', f'{plan["planned_steps"]} steps', f'{plan["num_units"]} {plan["unit"]}s',
        f'planned epsilon {plan["planned_epsilon"]:.3f} ({plan["accountant"]})',
    ]  # fmt: skip
    if plan['composed_with']:
        parts.append(f'composed with {len(plan["composed_with"])} earlier DP training(s)')
    if plan['max_steps'] is not None and plan['max_steps'] < plan['planned_steps']:
        parts.append(f'budget {plan["target_epsilon"]:g} stops training after {plan["max_steps"]} steps')
    return 'DP-SGD: ' + ', '.join(parts)


def release_record(plan: dict, steps: int) -> dict:
    """What a snapshot or classifier states about its privacy (plain data)."""
    history = [*plan['prior'], (plan['sigma'], plan['sample_rate'], steps)]
    dp = plan['mode'] == 'full'
    return dict(
        mode=plan['mode'], dp=dp, epsilon=epsilon_of(history, plan['delta'], plan['accountant']) if dp else math.inf,
        delta=plan['delta'], accountant=plan['accountant'], sigma=plan['sigma'], clip=plan['clip'],
        sample_rate=plan['sample_rate'], steps=steps, unit=plan['unit'], num_units=plan['num_units'],
        history=[list(entry) for entry in history], composed_with=plan['composed_with'],
    )  # fmt: skip


def describe_release(record) -> str:
    """One line: 'epsilon 9.87 at delta 5e-05 (prv, 1200 steps, ...)' or 'no DP'."""
    if not record:
        return 'no DP'
    if not record['dp']:
        return f'not DP (--dp-mode {record["mode"]}: epsilon = inf)'
    composed = len(record['composed_with'])
    return (
        f'epsilon {record["epsilon"]:.3f} at delta {record["delta"]:.3g} ({record["accountant"]}, '
        f'{record["steps"]} steps, sigma {record["sigma"]:.4g}, C {record["clip"]:g}, q {record["sample_rate"]:.4g}, '
        f'per {record["unit"]}' + (f', composed with {composed} earlier DP training(s))' if composed else ')')
    )


# ----------------------------------------------------------------------------
# Per-sample gradients: vmap over the batch of grad of one sample's loss, the module run by functional_call.
# `sample_loss(forward, *sample)` gets one sample (no batch dim) and `forward(*batch_of_one)`.


def per_sample_gradients(module, sample_loss, *batch, chunk_size=None, has_aux=False):
    """{parameter name: [N, *shape]} (and the per-sample aux outputs when has_aux)."""
    params = {name: p.detach() for name, p in module.named_parameters() if p.requires_grad}
    buffers = dict(module.named_buffers())

    def loss(params, *sample):
        return sample_loss(lambda *args: functional_call(module, (params, buffers), args), *sample)

    if batch[0].shape[0] == 0:  # vmap cannot map over nothing: an empty Poisson batch has no rows.
        grads = {name: p.new_zeros([0, *p.shape]) for name, p in params.items()}
        return (grads, batch[0].new_zeros([0])) if has_aux else grads
    in_dims = (None,) + (0,) * len(batch)
    per_sample = vmap(grad(loss, has_aux=has_aux), in_dims=in_dims, chunk_size=chunk_size, randomness='different')
    return per_sample(params, *batch)


def sum_by_unit(grads: dict, unit_index, num_units: int | None = None) -> dict:
    """Rows of one privacy unit (a patient's images) summed into one row, so they are clipped together.
    `unit_index`: each row's unit (UnitSampler.sample's rows); num_units defaults to the largest index + 1."""
    unit_index = torch.as_tensor(unit_index, dtype=torch.int64)
    if num_units is None:
        num_units = int(unit_index.max()) + 1 if len(unit_index) else 0
    return {name: g.new_zeros([num_units, *g.shape[1:]]).index_add_(0, unit_index.to(g.device), g)
            for name, g in grads.items()}  # fmt: skip


class _UnclippedDPOptimizer(DPOptimizer):
    """noise-only arm: sums the per-sample gradients as they are; the noise is the full arm's N(0, (sigma C)^2)."""

    def clip_and_accumulate(self):
        for p in self.params:
            grad_sum = self._get_flat_grad_sample(p).to(p.dtype).sum(dim=0)
            p.summed_grad = grad_sum if p.summed_grad is None else p.summed_grad + grad_sum


def make_dp_optimizer(optimizer, plan) -> DPOptimizer:
    cls = _UnclippedDPOptimizer if plan['mode'] == 'noise-only' else DPOptimizer
    return cls(optimizer, noise_multiplier=plan['sigma'], max_grad_norm=plan['clip'],
               expected_batch_size=plan['batch_size'], loss_reduction='mean')  # fmt: skip


def take_dp_step(dp_optimizer, params: dict, grad_samples: dict) -> None:
    """Write [N, ...] per-sample rows into p.grad_sample and take one clipped, noised optimizer step."""
    for name, p in params.items():
        p.grad_sample = grad_samples[name]
    dp_optimizer.step()
    dp_optimizer.zero_grad(set_to_none=True)


# ----------------------------------------------------------------------------
# Poisson sampling of privacy units (opacus' sampler, on the global torch RNG so runs resume exactly).


class UnitSampler:
    def __init__(self, num_items, groups, sample_rate):
        if groups is None:
            self.unit_of_item = np.arange(num_items)
        else:
            _, self.unit_of_item = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
        self.num_units = int(self.unit_of_item.max()) + 1 if num_items else 0
        self.items_of_unit = [[] for _ in range(self.num_units)]
        for item, unit in enumerate(self.unit_of_item):
            self.items_of_unit[unit].append(item)
        self.sampler = UniformWithReplacementSampler(num_samples=self.num_units, sample_rate=sample_rate, steps=1)

    @classmethod
    def for_plan(cls, plan: dict, groups):
        """Poisson sampling of the plan's units: patients (by `groups`) or single images."""
        return cls(plan['num_items'], groups if plan['unit'] == 'patient' else None, plan['sample_rate'])

    def sample(self) -> tuple[list[int], np.ndarray]:
        """(item indices, for each item its row among the sampled units)."""
        units = next(iter(self.sampler))
        items = [item for unit in units for item in self.items_of_unit[unit]]
        rows = np.concatenate([[row] * len(self.items_of_unit[unit]) for row, unit in enumerate(units)] or [[]])
        return items, rows.astype(np.int64)


# ----------------------------------------------------------------------------
# The private discriminator step (replaces training.phases.PhaseStep for D's one phase, 'Dboth').
# Each step: Poisson-sample real units, generate fakes, augment both (p fixed under DP), per-sample gradients
# of softplus(-D(real)) (+ lazy R1 every r1_interval steps, weighted by the interval) and softplus(D(fake)),
# one DPOptimizer step over real-unit and fake rows (each clipped on its own), one accountant step.
# R1 is the gradient w.r.t. the augmented real image (upstream: w.r.t. the image before the pipe).


class DPDiscriminatorStep:
    def __init__(self, phase, loss, num_gpus, *, privacy, training_set_kwargs, r1_interval=16, chunk_size=None):
        if num_gpus != 1:
            raise ValueError('DP-SGD runs in one process (--gpus=1)')
        self.phase, self.loss, self.plan = phase, loss, privacy
        self.r1_interval, self.chunk_size = r1_interval, chunk_size
        self.training_set = dnnlib.util.construct_class_by_name(**training_set_kwargs)
        self.units = UnitSampler.for_plan(privacy, self.training_set.groups)
        phase.module.requires_grad_(True)  # DPOptimizer sets up the parameters that require grad.
        self.optimizer = make_dp_optimizer(phase.opt, privacy)
        phase.module.requires_grad_(False)
        self.steps = 0

    @property
    def stop_reason(self):
        max_steps = self.plan['max_steps']
        if max_steps is None or self.steps < max_steps:
            return None
        return (f'privacy budget reached: epsilon {self.plan["target_epsilon"]:g} at delta {self.plan["delta"]:.3g} '
                f'allows {max_steps} D steps')  # fmt: skip

    def __call__(self, real_img, real_c, gen_z, gen_c):
        del real_img, real_c  # Never the loop's batch: reals are Poisson-sampled here, the only private read.
        if self.stop_reason is not None:
            return
        D, device = self.phase.module, self.loss.device
        reals, reals_c, rows = self._sample_reals(device)
        with torch.no_grad():
            fakes, _ws = self.loss.run_G(torch.cat(gen_z), torch.cat(gen_c), sync=False)
            if self.loss.augment_pipe is not None:
                reals, fakes = self.loss.augment_pipe(reals), self.loss.augment_pipe(fakes)
        D.requires_grad_(True)
        r1_weight = self.loss.r1_gamma / 2 * self.r1_interval if self.steps % self.r1_interval == 0 else 0.0
        real_grads = per_sample_gradients(D, _real_loss(r1_weight), reals, reals_c, chunk_size=self.chunk_size)
        real_grads = sum_by_unit(real_grads, rows)
        fake_grads, fake_logits = per_sample_gradients(
            D, _fake_loss, fakes, torch.cat(gen_c), chunk_size=self.chunk_size, has_aux=True
        )
        params = {name: p for name, p in D.named_parameters() if p.requires_grad}
        take_dp_step(self.optimizer, params, {k: torch.cat([real_grads[k], fake_grads[k]]) for k in params})
        D.requires_grad_(False)
        self.steps += 1
        training_stats.report('Loss/scores/fake', fake_logits)
        training_stats.report('Loss/signs/fake', fake_logits.sign())
        training_stats.report('Loss/D/fake', torch.nn.functional.softplus(fake_logits))

    def report_tick(self):  # Once per tick (the loop calls it): the epsilon spent so far.
        epsilon = self.release_record()['epsilon']
        if math.isfinite(epsilon):  # The ablation arms' inf would turn the running statistics into nan.
            training_stats.report0('Privacy/epsilon', epsilon)
        training_stats.report0('Privacy/steps', self.steps)

    def _sample_reals(self, device):
        items, rows = self.units.sample()
        shape = [0, *self.training_set.image_shape]
        samples = [self.training_set[i] for i in items]
        images = np.stack([img for img, _ in samples]) if samples else np.zeros(shape, np.uint8)
        labels = np.stack([c for _, c in samples]) if samples else np.zeros([0, self.training_set.label_dim])
        images = torch.from_numpy(images).to(device).to(torch.float32) / 127.5 - 1
        labels = torch.from_numpy(labels).to(device).to(torch.float32)
        return images, labels, rows

    def state_dict(self):
        return dict(steps=self.steps)

    def load_state_dict(self, state):
        self.steps = int(state['steps'])

    def release_record(self):
        return release_record(self.plan, self.steps)


def _real_loss(r1_weight):
    def sample_loss(forward, img, c):
        logit = lambda x: forward(x[None], c[None])[0, 0]  # noqa: E731
        if not r1_weight:
            return torch.nn.functional.softplus(-logit(img))
        img_grad, value = grad_and_value(logit)(img)
        return torch.nn.functional.softplus(-value) + r1_weight * img_grad.square().sum()

    return sample_loss


def _fake_loss(forward, img, c):
    value = forward(img[None], c[None])[0, 0]
    return torch.nn.functional.softplus(value), value.detach()


# ----------------------------------------------------------------------------

"""Network snapshots and exact resume: the one place that saves and loads everything a run needs.

A snapshot holds the official keys (G, D, G_ema, augment_pipe, training_set_kwargs) plus `dataset_info`,
`loss_terms` (what each extra generator term records, e.g. the clinical classifier's sha256 and weight), `privacy`
(the DP-SGD release record: epsilon, delta, sigma, C, q, steps; None without DP) and
`resume_state` (progress, optimizers, loss statistics, ADA p and RNG state), so a resumed run equals an
uninterrupted one. An official pickle (no `resume_state`) loads as transfer learning from kimg 0.
"""

import copy
import pickle
import random

import numpy as np
import torch

import dnnlib
from torch_utils import misc

# ----------------------------------------------------------------------------
# Snapshot name tag: '000004' (official); with fractional ticks '000000.016' so short runs don't overwrite.


def kimg_tag(cur_nimg, kimg_per_tick):
    tag = f'{cur_nimg // 1000:06d}'
    if (kimg_per_tick * 1000) % 1000 != 0:
        tag += f'.{cur_nimg % 1000:03d}'
    return tag


# ----------------------------------------------------------------------------
# Save: every rank calls this (DDP consistency check, all-reduce of pending ADA statistics); rank 0 writes
# the pickle atomically.


def save_snapshot(path, opts, nets, loss, phases, progress, training_set):
    """Write `path` on rank 0 and return the snapshot dict (networks are CPU copies in eval mode)."""
    data = dict(training_set_kwargs=dict(opts.training_set_kwargs), dataset_info=describe_dataset(training_set))
    for name in ('G', 'D', 'G_ema', 'augment_pipe'):
        module = nets[name]
        if module is not None:
            if opts.num_gpus > 1:
                misc.check_ddp_consistency(module, ignore_regex=r'.*\.w_avg')
            module = copy.deepcopy(module).eval().requires_grad_(False).cpu()
        data[name] = module
    data['loss_terms'] = describe_loss_terms(loss)
    data['privacy'] = describe_privacy(phases)
    data['resume_state'] = capture_resume_state(opts, nets, loss, phases, progress)
    if opts.rank == 0:
        with dnnlib.util.atomic_write(path, 'wb') as f:
            pickle.dump(data, f)
    return data


def describe_dataset(training_set):
    return dict(
        name=training_set.name, resolution=training_set.resolution, num_channels=training_set.num_channels,
        label_dim=training_set.label_dim, class_names=training_set.class_names, label_schema=training_set.label_schema,
    )  # fmt: skip


def describe_loss_terms(loss):
    """{name: record} of the extra generator terms that keep a `.record` dict (plain data, no tensors)."""
    terms = getattr(loss, 'extra_G_terms', ())
    return {term.name: copy.deepcopy(dict(term.record)) for term in terms if hasattr(term, 'record')}


def describe_privacy(phases):
    """The DP step's release record (epsilon, delta, sigma, C, q, steps, accountant), or None without DP."""
    records = [phase.step.release_record() for phase in phases if hasattr(phase.step, 'release_record')]
    return records[0] if records else None


def capture_resume_state(opts, nets, loss, phases, progress):
    """Everything beyond the official snapshot keys that an exact continuation needs."""
    pending = loss.take_real_sign_stats()  # Consolidate pending ADA statistics on rank 0.
    if opts.num_gpus > 1:
        torch.distributed.all_reduce(pending)
    loss.real_sign_acc.copy_(pending if opts.rank == 0 else torch.zeros_like(pending))
    state = dict(
        cur_nimg=progress.cur_nimg,
        cur_tick=progress.cur_tick + 1,  # The state after this tick closes.
        batch_idx=progress.batch_idx,
        sampler_position=progress.cur_nimg // opts.num_gpus,
        num_gpus=opts.num_gpus,
        batch_size=opts.batch_size,
        random_seed=opts.random_seed,
    )
    for name, obj in resumables(nets, loss, phases).items():
        state[name] = to_cpu(obj.state_dict())
    return state


# ----------------------------------------------------------------------------
# The registry of objects whose state goes into `resume_state`: name -> object with state_dict() and
# load_state_dict(). A phase step with state (e.g. a privacy accountant) joins as 'step/<phase>'.


def resumables(nets, loss, phases):
    registry = dict(optimizers=_Optimizers(phases), loss=loss, augment_p=_AugmentP(nets.augment_pipe))
    for phase in phases:
        if hasattr(phase.step, 'state_dict'):
            registry[f'step/{phase.name}'] = phase.step
    registry['rng'] = _RandomState()  # Last, so that nothing restored after it draws random numbers.
    return registry


class _Optimizers:  # {'G': state, 'D': state}, one optimizer per network.
    def __init__(self, phases):
        self.opts = {phase.name[0]: phase.opt for phase in phases}

    def state_dict(self):
        return {name: opt.state_dict() for name, opt in self.opts.items()}

    def load_state_dict(self, state):
        for name, opt in self.opts.items():
            opt.load_state_dict(state[name])


class _AugmentP:  # ADA's p as a float (None without augmentation).
    def __init__(self, augment_pipe):
        self.pipe = augment_pipe

    def state_dict(self):
        return float(self.pipe.p.cpu()) if self.pipe is not None else None

    def load_state_dict(self, p):
        if self.pipe is not None and p is not None:
            self.pipe.p.copy_(torch.as_tensor(p))


class _RandomState:  # Python, numpy and torch (CPU and every CUDA device) generators.
    def state_dict(self):
        rng = dict(torch=torch.get_rng_state(), numpy=np.random.get_state(), python=random.getstate())
        if torch.cuda.is_available():
            rng['cuda'] = torch.cuda.get_rng_state_all()
        return rng

    def load_state_dict(self, rng):
        torch.set_rng_state(rng['torch'])
        np.random.set_state(rng['numpy'])
        random.setstate(rng['python'])
        if 'cuda' in rng and torch.cuda.is_available() and len(rng['cuda']) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng['cuda'])


def to_cpu(obj):
    """Copy of a nested dict/list/tuple with every tensor moved to the CPU (so snapshots load anywhere)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {key: to_cpu(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(value) for value in obj)
    return copy.deepcopy(obj)


# ----------------------------------------------------------------------------
# The one snapshot reader: unpickle, check it is a snapshot, fill the keys an official pickle lacks.

SNAPSHOT_KEYS = (
    'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs', 'dataset_info', 'loss_terms', 'privacy', 'resume_state',
)  # fmt: skip


def load_snapshot(path: str, require: tuple = ('G_ema',), param: str | None = '--network') -> dict:
    """Snapshot dict with every key of SNAPSHOT_KEYS (None where the pickle lacks it).

    Pickles run code when loaded: read only snapshots from trusted sources.

    Raises:
        dnnlib.UserError: missing, truncated or foreign pickle, or one without the `require`d networks.
    """
    try:
        with dnnlib.util.open_url(path, verbose=False) as f:
            data = pickle.load(f)
    except Exception as err:  # Truncated, foreign or broken pickles raise almost any exception type.
        raise dnnlib.UserError(f'{path}: cannot load snapshot ({type(err).__name__}: {err})', param=param) from None
    if not isinstance(data, dict):
        raise dnnlib.UserError(f'{path}: not a network snapshot (holds a {type(data).__name__})', param=param)
    for name in require:
        if not isinstance(data.get(name), torch.nn.Module):
            raise dnnlib.UserError(f'{path}: not a network snapshot (no network {name!r})', param=param)
    return {key: None for key in SNAPSHOT_KEYS} | data


# ----------------------------------------------------------------------------
# Load, step 1 (before the optimizers exist): copy what fits from `opts.resume_pkl` into the networks and
# report what was re-initialised. Returns `resume_state` when the run can continue exactly, else None.


def load_networks(opts, nets):
    if opts.rank == 0:
        print(f'Resuming from "{opts.resume_pkl}"')
    resume_data = load_snapshot(opts.resume_pkl, require=('G', 'D', 'G_ema'), param='--resume')
    reinitialised = {}
    with torch.no_grad():
        for name in ('G', 'D', 'G_ema'):
            skipped = misc.copy_params_and_buffers(resume_data[name], nets[name], require_all=False)
            if skipped:
                reinitialised[name] = skipped
    if opts.rank == 0:
        for name, skipped in reinitialised.items():
            print(f'Re-initialised {len(skipped)} tensor(s) of {name} (missing or shape differs): {", ".join(skipped)}')
    state = resume_data.get('resume_state')
    if state is not None and reinitialised:
        if opts.rank == 0:
            print('Networks differ from the snapshot: starting at kimg 0 (transfer learning), not resuming exactly.')
        return None
    if state is not None and nets.augment_pipe is not None and resume_data.get('augment_pipe') is not None:
        with torch.no_grad():
            misc.copy_params_and_buffers(resume_data['augment_pipe'], nets.augment_pipe, require_all=False)
    return state


# ----------------------------------------------------------------------------
# Load, step 2: restore progress, optimizers, loss statistics, ADA p and RNG from `state` (None = fresh run).


def restore_training_state(state, opts, nets, loss, phases):
    """Return the progress counters (cur_nimg, cur_tick, batch_idx, tick_start_nimg) to continue from."""
    progress = dnnlib.EasyDict(cur_nimg=0, cur_tick=0, batch_idx=0, tick_start_nimg=0)
    if state is None:
        return progress
    progress.update(cur_nimg=state['cur_nimg'], cur_tick=state['cur_tick'], batch_idx=state['batch_idx'])
    progress.tick_start_nimg = state['cur_nimg']
    for name, obj in resumables(nets, loss, phases).items():
        if state.get(name) is not None:
            obj.load_state_dict(state[name])
    if opts.rank != 0:
        loss.real_sign_acc.zero_()  # Rank 0 holds the all-reduced pending ADA statistics.
    if opts.rank == 0:
        p = f', augment p {state["augment_p"]:.6f}' if state.get('augment_p') is not None else ''
        where = f'kimg {progress.cur_nimg / 1000:g} (tick {progress.cur_tick}, batch {progress.batch_idx}{p})'
        print(f'Continuing at {where}')
    return progress


# ----------------------------------------------------------------------------

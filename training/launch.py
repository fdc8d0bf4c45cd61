"""Launch a configured run: make the run directory, print and save the options, run training_loop in every
rank (one process, spawned ranks, or torchrun's)."""

import json
import os

import torch

import dnnlib
from torch_utils import distributed
from training import training_loop

# ----------------------------------------------------------------------------
# Launch: make the run directory, print and save the options, run training_loop in every rank.


def launch_training(c: dnnlib.EasyDict, outdir: str, dry_run: bool = False) -> str:
    """Returns the run directory (not created on a dry run)."""
    c = dnnlib.EasyDict(c)
    desc = c.pop('desc')
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise dnnlib.UserError(f'{outdir} is a file, not a folder', param='--outdir')
    is_torchrun = distributed.torchrun_world_size() is not None
    rank = distributed.init_torchrun(c.device)[0] if is_torchrun else 0
    run_dir = dnnlib.util.next_run_dir(outdir, desc) if rank == 0 else None
    c.run_dir = distributed.broadcast_object(run_dir) if is_torchrun else run_dir
    if rank == 0:
        print_options(c, dry_run)
        if not dry_run:
            remove_stale_temp_files(outdir, c.get('resume_pkl'))
            write_options(c)
    if is_torchrun:
        torch.distributed.barrier()
    if dry_run:
        return c.run_dir
    log_path = os.path.join(c.run_dir, 'log.txt')
    if is_torchrun:
        local_rank = int(os.environ['LOCAL_RANK'])
        distributed.run_rank(rank, training_loop.training_loop, c, c.num_gpus, c.device, log_path, local_rank)
    else:
        distributed.launch(training_loop.training_loop, c, c.num_gpus, c.device, log_path)
    return c.run_dir


def remove_stale_temp_files(outdir, resume_pkl):
    """Half-written snapshots of killed runs (atomic_write temp files) in outdir's runs and resume_pkl's folder."""
    folders = [os.path.join(outdir, name) for name in sorted(os.listdir(outdir))] if os.path.isdir(outdir) else []
    if resume_pkl and not dnnlib.util.is_url(resume_pkl):
        folders.append(os.path.dirname(os.path.abspath(resume_pkl)))
    for folder in folders:
        for name in dnnlib.util.remove_stale_temp_files(folder):
            print(f"Removed a killed run's temporary file {os.path.join(folder, name)}")


def print_options(c, dry_run):
    data = c.training_set_kwargs
    print(f"""
Training options:
{json.dumps(c, indent=2)}

Output directory:   {c.run_dir}
Training data:      {data.path}
Training duration:  {c.total_kimg:g} kimg
Number of ranks:    {c.num_gpus} ({c.device})
Precision:          {precision_summary(c)}
Number of images:   {data.max_size}
Image resolution:   {data.resolution}
Conditional model:  {data.use_labels}
Dataset x-flips:    {data.xflip}
Privacy:            {c.get('D_step_kwargs', {}).get('privacy', {}).get('summary', 'no DP')}
""")
    if dry_run:
        print('Dry run; exiting.')


def precision_summary(c):
    num = c.G_kwargs.synthesis_kwargs.get('num_fp16_res', 0)
    if num == 0 or (c.device == 'cpu' and not c.get('cpu_bf16')):
        return 'fp32'
    if c.device == 'cpu':
        return f'bfloat16 in the {num} highest-resolution blocks (this CPU has native bfloat16; --cpu-bf16=0 for fp32)'
    return f'fp16 in the {num} highest-resolution blocks'


def write_options(c):
    print('Creating output directory...')
    os.makedirs(c.run_dir, exist_ok=False)
    with dnnlib.util.atomic_write(os.path.join(c.run_dir, 'training_options.json'), 'w') as f:
        json.dump(c, f, indent=2)


# ----------------------------------------------------------------------------

"""Phantom speed: seconds to render phantom:N, and to build the dataset zip with dataset_tool.py end to end.

Target: phantom:1000 at 64x64 in under a minute on 2 CPU cores (the whole dataset_tool run, PNG + zip included).

    python bench/phantom_speed.py
    python bench/phantom_speed.py --count 200 --resolution 256
"""

import os
import subprocess
import sys
import tempfile
import time

import click

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
from clinical.phantom import phantom_images  # noqa: E402

TARGET_SECONDS = 60.0


# ----------------------------------------------------------------------------
# Rendering only, in this process.


def time_render(count: int, resolution: int) -> float:
    start = time.perf_counter()
    for _ in phantom_images(count, seed=0, resolution=resolution):
        pass
    return time.perf_counter() - start


# ----------------------------------------------------------------------------
# The full CLI run (process start, rendering, PNG encoding, zip), as a user would type it.


def time_dataset_tool(count: int, resolution: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, os.path.join(REPO_ROOT, 'dataset_tool.py'), f'--source=phantom:{count}']
        cmd += [f'--dest={os.path.join(tmp, "phantom.zip")}', f'--resolution={resolution}', '--labels=lesion-multi']
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        return time.perf_counter() - start


# ----------------------------------------------------------------------------
# Command line.


@click.command()
@click.option('--count', type=click.IntRange(min=1), default=1000, show_default=True, metavar='N', help='Images')
@click.option('--resolution', type=int, default=64, show_default=True, metavar='INT', help='Output size')
def main(count: int, resolution: int):
    """Time phantom:N rendering and the dataset_tool.py conversion."""
    render = time_render(count, resolution)
    click.echo(
        f'render     phantom:{count} at {resolution}x{resolution}: {render:6.1f} s ({1e3 * render / count:.1f} ms/img)'
    )
    total = time_dataset_tool(count, resolution)
    click.echo(f'dataset_tool phantom:{count} -> zip:           {total:6.1f} s')
    click.echo(
        f'os.cpu_count()={os.cpu_count()}, load average {os.getloadavg()[0]:.1f}; target < {TARGET_SECONDS:.0f} s'
    )


if __name__ == '__main__':
    main()

"""What every command-line tool shares: finite float options and one-line usage errors from domain errors.

Only the CLIs import this (and click); the layers below raise dnnlib.UserError naming the flag.
"""

import contextlib
import math

import click

import dnnlib

# ----------------------------------------------------------------------------
# Float options that reject NaN and infinity (click's FloatRange lets them through: NaN fails no comparison).


class FiniteFloat(click.FloatRange):
    name = 'float'

    def convert(self, value, param, ctx):
        value = super().convert(value, param, ctx)
        if not math.isfinite(value):
            self.fail(f'{value!r} is not a finite number', param, ctx)
        return value

    def _describe_range(self):
        return 'finite' if self.min is None and self.max is None else super()._describe_range()


def finite_float(min=None, max=None, min_open=False, max_open=False):  # noqa: A002 - click's names.
    return FiniteFloat(min=min, max=max, min_open=min_open, max_open=max_open)


# ----------------------------------------------------------------------------
# --device auto|cpu|cuda -> 'cpu' or 'cuda'; asking for CUDA on a machine without it is a usage error.


def resolve_device(device: str) -> str:
    import torch  # Here, so that tools without torch (dataset_tool) do not load it.

    if device == 'auto':
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cuda' and not torch.cuda.is_available():
        raise click.BadParameter('CUDA is not available on this machine', param_hint='--device')
    return device


# ----------------------------------------------------------------------------
# Domain errors -> exit 2 with one line: 'Invalid value for --flag: ...' or, without a flag, 'Error: ...'.


class DataError(click.ClickException):
    exit_code = 2


@contextlib.contextmanager
def user_errors():
    try:
        yield
    except dnnlib.UserError as err:
        if err.param is None:
            raise DataError(str(err)) from None
        raise click.BadParameter(str(err), param_hint=err.param) from None


# ----------------------------------------------------------------------------

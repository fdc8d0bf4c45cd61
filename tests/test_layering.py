"""Import layering (docs/architecture.md): every import points down, and the library layers never import click.

The files are parsed with `ast`, never imported. Every import counts, wherever it is (inside a function, under
`if TYPE_CHECKING:`, or `importlib.import_module('literal')`): a lazy upward import is still an upward import.
"""

import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent

# ----------------------------------------------------------------------------
# Layers, bottom to top; the top-level CLI scripts (*.py in the repo root) are layer 4.
#
# clinical/ and metrics/ share layer 3 and may NOT import each other: architecture.md says that they "use
# training/ and torch_utils/, never the CLIs" and that "each layer imports only the layers below it"; it grants
# no sideways imports, so whatever both need belongs lower down (training/'s extension points), and the CLI layer
# is where the two meet. The CLIs may import each other (nothing is above them to protect).

LAYERS = {'dnnlib': 0, 'torch_utils': 1, 'training': 2, 'clinical': 3, 'metrics': 3}
CLI, CLI_LAYER = 'CLI', 4
CLI_MODULES = {path.stem for path in REPO.glob('*.py')}  # train, generate, dataset_tool, ...
NO_CLICK = list(LAYERS)  # Plain exceptions below the CLIs; only the CLIs turn them into usage errors.


def owner(module: str) -> str | None:
    """The layered unit a module belongs to ('training', 'CLI', ...); None for stdlib and third-party modules."""
    top = module.split('.')[0]
    return top if top in LAYERS else CLI if top in CLI_MODULES else None


def layer(unit: str) -> int:
    return CLI_LAYER if unit == CLI else LAYERS[unit]


# ----------------------------------------------------------------------------
# The checker: imports of one file (relative ones resolved to their package), then the offences among them.


def imports(source: str, path: str) -> list[tuple[int, str, str]]:
    """[(line, imported module, the statement)] for every import in `source`, `path` being repo-relative."""
    found = []
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, ast.unparse(node)) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found += [(node.lineno, module, ast.unparse(node)) for module in _from_targets(node, path)]
        elif _is_dynamic_import(node) and not node.args[0].value.startswith('.'):
            found.append((node.lineno, node.args[0].value, ast.unparse(node)))
    return sorted(found)


def _from_targets(node: ast.ImportFrom, path: str) -> list[str]:
    if node.level == 0:
        return [node.module]
    package = pathlib.PurePosixPath(path).parent.parts  # A module's package, or an __init__.py's own package.
    base = list(package[: len(package) - (node.level - 1)]) if node.level - 1 <= len(package) else []
    base += [node.module] if node.module else []
    return ['.'.join(base)] if base else [alias.name for alias in node.names]  # `from .. import metrics` at the top.


def _is_dynamic_import(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call) or not node.args or not isinstance(node.args[0], ast.Constant):
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    return name in ('import_module', '__import__') and isinstance(node.args[0].value, str)


def upward_imports(source: str, path: str) -> list[str]:
    """'path:line: `statement` (...)' for each import of a higher unit, or of a sibling at the same layer."""
    here = path.split('/')[0] if '/' in path else CLI
    if here != CLI and here not in LAYERS:
        return []  # tests/, bench/, ...: not layered.
    offences = []
    for line, module, text in imports(source, path):
        there = owner(module)
        if there in (None, here):
            continue
        if layer(there) > layer(here) or (layer(there) == layer(here) and here != CLI):
            where = f'imports {there} (layer {layer(there)}) from {here} (layer {layer(here)})'
            offences.append(f'{path}:{line}: `{text}`: {where}')
    return offences


def click_imports(source: str, path: str) -> list[str]:
    """'path:line: statement' for each import of click."""
    found = imports(source, path)
    return [f'{path}:{line}: `{text}`' for line, module, text in found if module.split('.')[0] == 'click']


def check_package(package: str, rule) -> list[str]:
    files = sorted(REPO.glob(f'{package}/**/*.py'))
    if not files:
        pytest.skip(f'{package}/ has no Python files (yet)')
    return [offence for file in files for offence in rule(file.read_text(), file.relative_to(REPO).as_posix())]


# ----------------------------------------------------------------------------
# The rules, one test per package.


@pytest.mark.parametrize('package', list(LAYERS))
def test_imports_point_down(package):
    offences = check_package(package, upward_imports)
    assert not offences, f'{package}/ (layer {LAYERS[package]}) imports upward or sideways:\n' + '\n'.join(offences)


@pytest.mark.parametrize('package', NO_CLICK)
def test_no_click_below_the_clis(package):
    offences = check_package(package, click_imports)
    assert not offences, f'{package}/ imports click (raise plain exceptions; the CLIs own click):\n' + '\n'.join(
        offences
    )


# ----------------------------------------------------------------------------
# The checker itself: it flags what it should (so a pass above means something) and nothing else.


@pytest.mark.parametrize(
    'path, source, line',
    [
        ('training/reporting.py', 'def f():\n    x = 1\n    from metrics import metric_main\n', 3),  # Lazy.
        ('training/loss.py', 'from ..clinical import clinical_loss\n', 1),  # Relative, resolved.
        ('training/loss.py', 'from .. import metrics\n', 1),
        ('torch_utils/ops/bias_act.py', 'import training.networks as networks\n', 1),
        ('dnnlib/util.py', 'if TYPE_CHECKING:\n    from torch_utils import misc\n', 2),
        ('training/reporting.py', 'import importlib\nimportlib.import_module("metrics.metric_main")\n', 2),
        ('clinical/dp.py', 'import numpy, metrics.fid\n', 1),  # Sideways, at the same layer.
        ('metrics/fid.py', 'from clinical.classifier import Classifier\n', 1),
        ('clinical/labels.py', 'import train\n', 1),  # A CLI.
    ],
)
def test_checker_flags_upward_and_sideways_imports(path, source, line):
    (offence,) = upward_imports(source, path)
    assert offence.startswith(f'{path}:{line}: `')


@pytest.mark.parametrize(
    'path, source',
    [
        ('training/loss.py', 'import os, torch, dnnlib\nfrom torch_utils import misc\nfrom . import augment\n'),
        ('torch_utils/ops/conv2d_resample.py', 'from .. import misc\nfrom . import upfirdn2d\nfrom .fma import fma\n'),
        ('clinical/data/sources.py', 'from clinical import labels\nfrom training.dataset import read_metadata\n'),
        ('metrics/fid.py', 'import metrics.registry\nfrom training import networks\n'),
        ('study.py', 'import train\nimport generate\nfrom metrics import fid\nfrom clinical import dp\n'),
    ],
)
def test_checker_passes_downward_imports(path, source):
    assert upward_imports(source, path) == []


def test_checker_flags_click_with_line_and_statement():
    source = 'import os\n\n\ndef main():\n    from click import echo\n'
    assert click_imports(source, 'clinical/data/writer.py') == ['clinical/data/writer.py:5: `from click import echo`']
    assert click_imports('import click.testing\n', 'training/x.py') == ['training/x.py:1: `import click.testing`']
    assert click_imports('import clickhouse\nimport os\n', 'metrics/x.py') == []


# ----------------------------------------------------------------------------

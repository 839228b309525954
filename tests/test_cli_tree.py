"""One ``lindit`` command tree: every command and group subcommand is reached from ``lindit``, none hides behind
``python -m``, each answers ``--help``, and a bad argument anywhere in the tree is one line on stderr."""

import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import lindit.cli as cli
from lindit.cli import COMMANDS, main

SRC = Path(cli.__file__).parent.parent  # src/lindit


def command_lines() -> list[list[str]]:
    """Every command of the tree as its words: ``["convert"]``, ``["world"]``, ``["world", "fid"]``, ..."""
    lines = []
    for name, (target, _) in COMMANDS.items():
        lines.append([name])
        if isinstance(target, dict):
            lines += [[name, sub] for sub in target]
    return lines


def reachable_modules() -> set[str]:
    """The modules whose parsers ``lindit`` builds, groups included, and the kept ``python -m`` aliases of the tree."""
    found = {"lindit.cli", "lindit.cli.__main__", *cli.PYTHON_M}  # lindit.cli.__main__: `accelerate launch -m lindit.cli`
    for target, _ in COMMANDS.values():
        targets = [t for t, _ in target.values()] if isinstance(target, dict) else [target]
        found |= {t.partition(":")[0] for t in targets}
    return found


def entry_points(root: Path) -> set[str]:
    """Modules under ``root`` that run as ``python -m``: an ``if __name__ == "__main__"`` block or a __main__.py."""
    found = set()
    for path in root.rglob("*.py"):
        module = ".".join(("lindit", *path.relative_to(root).with_suffix("").parts))
        if path.name == "__main__.py" or any(_is_main_guard(node) for node in ast.walk(ast.parse(path.read_text()))):
            found.add(module.removesuffix(".__init__"))
    return found


def _is_main_guard(node) -> bool:
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare) or len(node.test.comparators) != 1:
        return False
    sides = {ast.unparse(node.test.left), ast.unparse(node.test.comparators[0])}
    return sides in ({"__name__", "'__main__'"}, {"__name__", '"__main__"'})


@pytest.mark.parametrize("words", command_lines(), ids=" ".join)
def test_every_command_answers_help(words, capsys):
    assert main([*words, "--help"]) == 0
    assert capsys.readouterr().out.split()[: len(words) + 2] == ["usage:", "lindit", *words]


def test_top_level_help_lists_the_groups_without_importing_any_command(monkeypatch, capsys):
    imported = []

    def import_module(name):
        imported.append(name)
        return importlib.import_module(name)

    monkeypatch.setattr(cli, "importlib", SimpleNamespace(import_module=import_module))
    assert main(["--help"]) == 0
    assert imported == [] and listed(capsys.readouterr().out) == set(COMMANDS)
    assert main(["world", "--help"]) == 0 and imported == []  # a group lists its subcommands lazily too
    assert listed(capsys.readouterr().out) == set(cli.WORLD)
    assert main(["deploy", "quality", "--help"]) == 0 and imported == ["lindit.cli.deploy"]


def listed(help_text: str) -> set[str]:
    """The command names a --help lists (argparse indents them by four spaces, their help further)."""
    return {line.split()[0] for line in help_text.splitlines() if line.startswith("    ") and line[4] != " "}


def test_no_module_is_a_hidden_entry_point():
    hidden = entry_points(SRC) - reachable_modules()
    assert not hidden, f"reachable only as `python -m`: {sorted(hidden)}; add them to lindit.cli.COMMANDS"


def test_the_scan_finds_a_new_hidden_entry_point(tmp_path):
    """The check above would fail on a new ``python -m`` tool (a block, or a package's __main__.py)."""
    (tmp_path / "world").mkdir()
    (tmp_path / "world" / "fid.py").write_text('if __name__ == "__main__":\n    main()\n')
    (tmp_path / "world" / "newtool.py").write_text("if '__main__' == __name__:\n    main()\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__main__.py").write_text("print('hi')\n")
    (tmp_path / "quiet.py").write_text("name = '__main__'\n")
    assert entry_points(tmp_path) - reachable_modules() == {"lindit.world.newtool", "lindit.pkg.__main__"}


@pytest.mark.parametrize("argv, fragment", [
    (["world", "fid", "--n", "abc"], "lindit world fid: error: argument --n: expected an integer, got 'abc'"),
    (["deploy", "bench", "--sizes", "0"], "lindit deploy bench: error: argument --sizes: must be a positive integer"),
    (["world", "text"], "lindit world text: error: nothing to do: pass --write-assets"),
    (["deploy"], "lindit deploy: error: the following arguments are required: COMMAND"),
])
def test_a_bad_argument_in_a_group_is_one_line(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(fragment) and "Traceback" not in err, err


@pytest.mark.parametrize("module, words", cli.PYTHON_M.items(), ids=list(cli.PYTHON_M))
def test_a_kept_python_m_alias_runs_its_command(module, words, capsys):
    assert importlib.import_module(module).main(["--help"]) == 0  # `python -m MODULE --help`
    assert capsys.readouterr().out.split()[: len(words) + 2] == ["usage:", "lindit", *words]


LAYER_PROBE = """
import importlib, json, sys
above = ("lindit.cli", "lindit.benchmarks")  # the command tree and the lab
found = {}
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
    hit = sorted(m for m in sys.modules if m in above or m.startswith(tuple(a + "." for a in above)))
    if hit:
        found[name] = hit
        for m in hit:  # forget them, so that the next module that imports them is named too
            del sys.modules[m]
print(json.dumps(found))
"""


def library_modules(root: Path) -> list[str]:
    """Every module under ``root`` but the command tree (``lindit.cli``), the lab (``lindit.benchmarks``) and
    ``__main__`` files, found on disk (importing packages to list them would import their modules)."""
    names = {".".join(("lindit", *p.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
             for p in root.rglob("*.py")}
    return sorted(n for n in names if n.split(".")[1:2] not in (["cli"], ["benchmarks"]) and not n.endswith("__main__"))


def test_the_library_imports_neither_the_command_tree_nor_the_lab():
    """Importing any library module (in a fresh interpreter) leaves ``lindit.cli`` and ``lindit.benchmarks``
    out of ``sys.modules``: a ``main`` alias imports ``cli.forward`` when it runs, and published sizes live in
    the lab, which imports the library, never the other way round."""
    modules = library_modules(SRC)
    assert {"lindit", "lindit.world.fid", "lindit.deploy.fidelity"} <= set(modules)
    assert not any(m.startswith(("lindit.cli", "lindit.benchmarks")) for m in modules)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC.parent), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", LAYER_PROBE, json.dumps(modules)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found == {}, f"library modules that import the command tree or the lab: {found}"

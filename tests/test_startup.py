"""Start-up stays cheap: ``import llamabind`` loads no engine, the CLI imports only the chosen command."""

from __future__ import annotations

import argparse
import json
import os
import pkgutil
import subprocess
import sys

import llamabind
from llamabind.cli import commands
from llamabind.cli.main import COMMANDS, build_parser

HEAVY = ["fastapi", "jinja2", "numpy", "llama_cpp", "uvicorn", "llamabind.server", "llamabind.batching"]


def _modules_after(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=dict(os.environ)
    ).stdout
    return list(json.loads(out.splitlines()[-1]))


def test_import_is_lazy() -> None:
    loaded = _modules_after("import llamabind")
    assert [m for m in HEAVY if m in loaded] == []
    assert not [
        m for m in loaded if m.startswith(("llamabind.server", "llamabind.batching", "llamabind.core"))
    ]


def test_lazy_names_resolve() -> None:
    for name in llamabind.__all__:
        assert getattr(llamabind, name) is not None, name
    assert set(llamabind.__all__) <= set(dir(llamabind))
    assert llamabind.Model.__module__ == "llamabind.core.model"


def test_cli_imports_only_the_chosen_command() -> None:
    loaded = _modules_after(
        "from llamabind.cli.main import build_parser\nbuild_parser(['tokenize', '--help'])"
    )
    cmds = {m.rsplit(".", 1)[1] for m in loaded if m.startswith("llamabind.cli.commands.")}
    assert cmds == {"tokenize"}
    assert "fastapi" not in loaded and "llamabind.server" not in loaded
    loaded = _modules_after("from llamabind.cli.main import build_parser\nbuild_parser(['--version'])")
    assert not [m for m in loaded if m.startswith("llamabind.cli.commands.")]
    assert [m for m in HEAVY if m in loaded] == []


def test_command_table_is_complete() -> None:
    """COMMANDS names every subcommand every module registers, and no other."""
    modules = {i.name for i in pkgutil.iter_modules(commands.__path__) if not i.name.startswith("_")}
    assert set(COMMANDS.values()) == modules
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(COMMANDS)
    for name in COMMANDS:  # each command parses with only its own module imported
        action = next(a for a in build_parser([name])._actions if isinstance(a, argparse._SubParsersAction))
        assert name in action.choices


def test_raw_bindings_skip_llama_cpp_python_high_level_package() -> None:
    """Loading libllama runs ``llama_cpp.llama_cpp`` only (not the package's ``Llama``, jinja2, numpy);
    ``import llama_cpp`` afterwards still gives the whole package, the same raw module in it."""
    code = (
        "import sys\n"
        "from llamabind._native.lib import ll\n"
        "raw = ll()\n"
        "before = sorted(m for m in ('jinja2', 'numpy', 'llama_cpp.llama', 'diskcache') if m in sys.modules)\n"
        "import llama_cpp\n"
        "from llama_cpp import Llama, llama_grammar\n"
        "assert llama_cpp.llama_cpp is raw and llama_cpp.__version__ == '0.3.36', llama_cpp.__version__\n"
        "assert Llama.__module__ == 'llama_cpp.llama' and llama_grammar.LlamaGrammar is not None\n"
        "print(before)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["[]"]


def test_llama_cpp_python_version_read_beside_the_package() -> None:
    """The version check reads the dist-info beside ``llama_cpp`` (no ``importlib.metadata`` import):
    the version importlib.metadata reports."""
    import importlib.metadata

    from llamabind._native import lib

    assert lib._version_beside_package() == importlib.metadata.version("llama-cpp-python")
    loaded = _modules_after("from llamabind._native.lib import ll\nll()")
    assert "importlib.metadata" not in loaded and "llama_cpp.llama" not in loaded

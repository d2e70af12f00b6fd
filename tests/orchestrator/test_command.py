"""The installed `synthscale` command (issue 14): `pip install -e .` puts it in the venv,
every subcommand's --help is complete, and `python -m orchestrator` is the same CLI."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from analysis import cli as analysis_cli
from orchestrator.cli import ANALYSIS_COMMANDS, build_parser, power_parser

from ..conftest import ROOT

SCRIPT = Path(sys.executable).parent / "synthscale"


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def analysis_parsers() -> dict[str, argparse.ArgumentParser]:
    return subcommands(analysis_cli.build_parser())


COMMANDS = sorted(subcommands(build_parser()))


def synthscale(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_the_script_is_installed_in_the_venv():
    assert SCRIPT.is_file(), f"{SCRIPT} missing: run pip install -e . (pyproject [project.scripts])"


def test_every_command_is_listed_with_a_help_line():
    proc = synthscale("--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: synthscale ")
    assert {"sweep", "plan", "show", "grade", "ui", "config-docs", "fit", "fit-2d"} <= set(COMMANDS)
    listed = proc.stdout.split("positional arguments:")[1]
    for name in COMMANDS:
        assert f"    {name} " in listed or f"    {name}\n" in listed, name
    for name, parser in subcommands(build_parser()).items():
        assert parser.description, f"{name} has no description"


def expected_flags(name: str) -> list[str]:
    """Every option string and positional name the subcommand's help must show."""
    if name in ANALYSIS_COMMANDS:
        parser = analysis_parsers()[name]
    elif name == "power":                   # built on demand: it imports analysis
        parser = power_parser()
    else:
        parser = subcommands(build_parser())[name]
    words = []
    for action in parser._actions:
        assert action.help, f"{name}: {action.option_strings or action.dest} has no help text"
        words += action.option_strings or [action.metavar or action.dest]
    return words


@pytest.mark.parametrize("name", COMMANDS)
def test_each_subcommand_help_is_complete(name):
    proc = synthscale(name, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: synthscale {name}"), proc.stdout[:200]
    for word in expected_flags(name):
        assert word in proc.stdout, f"synthscale {name} --help does not show {word}"
    if name in ("sweep", "plan"):
        assert "grid.sizes" in proc.stdout and "tracking.uri" in proc.stdout   # every knob


def test_python_dash_m_is_the_same_cli():
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: python -m orchestrator ")
    assert proc.stdout.split("\n", 1)[1] == synthscale("--help").stdout.split("\n", 1)[1]


def test_fit_runs_the_analysis(tmp_path):
    """`synthscale fit` is `python -m analysis fit`: same tables, same exit codes."""
    rows = ["data_type,n,seed,test_error"] + [
        f"sft_teacher,{n},{s},{0.1 + 2.0 * n ** -0.5 + 0.01 * s:.4f}"
        for n in (100, 200, 400, 800) for s in (0, 1)]
    (tmp_path / "results.csv").write_text("\n".join(rows) + "\n")
    proc = synthscale("fit", str(tmp_path / "results.csv"), "--out", str(tmp_path / "fit"),
                      "--n-boot", "20", "--no-plots")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "fit" / "fits.csv").is_file()
    bad = synthscale("fit", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "fit"))
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "missing.csv" in bad.stderr

"""The `unmasking` command: flags generated from settings dataclasses, one subcommand per analysis of
the registry, and torch-free `figure`/`claims`."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from unmasking.commands import build_parser
from unmasking.commands.flags import add_settings_flags, flag_fields, flag_name, settings_from_args
from unmasking.foundations.registry import ANALYSES, EXPERIMENTS


@dataclass(frozen=True)
class Toy:
    count: int = field(default=3, metadata={"help": "how many (%(default)s)"})
    rate: float | None = field(default=None, metadata={"help": "a rate"})
    mode: str = field(default="a", metadata={"help": "the mode", "choices": ("a", "b")})
    modes: tuple[str, ...] = field(default=("a",), metadata={"help": "modes", "choices": ("a", "b")})
    span: tuple[float, float] = field(default=(1.0, 2.0), metadata={"help": "a range", "metavar": ("LO", "HI")})
    loud: bool = field(default=False, metadata={"help": "switch on"})
    smooth: bool = field(default=True, metadata={"help": "switch off"})
    hidden: int = field(default=7, metadata={"help": "library only", "flag": False})


def toy_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="toy")
    add_settings_flags(p, Toy)
    return p


def actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.option_strings[0]: a for a in parser._actions if a.option_strings and a.dest != "help"}


def test_flags_follow_the_fields():
    acts = actions(toy_parser())
    assert list(acts) == ["--count", "--rate", "--mode", "--modes", "--span", "--loud", "--no-smooth"]
    assert acts["--count"].type is int and acts["--count"].default == 3
    assert acts["--count"].help == "how many (%(default)s)"
    assert acts["--rate"].type is float and acts["--rate"].default is None
    assert acts["--mode"].choices == ("a", "b") and acts["--mode"].default == "a" and acts["--mode"].nargs is None
    assert acts["--modes"].nargs == "+" and acts["--modes"].choices == ("a", "b") and acts["--modes"].default == ["a"]
    assert acts["--span"].nargs == 2 and acts["--span"].type is float and acts["--span"].metavar == ("LO", "HI")
    assert isinstance(acts["--loud"], argparse._StoreTrueAction) and acts["--loud"].dest == "loud"
    assert isinstance(acts["--no-smooth"], argparse._StoreFalseAction) and acts["--no-smooth"].dest == "smooth"
    assert all(a.dest.replace("_", "-") in flag for flag, a in acts.items())


def test_args_round_trip_to_settings():
    p = toy_parser()
    assert settings_from_args(Toy, p.parse_args([])) == Toy()
    args = p.parse_args(
        [
            "--count",
            "5",
            "--rate",
            "0.5",
            "--mode",
            "b",
            "--modes",
            "b",
            "a",
            "--span",
            "3",
            "4",
            "--loud",
            "--no-smooth",
        ]
    )
    assert settings_from_args(Toy, args) == Toy(
        count=5, rate=0.5, mode="b", modes=("b", "a"), span=(3.0, 4.0), loud=True, smooth=False
    )
    with pytest.raises(SystemExit):
        p.parse_args(["--mode", "c"])


def test_unsupported_field_types_are_refused():
    @dataclass
    class Bad:
        table: dict = field(default_factory=dict)

    with pytest.raises(TypeError, match="table"):
        add_settings_flags(argparse.ArgumentParser(), Bad)


def test_hessian_flags_keep_their_spelling():
    from unmasking.analyses.hessian import HessianSettings

    flags = [flag_name(f) for f in flag_fields(HessianSettings)]
    assert flags == [
        "--topk",
        "--lanczos-steps",
        "--probes",
        "--hutchinson-probes",
        "--subset-size",
        "--chunk-size",
        "--dtype",
        "--no-deflate",
        "--broadening",
        "--seed",
    ]


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_every_analysis_of_the_registry_has_its_subcommand():
    sub = subcommands(build_parser())
    for name in ANALYSES:
        experiment = EXPERIMENTS[name]
        settings_cls = importlib.import_module(experiment.module).SETTINGS
        flags = set(actions(sub[name]))
        assert {"--run", "--levels", "--out", "--device", "--quiet"} <= flags, name
        assert ({"--models-at-once", "--compile"} <= flags) == experiment.retrains, name
        args = sub[name].parse_args(
            ["--run", "r", "--levels", "1", "--out", "o.nc"]
            + (["--hessian", "h.nc"] if name == "pruning_theory" else [])
        )
        assert settings_from_args(settings_cls, args) == settings_cls(), name  # flag defaults = settings defaults
    assert {"figure", "claims", "imp", "recipes"} <= set(sub)
    assert not {"interpolate", "perturb", "pruning-ratio", "pruning-theory", "small-weights"} & set(sub)


def test_figure_and_claims_import_neither_torch_nor_the_science():
    code = (
        "import sys\nfrom unmasking.commands import main\n"
        "for cmd in ('figure', 'claims'):\n"
        "    try:\n        main([cmd, '--help'])\n    except SystemExit:\n        pass\n"
        "science = {'analyses', 'data', 'imp', 'masks', 'models', 'multitrain', 'spectral', 'training'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'\n"
        "             or m.split('.')[0] == 'unmasking' and m.split('.')[1:2] and m.split('.')[1] in science))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_python_dash_m_unmasking():
    out = subprocess.run([sys.executable, "-m", "unmasking", "claims", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("usage: unmasking claims")


def test_an_old_command_name_says_the_new_one(capsys):
    from unmasking.commands import main

    assert main(["pruning-ratio", "--run", "r", "--levels", "1", "--out", "o.nc"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "unmasking: error: the command 'pruning-ratio' is now 'pruning_ratio' (analysis commands carry their "
        "experiment's name; docs/architecture.md)"
    ]


def test_claims_flags_are_the_thresholds():
    """`unmasking claims` offers every threshold of claims.Thresholds, with its default and help."""
    from unmasking.claims import Thresholds
    from unmasking.commands import build_parser
    from unmasking.commands.flags import settings_from_args

    parser = build_parser(light=True)
    args = parser.parse_args(["claims", "--inputs", "a.nc", "--out-json", "c.json"])
    assert settings_from_args(Thresholds, args) == Thresholds()
    args = parser.parse_args(["claims", "--inputs", "a.nc", "--out-json", "c.json", "--min-levels", "2"])
    assert settings_from_args(Thresholds, args).min_levels == 2

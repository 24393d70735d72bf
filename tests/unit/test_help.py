"""Help and shell completion (issue 11): every flag says what it does and its
default; every command shows examples and exit statuses; the completion
scripts are generated from the same parser and a real shell accepts them."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from cloudlet.cmd import completion
from cloudlet.cmd.main import build_parser


def commands(
    parser: argparse.ArgumentParser, path: str = ""
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from commands(child, f"{path} {name}".strip())


ALL = list(commands(build_parser()))


@pytest.mark.parametrize(("path", "parser"), ALL, ids=[p or "cloudlet" for p, _ in ALL])
def test_every_argument_is_described(path: str, parser: argparse.ArgumentParser) -> None:
    bare = [
        "/".join(a.option_strings) or a.dest
        for a in parser._actions
        if not isinstance(a, argparse._SubParsersAction) and not (a.help or "").strip()
    ]
    assert not bare, f"cloudlet {path}: no help for {bare}"


@pytest.mark.parametrize(
    ("path", "parser"),
    [(p, c) for p, c in ALL if p and " " not in p],
    ids=[p for p, _ in ALL if p and " " not in p],
)
def test_every_command_shows_examples_and_exit_statuses(
    path: str, parser: argparse.ArgumentParser
) -> None:
    text = parser.format_help()
    assert "examples:\n  cloudlet " in text, f"cloudlet {path} --help has no example"
    assert "exit status:\n  0 " in text
    assert "  1 " in text


def test_defaults_are_shown_and_absent_defaults_are_not() -> None:
    root = dict(ALL)
    sync = root["sync"].format_help()
    assert "provider calls at once (default: 10)" in sync
    assert "(default: None)" not in sync and "(default: False)" not in sync
    reconcile = " ".join(root["reconcile"].format_help().split())
    assert "seconds between drift checks (default: 60.0)" in reconcile
    assert "(default: 127.0.0.1)" in reconcile
    assert "(default: text)" in root[""].format_help()
    assert "exit status:\n  0    nothing to change\n  2    changes are pending" in (
        root["plan"].format_help()
    )


def test_the_completion_tree_is_the_parser() -> None:
    nodes = {n.path: n for n in completion.nodes(build_parser())}
    assert {"sync", "plan", "fake", "fake ls", "completion", "lb-agent"} <= set(nodes)
    assert {"ls", "rm", "cp", "set"} == set(nodes["fake"].subcommands)
    assert nodes[""].valued["--log-format"] == ("text", "json")
    assert "--parallelism" in nodes["sync"].valued and "--yes" not in nodes["sync"].valued
    assert nodes["export"].choices == ("heat", "gateway", "onboard") and nodes["export"].files
    assert "-o" in nodes["graph"].path_flags


BASH_PROBE = """
source "$1"
complete -p cloudlet >/dev/null || exit 3
t() { COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _cloudlet; echo "${COMPREPLY[*]}"; }
t cloudlet sy
t cloudlet fake ""
t cloudlet --log-format ""
t cloudlet --state-dir /tmp/x sy
t cloudlet sync --p
t cloudlet export ""
t cloudlet plan sit
"""


@pytest.fixture
def script_file(tmp_path):  # type: ignore[no-untyped-def]
    def write(shell: str) -> str:
        (tmp_path / "scripts").mkdir(exist_ok=True)
        path = tmp_path / "scripts" / f"cloudlet.{shell}"
        render = completion.bash_script if shell == "bash" else completion.zsh_script
        path.write_text(render(build_parser()))
        return str(path)

    return write


def test_bash_accepts_and_completes(script_file, tmp_path) -> None:  # type: ignore[no-untyped-def]
    script = script_file("bash")
    subprocess.run(["bash", "-n", script], check=True)
    work = tmp_path / "work"
    work.mkdir()
    (work / "site.yaml").write_text("")
    done = subprocess.run(
        ["bash", "-c", BASH_PROBE, "probe", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=work,
    )
    assert done.stdout.splitlines() == [
        "sync",
        "ls rm cp set",
        "text json",
        "sync",  # a flag's value is skipped when finding the command
        "--plan --parallelism",
        "heat gateway onboard site.yaml",  # the positional's choices, then files
        "site.yaml",
    ]


@pytest.mark.skipif(
    shutil.which("zsh") is None, reason="zsh is not installed (make system-deps installs it)"
)
def test_zsh_accepts(script_file) -> None:  # type: ignore[no-untyped-def]
    script = script_file("zsh")
    subprocess.run(["zsh", "-n", script], check=True)
    probe = f"autoload -U compinit && compinit -u && source {script} && whence -w _cloudlet"
    done = subprocess.run(["zsh", "-f", "-c", probe], capture_output=True, text=True)
    assert "_cloudlet: function" in done.stdout, done.stderr


def test_completion_command_prints_the_script(capsys) -> None:  # type: ignore[no-untyped-def]
    from cloudlet.cmd.main import main

    assert main(["completion", "bash"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# bash completion for cloudlet")
    assert "complete -o filenames -F _cloudlet cloudlet" in out
    assert main(["completion", "zsh"]) == 0
    assert capsys.readouterr().out.startswith("#compdef cloudlet")

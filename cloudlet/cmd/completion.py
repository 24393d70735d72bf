"""``cloudlet completion bash|zsh``: a completion script generated from the parser.

The script is data (each command path's subcommands, flags, flags that take a
value, choices, and whether it takes files) read off the argparse tree, so a
command or flag added anywhere completes without touching this module.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Iterator

import attrs

#: Flags and positionals whose value is a path: completed with file names.
PATH_DESTS = frozenset(
    {"file", "files", "output", "state_dir", "report", "runtime_dir", "plan", "out", "wheel"}
    | {"tls_ca", "tls_cert", "tls_key"}
)


@attrs.frozen
class Node:
    """What completes after one command path (``""``, ``"sync"``, ``"fake ls"``)."""

    path: str
    subcommands: dict[str, str]  # name -> one-line help
    flags: dict[str, str]  # flag -> one-line help
    valued: dict[str, tuple[str, ...]]  # flag taking a value -> its choices (none: free)
    path_flags: frozenset[str]
    choices: tuple[str, ...]  # positional choices (``export heat``)
    files: bool  # a positional takes a path


def _subparsers(
    parser: argparse.ArgumentParser,
) -> argparse._SubParsersAction[argparse.ArgumentParser] | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _flat(text: str | None) -> str:
    return " ".join((text or "").split()).replace("%%", "%")


def nodes(parser: argparse.ArgumentParser, path: str = "") -> Iterator[Node]:
    """Every command path of ``parser``, the root first."""
    sub = _subparsers(parser)
    helps = {a.dest: _flat(a.help) for a in (sub._choices_actions if sub else [])}
    flags: dict[str, str] = {}
    valued: dict[str, tuple[str, ...]] = {}
    path_flags: set[str] = set()
    choices: list[str] = []
    files = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        if action.option_strings:
            for flag in action.option_strings:
                flags[flag] = _flat(action.help) if action.help != argparse.SUPPRESS else ""
                if action.nargs != 0:
                    valued[flag] = tuple(str(c) for c in action.choices or ())
                    if action.dest in PATH_DESTS:
                        path_flags.add(flag)
        elif action.choices:
            choices.extend(str(c) for c in action.choices)
        elif action.dest in PATH_DESTS:
            files = True
    names = dict(sub.choices) if sub else {}
    yield Node(
        path,
        {n: helps.get(n, "") for n in names},
        flags,
        valued,
        frozenset(path_flags),
        tuple(choices),
        files,
    )
    for name, child in names.items():
        yield from nodes(child, f"{path} {name}".strip())


def _case(nodes_: list[Node], value: Callable[[Node], str]) -> str:
    arms = "".join(
        f"        {shlex.quote(n.path)}) echo {shlex.quote(value(n))} ;;\n" for n in nodes_
    )
    return f'    case "$1" in\n{arms}    esac\n'


def _choice_arms(nodes_: list[Node]) -> str:
    return "".join(
        f"        {shlex.quote(n.path + '|' + flag)}) echo {shlex.quote(' '.join(opts))} ;;\n"
        for n in nodes_
        for flag, opts in n.valued.items()
        if opts
    )


BASH_MAIN = r"""
_cloudlet() {
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="" cmdpath="" word i skip=0
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${COMP_WORDS[i]}"
        if ((skip)); then skip=0; continue; fi
        if [[ "$word" == -* ]]; then
            [[ "$word" != *=* && " $(_cloudlet_valued "$cmdpath") " == *" $word "* ]] && skip=1
            continue
        fi
        [[ " $(_cloudlet_subs "$cmdpath") " == *" $word "* ]] &&
            cmdpath="${cmdpath:+$cmdpath }$word"
    done
    ((skip)) && prev="${COMP_WORDS[COMP_CWORD-1]}"
    COMPREPLY=()
    if [[ -n "$prev" ]]; then
        local opts
        opts="$(_cloudlet_choices "$cmdpath|$prev")"
        if [[ -n "$opts" ]]; then
            COMPREPLY=($(compgen -W "$opts" -- "$cur"))
        elif [[ " $(_cloudlet_pathflags "$cmdpath") " == *" $prev "* ]]; then
            COMPREPLY=($(compgen -f -- "$cur"))
        fi
        return 0
    fi
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$(_cloudlet_flags "$cmdpath")" -- "$cur"))
        return 0
    fi
    local words="$(_cloudlet_subs "$cmdpath") $(_cloudlet_positional "$cmdpath")"
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
    if [[ "$(_cloudlet_files "$cmdpath")" == 1 ]]; then
        COMPREPLY+=($(compgen -f -- "$cur"))
    fi
    return 0
}
complete -o filenames -F _cloudlet cloudlet
"""


def bash_script(parser: argparse.ArgumentParser) -> str:
    """A bash completion script for ``parser`` (``source`` it, or put it in
    ``/etc/bash_completion.d/cloudlet``)."""
    all_ = list(nodes(parser))
    tables = {
        "subs": lambda n: " ".join(n.subcommands),
        "flags": lambda n: " ".join(n.flags),
        "valued": lambda n: " ".join(n.valued),
        "pathflags": lambda n: " ".join(sorted(n.path_flags)),
        "positional": lambda n: " ".join(n.choices),
        "files": lambda n: "1" if n.files else "0",
    }
    parts = ["# bash completion for cloudlet (generated by `cloudlet completion bash`)\n"]
    for name, value in tables.items():
        parts.append(f"_cloudlet_{name}() {{\n{_case(all_, value)}}}\n")
    parts.append(f'_cloudlet_choices() {{\n    case "$1" in\n{_choice_arms(all_)}    esac\n}}\n')
    parts.append(BASH_MAIN)
    return "".join(parts)


def _zsh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _zsh_items(items: dict[str, str]) -> str:
    """``_describe``'s NAME:DESCRIPTION items (a colon in a name escaped)."""
    escaped = {k.replace(":", r"\:"): v for k, v in items.items()}
    return " ".join(_zsh_quote(f"{k}:{v}") for k, v in escaped.items())


ZSH_MAIN = r"""
_cloudlet() {
    local cmdpath="" word i skip=0 prev=""  # zsh ties $path to $PATH
    local -a subs flags
    for ((i = 2; i < CURRENT; i++)); do
        word="${words[i]}"
        if ((skip)); then skip=0; continue; fi
        if [[ "$word" == -* ]]; then
            [[ "$word" != *=* && " $(_cloudlet_valued "$cmdpath") " == *" $word "* ]] && skip=1
            continue
        fi
        [[ " $(_cloudlet_subnames "$cmdpath") " == *" $word "* ]] &&
            cmdpath="${cmdpath:+$cmdpath }$word"
    done
    ((skip)) && prev="${words[CURRENT-1]}"
    if [[ -n "$prev" ]]; then
        local opts="$(_cloudlet_choices "$cmdpath|$prev")"
        if [[ -n "$opts" ]]; then
            compadd -- ${=opts}
        elif [[ " $(_cloudlet_pathflags "$cmdpath") " == *" $prev "* ]]; then
            _files
        fi
        return 0
    fi
    _cloudlet_node "$cmdpath"
    if [[ "$PREFIX" == -* ]]; then
        _describe -t options option flags
        return 0
    fi
    (( ${#subs} )) && _describe -t commands command subs
    local positional="$(_cloudlet_positional "$cmdpath")"
    [[ -n "$positional" ]] && compadd -- ${=positional}
    [[ "$(_cloudlet_files "$cmdpath")" == 1 ]] && _files
    return 0
}
compdef _cloudlet cloudlet
"""


def zsh_script(parser: argparse.ArgumentParser) -> str:
    """A zsh completion script for ``parser`` (save as ``_cloudlet`` in a folder
    of ``$fpath``, or ``source`` it after ``compinit``)."""
    all_ = list(nodes(parser))
    arms = "".join(
        f"        {shlex.quote(n.path)})\n"
        f"            subs=({_zsh_items(n.subcommands)})\n"
        f"            flags=({_zsh_items(n.flags)}) ;;\n"
        for n in all_
    )
    parts = [
        "#compdef cloudlet\n",
        "# zsh completion for cloudlet (generated by `cloudlet completion zsh`)\n",
        f'_cloudlet_node() {{\n    case "$1" in\n{arms}    esac\n}}\n',
    ]
    tables = {
        "subnames": lambda n: " ".join(n.subcommands),
        "valued": lambda n: " ".join(n.valued),
        "pathflags": lambda n: " ".join(sorted(n.path_flags)),
        "positional": lambda n: " ".join(n.choices),
        "files": lambda n: "1" if n.files else "0",
    }
    for name, value in tables.items():
        parts.append(f"_cloudlet_{name}() {{\n{_case(all_, value)}}}\n")
    parts.append(f'_cloudlet_choices() {{\n    case "$1" in\n{_choice_arms(all_)}    esac\n}}\n')
    parts.append(ZSH_MAIN)
    return "".join(parts)


def cmd_completion(args: argparse.Namespace) -> int:
    from cloudlet.cmd.main import build_parser  # the whole tree, as the shell will see it

    script = bash_script if args.shell == "bash" else zsh_script
    sys.stdout.write(script(build_parser()))
    return 0


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("completion", cmd_completion, "print a shell completion script (bash or zsh)")
    p.add_argument("shell", choices=["bash", "zsh"], help="the shell the script is for")

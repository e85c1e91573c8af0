"""`imagegen completion bash|zsh|fish`: shell completion scripts derived from the argparse parser, so a new flag
or subcommand completes without editing a script."""

from __future__ import annotations

import argparse
import shlex


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return sorted(o for a in parser._actions for o in a.option_strings if o.startswith("--"))


def command_tree(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, tuple[list[str], list[str]]]:
    """'' / 'token' / 'token rotate' -> (subcommands, long options)."""
    subs = _subparsers(parser)
    tree = {prefix: (sorted(subs), _options(parser))}
    for name, sub in subs.items():
        tree.update(command_tree(sub, f"{prefix} {name}".strip()))
    return tree


def bash(parser: argparse.ArgumentParser) -> str:
    tree = command_tree(parser)
    cases = []
    for path, (subs, opts) in sorted(tree.items()):
        cases.append(f"    {shlex.quote(path or '-')}) subs={shlex.quote(' '.join(subs))} "
                     f"opts={shlex.quote(' '.join(opts))} ;;")
    return "\n".join([
        "# imagegen bash completion: eval \"$(imagegen completion bash)\"",
        "_imagegen() {",
        "  local cur path subs opts i w",
        "  cur=${COMP_WORDS[COMP_CWORD]}",
        "  path=",
        "  for ((i = 1; i < COMP_CWORD; i++)); do",
        "    w=${COMP_WORDS[i]}",
        "    [[ $w == -* ]] && continue",
        "    case \"${path:+$path }$w\" in",
        *[f"      {shlex.quote(p)}) path={shlex.quote(p)} ;;" for p in sorted(tree) if p],
        "    esac",
        "  done",
        "  case \"${path:--}\" in",
        *cases,
        "    *) subs= opts= ;;",
        "  esac",
        "  if [[ $cur == -* ]]; then",
        "    COMPREPLY=($(compgen -W \"$opts\" -- \"$cur\"))",
        "  elif [[ -n $subs ]]; then",
        "    COMPREPLY=($(compgen -W \"$subs\" -- \"$cur\"))",
        "  fi",
        "  [[ ${#COMPREPLY[@]} -eq 0 ]] && COMPREPLY=($(compgen -f -- \"$cur\"))",
        "  return 0",
        "}",
        "complete -o filenames -F _imagegen imagegen",
        "",
    ])


def zsh(parser: argparse.ArgumentParser) -> str:
    return ("# imagegen zsh completion: eval \"$(imagegen completion zsh)\" (uses bash completion emulation)\n"
            "autoload -U +X bashcompinit && bashcompinit\n" + bash(parser).split("\n", 1)[1])


def fish(parser: argparse.ArgumentParser) -> str:
    tree = command_tree(parser)
    lines = ["# imagegen fish completion: imagegen completion fish | source", "complete -c imagegen -f"]
    top_subs, _ = tree[""]
    lines.append(f"complete -c imagegen -n __fish_use_subcommand -a {shlex.quote(' '.join(top_subs))}")
    for path, (subs, opts) in sorted(tree.items()):
        if not path:
            continue
        words = path.split()
        cond = " && ".join(f"__fish_seen_subcommand_from {w}" for w in words)
        if subs:
            lines.append(f"complete -c imagegen -n {shlex.quote(cond)} -a {shlex.quote(' '.join(subs))}")
        for opt in opts:
            lines.append(f"complete -c imagegen -n {shlex.quote(cond)} -l {opt[2:]}")
        lines.append(f"complete -c imagegen -n {shlex.quote(cond)} -F")
    return "\n".join(lines) + "\n"


SHELLS = {"bash": bash, "zsh": zsh, "fish": fish}

"""Mistakes explained: "did you mean" for a mistyped command, choice or option.

Imported only when argparse reports an error.
"""

from __future__ import annotations

import argparse
import difflib
import re
from collections.abc import Callable

Tree = Callable[[], argparse.ArgumentParser]


def friendlier(message: str, tree: Tree) -> str:
    """argparse's message, with "did you mean" for a mistyped command, choice or option
    (`tree` builds every command's parser, for the options)."""
    found = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if found:
        word, choices = found[1], re.findall(r"'([^']*)'", found[2])
        close = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
        what = (
            "command" if message.lower().startswith(("argument command", "argument action")) else ""
        )
        head = f"unknown {what or 'value'} {word!r}"
        valid = f"choose from {', '.join(choices)}"
        if close:
            hint = f"; did you mean {close[0]!r}?" + (f" ({valid})" if len(choices) <= 8 else "")
        else:
            hint = f"; {valid}"
        return head + hint
    found = re.search(r"unrecognized arguments: (\S+)", message)
    if found and found[1].startswith("--"):
        close = difflib.get_close_matches(found[1], all_options(tree), n=1, cutoff=0.6)
        if close:
            return f"unknown option {found[1]}; did you mean {close[0]}?"
    return message


def all_options(tree: Tree) -> list[str]:
    options: set[str] = set()
    stack: list[argparse.ArgumentParser] = [tree()]
    while stack:
        parser = stack.pop()
        for action in parser._actions:
            options.update(o for o in action.option_strings if o.startswith("--"))
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
    return sorted(options)

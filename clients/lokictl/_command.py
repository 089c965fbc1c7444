"""How every lokictl command's parser is made: one shape of help (description, examples,
exit codes), the global options shown where help is asked for, and `--project` where a
project is needed. Command modules import this, never the command line itself (cli.py),
which imports them only when their command is named.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from lokictl._base import Failure

# Folders complete --project (shtab's `.complete` format).
DIRECTORY = {
    "bash": "_shtab_compgen_dirs",
    "zsh": "_files -/",
    "fish": "(__fish_complete_directories)",
}


EXIT_LINE = "exit codes: 0 done, 1 lokid error, 2 bad usage, 3 lokid not running, 4 connection lost"


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written; option help wrapped without splitting
    hyphenated words (`in-progress`, `dead-letter`)."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        import textwrap

        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


class Parser(argparse.ArgumentParser):
    """argparse, with mistakes reported as one line that says what to type instead."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        from lokictl._help import friendlier

        raise Failure(f"{friendlier(message, full_parser)} (see `{self.prog} --help`)")


def add_common(parser: argparse.ArgumentParser, top: bool) -> None:
    """Show the global options: all at the top, the output ones on each command."""
    parser.add_argument(
        "--json",
        action="store_true",
        help="print JSON for machines (errors too, on stderr); --json=FIELDS picks fields, "
        "e.g. --json=id,type,state",
    )
    parser.add_argument("--jq", metavar="EXPR", help="filter the JSON through jq EXPR")
    if not top:
        return
    parser.add_argument(
        "--no-color",
        action="store_true",
        help="no colour (also when NO_COLOR is set or output is not a terminal)",
    )
    parser.add_argument(
        "--socket",
        metavar="PATH",
        help="lokid's socket (default: $LOKID_SOCKET, else $XDG_RUNTIME_DIR/lokid/lokid.sock)",
    )
    parser.add_argument(
        "--no-spawn",
        action="store_true",
        help="do not start lokid when it is not running (env LOKICTL_NO_SPAWN=1)",
    )
    parser.add_argument("--version", action="store_true", help="print lokictl's version and exit")


SHOWING = False  # building parsers to be shown (help, man, completion), not only to parse


def command(
    sub: Any, name: str, text: str, examples: str = "", where: str | None = None
) -> argparse.ArgumentParser:
    """A subcommand: its help as its description, examples and exit codes after it.

    `where`: "required" (a project is needed: --project or discovery), "optional"
    (used when found), None (no project)."""
    epilog = (f"examples:\n{examples}\n\n" if examples else "") + EXIT_LINE
    parser = sub.add_parser(
        name,
        help=text,
        description=text,
        epilog=epilog,
        formatter_class=Formatter,
        add_help=SHOWING,  # -h is in argv whenever help is wanted (see _parser)
    )
    if SHOWING:
        add_common(parser, False)
    if where:
        parser.add_argument(
            "--project",
            metavar="PATH",
            help="the project folder (default: the nearest folder with .loki/ at or above $PWD)",
        ).complete = DIRECTORY  # type: ignore[attr-defined]
    parser.set_defaults(where=where)
    return parser


# The whole tree (cli.py sets it): completion, the man page and "did you mean" show it.
TREE: Callable[[], argparse.ArgumentParser] | None = None


def full_parser() -> argparse.ArgumentParser:
    """Every command's parser with every option shown."""
    if TREE is None:
        raise RuntimeError("lokictl.cli builds the command tree; it was not imported")
    return TREE()

"""The settings table of docs/settings.md, generated from server/settings.py so that it cannot drift.

`python -m clients.settings_doc` rewrites the file; `--check` fails (exit 1) when it is not current
(`make settings-check`, part of `make test`). Each row: the setting, its JUKI_ variable, its default and the
comment beside it in server/settings.py; comment lines above a group of fields head that group.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import sys
import tokenize
from pathlib import Path

from server import settings as settings_module
from server.settings import Settings

DOC = Path(__file__).resolve().parents[1] / "docs" / "settings.md"
_HEAD = """# Settings

<!-- generated from server/settings.py by `make settings-doc`; `make test` fails when it is stale -->

Every server and `juki` command reads one settings object: the defaults below, then a TOML file
(`juki --config FILE`, keys as in the first column), then environment variables (`JUKI_<SETTING>`, e.g.
`JUKI_PREFECTURE_PORT=6000`), then flags (`--port`, `--workers`). Relative paths are taken from the home
(`juki --home DIR`, default the current directory). A negative metrics port disables that `/metrics`
listener. `juki run` writes the settings it started the servers with to `var/data/run-settings.toml`.
"""


def _comments(source: str) -> dict[int, str]:
    """Line number → the comment text on that line."""
    found: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            found[token.start[0]] = token.string.lstrip("#").strip()
    return found


def _fields(source: str) -> list[tuple[str, int, int]]:
    """(name, first line, last line) of each field of Settings, in order."""
    tree = ast.parse(source)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings")
    return [
        (n.target.id, n.lineno, n.end_lineno or n.lineno)
        for n in cls.body
        if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
    ]


def _default(field: dataclasses.Field[object]) -> str:
    if field.name == "home":
        return "the current directory"
    value = field.default
    if value is None:
        return "(none)"
    if value == "":
        return "(empty)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int) and value >= 1 << 20:
        return f"`{value}` ({value >> 20} MiB)"
    return f"`{value}`"


def _cell(text: str) -> str:
    """Table-safe Markdown: a | escaped, and <…> shown as text rather than taken for HTML."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def render() -> str:
    source = Path(settings_module.__file__).read_text(encoding="utf-8")
    comments = _comments(source)
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    out = [_HEAD]
    table_open = False
    rows = _fields(source)
    blocks = [_block_above(source, comments, first) for _, first, _ in rows]
    for i, (name, first, last) in enumerate(rows):
        heading = blocks[i]
        note = " ".join(comments[n] for n in range(first, last + 1) if n in comments)
        # a comment block over a single field (the next field has its own, or none follows) is its note
        if heading and (i + 1 == len(rows) or blocks[i + 1]):
            note, heading = " ".join([*heading, note]).strip(), []
        if heading or not table_open:
            out.append("")
            if heading:
                out.append(f"**{_cell(' '.join(heading))}**")
                out.append("")
            out.append("| setting | environment | default | note |")
            out.append("|---|---|---|---|")
            table_open = True
        out.append(f"| `{name}` | `JUKI_{name.upper()}` | {_cell(_default(fields[name]))} | {_cell(note)} |")
    return "\n".join(out) + "\n"


def _block_above(source: str, comments: dict[int, str], first: int) -> list[str]:
    """The comment lines right above line `first` (none when code or a blank line is there)."""
    block: list[str] = []
    line = first - 1
    while line in comments and not _code_on(source, line):
        block.insert(0, comments[line])
        line -= 1
    return block


def _code_on(source: str, line: int) -> bool:
    """Whether line `line` (1-based) holds code before its comment (an inline comment)."""
    text = source.splitlines()[line - 1]
    return not text.lstrip().startswith("#")


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not DOC.exists() or DOC.read_text(encoding="utf-8") != text:
            print(f"stale {DOC.relative_to(DOC.parents[1])}: run make settings-doc", file=sys.stderr)
            return 1
        print("settings table is current")
        return 0
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

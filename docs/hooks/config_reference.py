"""The configuration reference, generated from `conf/` when the site is built.

A MkDocs hook: `on_page_markdown` replaces the marker `<!-- config-reference -->` of
`configuration.md` with every YAML file of `conf/`, its comments included: the top-level
configs (one per app) first, then each group's options. Each file becomes a table of its keys
(the dotted name, the default as written, the comment on that line and the comment lines that
continue it) and the file itself, verbatim. Nothing here is typed by hand, so the page cannot
disagree with the configs. `render()` is plain Python (no MkDocs import): tests call it too.
"""

from __future__ import annotations

import re
from pathlib import Path

CONF = Path(__file__).resolve().parents[2] / "conf"
MARKER = "<!-- config-reference -->"
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w@/.-]*|'[^']*'|\"[^\"]*\"):(?P<rest>.*)$")
_ITEM = re.compile(r"^(?P<indent> *)- (?P<rest>.*)$")


def _split_comment(text: str) -> tuple[str, str]:
    """'value   # comment' -> ('value', 'comment'); a '#' inside quotes is not a comment."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i].strip(), text[i + 1 :].strip()
    return text.strip(), ""


def parse(text: str) -> tuple[str, list[dict]]:
    """A YAML file's header comment and its keys: [{key, value, comment}], in file order.

    Nested keys are dotted (`hessian.samples`); `defaults` list items become one row each
    (`defaults: dataset`), with the item's value and comment.
    """
    lines = text.splitlines()
    header: list[str] = []
    i = 0
    while i < len(lines) and lines[i].startswith("#"):
        header.append(lines[i][1:].rstrip().removeprefix(" "))
        i += 1
    rows: list[dict] = []
    stack: list[tuple[int, str]] = []  # (indent, key) of the open mappings
    last: dict | None = None
    pending: list[str] = []  # comment lines above a key: they describe it
    for line in lines[i:]:
        stripped = line.strip()
        if not stripped:
            continue
        indent = len(line) - len(line.lstrip(" "))
        if stripped.startswith("#"):
            text = stripped.lstrip("#").strip()
            if last is not None and indent > last["indent"]:  # continues the key above
                last["comment"] = (last["comment"] + " " + text).strip()
            else:
                pending.append(text)
            continue
        item = _ITEM.match(line)
        if item and stack and stack[-1][1] == "defaults":
            value, comment = _split_comment(item["rest"])
            group, _, choice = value.partition(":")
            if group.strip() == "_self_":
                pending, last = [], None
                continue
            last = {
                "key": f"defaults: {group.strip()}",
                "value": choice.strip() or group.strip(),
                "comment": " ".join([*pending, comment]).strip(),
                "indent": indent,
            }
            pending = []
            rows.append(last)
            continue
        m = _KEY.match(line)
        if not m:  # a list item or a flow value on its own line: part of the key above
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = m["key"].strip("'\"")
        value, comment = _split_comment(m["rest"])
        dotted = ".".join([k for _, k in stack] + [key])
        stack.append((indent, key))
        comment = " ".join([*pending, comment]).strip()
        pending = []
        if key == "defaults":
            last = None
            continue
        last = {"key": dotted, "value": value, "comment": comment, "indent": indent}
        if value or comment:  # a mapping without a comment: its keys follow
            rows.append(last)
    return "\n".join(header), rows


def _cell(text: str) -> str:
    """Table-cell text: pipes escaped, no HTML, no emphasis."""
    for ch, esc in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|")):
        text = text.replace(ch, esc)
    return re.sub(r"([*_`\[\]])", r"\\\1", text)


def _code(text: str) -> str:
    """A value in a code span (inside a table: only the pipe needs escaping)."""
    pipe = "\\|"
    return "`" + text.replace("|", pipe) + "`" if text else ""


def render_file(path: Path, level: int = 3) -> str:
    rel = path.relative_to(CONF).as_posix()
    text = path.read_text()
    header, rows = parse(text)
    out = [f"{'#' * level} `{rel}`", ""]
    if header:
        out += ["```text", header, "```", ""]
    if rows:
        out += ["| key | default | what it is |", "|---|---|---|"]
        out += [f"| `{r['key']}` | {_code(r['value'])} | {_cell(r['comment'])} |" for r in rows]
        out.append("")
    out += [f'??? note "{rel}, as written"', "", "    ```yaml"]
    out += [f"    {line}".rstrip() for line in text.rstrip("\n").splitlines()]
    out += ["    ```", ""]
    return "\n".join(out)


def render(conf: Path = CONF) -> str:
    """The reference: the apps' top-level configs, then every group (folders of conf/)."""
    out = ["## Top-level configs (one per command)", ""]
    for path in sorted(conf.glob("*.yaml")):
        out.append(render_file(path))
    groups = sorted({p.parent for p in conf.rglob("*.yaml")} - {conf})
    for folder in groups:
        group = folder.relative_to(conf).as_posix()
        choices = sorted(folder.glob("*.yaml"))
        names = ", ".join(f"`{group.split('/')[-1]}={p.stem}`" for p in choices)
        out += [f"## Group `{group}`", "", f"Choices: {names}.", ""]
        out += [render_file(p) for p in choices]
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 (MkDocs hook)
    if MARKER in markdown:
        return markdown.replace(MARKER, render())
    return markdown

"""MkDocs hook: the pages generated from the code, and links that leave docs/.

At build time this hook

- renders the configuration reference from the JSON Schemas ``mixer schema`` prints: one page per
  built-in adapter (its README.md, then its params), an adapters index and a templates page;
- replaces ``<!-- include: PATH#Heading -->`` with that section of a repository file (the
  quickstart takes the README's), so each text has one source;
- rewrites links that point outside docs/ (``../adapters/stdio/README.md``,
  ``../deploy/nginx/nginx.conf``): adapter READMEs become their generated page, other repository
  files a ``path`` in code, since the site does not carry them. A link to a file that does not
  exist is left alone, so ``mkdocs build --strict`` still fails on it.

Only built-in adapters are documented (entry-point plugins are not loaded), so the site does not
depend on what happens to be installed.
"""

from __future__ import annotations

import json
import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

from mixer import Code
from mixer.registry import Registry
from mixer.schema import adapter_schema, template_schema
from plugins.manager import create_plugin_manager

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"

_INCLUDE = re.compile(r"^<!-- include: (?P<path>[^#\s]+)(?:#(?P<section>[^>]+?))? -->$", re.MULTILINE)
_LINK = re.compile(r"(?<!!)\[(?P<text>[^\]\n]*)\]\((?P<target>[^)\s]+)\)")
_FENCE = re.compile(r"^((?:```|~~~).*)$", re.MULTILINE)


# -- hooks ----------------------------------------------------------------------------------------


def on_files(files: Files, config: MkDocsConfig) -> Files:
    registry = create_plugin_manager(load_entry_points=False, blocked=()).registry()
    for src_uri, content in generated_pages(registry).items():
        files.append(File.generated(config, src_uri, content=content))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    if page.file.generated_by is not None:
        return markdown
    source = f"docs/{page.file.src_uri}"
    markdown = _INCLUDE.sub(lambda m: _include(m.group("path"), m.group("section"), source), markdown)
    return rewrite_links(markdown, source, page.file.src_uri)


# -- generated pages ------------------------------------------------------------------------------


def generated_pages(registry: Registry) -> dict[str, str]:
    """Markdown of every generated page, by its path in the site's docs."""
    pages: dict[str, str] = {}
    builtin = sorted(name for name, info in registry.adapters.items() if info.origin == "builtin")
    rows = ["| adapter | templates | stability | what it does |", "|---|---|---|---|"]
    for name in builtin:
        info = registry.adapters[name]
        templates = ", ".join(f"[{t}](../reference/templates.md#{t})" for t in sorted(info.templates))
        rows.append(f"| [{name}]({name}.md) | {templates} | {info.stability.value} | {info.description} |")
        pages[f"adapters/{name}.md"] = adapter_page(name, registry)
    pages["adapters/index.md"] = "\n".join(
        [
            "# Built-in adapters",
            "",
            "Each page is the adapter's README followed by the reference of its handler params,",
            "generated from the adapter's config model (`mixer schema --adapter NAME` prints it as JSON",
            "Schema). `mixer adapters` lists what is installed, plugins included.",
            "",
            *rows,
            "",
        ]
    )
    pages["reference/templates.md"] = templates_page(registry)
    links = [f"- [{name}](../adapters/{name}.md#params-reference)" for name in builtin]
    pages["reference/index.md"] = "\n".join(
        [
            "# Configuration reference",
            "",
            "Generated from the code at every build: the handler params each built-in adapter accepts",
            "(its pydantic config model, every field described) and the instance params of each template.",
            "The same schemas, as JSON Schema, come from the command line:",
            "",
            "```sh",
            "mixer schema                       # every adapter and template, plugins included",
            "mixer schema --adapter prometheus  # one adapter's handler params",
            "mixer schema --template metric     # one template's instance params",
            "```",
            "",
            "How handlers, instances and rules fit together is in [Configuration](../config.md); the",
            "expression language of instance params and rule matches in [Expressions](../expressions.md).",
            "",
            "## Handler params",
            "",
            *links,
            "",
            "## Instance params",
            "",
            "[Templates](templates.md): the fields of metric, logentry, tracespan, quota, listentry,",
            "authorization and the others.",
            "",
        ]
    )
    return pages


def adapter_page(name: str, registry: Registry) -> str:
    readme_path = f"adapters/{name}/README.md"
    readme = (REPO / readme_path).read_text(encoding="utf-8")
    body = rewrite_links(readme, readme_path, f"adapters/{name}.md")
    schema = adapter_schema(registry.adapters[name])
    return f"{body.rstrip()}\n\n## Params reference\n\n{render_schema(schema)}"


def templates_page(registry: Registry) -> str:
    out = [
        "# Templates",
        "",
        "An instance names a template (`compiledTemplate`, or the kind in the legacy form) and gives its",
        "params: one [expression](../expressions.md) per field, evaluated against each request's",
        "attributes. Fields not given are left empty; required ones must be given. `mixer schema",
        "--template NAME` prints these as JSON Schema.",
        "",
    ]
    for name in sorted(registry.templates):
        schema = template_schema(registry.templates[name])
        users = sorted(a for a, info in registry.adapters.items() if name in info.templates)
        out += [f"## {name}", "", schema["description"], ""]
        out.append(f"Variety: `{schema['x-mixer-variety']}`.")
        if users:
            out.append("Adapters: " + ", ".join(f"[{a}](../adapters/{a}.md)" for a in users) + ".")
        out.append("")
        out += _template_fields(schema, "")
        outputs = schema.get("x-mixer-outputs")
        if outputs:
            out += ["", "Outputs: " + ", ".join(f"`{k}` ({v})" for k, v in outputs.items()) + "."]
        out.append("")
    return "\n".join(out)


def _template_fields(schema: dict[str, Any], prefix: str) -> list[str]:
    props: dict[str, Any] = schema.get("properties", {})
    if not props:
        return ["No params."] if not prefix else []
    required = set(schema.get("required", []))
    rows = ["| field | type | required | value |", "|---|---|---|---|"] if not prefix else []
    for field, prop in props.items():
        if "properties" in prop:
            kind = "struct"
        elif prop.get("type") == "object":
            kind = "map of expressions"
        else:
            kind = "expression"
        needed = "yes" if field in required else ""
        rows.append(f"| `{prefix}{field}` | {prop['x-mixer-value-type']} | {needed} | {kind} |")
        if "properties" in prop:
            rows += _template_fields(prop, f"{prefix}{field}.")
    return rows


# -- schema rendering -----------------------------------------------------------------------------


def render_schema(schema: dict[str, Any]) -> str:
    """Markdown tables of a params schema: the top-level model, then each nested model."""
    defs: dict[str, Any] = schema.get("$defs", {})
    out = [_model_table(schema, defs)]
    for name in sorted(defs):
        model = defs[name]
        if "properties" not in model:
            continue
        out += [f"### {name}", ""]
        if model.get("description"):
            out += [_one_line(model["description"]), ""]
        out.append(_model_table(model, defs))
    return "\n".join(out)


def _model_table(model: dict[str, Any], defs: dict[str, Any]) -> str:
    required = set(model.get("required", []))
    rows = ["| field | type | default | description |", "|---|---|---|---|"]
    for field, prop in model.get("properties", {}).items():
        default = "required" if field in required else _default(prop)
        rows.append(
            f"| `{field}` | {_type(prop, defs)} | {default} | {_one_line(prop.get('description', ''))} |"
        )
    return "\n".join(rows) + "\n"


def _type(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[-1]
        target = defs.get(name, {})
        if name == "Code":
            # google.rpc.Code: config gives the number or the name.
            return "status code: a number (`7`) or a name (`PERMISSION_DENIED`)"
        if "enum" in target:
            return " \\| ".join(f"`{v}`" for v in target["enum"])
        return f"[{name}](#{name.lower()})"
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    if "const" in prop:
        return f"`{prop['const']}`"
    for key in ("anyOf", "oneOf"):
        if key in prop:
            options = [_type(option, defs) for option in prop[key] if option.get("type") != "null"]
            return " \\| ".join(dict.fromkeys(options)) or "null"
    kind = prop.get("type")
    if kind == "array":
        return f"list of {_type(prop.get('items', {}), defs)}"
    if kind == "object":
        extra = prop.get("additionalProperties")
        return f"map of {_type(extra, defs)}" if isinstance(extra, dict) and extra else "map"
    if prop.get("format") == "duration":
        return "duration"
    if prop.get("format") == "password":
        return "secret string"
    if isinstance(kind, str):
        return {"integer": "int", "number": "number", "boolean": "bool"}.get(kind, kind)
    return "any"


def _default(prop: dict[str, Any]) -> str:
    if "default" not in prop:
        return ""
    value = prop["default"]
    if prop.get("$ref", "").endswith("/Code") and isinstance(value, int):
        return f"`{Code(value).name}`"
    if prop.get("format") == "duration" or any(o.get("format") == "duration" for o in prop.get("anyOf", [])):
        value = _duration(value) if isinstance(value, str) else value
    text = json.dumps(value, sort_keys=True)
    if len(text) <= 60:
        return f"`{text}`".replace("|", "\\|")
    # A nested model's defaults are in its own table; other long values are in the README.
    return "its defaults" if "$ref" in prop else "(see the README)"


_ISO_DURATION = re.compile(r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>[\d.]+)S)?)?$")


def _duration(iso: str) -> str:
    """``PT5M`` -> ``5m``, the way config writes durations."""
    match = _ISO_DURATION.match(iso)
    if not match:
        return iso
    days, hours, minutes, seconds = (match.group(k) for k in "dhms")
    hours_total = int(days or 0) * 24 + int(hours or 0)
    parts = [f"{hours_total}h" if hours_total else "", f"{minutes}m" if minutes else ""]
    if seconds:
        parts.append(f"{float(seconds):g}s")
    return "".join(parts) or "0s"


def _one_line(text: str) -> str:
    # Docstring markup (``x``, :data:`X`) to Markdown, on one table line.
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text)
    return " ".join(text.replace("``", "`").split()).replace("|", "\\|")


# -- includes and links ---------------------------------------------------------------------------


def _include(path: str, section: str | None, source: str) -> str:
    text = (REPO / path).read_text(encoding="utf-8")
    if section is not None:
        text = _section(text, section.strip(), path)
    return rewrite_links(text, path, source.removeprefix("docs/"))


def _section(text: str, heading: str, path: str) -> str:
    """The body of the section titled ``heading`` (up to the next heading of its level or above)."""
    lines = text.splitlines()
    headings: list[tuple[int, int, str]] = []  # line, level, title; not the comments in code blocks
    fenced = False
    for i, line in enumerate(lines):
        if _FENCE.fullmatch(line):
            fenced = not fenced
        match = re.match(r"^(#+)\s+(.*)$", line)
        if match and not fenced:
            headings.append((i, len(match.group(1)), match.group(2).strip()))
    for n, (start, level, title) in enumerate(headings):
        if title == heading:
            end = next((line for line, other, _ in headings[n + 1 :] if other <= level), len(lines))
            return "\n".join(lines[start + 1 : end]).strip() + "\n"
    raise ValueError(f"{path} has no section {heading!r}")


def rewrite_links(markdown: str, source: str, page: str) -> str:
    """Rewrite the links of ``markdown`` (from repository file ``source``) for the site page ``page``.

    Links into docs/ become relative to the page; adapter READMEs become their generated page;
    other repository files become code. Code blocks are left as they are.
    """
    out: list[str] = []
    inside = False
    # With its group kept, split() alternates text and fence lines: rewrite only outside the fences.
    for chunk in _FENCE.split(markdown):
        if _FENCE.fullmatch(chunk):
            inside = not inside
            out.append(chunk)
        elif inside:
            out.append(chunk)
        else:
            out.append(_LINK.sub(lambda m: _link(m, source, page), chunk))
    return "".join(out)


def _link(match: re.Match[str], source: str, page: str) -> str:
    text, target = match.group("text"), match.group("target")
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith(("#", "/")):
        return match.group(0)
    path, _, anchor = target.partition("#")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(source), path))
    if resolved.startswith("../") or not (REPO / resolved).exists():
        return match.group(0)
    suffix = f"#{anchor}" if anchor else ""
    adapter = re.fullmatch(r"adapters/(\w+)/README\.md", resolved)
    if adapter:
        site_path = f"adapters/{adapter.group(1)}.md"
    elif resolved.startswith("docs/") and resolved.endswith(".md"):
        site_path = resolved.removeprefix("docs/")
    else:
        shown = resolved.rstrip("/") + ("/" if target.endswith("/") else "")
        if text.strip("`") == shown or text.strip("`") == shown.rstrip("/"):
            return f"`{shown}`"
        return f"{text} (`{shown}`)"
    relative = posixpath.relpath(site_path, posixpath.dirname(page) or ".")
    return f"[{text}]({relative}{suffix})"

"""Render the dermnode Helm chart without helm: the subset of Go templates and Sprig that it uses.

Supported: ``{{ }}`` with ``-`` trimming and ``/* */`` comments; ``if``/``else``/``end``,
``with``/``end`` and ``define`` (in ``_helpers.tpl``); pipelines of fields (``.Values.a.b``, ``.``,
``$``), string and number literals and the functions include, printf, trunc, trimSuffix, quote,
default, required, not, b64enc, toYaml, nindent, indent. Anything else raises, so a template that
strays from the subset fails the test instead of being skipped; a ``.Values`` key missing from
values.yaml raises too (helm would print an empty value). Where helm is installed the tests run
``helm template`` / ``helm lint`` as well.
"""

from __future__ import annotations

import base64
import copy
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ACTION = re.compile(r"\{\{(-?)(.*?)(-?)\}\}", re.DOTALL)


class TemplateError(Exception):
    pass


@dataclass
class Block:
    keyword: str  # "root", "if", "with" or "define"
    argument: str = ""
    body: list[Any] = field(default_factory=list)
    orelse: list[Any] = field(default_factory=list)
    in_else: bool = False

    def add(self, node: Any) -> None:
        (self.orelse if self.in_else else self.body).append(node)


def _tokens(source: str) -> list[tuple[str, str]]:
    """("text", s) and ("action", s) pieces, with ``{{-`` / ``-}}`` trimming applied to the text."""
    pieces: list[tuple[str, str]] = []
    position, trim_next = 0, False
    for match in ACTION.finditer(source):
        text = source[position:match.start()]
        text = text.lstrip() if trim_next else text
        text = text.rstrip() if match.group(1) else text
        pieces.append(("text", text))
        pieces.append(("action", match.group(2).strip()))
        position, trim_next = match.end(), bool(match.group(3))
    tail = source[position:]
    pieces.append(("text", tail.lstrip() if trim_next else tail))
    return pieces


def parse(source: str) -> Block:
    stack = [Block("root")]
    for kind, value in _tokens(source):
        if kind == "text" or value.startswith("/*"):
            if kind == "text" and value:
                stack[-1].add(value)
            continue
        word, _, rest = value.partition(" ")
        if word in ("if", "with", "define"):
            block = Block(word, rest.strip())
            stack[-1].add(block)
            stack.append(block)
        elif word == "else":
            stack[-1].in_else = True
        elif word == "end":
            if len(stack) == 1:
                raise TemplateError("{{ end }} without a block")
            stack.pop()
        elif word in ("range", "template", "block", "break", "continue") or word.startswith("$") and ":=" in value:
            raise TemplateError(f"{{{{ {value} }}}} is outside the subset this renderer knows")
        else:
            stack[-1].add(("expr", value))
    if len(stack) != 1:
        raise TemplateError(f"{{{{ {stack[-1].keyword} }}}} without {{{{ end }}}}")
    return stack[0]


def truthy(value: Any) -> bool:
    return value not in (None, False, 0, "") and not (isinstance(value, (dict, list)) and not value)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Renderer:
    def __init__(self, chart: Path, values: dict, release: str = "demo") -> None:
        meta = yaml.safe_load((chart / "Chart.yaml").read_text())
        self.root = {
            "Values": values,
            "Release": {"Name": release, "Namespace": "default", "Service": "Helm"},
            "Chart": {"Name": meta["name"], "Version": meta["version"], "AppVersion": meta.get("appVersion", "")},
        }
        self.defines: dict[str, list[Any]] = {}
        self.templates: dict[str, Block] = {}
        for path in sorted((chart / "templates").iterdir()):
            tree = parse(path.read_text())
            for node in tree.body:
                if isinstance(node, Block) and node.keyword == "define":
                    self.defines[shlex.split(node.argument)[0]] = node.body
            if path.suffix == ".yaml":
                self.templates[path.name] = tree

    def render(self) -> dict[str, str]:
        return {name: self._nodes(tree.body, self.root) for name, tree in self.templates.items()}

    def _nodes(self, nodes: list[Any], dot: Any) -> str:
        out = []
        for node in nodes:
            if isinstance(node, str):
                out.append(node)
            elif isinstance(node, tuple):
                out.append(_text(self.pipeline(node[1], dot)))
            elif node.keyword == "if":
                chosen = node.body if truthy(self.pipeline(node.argument, dot)) else node.orelse
                out.append(self._nodes(chosen, dot))
            elif node.keyword == "with":
                value = self.pipeline(node.argument, dot)
                out.append(self._nodes(node.body, value) if truthy(value) else self._nodes(node.orelse, dot))
        return "".join(out)

    def pipeline(self, source: str, dot: Any) -> Any:
        value, piped = None, False
        for command in source.split(" | "):
            words = shlex.split(command, posix=False)
            if not words:
                raise TemplateError(f"empty command in {source!r}")
            if words[0] in self.functions:
                args = [self.operand(word, dot) for word in words[1:]] + ([value] if piped else [])
                value = self.functions[words[0]](self, *args)
            elif len(words) == 1 and not piped:
                value = self.operand(words[0], dot)
            else:
                raise TemplateError(f"cannot evaluate {command!r} in {source!r}")
            piped = True
        return value

    def operand(self, word: str, dot: Any) -> Any:
        if word.startswith('"'):
            return word[1:-1].encode().decode("unicode_escape")
        if re.fullmatch(r"-?\d+", word):
            return int(word)
        if word in (".", "$"):
            return dot if word == "." else self.root
        if word.startswith((".", "$.")):
            value = self.root if word.startswith("$") else dot
            for part in word.lstrip("$").strip(".").split("."):
                if not isinstance(value, dict) or part not in value:
                    raise TemplateError(f"{word}: no key {part!r} (add it to values.yaml)")
                value = value[part]
            return value
        if word.startswith("("):
            raise TemplateError(f"parentheses are outside the subset: {word!r}")
        raise TemplateError(f"unknown function or operand {word!r}")

    def _include(self, name: str, dot: Any) -> str:
        if name not in self.defines:
            raise TemplateError(f"include of undefined template {name!r}")
        return self._nodes(self.defines[name], dot)

    @staticmethod
    def _required(message: str, value: Any) -> Any:
        if not truthy(value):
            raise TemplateError(f"required: {message}")
        return value

    functions = {
        "include": _include,
        "printf": lambda self, fmt, *args: fmt % tuple(_text(a) for a in args),
        "trunc": lambda self, n, s: s[:n],
        "trimSuffix": lambda self, suffix, s: s[: -len(suffix)] if suffix and s.endswith(suffix) else s,
        "quote": lambda self, v: '"' + _text(v).replace("\\", "\\\\").replace('"', '\\"') + '"',
        "default": lambda self, fallback, v=None: v if truthy(v) else fallback,
        "required": lambda self, message, v: Renderer._required(message, v),
        "not": lambda self, v: not truthy(v),
        "b64enc": lambda self, v: base64.b64encode(_text(v).encode()).decode(),
        "toYaml": lambda self, v: yaml.safe_dump(v, default_flow_style=False, sort_keys=True).rstrip("\n")
        if truthy(v) else "{}",
        "nindent": lambda self, n, s: "\n" + "\n".join(" " * n + line for line in _text(s).splitlines()),
        "indent": lambda self, n, s: "\n".join(" " * n + line for line in _text(s).splitlines()),
    }


def merged(base: dict, overrides: dict) -> dict:
    """values.yaml with ``overrides`` merged in, as ``helm --set``/``-f`` would."""
    result = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def render_chart(chart: Path, overrides: dict) -> list[dict]:
    """Every Kubernetes object the chart renders with values.yaml plus ``overrides``."""
    values = merged(yaml.safe_load((chart / "values.yaml").read_text()), overrides)
    texts = Renderer(chart, values).render().values()
    return [doc for text in texts for doc in yaml.safe_load_all(text) if doc is not None]

"""Import Plush's XML application description into Shoal's spec model.

Plush (and its successor Gush) described an application as::

    <project name=...>
      <software name=...><package name=... type=...><path>DIR</path></package></software>
      <component name=...>
        <rspec><num_hosts>N</num_hosts></rspec>      (or <num_hosts> directly)
        <software name=.../>
        <resources><resource type=... group=.../></resources>
      </component>
      <experiment name=...><execution>
        <component_block name=...>
          <component name=.../>
          <process_block name=...>
            <predecessor name=.../>
            <process name=...><path>cmd</path><cmdline><arg>a</arg>...</cmdline></process>
          </process_block>
          <barrier_block name=...><predecessor name=.../><barrier name=... max=N/></barrier_block>
        </component_block>
      </execution></experiment>
    </project>

(an enclosing ``<plush>`` element is accepted). The import builds the same
document a YAML spec would be, with the XML line of every element, so the
same schema and semantic checks report ``file:line`` in the XML file:

* a package's ``<path>`` is a local directory (relative to the XML file);
* a resource ``group`` becomes the selection ``@group`` (or the resource's
  ``select`` attribute, a Shoal extension); no resource selects ``all``;
* process and barrier blocks of a component block become its steps, in an
  order that honours ``<predecessor>`` (Plush ran unordered blocks in
  parallel; Shoal runs them one after another in document order);
* ``<barrier max=N>`` is a partial barrier of threshold N.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.parsers import expat

from shoal.errors import ConfigError

from .located import Located, PathKey

NAME_RE = re.compile(r"[^A-Za-z0-9_-]+")
#: The deepest nesting of elements accepted (a Plush description needs about 7).
MAX_DEPTH = 64


@dataclass
class Element:
    """An XML element with the line it starts on."""

    tag: str
    attrs: dict[str, str]
    line: int
    children: list[Element] = field(default_factory=list)
    text: str = ""

    def all(self, tag: str) -> list[Element]:
        return [c for c in self.children if c.tag == tag]

    def first(self, tag: str) -> Element | None:
        return next((c for c in self.children if c.tag == tag), None)

    def find(self, tag: str) -> list[Element]:
        """Descendants named ``tag`` (depth first, document order)."""
        out = []
        todo = list(reversed(self.children))
        while todo:
            element = todo.pop()
            if element.tag == tag:
                out.append(element)
            todo.extend(reversed(element.children))
        return out


def parse_xml(text: str, file: str) -> Element:
    """A tree of :class:`Element` with line numbers; ConfigError names file:line.

    Like defusedxml, entity declarations are refused (nested entities expand
    exponentially, and external ones read other files); elements nest at most
    MAX_DEPTH deep; an element's text is joined once, not grown per chunk.
    """
    parser = expat.ParserCreate()
    stack: list[Element] = []
    texts: list[list[str]] = []  # the text chunks of each open element
    root: list[Element] = []

    def start(tag: str, attrs: dict[str, str]) -> None:
        element = Element(tag, dict(attrs), parser.CurrentLineNumber)
        if len(stack) >= MAX_DEPTH:
            where = f"{file}:{element.line}"
            raise ConfigError(f"{where}: <{tag}> is nested deeper than {MAX_DEPTH} elements")
        if stack:
            stack[-1].children.append(element)
        else:
            root.append(element)
        stack.append(element)
        texts.append([])

    def end(tag: str) -> None:
        stack.pop().text = "".join(texts.pop())

    def data(chunk: str) -> None:
        if texts:
            texts[-1].append(chunk)

    def entity(name: str, *_: object) -> None:
        line = parser.CurrentLineNumber
        raise ConfigError(f"{file}:{line}: entity declarations are not accepted ({name!r})")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = data
    parser.EntityDeclHandler = entity
    parser.UnparsedEntityDeclHandler = entity
    parser.ExternalEntityRefHandler = entity  # type: ignore[assignment]
    try:
        parser.Parse(text, True)
    except expat.ExpatError as exc:
        reason = expat.errors.messages[exc.code]
        raise ConfigError(f"{file}:{exc.lineno}: not valid XML: {reason}") from None
    if not root:
        raise ConfigError(f"{file}:1: no XML element found")
    return root[0]


def _name(text: str) -> str:
    cleaned = NAME_RE.sub("-", text.strip()).strip("-") or "x"
    return cleaned if cleaned[0].isalpha() else f"x{cleaned}"


def _require(element: Element, attr: str, file: str) -> str:
    value = element.attrs.get(attr, "").strip()
    if not value:
        raise ConfigError(f"{file}:{element.line}: <{element.tag}> needs a {attr}= attribute")
    return value


def _command(process: Element) -> str:
    path = process.first("path")
    words = [path.text.strip()] if path is not None and path.text.strip() else []
    cmdline = process.first("cmdline")
    if cmdline is not None:
        words.extend(arg.text.strip() for arg in cmdline.all("arg"))
    return " ".join(shlex.quote(w) if i else w for i, w in enumerate(words))


def _ordered(blocks: list[Element], file: str) -> list[Element]:
    """Blocks in document order, each after its predecessors (stable topological sort,
    depth first over an explicit stack: a chain of predecessors can be long)."""
    names = {b.attrs.get("name", f"#{i}"): b for i, b in enumerate(blocks)}
    done: list[Element] = []
    placed: set[str] = set()
    for key, block in names.items():
        if key in placed:
            continue
        path = [key]
        on_path = {key}
        todo = [iter(block.all("predecessor"))]
        while todo:
            pred = next(todo[-1], None)
            if pred is None:
                todo.pop()
                name = path.pop()
                on_path.discard(name)
                placed.add(name)
                done.append(names[name])
                continue
            pname = _require(pred, "name", file)
            if pname not in names:
                raise ConfigError(f"{file}:{pred.line}: unknown predecessor block {pname!r}")
            if pname in on_path:
                line = names[pname].line
                raise ConfigError(f"{file}:{line}: cyclic predecessors at block {pname!r}")
            if pname not in placed:
                path.append(pname)
                on_path.add(pname)
                todo.append(iter(names[pname].all("predecessor")))
    return done


def import_plush(text: str, file: str = "<plush>") -> Located:
    """The spec document (with lines) described by a Plush XML application."""
    root = parse_xml(text, file)
    project = root if root.tag == "project" else root.first("project")
    if project is None:
        raise ConfigError(f"{file}:{root.line}: expected a <project> element")
    lines: dict[PathKey, int] = {(): project.line, ("app",): project.line}
    doc: dict[str, Any] = {"app": _name(project.attrs.get("name", "plush"))}
    software: dict[str, Any] = {}
    for sw in project.all("software"):
        sname = _name(_require(sw, "name", file))
        lines[("software", sname)] = sw.line
        package = sw.first("package")
        path = package.first("path") if package is not None else None
        if path is None or not path.text.strip():
            raise ConfigError(f"{file}:{sw.line}: software {sname} needs <package><path>DIR")
        software[sname] = {"source": path.text.strip()}
        lines[("software", sname, "source")] = path.line
    if software:
        doc["software"] = software
    components: dict[str, Any] = {}
    for comp in project.all("component"):
        cname = _name(_require(comp, "name", file))
        cpath: PathKey = ("components", cname)
        lines[cpath] = comp.line
        num = comp.find("num_hosts")
        entry: dict[str, Any] = {"select": "all", "processes": []}
        if num:
            try:
                entry["count"] = int(num[0].text.strip())
            except ValueError:
                entry["count"] = num[0].text.strip()
            lines[(*cpath, "count")] = num[0].line
        resources = comp.find("resource")
        if resources:
            res = resources[0]
            group = res.attrs.get("group")
            entry["select"] = res.attrs.get("select") or (f"@{group}" if group else "all")
            lines[(*cpath, "select")] = res.line
        used = [_name(_require(s, "name", file)) for s in comp.all("software")]
        if used:
            entry["software"] = used
        entry["on_failure"] = "restart"
        components[cname] = entry
    barriers: dict[str, Any] = {}
    for block in project.find("component_block"):
        ref = block.first("component")
        if ref is None:
            raise ConfigError(f"{file}:{block.line}: <component_block> names no <component>")
        cname = _name(_require(ref, "name", file))
        if cname not in components:
            raise ConfigError(f"{file}:{ref.line}: unknown component {cname!r}")
        steps: list[dict[str, Any]] = components[cname]["processes"]
        inner = [c for c in block.children if c.tag in ("process_block", "barrier_block")]
        for sub in _ordered(inner, file):
            bname = _name(sub.attrs.get("name", sub.tag))
            if sub.tag == "barrier_block":
                for barrier in sub.all("barrier") or [sub]:
                    name = _name(barrier.attrs.get("name") or bname)
                    index = len(steps)
                    steps.append({"name": bname, "barrier": name})
                    lines[("components", cname, "processes", index)] = barrier.line
                    entry = barriers.setdefault(name, {})
                    lines[("barriers", name)] = barrier.line
                    limit = barrier.attrs.get("max") or sub.attrs.get("max")
                    if limit:
                        entry["threshold"] = int(limit) if limit.isdigit() else limit
                continue
            processes = sub.all("process")
            for i, process in enumerate(processes):
                name = bname if len(processes) == 1 else f"{bname}-{i + 1}"
                index = len(steps)
                steps.append({"name": name, "run": _command(process)})
                lines[("components", cname, "processes", index)] = process.line
    doc["components"] = components
    if barriers:
        doc["barriers"] = barriers
    return Located(doc, file, lines)


def load_plush(path: str | Path) -> Located:
    """Read a Plush XML file into a located spec document."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the Plush description: {exc}") from None
    return import_plush(text, str(path))

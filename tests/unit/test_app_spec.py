"""Application specs: schema errors and semantic errors name file:line; examples load."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from shoal.app import appspec as spec_mod
from shoal.app.plush import import_plush
from shoal.app.validate import app_schema, validate
from shoal.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

GOOD = """\
app: demo
software:
  tool:
    source: .
components:
  a:
    select: "@lab"
    count: 2
    require: ["mem_available_mb >= 64"]
    on_failure: replace
    software: [tool]
    processes:
      - name: prep
        run: echo ${node} ${index} ${addrs.b} ${sw.tool}
      - name: meet
        barrier: sync
  b:
    select: "@lab"
    processes:
      - name: wait
        barrier: sync
      - name: go
        service: sleep 100
        after: [a.prep]
barriers:
  sync: {threshold: 50%, timeout: 10}
"""


def write(tmp_path: Path, text: str, name: str = "app.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error_of(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        spec_mod.load(path)
    message = str(info.value)
    assert "\n" not in message
    return message.replace(str(path), "FILE")


def test_good_spec_loads_typed(tmp_path: Path) -> None:
    spec = spec_mod.load(write(tmp_path, GOOD))
    a, b = spec.components["a"], spec.components["b"]
    assert (a.count, b.count, a.on_failure, b.on_failure) == (2, 1, "replace", "restart")
    assert [s.kind for s in a.steps] == ["run", "barrier"]
    assert a.require[0].check(100) and not a.require[0].check(10)
    assert spec.barriers["sync"].threshold == 0.5
    assert spec.barriers["sync"].needed(5) == 3
    assert spec.barrier_components("sync") == ["a", "b"]
    assert spec.software["tool"].source == tmp_path.resolve()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (GOOD.replace("count: 2", "count: 0"), "FILE:8: components.a.count: expected"),
        (GOOD.replace("on_failure: replace", "on_failure: pray"), "FILE:10:"),
        (GOOD.replace('    select: "@lab"\n    count: 2', "    count: 2"), "FILE:6:"),
        (GOOD.replace("        run: echo", "        colour: blue\n        run: echo"), "FILE:14:"),
        (GOOD.replace("service: sleep 100", "service: sleep 100\n        run: x"), "FILE:22:"),
        (GOOD.replace("threshold: 50%", "threshold: lots"), "FILE:26:"),
        ("app: 1x\ncomponents: {}\n", "FILE:1: app:"),
    ],
)
def test_schema_errors_name_file_and_line(tmp_path: Path, body: str, expected: str) -> None:
    assert error_of(tmp_path, body).startswith(expected)


def test_messages_say_what_was_expected(tmp_path: Path) -> None:
    msg = error_of(tmp_path, GOOD.replace("on_failure: replace", "on_failure: pray"))
    assert "expected one of restart, replace, ignore, abort" in msg
    msg = error_of(
        tmp_path, GOOD.replace("        run: echo", "        colour: blue\n        run: echo")
    )
    assert "unknown key 'colour'" in msg
    msg = error_of(
        tmp_path, GOOD.replace("service: sleep 100", "service: sleep 100\n        run: x")
    )
    assert "only one of run, service, barrier" in msg
    msg = error_of(tmp_path, GOOD.replace("threshold: 50%", "threshold: lots"))
    assert "expected a count (integer >= 1) or a fraction (0 < x <= 1) or a percentage" in msg
    msg = error_of(tmp_path, GOOD.replace("count: 2", "count: 0"))
    assert "expected an integer >= 1 or 'all', got the number 0" in msg


def test_unknown_component_in_after(tmp_path: Path) -> None:
    msg = error_of(tmp_path, GOOD.replace("after: [a.prep]", "after: [c.prep]"))
    assert msg.startswith("FILE:24: after: unknown component 'c'")


def test_unknown_step_in_after(tmp_path: Path) -> None:
    msg = error_of(tmp_path, GOOD.replace("after: [a.prep]", "after: [a.nope]"))
    assert msg.startswith("FILE:24: after: component a has no step 'nope'")


def test_cyclic_predecessors(tmp_path: Path) -> None:
    body = GOOD.replace(
        "        run: echo ${node}", "        after: [b.go]\n        run: echo ${node}"
    )
    msg = error_of(tmp_path, body)
    assert msg.startswith("FILE:") and "cyclic predecessors:" in msg
    assert "a.prep" in msg and "b.go" in msg


def test_a_barrier_twice_in_one_block_is_a_cycle(tmp_path: Path) -> None:
    body = GOOD.replace(
        "      - name: meet\n        barrier: sync",
        "      - name: meet\n        barrier: sync\n      - name: x\n        run: 'true'\n"
        "      - name: again\n        barrier: sync",
    )
    assert "cyclic predecessors" in error_of(tmp_path, body)


def test_unknown_barrier(tmp_path: Path) -> None:
    msg = error_of(
        tmp_path,
        GOOD.replace(
            "        barrier: sync\n      - name: go", "        barrier: other\n      - name: go"
        ),
    )
    assert msg.startswith("FILE:21: unknown barrier 'other'")


def test_declared_barrier_without_steps(tmp_path: Path) -> None:
    body = GOOD + "  unused: {}\n"
    assert error_of(tmp_path, body).startswith("FILE:27: barrier 'unused' is declared")


def test_unknown_variables(tmp_path: Path) -> None:
    assert "unknown component 'zz'" in error_of(tmp_path, GOOD.replace("${addrs.b}", "${addrs.zz}"))
    assert "unknown variable ${colour}" in error_of(tmp_path, GOOD.replace("${node}", "${colour}"))
    assert "unknown software 'x'" in error_of(tmp_path, GOOD.replace("${sw.tool}", "${sw.x}"))


def test_unknown_software_and_bad_requirement(tmp_path: Path) -> None:
    assert error_of(tmp_path, GOOD.replace("software: [tool]", "software: [nope]")).startswith(
        "FILE:11: unknown software 'nope'"
    )
    assert error_of(
        tmp_path, GOOD.replace('["mem_available_mb >= 64"]', '["lots of ram"]')
    ).startswith("FILE:9:")


def test_yaml_syntax_and_duplicate_keys(tmp_path: Path) -> None:
    assert error_of(tmp_path, "app: x\ncomponents: [\n").startswith("FILE:3: not valid YAML")
    assert error_of(tmp_path, "app: x\napp: y\n").startswith("FILE:2: duplicate key 'app'")


def test_threshold_forms() -> None:
    b = spec_mod.Barrier("b", 3)
    assert (b.needed(10), b.needed(2)) == (3, 2)
    assert spec_mod.Barrier("b", None).needed(7) == 7
    assert spec_mod.Barrier("b", 0.25).needed(8) == 2
    assert spec_mod.Barrier("b", 0.3).needed(10) == 3


def test_requirements_compare_numbers_and_text() -> None:
    r = spec_mod.Requirement.parse("disk_free_gb>=1.5")
    assert r.check(2) and r.check("1.5") and not r.check(1) and not r.check(None)
    t = spec_mod.Requirement.parse("os_id = debian")
    assert t.op == "==" and t.check("Debian") and not t.check("ubuntu")


def test_examples_are_valid() -> None:
    for path in [
        EXAMPLES / "bytetorrent" / "bytetorrent.yaml",
        EXAMPLES / "webservice" / "webservice.yaml",
        EXAMPLES / "plush" / "simple.xml",
    ]:
        spec = spec_mod.load(path)
        assert spec.components


def test_plush_import_keeps_order_and_lines() -> None:
    located = import_plush((EXAMPLES / "plush" / "simple.xml").read_text(), "simple.xml")
    comp = located.value["components"]["Cluster1"]
    assert comp["count"] == 2 and comp["select"] == "@lab"
    assert [s["name"] for s in comp["processes"]] == ["p1", "p2", "b1", "p3"]
    assert comp["processes"][1]["run"] == "cat sw/SimpleSoftware/software.txt"
    assert located.line(("components", "Cluster1", "processes", 0)) > 30


def test_plush_errors_name_xml_lines() -> None:
    bad = '<project name="p">\n<component name="c">\n</component>\n<experiment>\n'
    bad += '<component_block name="x"><component name="nope"/></component_block>\n'
    bad += "</experiment></project>\n"
    with pytest.raises(ConfigError, match=r"^p.xml:5: unknown component 'nope'"):
        import_plush(bad, "p.xml")
    with pytest.raises(ConfigError, match=r"^p.xml:2: not valid XML"):
        import_plush("<project>\n<<\n", "p.xml")


def test_schema_ships_and_validates_itself_loosely() -> None:
    schema = app_schema()
    assert schema["$schema"].startswith("https://json-schema.org/")
    json.dumps(schema)
    assert validate({"app": "x", "components": {}})[0].message == "expected at least 1 entry"


def test_missing_software_tree_is_named_with_its_line(tmp_path: Path) -> None:
    msg = error_of(tmp_path, GOOD.replace("source: .", "source: ./nowhere"))
    assert msg.startswith("FILE:4: software tool:") and "is not a local directory" in msg

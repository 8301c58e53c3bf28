"""Hostile input: documents and expressions built to exhaust the controller.

Each class of attack (issue 11 items 11, 12, 13 and 16) is refused quickly,
with a one-line message that says where: YAML alias bombs and cycles, deep
nesting, XML entities, selections and inventories that stand for millions of
names, and NaN or infinite numbers where a positive number is needed. The
memory bombs run in a child limited to 1 GiB of address space and 30 s (see
:func:`run_bounded`), so a regression fails the test instead of hurting the
machine.
"""

from __future__ import annotations

import math
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shoal.errors import (
    ConfigError,
    InventoryError,
    PlanCycleError,
    SelectionError,
    SelectionSyntaxError,
    UsageError,
)

MEMORY = 1 << 30
TIMEOUT = 30.0

#: The child prints the error a call raises as ``TypeName: message``, else ``ok``.
REPORT = """
import sys
def report(call, *args):
    try:
        call(*args)
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}")
    else:
        print("ok")
"""


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def run_bounded(code: str, *args: str) -> tuple[str, float]:
    """``REPORT + code`` in a child (``sys.argv[1:]`` = ``args``) under the memory limit
    and the timeout: its output (``TIMEOUT`` when killed) and how long it took."""
    start = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-c", REPORT + code, *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            preexec_fn=_limit,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "TIMEOUT", time.monotonic() - start
    return (done.stdout + done.stderr).strip(), time.monotonic() - start


# --- item 11: YAML ---------------------------------------------------------------


def _alias_bomb(levels: int = 8) -> str:
    """~500 bytes that stand for 9**levels values once the aliases are expanded."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


SPEC_TAIL = "components: {c: {select: all, processes: [{name: s, run: 'true'}]}}\n"


def test_app_spec_alias_bomb_is_refused_at_the_alias(tmp_path: Path) -> None:
    spec = tmp_path / "bomb.yaml"
    spec.write_text("app: t\n" + _alias_bomb() + SPEC_TAIL)
    out, took = run_bounded(
        "from shoal.app.appspec import load\nreport(load, sys.argv[1])", str(spec)
    )
    assert out.startswith(f"ConfigError: {spec}:8: alias *a5 makes the document larger"), out
    assert "1,000,000 values" in out and took < 10


def test_app_spec_alias_cycle_and_deep_nesting_are_refused(tmp_path: Path) -> None:
    from shoal.app.appspec import load

    cycle = tmp_path / "cycle.yaml"
    cycle.write_text("app: t\nx: &a\n  - y\n  - *a\n")
    with pytest.raises(ConfigError, match=r"cycle\.yaml:4: alias \*a is inside its own anchor"):
        load(cycle)
    deep = tmp_path / "deep.yaml"
    deep.write_text("app: t\nx: " + "[" * 400 + "]" * 400 + "\n")
    with pytest.raises(ConfigError, match=r"deep\.yaml:2: .* nested deeper than 64 levels"):
        load(deep)


def test_app_spec_of_a_thousand_steps_loads(tmp_path: Path) -> None:
    from shoal.app.appspec import load

    steps = "".join(f"      - name: s{i}\n        run: 'true'\n" for i in range(1000))
    spec = tmp_path / "long.yaml"
    spec.write_text(f"app: t\ncomponents:\n  c:\n    select: all\n    processes:\n{steps}")
    assert len(load(spec).components["c"].steps) == 1000


def test_app_spec_cycle_is_still_reported() -> None:
    from shoal.app.appspec import build
    from shoal.app.located import loads

    text = (
        "app: t\ncomponents:\n"
        "  a: {select: all, processes: [{name: s, run: x, after: [b.s]}]}\n"
        "  b: {select: all, processes: [{name: s, run: x, after: [a.s]}]}\n"
    )
    with pytest.raises(ConfigError, match=r"cyclic predecessors: (a\.s -> b\.s -> a\.s)"):
        build(loads(text, "c.yaml"), Path("."))


def test_ansible_yaml_alias_bomb_and_cycle_are_refused(tmp_path: Path) -> None:
    inv = tmp_path / "inv.yaml"
    inv.write_text(
        "all:\n  vars:\n" + "".join(f"    {line}\n" for line in _alias_bomb().split("\n"))
    )
    out, took = run_bounded(
        "from shoal.nodes.importers import read_inventory\nreport(read_inventory, sys.argv[1])",
        str(inv),
    )
    assert out.startswith(f"InventoryError: {inv}:9: alias *a5 makes the document larger"), out
    assert took < 10
    from shoal.nodes.importers import parse_ansible_yaml

    with pytest.raises(InventoryError, match=r"i\.yaml:3: alias \*v is inside its own anchor"):
        parse_ansible_yaml("all:\n  vars: &v\n    x: *v\n", "i.yaml")


def test_ansible_group_chains_are_iterative_and_bounded() -> None:
    from shoal.nodes.importers import MAX_GROUP_DEPTH, parse_ansible_ini

    def chain(n: int) -> str:
        sections = [f"[g{i}:children]\ng{i + 1}\n" for i in range(n)]
        return "".join(sections) + f"[g{n}]\nh1\n"

    nodes = parse_ansible_ini(chain(MAX_GROUP_DEPTH - 1), "ok.ini").nodes
    assert len(nodes[0].groups) == MAX_GROUP_DEPTH
    with pytest.raises(InventoryError, match=r"deep\.ini: group 'g\d+' is nested deeper than"):
        parse_ansible_ini(chain(2000), "deep.ini")
    with pytest.raises(InventoryError, match="is its own ancestor"):
        parse_ansible_ini("[a:children]\nb\n[b:children]\na\n[a]\nh\n", "loop.ini")


def test_ansible_host_ranges_are_bounded_before_expanding() -> None:
    from shoal.nodes.importers import expand_ansible, parse_ansible_ini

    assert expand_ansible("w[01:03]-[a:b]") == [
        "w01-a", "w01-b", "w02-a", "w02-b", "w03-a", "w03-b",
    ]  # fmt: skip
    with pytest.raises(InventoryError, match="bad host range step 0"):
        expand_ansible("n[1:9:0]")
    start = time.monotonic()
    with pytest.raises(InventoryError, match="stands for more than 1,000,000 hosts"):
        parse_ansible_ini("[g]\nn[1:100000000]\n")
    with pytest.raises(InventoryError, match="stands for more than 1,000,000 hosts"):
        expand_ansible("a[1:2000]b[1:2000]")
    assert time.monotonic() - start < 1


def test_plain_inventory_is_bounded(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("n[1-600000]\nm[1-600000]\n")
    out, took = run_bounded(
        "from shoal.nodes.importers import read_inventory\nreport(read_inventory, sys.argv[1])",
        str(hosts),
    )
    assert out == f"InventoryError: {hosts}:2: the list names more than 1,000,000 nodes", out
    hosts.write_text("n[1-3000000]\n")
    out, took = run_bounded(
        "from shoal.nodes.importers import read_inventory\nreport(read_inventory, sys.argv[1])",
        str(hosts),
    )
    assert out.endswith("'n[1-3000000]' stands for 3,000,000 names (the limit is 1,000,000)")
    assert took < 10


# --- item 12: Plush XML -----------------------------------------------------------


def test_plush_entities_are_refused_quickly(tmp_path: Path) -> None:
    """10**6 one-character chunks from nested entities: quadratic before, refused now."""
    decls = ['<!ENTITY e0 "x">'] + [f'<!ENTITY e{i} "{f"&e{i - 1};" * 10}">' for i in range(1, 7)]
    xml = tmp_path / "app.xml"
    xml.write_text(
        "<?xml version='1.0'?>\n<!DOCTYPE project [\n" + "\n".join(decls) + "\n]>\n"
        '<project name="p"><component name="c"><num_hosts>&e6;</num_hosts></component>'
        "</project>\n"
    )
    out, took = run_bounded(
        "from shoal.app.plush import load_plush\nreport(load_plush, sys.argv[1])", str(xml)
    )
    assert out == f"ConfigError: {xml}:3: entity declarations are not accepted ('e0')", out
    assert took < 10


def test_plush_text_in_many_chunks_is_linear() -> None:
    from shoal.app.plush import parse_xml

    lines = "x\n" * 300_000
    start = time.monotonic()
    root = parse_xml(f"<project><path>{lines}</path></project>", "big.xml")
    assert root.children[0].text == lines
    assert time.monotonic() - start < 5


def test_plush_nesting_is_bounded_and_traversal_iterative() -> None:
    from shoal.app.plush import MAX_DEPTH, import_plush, parse_xml

    with pytest.raises(ConfigError, match=r"deep\.xml:1: <x> is nested deeper than 64 elements"):
        import_plush("<project>" + "<x>" * 100_000 + "</x>" * 100_000 + "</project>", "deep.xml")
    root = parse_xml("<a>" * MAX_DEPTH + "</a>" * MAX_DEPTH, "ok.xml")
    assert len(root.find("a")) == MAX_DEPTH - 1


def test_plush_long_predecessor_chain_imports() -> None:
    from shoal.app.plush import import_plush

    n = 3000
    blocks = "".join(
        f'<process_block name="b{i}">'
        + (f'<predecessor name="b{i + 1}"/>' if i + 1 < n else "")
        + f'<process name="p"><path>echo {i}</path></process></process_block>'
        for i in range(n)
    )
    doc = import_plush(
        '<project name="p"><component name="c"/><experiment><execution>'
        f'<component_block name="cb"><component name="c"/>{blocks}</component_block>'
        "</execution></experiment></project>",
        "chain.xml",
    )
    steps = doc.value["components"]["c"]["processes"]
    assert [s["run"] for s in steps[:2]] == [f"echo {n - 1}", f"echo {n - 2}"]
    with pytest.raises(ConfigError, match="cyclic predecessors at block 'a'"):
        import_plush(
            '<project name="p"><component name="c"/><component_block><component name="c"/>'
            '<process_block name="a"><predecessor name="b"/></process_block>'
            '<process_block name="b"><predecessor name="a"/></process_block>'
            "</component_block></project>",
            "loop.xml",
        )


# --- item 13: selections ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "size"),
    [("n[1-3]" * 14, "4,782,969"), ("a[1-2000]b[1-2000]", "4,000,000")],
)
def test_selection_that_names_millions_is_refused_before_expanding(expr: str, size: str) -> None:
    code = (
        "from shoal.nodes import grammar\n"
        "from shoal.errors import SelectionSyntaxError\n"
        "try:\n"
        "    grammar.parse('x,' + sys.argv[1])\n"
        "except SelectionSyntaxError as exc:\n"
        "    print(exc.column, exc)\n"
        "else:\n"
        "    print('ok')\n"
    )
    out, took = run_bounded(code, expr)
    assert out.startswith("2 selection syntax error at column 3: expected a node set of"), out
    assert f"stands for {size}; a selection may name at most 1,000,000" in out
    assert took < 10


def test_selection_name_budget_covers_the_whole_expression() -> None:
    from shoal.errors import NodeSetParseError
    from shoal.nodes import grammar
    from shoal.nodes.nodeset import NodeSet

    assert len(grammar.parse("n[1-500000]").names) == 500_000  # type: ignore[union-attr]
    with pytest.raises(SelectionSyntaxError, match=r"600,000; .* at most 1,000,000, 400,000 left"):
        grammar.parse("n[1-600000],m[1-600000]")
    with pytest.raises(NodeSetParseError, match="stands for more than 1,000,000 names"):
        NodeSet("n[1-600000],m[1-600000]")


def test_selection_nesting_is_bounded_with_a_caret() -> None:
    from shoal.nodes import grammar

    assert grammar.parse("(" * 64 + "n1" + ")" * 64)
    with pytest.raises(SelectionSyntaxError) as caught:
        grammar.parse("(" * 330 + "n1" + ")" * 330)
    assert caught.value.column == 64
    assert "expected at most 64 nested parentheses or calls" in str(caught.value)
    assert caught.value.pointer().endswith(" " * 66 + "^")
    with pytest.raises(SelectionSyntaxError, match="at most 64 nested"):
        grammar.parse("limit(" * 100 + "all" + ", 1)" * 100)


def test_long_operator_and_filter_chains_evaluate() -> None:
    from shoal.nodes.model import Node
    from shoal.nodes.select import MemoryUniverse, evaluate

    names = [f"n{i}" for i in range(1, 5001)]
    u = MemoryUniverse([Node(name=n, attrs={"k": 1}) for n in names])
    assert len(evaluate(",".join(names), u)) == 5000
    assert len(evaluate("all" + "[k=1]" * 3000, u)) == 5000
    assert evaluate("n[1-10] - n1 & n[2-3] ^ n4 | limit(n[7-9], 1)", u) == {"n2", "n3", "n4", "n7"}


def test_plan_chains_are_bounded() -> None:
    from shoal.nodes.grammar import MAX_PLAN_DEPTH
    from shoal.nodes.model import Node
    from shoal.nodes.select import MemoryUniverse, evaluate

    def chain(n: int) -> dict[str, str]:
        return {f"p{i}": f"%p{i + 1}" if i + 1 < n else "all" for i in range(n)}

    u = MemoryUniverse([Node(name="n1")], plans=chain(MAX_PLAN_DEPTH))
    assert evaluate("%p0", u) == {"n1"}
    for n in (MAX_PLAN_DEPTH + 1, 3000):
        u = MemoryUniverse([Node(name="n1")], plans=chain(n))
        with pytest.raises(SelectionError, match="plans nested deeper than 32: %p0 -> %p1"):
            evaluate("%p0", u)
    u = MemoryUniverse([Node(name="n1")], plans={"a": "%b", "b": "%a"})
    with pytest.raises(PlanCycleError, match="a -> b -> a"):
        evaluate("%a", u)


def test_stored_plan_chains_are_bounded(tmp_path: Path) -> None:
    from shoal.nodes.plans import find_cycle, set_plan
    from shoal.state import State

    plans = {f"p{i}": f"%p{i + 1}" for i in range(3000)}
    with pytest.raises(UsageError, match="plans nested deeper than 32"):
        find_cycle("p0", plans.get)
    assert find_cycle("a", {"a": "%b | %c", "b": "%c", "c": "%a"}.get) == ["a", "b", "c", "a"]
    state = State(tmp_path / "state.db")
    for i in range(31, -1, -1):
        set_plan(f"q{i}", f"%q{i + 1}" if i < 31 else "all", state=state)
    with pytest.raises(UsageError, match="plan %top: plans nested deeper than 32"):
        set_plan("top", "all - %q0", state=state)


def test_lab_numbers_of_thousands_of_digits_are_usage_errors() -> None:
    from shoal.lab.labspec import node_index, parse_delay, parse_rate

    with pytest.raises(UsageError, match="bad node name"):
        node_index("n" + "9" * 5000)
    with pytest.raises(UsageError, match="bad rate"):
        parse_rate("9" * 400 + "mbit")
    with pytest.raises(UsageError, match="bad delay"):
        parse_delay("9" * 400 + "s")


# --- item 16: NaN and infinity -------------------------------------------------------

NOT_FINITE = [".nan", ".inf", "-.inf", ".NaN"]


@pytest.mark.parametrize("value", NOT_FINITE)
@pytest.mark.parametrize(
    ("where", "template"),
    [
        ("health_interval", "processes: [{name: s, service: x, health: y, health_interval: V}]"),
        ("timeout", "processes: [{name: s, run: x, timeout: V}]"),
    ],
)
def test_app_spec_refuses_non_finite_numbers(value: str, where: str, template: str) -> None:
    from shoal.app.appspec import build
    from shoal.app.located import loads

    text = "app: t\ncomponents:\n  c:\n    select: all\n    " + template.replace("V", value)
    with pytest.raises(ConfigError, match=rf"s\.yaml:5: .*{where}: expected a number, got "):
        build(loads(text + "\n", "s.yaml"), Path("."))


def test_app_spec_barrier_numbers_must_be_finite() -> None:
    from shoal.app.appspec import build
    from shoal.app.located import loads

    head = "app: t\ncomponents:\n  c: {select: all, processes: [{name: b, barrier: go}]}\n"
    for entry in ("{timeout: .nan}", "{threshold: .nan}", "{threshold: .inf}"):
        with pytest.raises(ConfigError, match=r"b\.yaml:5: barriers\.go\.(timeout|threshold)"):
            build(loads(head + f"barriers:\n  go: {entry}\n", "b.yaml"), Path("."))
    ok = build(loads(head + "barriers:\n  go: {threshold: 0.5, timeout: 2.5}\n"), Path("."))
    assert ok.barriers["go"].timeout == 2.5


def test_validator_numbers_are_finite() -> None:
    from shoal.app.validate import validate

    schema = {"type": "number", "exclusiveMinimum": 0}
    assert validate(1.5, schema) == []
    for bad in (math.nan, math.inf, -math.inf):
        (problem,) = validate(bad, schema)
        assert "not a finite number" in problem.message
    assert validate(math.inf, {"type": "integer"})


@pytest.mark.parametrize(
    "key",
    ["backoff_base", "backoff_cap", "stable_after", "stop_grace", "health_interval"],
)
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_agent_program_spec_refuses_non_finite(key: str, value: float) -> None:
    from shoal.agent.progspec import ProgramSpec

    with pytest.raises(ValueError, match=f"program x: {key} must be a finite number >= 0"):
        ProgramSpec.from_dict({"name": "x", "command": ["true"], key: value})
    assert ProgramSpec.from_dict({"name": "x", "command": ["true"], key: 3}).to_dict()[key] == 3.0


@pytest.mark.parametrize(
    ("field", "flag"),
    [
        ("timeout", "--timeout"),
        ("connect_timeout", "--connect-timeout"),
        ("delay", "--delay"),
        ("keepalive", "keepalive"),
        ("retry_backoff", "retry backoff"),
    ],
)
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_fanout_options_refuse_non_finite(field: str, flag: str, value: float) -> None:
    from shoal.fanout.options import RunOptions

    with pytest.raises(UsageError, match=f"^{flag} must be"):
        RunOptions(**{field: value}).validate()  # type: ignore[arg-type]
    RunOptions(**{field: 1.0}).validate()  # type: ignore[arg-type]


def test_number_and_duration_parsers_refuse_non_finite() -> None:
    from shoal.cli.agentcmds import parse_duration
    from shoal.cli.pushcmds import parse_rate
    from shoal.numeric import is_finite, number

    assert number("2.5") == 2.5 and is_finite(3) and not is_finite(True)
    for text in ("nan", "inf", "-inf", "1e999", "NaN"):
        with pytest.raises(ValueError, match="not a finite number"):
            number(text)
        assert not is_finite(float(text))
    assert parse_duration("5m") == 300.0
    for text in ("nan", "infs", "nanm", "1e308h"):
        with pytest.raises(UsageError):
            parse_duration(text)
    assert parse_rate("5MB") == 5e6
    with pytest.raises(UsageError, match="bad rate"):
        parse_rate("9" * 300 + "gb")


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--timeout", "nan", "true"],
        ["run", "--connect-timeout", "inf", "true"],
        ["cp", "--delay", "nan", "a", "@:b"],
        ["proc", "start", "x", "--health-interval", "nan", "--", "true"],
        ["app", "up", "a.yaml", "--interval", "nan"],
        ["facts", "refresh", "--timeout", "nan"],
    ],
)
def test_cli_float_options_refuse_nan(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from shoal.cli.main import main

    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "invalid number value" in capsys.readouterr().err


def test_shoal_run_timeout_nan_is_a_usage_error_that_touches_no_node(tmp_path: Path) -> None:
    """The real command line: exit 2 before any connection to the (listening) node."""
    env = {k: v for k, v in os.environ.items() if k != "MQ_NODES"}
    env["SHOAL_HOME"] = str(tmp_path / "home")
    with socket.socket() as node:
        node.bind(("127.0.0.1", 0))
        node.listen(8)
        hosts = tmp_path / "hosts.txt"
        hosts.write_text(f"127.0.0.1:{node.getsockname()[1]} name=n1\n")
        shoal = [sys.executable, "-m", "shoal.cli.main"]
        imported = subprocess.run(
            [*shoal, "nodes", "import", str(hosts)], env=env, capture_output=True, timeout=30
        )
        assert imported.returncode == 0, imported.stderr
        done = subprocess.run(
            [*shoal, "run", "--timeout", "nan", "--connect-timeout", "2", "true"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        node.setblocking(False)
        with pytest.raises(BlockingIOError):
            node.accept()[0].close()  # nothing connected
    assert done.returncode == 2, done.stderr
    assert "argument -t/--timeout: invalid number value: 'nan'" in done.stderr


# -- JSON nested past the recursion limit, as a hostile node or peer could send ------


DEEP = b"[" * 100_000


def test_an_agent_message_nested_past_the_recursion_limit_is_a_protocol_error() -> None:
    from shoal.agent.protocol import ProtocolError, decode

    with pytest.raises(ProtocolError, match="not JSON"):
        decode(DEEP)


def test_a_manifest_nested_past_the_recursion_limit_is_a_manifest_error() -> None:
    from shoal.agent.manifest import ManifestError, parse

    with pytest.raises(ManifestError, match="not JSON"):
        parse(DEEP)


def test_a_chunk_answer_header_nested_past_the_recursion_limit_is_a_bad_header() -> None:
    from shoal.agent.chunkfetch import FetchResult, _sizes

    with pytest.raises(ConnectionError, match="bad header"):
        _sizes(DEEP, [("0" * 64, 0)], FetchResult())

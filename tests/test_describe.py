"""`python -m infra describe`: tables and a Mermaid graph that follow the plan, for any topology."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.errors import ConfigError
from infra.offline.describe import (
    databases_table,
    describe,
    flowchart,
    mermaid_block,
    queues_table,
    services_table,
    subsystems_table,
)
from infra.stack_config import PROJECT_ROOT, plan_for_stack, stack_names
from tests.cli import run_cli
from tests.fixture_config import IMAGE, plan_of


def rows(table: str) -> list[list[str]]:
    lines = table.splitlines()
    assert re.fullmatch(r"(\|---)+\|", lines[1]), "a Markdown table"
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


SHOP = {
    "shop": {
        "postgres": {"instances": 2, "storage": {"size": "7Gi", "storageClass": "fast"}},
        "queue": {"replicas": 3, "queues": {"orders": {}, "unused": {}}},
        "services": {
            "front": {
                "image": IMAGE,
                "replicas": {"min": 2, "max": 9},
                "expose": {"path": "/shop"},
                "calls": ["stock", "audit/log"],
                "publishes": ["orders"],
            },
            "stock": {"image": IMAGE, "database": True, "consumes": ["orders"]},
        },
    },
    "audit": {"services": {"log": {"image": IMAGE, "replicas": {"min": 1, "max": 1}, "publishes": ["shop/orders"]}}},
}


def test_services_show_replica_bounds_exposure_and_calls():
    table = {r[0]: r[1:] for r in rows(services_table(plan_of(SHOP)))}
    assert table["shop/front"] == ["2", "9", "`/shop`", "shop/stock, audit/log"]
    assert table["audit/log"] == ["1", "1", "-", "-"]
    assert set(table) == {"shop/front", "shop/stock", "audit/log"}


def test_queues_show_producers_and_consumers_across_subsystems():
    table = {r[0]: r[1:] for r in rows(queues_table(plan_of(SHOP)))}
    assert table["shop/orders"] == ["shop-mq (3 nodes)", "shop/front, audit/log", "shop/stock"]
    assert table["shop/unused"] == ["shop-mq (3 nodes)", "-", "-"], "an idle queue is listed, not hidden"


def test_databases_show_instances_storage_and_backups():
    assert rows(databases_table(plan_of(SHOP))) == [["shop/shop-db", "2", "7Gi (fast)", "no"]]
    backed_up = plan_of(
        SHOP,
        backup={
            "objectStore": {"destinationPath": "s3://shop-backups/wal"},
            "schedule": "0 30 1 * * *",
            "retention": "9d",
        },
    )
    assert rows(databases_table(backed_up)) == [["shop/shop-db", "2", "7Gi (fast)", "yes: `0 30 1 * * *`, kept 9d"]]


def test_subsystems_table_and_sections_follow_what_exists():
    plan = plan_of(SHOP)
    assert rows(subsystems_table(plan)) == [
        ["shop", "front, stock", "shop-db", "shop-mq (2 queues)", "no"],
        ["audit", "log", "-", "-", "no"],
    ]
    text = describe("qa", plan)
    assert text.startswith("## Stack `qa` at a glance")
    for heading in ("### Subsystems", "### Services", "### Queues", "### Databases", "```mermaid\nflowchart"):
        assert heading in text
    bare = describe("qa", plan_of({"solo": {"services": {"one": {"image": IMAGE}}}}))
    assert "### Queues" not in bare and "### Databases" not in bare


# --- The Mermaid graph, read back -------------------------------------------------------------------------------

NODE = re.compile(r'^\s+(\w+)(\["(.+)"\]|\[\("(.+)"\)\])$')
EDGE = re.compile(r"^\s+(\w+) (-->|-\.->)\|(calls|publishes|consumed by)\| (\w+)$")
SUBGRAPH = re.compile(r'^\s+subgraph (\w+)\["(.+)"\]$')


def read_back(chart: str):
    """The graph a Mermaid reader sees: nodes (kind, subsystem, name) and labelled edges between them."""
    lines = chart.splitlines()
    assert lines[0] == "flowchart LR"
    nodes, edges, current = {}, set(), None
    for line in lines[1:]:
        if m := SUBGRAPH.match(line):
            current = m.group(2)
        elif line.strip() == "end":
            current = None
        elif m := NODE.match(line):
            assert current is not None, f"node outside a subsystem: {line}"
            assert m.group(1) not in nodes, f"duplicate id {m.group(1)}"
            kind = "service" if m.group(3) else "queue"
            nodes[m.group(1)] = (kind, current, m.group(3) or m.group(4))
        elif m := EDGE.match(line):
            edges.add((nodes[m.group(1)], m.group(3), nodes[m.group(4)]))
        else:
            raise AssertionError(f"unexpected line: {line!r}")
    return set(nodes.values()), edges


def expected_graph(plan):
    nodes, edges = set(), set()
    for sub in plan.subsystems.values():
        nodes |= {("service", sub.name, s) for s in sub.services}
        nodes |= {("queue", sub.name, q) for q in (sub.queue.queues if sub.queue else {})}
    for svc in plan.services():
        me = ("service", svc.subsystem, svc.name)
        edges |= {(me, "calls", ("service", c.subsystem, c.service)) for c in svc.calls}
        edges |= {(me, "publishes", ("queue", q.subsystem, q.queue)) for q in svc.publishes}
        edges |= {(("queue", q.subsystem, q.queue), "consumed by", me) for q in svc.consumes}
    return nodes, edges


def test_the_graph_has_every_service_queue_and_edge_in_its_subsystem():
    plan = plan_of(SHOP)
    assert read_back(flowchart(plan)) == expected_graph(plan)
    _, edges = read_back(flowchart(plan))
    assert (("service", "audit", "log"), "publishes", ("queue", "shop", "orders")) in edges


def test_names_that_sanitise_alike_still_get_their_own_nodes():
    plan = plan_of({"a": {"services": {"b-c": {"image": IMAGE}, "b--c": {"image": IMAGE, "calls": ["b-c"]}}}})
    nodes, edges = read_back(flowchart(plan))
    assert {n[2] for n in nodes} == {"b-c", "b--c"}
    assert edges == {(("service", "a", "b--c"), "calls", ("service", "a", "b-c"))}


@st.composite
def topologies(draw):
    subs = draw(st.lists(st.sampled_from(["red", "green", "blue-x"]), min_size=1, max_size=3, unique=True))
    names = {s: [f"{s}-s{i}" for i in range(draw(st.integers(1, 3)))] for s in subs}
    owners = draw(st.lists(st.sampled_from(subs), unique=True, max_size=2))
    queues = [(o, f"q{i}") for o in owners for i in range(2)]
    consumed: set = set()
    topology = {}
    for sub in subs:
        entry: dict = {"services": {}}
        if sub in owners:
            entry["queue"] = {"queues": {q: {} for o, q in queues if o == sub}}
        for name in names[sub]:
            others = [f"{s}/{n}" for s in subs for n in names[s] if (s, n) != (sub, name)]
            calls = draw(st.lists(st.sampled_from(others), unique=True, max_size=2)) if others else []
            spec: dict = {"image": IMAGE, "calls": calls}
            if queues:
                spec["publishes"] = [f"{o}/{q}" for o, q in draw(st.lists(st.sampled_from(queues), unique=True))]
                free = [x for x in queues if x not in consumed]
                if free and draw(st.booleans()):
                    pick = draw(st.sampled_from(free))
                    consumed.add(pick)
                    spec["consumes"] = [f"{pick[0]}/{pick[1]}"]
            entry["services"][name] = spec
        topology[sub] = entry
    for owner, queue in queues:  # a published queue without a consumer must say why (not this test's concern)
        if (owner, queue) not in consumed:
            topology[owner]["queue"]["queues"][queue] = {"unconsumed": "no consumer in this generated topology"}
    return topology


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topologies())
def test_for_any_topology_the_graph_reads_back_as_the_plan(topology):
    try:
        plan = plan_of(topology)
    except ConfigError as error:  # a queue cycle between subsystems is refused; not this test's concern
        assert "cycle" in str(error), error
        return
    assert read_back(flowchart(plan)) == expected_graph(plan)
    assert len(rows(services_table(plan))) == len(plan.services())


# --- The CLI and the README -------------------------------------------------------------------------------------


def test_describe_cli_prints_the_stack_and_refuses_an_unknown_one():
    stack = stack_names()[0]
    ok = run_cli("describe", stack)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == describe(stack, plan_for_stack(stack))
    bad = run_cli("describe", "no-such-stack")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_readme_shows_the_current_dev_graph():
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert mermaid_block(plan_for_stack("dev")) in readme, (
        "README's service graph is stale; `make golden` rewrites it (with the golden files)"
    )


def test_the_pull_request_comment_carries_each_stack_description():
    import yaml

    wf = yaml.safe_load((PROJECT_ROOT / ".github" / "workflows" / "preview.yml").read_text())
    script = next(s["run"] for s in wf["jobs"]["offline-diff"]["steps"] if s.get("id") == "diff")
    assert 'python -m infra describe "$stack"' in script
    assert script.index("infra diff") < script.index("infra describe") < script.rindex("} >> preview.md")

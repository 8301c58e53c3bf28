"""Shoal's nodes layer: inventory, node sets, selections, plans, failed set, facts.

Nothing is imported here (the CLI imports ``shoal.nodes.model`` on every start);
import the module you need:

    model       Node, the record every layer passes around
    nodeset     NodeSet (a Python set of names with n[1-32] ranges), fold, expand
    grammar     parse(EXPR) -> AST for the selection grammar (SelectionSyntaxError)
    select      resolve(EXPR | None) -> list[Node]  (what every -s EXPR uses),
                select(EXPR) -> NodeSet, evaluate(EXPR, universe), MemoryUniverse
    inventory   import_nodes(nodes, replace_group=G), remove_group(G),
                remove_nodes(names), load_nodes(state, names)
    importers   read_inventory(path, fmt): plain lists, Ansible INI and YAML
    plans       set_plan / get_plan / list_plans / remove_plan (%name)
    health      mark_failed({name: reason}) / mark_healthy(names) / failures()
    facts       GATHER_COMMAND, parse_facts, load_facts (gathering: shoal.fanout.factgather)
"""

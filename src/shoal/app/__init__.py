"""Applications: a spec of components, process blocks and barriers, and its lifecycle.

Plush's model (describe, acquire, configure, start, monitor, clean up) with
DSMT's "keep N instances on good nodes". Modules:

* :mod:`.appspec` — the typed spec, loaded from YAML (:mod:`.located` keeps
  file:line) or Plush XML (:mod:`.plush`), checked against ``schema.json``
  (:mod:`.validate`) and semantically;
* :mod:`.acquire` — members and spares per component from selections,
  requirements on facts and the failed set;
* :mod:`.policy` — failure policies: a pure ``decide(policy, kind) -> Action``;
* :mod:`.carryover` — what an earlier pass's members become, and their slots;
* :mod:`.runtime` — one pass's options, shared state and report;
* :mod:`.naming` — the application's names on a node and ``${...}`` values;
* :mod:`.configure` — agents, software (:mod:`.software`), install steps;
* :mod:`.blocks` — a member's process block: steps, services, barriers of
  :mod:`.barrier`, predecessors of :mod:`.predecessors`;
* :mod:`.runner` — configure + start of one pass, applying the policies;
* :mod:`.lifecycle` — ``up``/``status``/``logs``/``monitor``/``down``;
* :mod:`.store` — applications, members and barriers in SQLite.

Entry points: :func:`shoal.app.appspec.load`, :func:`shoal.app.lifecycle.up_async`,
``status_async``, ``logs_async``, ``monitor_async``, ``down_async``.
"""

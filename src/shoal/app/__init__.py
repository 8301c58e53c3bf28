"""Applications: a spec of components, process blocks and barriers, and its lifecycle.

Plush's model (describe, acquire, configure, start, monitor, clean up) with
DSMT's "keep N instances on good nodes". Modules:

* :mod:`.spec` — the typed spec, loaded from YAML (:mod:`.located` keeps
  file:line) or Plush XML (:mod:`.plush`), checked against ``schema.json``
  (:mod:`.validate`) and semantically;
* :mod:`.acquire` — members and spares per component from selections,
  requirements on facts and the failed set;
* :mod:`.runtime` — configure (agents, software via :mod:`.software`, install
  steps) and start (process blocks, predecessors, barriers of
  :mod:`.barrier`), failure policies;
* :mod:`.lifecycle` — ``up``/``status``/``logs``/``monitor``/``down``;
* :mod:`.store` — applications, members and barriers in SQLite.

Entry points: :func:`shoal.app.appspec.load`, :func:`shoal.app.lifecycle.up_async`,
``status_async``, ``logs_async``, ``monitor_async``, ``down_async``.
"""

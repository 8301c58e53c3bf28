"""The Shoal node agent: supervisor, event log and control socket on each node.

Everything in this package except ``build.py`` is shipped to nodes as one
zipapp and must run on any ``python3`` >= 3.9 with the standard library only:
no imports from Shoal outside ``shoal.agent``, no ``match``, no 3.10+ APIs
(``ruff.toml`` here lints against py39). Modules: ``protocol`` (versioned
JSON lines), ``spec`` (program specs), ``backoff``, ``rotate`` (log files),
``events``, ``persist`` (atomic files), ``supervisor``, ``server`` (the
agent), ``daemon`` (command line: serve / ctl / version). ``build`` runs on
the controller and makes the zipapp.
"""

"""The controller's link to the node agents (see DESIGN.md).

Below ``content/`` and ``app/``, above ``fanout/``: everything that speaks to
an agent goes through here, so no other layer knows the wire format.

    client      one node: working-area paths, probe/start, AgentClient (the protocol)
    fleet       many nodes: AgentOptions, for_each, install/start/stop/status/call/logs
    eventlog    agent events pulled into the controller's SQLite state

Nothing is imported here; import the module you need.
"""

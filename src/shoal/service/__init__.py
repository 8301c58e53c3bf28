"""``shoal serve``: the standing controller's process, a thin adapter over shoal.control.

daemon      the process: lock, owner-only Unix socket, uvicorn in the service's loop,
            signals, the FastAPI app (protocol header, errors as JSON)
routes      status, events (NDJSON, resumable), stop
unit        the systemd unit ``shoal serve install`` writes
xmlrpc      XML-RPC at /RPC2 over the HTTP API's own handlers (system.listMethods...)
metrics     Prometheus metrics at /metrics, read from the controller at each scrape
"""

"""``shoal serve``: the standing controller's process, a thin adapter over shoal.control.

daemon      the process: lock, owner-only Unix socket, uvicorn in the service's loop,
            signals, the FastAPI app (protocol header, errors as JSON)
routes      status, events (NDJSON, resumable), stop
unit        the systemd unit ``shoal serve install`` writes
"""

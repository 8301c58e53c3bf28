#!/usr/bin/env python3
"""A tiny long-running web service: every node says who it is; /health answers ok.

    python3 server.py --port 8080 --name n1
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import time

STARTED = time.time()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--name", default=os.uname().nodename)
    args = p.parse_args()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path == "/health":
                body = b"ok\n"
            else:
                info = {"node": args.name, "pid": os.getpid(),
                        "uptime": round(time.time() - STARTED, 1)}
                body = (json.dumps(info) + "\n").encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt: str, *a: object) -> None:
            print(f"{self.address_string()} {fmt % a}", flush=True)

    server = http.server.ThreadingHTTPServer(("0.0.0.0", args.port), Handler)
    print(f"{args.name}: serving on port {args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

"""Exit 1 with one line unless the PostgreSQL server of EVENTSVC_TEST_DATABASE_URL accepts a connection.

Standard library only (it runs before `make test` installs anything): a TCP connect, then the
protocol's SSLRequest, which any PostgreSQL answers with one byte, 'S' or 'N'.
"""
import os
import socket
import sys
import time
from urllib.parse import urlsplit

url = os.environ.get("EVENTSVC_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
parts = urlsplit(url)
host, port = parts.hostname or "127.0.0.1", parts.port or 5432
deadline = time.monotonic() + 30
while True:
    try:
        with socket.create_connection((host, port), timeout=3) as sock:
            sock.sendall((8).to_bytes(4, "big") + (80877103).to_bytes(4, "big"))
            if sock.recv(1) in (b"S", b"N"):
                sys.exit(0)
        problem = "it did not answer as PostgreSQL does"
    except OSError as exc:
        problem = str(exc)
    if time.monotonic() > deadline:
        print(f"PostgreSQL is not reachable at {host}:{port} ({problem}); the PostgreSQL tests cannot run",
              file=sys.stderr)
        sys.exit(1)
    time.sleep(1)

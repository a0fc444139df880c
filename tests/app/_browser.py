"""Helpers of the app's browser tests (and of docs/app_screenshots.py): where chromium is, and
serving a Dash app on a free loopback port in a daemon thread."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def serve(app) -> str:
    """Start ``app`` on 127.0.0.1 (free port) and return its URL once it accepts connections."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    threading.Thread(target=lambda: app.run(host="127.0.0.1", port=port, debug=False),
                     daemon=True).start()
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    return f"http://127.0.0.1:{port}/"

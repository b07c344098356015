"""uvicorn in a thread of `dermnode serve`, on settings.http_host:http_port.

The socket is bound in the calling thread, so that a port in use is an error of serve's start, not
a log line of a background thread.
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from dermnode.web.app import create_app
from dermnode.web.context import NodeContext


class WebServer:
    def __init__(self, context: NodeContext) -> None:
        settings = context.settings
        self.address = (settings.http_host, settings.http_port)
        config = uvicorn.Config(create_app(context), log_level="warning", lifespan="off", access_log=False)
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> WebServer:
        """Bind (OSError when the port is taken), then serve in a thread; returns once it answers."""
        family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(self.address)
        except OSError:
            sock.close()
            raise
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, name="dermnode-http",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not self.server.started:
            raise RuntimeError(f"the HTTP server did not start on {self.address[0]}:{self.address[1]}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)

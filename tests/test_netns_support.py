"""tests/netns_support.py: a process in a namespace reaches the host only at the veth address."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from contextlib import closing

import pytest

from netns_support import _ip_run, namespace

PROBE = """
import json, socket, sys
out = {}
for label, host, port in json.loads(sys.argv[1]):
    try:
        socket.create_connection((host, port), timeout=2).close()
        out[label] = "connected"
    except OSError as exc:
        out[label] = type(exc).__name__
print(json.dumps(out))
"""


def _listener(host: str) -> socket.socket:
    server = socket.socket()
    server.bind((host, 0))
    server.listen(4)
    return server


def test_a_namespaced_process_reaches_the_veth_address_and_not_the_hosts_loopback() -> None:
    with namespace("w1") as ns:
        with closing(_listener(ns.host_ip)) as on_veth, closing(_listener("127.0.0.1")) as on_loopback:
            targets = [("veth", ns.host_ip, on_veth.getsockname()[1]),
                       ("loopback", "127.0.0.1", on_loopback.getsockname()[1])]
            result = ns.run([sys.executable, "-c", PROBE, json.dumps(targets)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    reached = json.loads(result.stdout)
    assert reached["veth"] == "connected"
    assert reached["loopback"] == "ConnectionRefusedError"  # the namespace's own, empty loopback


def test_two_namespaces_get_distinct_names_and_subnets_and_the_host_reaches_a_server_inside() -> None:
    with namespace("w1") as first, namespace("w2") as second:
        assert first.name != second.name and first.host_ip != second.host_ip
        server = first.popen([sys.executable, "-m", "http.server", "--bind", first.ip, "18080"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        probe = [("inside", first.ip, 18080)]
        reply = None
        for _ in range(50):  # the server needs a moment to bind
            reply = json.loads(subprocess.run([sys.executable, "-c", PROBE, json.dumps(probe)], capture_output=True,
                                              text=True, timeout=10).stdout)
            if reply["inside"] == "connected":
                break
        assert reply == {"inside": "connected"}
        from_second = second.run([sys.executable, "-c", PROBE, json.dumps(probe)], capture_output=True, text=True)
        assert json.loads(from_second.stdout)["inside"] != "connected"  # namespaces do not see each other
    assert server.poll() is not None, "a process started in the namespace outlived it"


def test_everything_is_removed_even_when_the_block_fails() -> None:
    names = []
    with pytest.raises(RuntimeError, match="boom"):
        with namespace("w1") as ns:
            names.append(ns.name)
            ns.popen(["sleep", "60"])
            raise RuntimeError("boom")
    assert names[0] not in _ip_run("netns", "list").stdout
    assert names[0] not in _ip_run("-o", "link").stdout

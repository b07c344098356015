"""Network namespaces for tests: processes that reach this host only over a veth pair, as from another host.

    with namespace("w1") as ns:
        ns.host_ip, ns.ip        # 10.231.X.Y+1 on the host side, 10.231.X.Y+2 in the namespace (/30)
        ns.popen([...], env=...) # a process inside; killed when the block ends
        ns.run([...], timeout=10)

Inside, ``lo`` is the namespace's own loopback and the only other route is the /30 to the host, so
a server must bind to ``ns.host_ip`` (or 0.0.0.0) to be reached; one bound to 127.0.0.1 on the host
is out of reach. Names are unique per use (``dn`` + 6 random hex digits), the /30 is one that no
interface here uses, every ``ip`` call is bounded, and the namespace, the veth pair and every
process started through ``popen`` are removed even when the block fails. Skipped, with the reason,
when not root or when ``ip netns`` does not work here (CI installs iproute2: see .ci/run).
"""

from __future__ import annotations

import ipaddress
import os
import random
import secrets
import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import pytest

from dermnode.local_processes import stop

POOL = ipaddress.ip_network("10.231.0.0/16")
IP_TIMEOUT = 10.0
PICK_TRIES = 50


@dataclass
class Namespace:
    name: str
    label: str
    host_ip: str
    ip: str
    processes: list[subprocess.Popen] = field(default_factory=list)

    def command(self, command: list[str]) -> list[str]:
        return [_ip(), "netns", "exec", self.name, *command]

    def popen(self, command: list[str], **kwargs) -> subprocess.Popen:
        """Start ``command`` inside the namespace (Popen keyword arguments as usual)."""
        process = subprocess.Popen(self.command(command), **kwargs)
        self.processes.append(process)
        return process

    def run(self, command: list[str], timeout: float = 30.0, **kwargs) -> subprocess.CompletedProcess:
        """Run ``command`` inside the namespace to completion, within ``timeout`` seconds."""
        return subprocess.run(self.command(command), timeout=timeout, **kwargs)


def _ip() -> str:
    path = shutil.which("ip", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if path is None:
        pytest.skip("the ip command (iproute2) is not installed (CI installs it: see .ci/run)")
    return path


def _ip_run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([_ip(), *args], capture_output=True, text=True, timeout=IP_TIMEOUT)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def _used_networks() -> list[ipaddress.IPv4Network]:
    lines = _ip_run("-4", "-o", "addr", "show").stdout.splitlines()
    return [ipaddress.ip_interface(line.split()[3]).network for line in lines if " inet " in line]


def _free_subnet() -> ipaddress.IPv4Network:
    """A /30 of 10.231.0.0/16 that overlaps no address on this host's interfaces."""
    used = _used_networks()
    for _ in range(PICK_TRIES):
        subnet = ipaddress.ip_network(f"{POOL[0] + 4 * random.randrange(1, POOL.num_addresses // 4)}/30")
        if not any(subnet.overlaps(other) for other in used):
            return subnet
    raise RuntimeError(f"no free /30 in {POOL} after {PICK_TRIES} picks")


def _require_netns() -> None:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (ip netns add)")
    probe = f"dnprobe{secrets.token_hex(3)}"
    added = _ip_run("netns", "add", probe, check=False)
    if added.returncode != 0:
        pytest.skip(f"ip netns does not work here: {added.stderr.strip()}")
    _ip_run("netns", "delete", probe, check=False)


def _teardown(ns: Namespace, host_if: str) -> None:
    for process in ns.processes:
        stop(process, timeout=10.0)
    _ip_run("link", "delete", host_if, check=False)  # deletes its peer inside the namespace too
    _ip_run("netns", "delete", ns.name, check=False)


@contextmanager
def namespace(label: str) -> Iterator[Namespace]:
    """A fresh namespace joined to the host by a veth pair on a free /30; removed afterwards."""
    _require_netns()
    name = f"dn{secrets.token_hex(3)}"
    host_if, ns_if = f"{name}h", f"{name}n"
    subnet = _free_subnet()
    host_ip, ns_ip = str(subnet[1]), str(subnet[2])
    ns = Namespace(name, label, host_ip, ns_ip)
    try:
        _ip_run("netns", "add", name)
        _ip_run("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _ip_run("link", "set", ns_if, "netns", name)
        _ip_run("addr", "add", f"{host_ip}/30", "dev", host_if)
        _ip_run("link", "set", host_if, "up")
        _ip_run("-n", name, "addr", "add", f"{ns_ip}/30", "dev", ns_if)
        _ip_run("-n", name, "link", "set", ns_if, "up")
        _ip_run("-n", name, "link", "set", "lo", "up")
        yield ns
    finally:
        _teardown(ns, host_if)

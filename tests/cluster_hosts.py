"""Several hosts on this machine, for the cluster tests: each host is a network namespace
with its own address, home folder, temporary folder and environment; all of them share
the file system, as the machines of a cluster share NFS.

    with Hosts(root, ["head", "b", "c"]) as hosts:
        hosts.run("head", ".venv/bin/ray start --head ...")     # a command, in that host
        hosts.kill("b")                                          # SIGKILL every process of host b

The hosts are linked by a bridge that lives in a namespace of its own (the hub), so no
packet reaches this machine's own network: traffic stays among the hosts and their
loopbacks. Each host's default route points at its link, so Ray finds the host's address
the way it does on a real machine (the route to a public address; nothing is sent).
Every process a host ran is ended by its id (the pids `ip netns pids` lists), never by
name, and the namespaces are deleted on leaving.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SUBNET = "10.77.0"
REPO = Path(__file__).resolve().parent.parent


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def why_no_namespaces() -> str | None:
    """None if this process may make network namespaces and veth pairs; else the reason."""
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"fatprobe{os.getpid()}"
    made = ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    try:
        veth = ip("-n", probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1", check=False)
        if veth.returncode != 0:
            return f"no veth pairs: {veth.stderr.strip()}"
    finally:
        ip("netns", "del", probe, check=False)
    return None


@dataclass
class Host:
    name: str
    namespace: str
    address: str
    home: Path
    tmp: Path
    env: dict = field(default_factory=dict)   # the host's own environment (its login's)


class Hosts:
    def __init__(self, root: Path, names: list[str], tag: str | None = None):
        # short names and paths: Ray's Unix sockets live under TMPDIR (at most 107 bytes)
        self.tag = tag or f"fh{os.getpid()}"
        self.root = Path(root)
        self.hub = f"{self.tag}-hub"
        self.hosts: dict[str, Host] = {}
        for i, name in enumerate(names):
            home, tmp = self.root / name / "home", self.root / name / "tmp"
            self.hosts[name] = Host(name, f"{self.tag}-{name}", f"{SUBNET}.{10 + i}", home, tmp)
        self.processes: list[subprocess.Popen] = []

    def __enter__(self) -> "Hosts":
        try:
            self.make()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def make(self) -> None:
        ip("netns", "add", self.hub)
        ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        ip("-n", self.hub, "link", "set", "br0", "up")
        for i, host in enumerate(self.hosts.values()):
            ip("netns", "add", host.namespace)
            ip("-n", self.hub, "link", "add", f"v{i}", "type", "veth", "peer", "name", "eth0",
               "netns", host.namespace)
            ip("-n", self.hub, "link", "set", f"v{i}", "master", "br0", "up")
            ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
            ip("-n", host.namespace, "link", "set", "eth0", "up")
            ip("-n", host.namespace, "link", "set", "lo", "up")
            ip("-n", host.namespace, "route", "add", "default", "dev", "eth0")
            for folder in (host.home, host.tmp):
                folder.mkdir(parents=True, exist_ok=True)
            host.env = {"HOME": str(host.home), "TMPDIR": str(host.tmp), "USER": "root", "LANG": "C.UTF-8",
                        "PATH": f"{REPO / '.venv' / 'bin'}:/usr/local/bin:/usr/bin:/bin",
                        # a lost host is noticed in seconds, not Ray's default ~30 s (a test's wait)
                        "RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "6"}

    def command(self, name: str, shell: str, hide: Path | None = None) -> list[str]:
        """`shell` run by sh in host `name` (in the repository), under the host's own host
        name (a UTS namespace). `hide`: a folder this host does not see (a tmpfs over it, in
        a mount namespace of the host's own)."""
        host = self.hosts[name]
        shell = f"hostname {host.namespace} && {shell}"
        if hide is not None:
            shell = f"mount -t tmpfs -o size=1m hidden {hide} && {shell}"
        return ["ip", "netns", "exec", host.namespace, "unshare", "--uts", "--mount", "--propagation", "private",
                "sh", "-c", shell]

    def environment(self, name: str, extra: dict | None = None) -> dict:
        return {**self.hosts[name].env, **(extra or {})}

    def run(self, name: str, shell: str, extra: dict | None = None, timeout: float = 300,
            hide: Path | None = None) -> subprocess.CompletedProcess:
        """Run `shell` in host `name` to its end; its output and exit code."""
        return subprocess.run(self.command(name, shell, hide), env=self.environment(name, extra), cwd=REPO,
                              capture_output=True, text=True, timeout=timeout)

    def start(self, name: str, shell: str, extra: dict | None = None, **popen) -> subprocess.Popen:
        """Start `shell` in host `name`, without waiting (its process is ended on close)."""
        process = subprocess.Popen(self.command(name, shell), env=self.environment(name, extra), cwd=REPO,
                                   start_new_session=True, **popen)
        self.processes.append(process)
        return process

    def pids(self, name: str) -> list[int]:
        """Every process running in host `name`'s network namespace."""
        listed = ip("netns", "pids", self.hosts[name].namespace, check=False).stdout.split()
        return [int(p) for p in listed if p.isdigit()]

    def kill(self, name: str, sig: int = signal.SIGKILL) -> list[int]:
        """Send `sig` to every process of host `name` (SIGKILL: the host dies); the pids."""
        pids = self.pids(name)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        return pids

    def close(self) -> None:
        for name in self.hosts:
            with contextlib.suppress(Exception):
                self.kill(name, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while any(self.pids(n) for n in self.hosts) and time.monotonic() < deadline:
            time.sleep(0.2)
        for name in self.hosts:
            with contextlib.suppress(Exception):
                self.kill(name)
        for process in self.processes:
            with contextlib.suppress(Exception):
                process.kill()
                process.wait(timeout=10)
        for host in self.hosts.values():
            ip("netns", "del", host.namespace, check=False)
        ip("netns", "del", self.hub, check=False)

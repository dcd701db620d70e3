"""Benchmark of ``pilotage-exec``: latency of one switch, and site-authz decisions per second.

Run as root (it creates the accounts ``pilot`` and ``alice`` if missing, installs the
switch under a temporary prefix, and adds two sudo rules it removes at the end). Times,
as the account ``pilot``, ``--runs`` invocations each of:

- ``/bin/true`` and ``sudo /bin/true`` (the baselines);
- ``sudo pilotage-exec -- /bin/true`` with the local policy, cache cold (``cache_ttl_s
  = 0``: the proxy is validated and the policy read every time) and warm;
- the same with the remote ``pilotage site-authz`` service, cache cold and warm;

then counts the decisions per second ``pilotage site-authz serve`` answers to
``--clients`` processes on keep-alive HTTPS connections for ``--seconds``.

Ends with one ``BENCH <name> <value> <unit>`` line per figure. Figures recorded in
docs/benchmarks.md (section "Switch").
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import pwd
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pilotage.credentials.proxy import make_proxy, proxy_pem
from pilotage.credentials.x509_testing import make_pki
from pilotage.siteauthz.testing import Service, ca_for_service
from pilotage.testing_accounts import ensure_accounts
from pilotage import exec_install as install

POLICY = """
gridmapdir = "{root}/gridmapdir"
[[map]]
dn = "/O=Example/CN=Alice"
account = "alice"
[[map]]
group = "/cms/*"
pool = "cms"
[pools]
cms = "cms001..cms050"
"""


def interpreter() -> str:
    """A Python every account may execute."""
    real = Path(os.path.realpath(sys.executable))
    if all(p.stat().st_mode & 0o001 for p in [real, *real.parents]):
        return str(real)
    return "/usr/bin/python3"


def setup(root: Path) -> tuple[Path, Path, Service]:
    """The site: CA, policy, the pilot's copy of Alice's proxy, and the service."""
    pki = make_pki(root / "ca")
    pki.ca.export_trust_dir(root / "certificates")
    (root / "gridmapdir").mkdir()
    policy = root / "policy.toml"
    policy.write_text(POLICY.format(root=root))
    cert, key = make_proxy(pki.user.cert, pki.user.key, [], lifetime_s=12 * 3600)
    proxy = root / "alice.proxy"
    proxy.write_bytes(proxy_pem(cert, key, [pki.user.cert]))
    pilot = pwd.getpwnam("pilot")
    os.chown(proxy, pilot.pw_uid, pilot.pw_gid)
    proxy.chmod(0o600)
    service_dir = root / "authz"
    service_dir.mkdir()
    service = Service(policy, ca_for_service(service_dir), service_dir).start()
    return policy, proxy, service


def install_switch(root: Path, name: str, authz: str, ttl_s: int) -> tuple[Path, Path]:
    """Install a switch ``name``; return its wrapper and its sudo rule."""
    config = root / f"{name}.toml"
    config.write_text(
        f'mode = "setuid"\ninvokers = ["pilot"]\ntrust_dir = "{root}/certificates"\n'
        f'audit_log = "{root}/audit/{name}.jsonl"\nsyslog = false\ncache_ttl_s = {ttl_s}\n'
        f"{authz}"
    )
    wrapper = install.install(root / name, str(config), f"{root}/state-{name}", interpreter())
    sudoers = Path(f"/etc/sudoers.d/pilotage-bench-{name}")
    install.write_sudoers(sudoers, wrapper, "pilot")
    return wrapper, sudoers


def time_runs(command: list[str], env: dict[str, str], runs: int) -> list[float]:
    """Wall time of each of ``runs`` invocations, as the account pilot, in milliseconds."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, env=env, user="pilot", group="pilot", extra_groups=[],
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        times.append((time.perf_counter() - started) * 1000)
    return times


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0-1) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _client(url: str, ca_file: str, seconds: float, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    host, port = url.split("//")[1].split("/")[0].split(":")
    context = ssl.create_default_context(cafile=ca_file)
    connection = http.client.HTTPSConnection(host, int(port), context=context)
    # One DN rule and 40 pool-mapped token subjects (their leases are taken once, then read).
    alice = {"kind": "x509", "subject": "/O=Example/CN=Alice"}
    pooled = [
        {"kind": "token", "subject": f"user{n}", "issuer": "https://pool", "groups": ["/cms/prod"]}
        for n in range(40)
    ]
    bodies = [json.dumps({"version": 1, "user": user}) for user in [alice, *pooled]]
    count, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        connection.request("POST", "/v1/decision", bodies[count % len(bodies)],
                           {"Content-Type": "application/json"})  # fmt: skip
        response = connection.getresponse()
        if not json.loads(response.read())["permit"]:
            raise SystemExit("unexpected deny")
        count += 1
    queue.put(count)


def decisions_per_second(service: Service, clients: int, seconds: float) -> float:
    """Decisions per second the service answers to ``clients`` keep-alive connections."""
    queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    workers = [
        multiprocessing.Process(target=_client, args=(service.url, str(service.ca_file),
                                                      seconds, queue))
        for _ in range(clients)
    ]  # fmt: skip
    for worker in workers:
        worker.start()
    total = sum(queue.get() for _ in workers)
    for worker in workers:
        worker.join()
    return total / seconds


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark installs the switch and sudo rules")
    ensure_accounts(["pilot", "alice"])
    root = Path(tempfile.mkdtemp(prefix="pilotage-bench-", dir="/tmp"))
    root.chmod(0o755)
    rules: list[Path] = []
    policy, proxy, service = setup(root)
    try:
        true_rule = Path("/etc/sudoers.d/pilotage-bench-true")
        true_rule.write_text("Defaults!/bin/true !use_pty\npilot ALL=(root) NOPASSWD: /bin/true\n")
        true_rule.chmod(0o440)
        rules.append(true_rule)
        local = f'[authz]\nkind = "local"\npolicy = "{policy}"\n'
        remote = f'[authz]\nkind = "remote"\nurl = "{service.url}"\nca_file = "{service.ca_file}"\n'
        env = {"PATH": "/usr/bin:/bin", "PILOTAGE_EXEC_USER_CREDENTIAL": str(proxy)}
        cases = {"true": ["/bin/true"], "sudo_true": ["sudo", "-n", "/bin/true"]}
        for name, authz, ttl in (
            ("local_cold", local, 0), ("local_warm", local, 3600),
            ("remote_cold", remote, 0), ("remote_warm", remote, 3600),
        ):  # fmt: skip
            wrapper, rule = install_switch(root, name, authz, ttl)
            rules.append(rule)
            cases[name] = ["sudo", "-n", str(wrapper), "--", "/bin/true"]
        results = {}
        for name, command in cases.items():
            time_runs(command, env, 5)  # warm-up: page cache, and the warm caches' one miss
            times = time_runs(command, env, args.runs)
            results[name] = times
            print(f"BENCH {name}_p50 {percentile(times, 0.5):.1f} ms")
            print(f"BENCH {name}_p99 {percentile(times, 0.99):.1f} ms")
        base = statistics.median(results["sudo_true"])
        for name in ("local_cold", "local_warm", "remote_cold", "remote_warm"):
            overhead = statistics.median(results[name]) - base
            print(f"BENCH {name}_overhead_vs_sudo_p50 {overhead:.1f} ms")
        rate = decisions_per_second(service, args.clients, args.seconds)
        print(f"BENCH siteauthz_decisions_per_s {rate:.0f} 1/s")
    finally:
        service.stop()
        for rule in rules:
            rule.unlink(missing_ok=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

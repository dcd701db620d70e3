"""Benchmark of ``pilotage-exec``: latency of one switch, and site-authz decisions per second.

Run as root (it creates the accounts ``pilot`` and ``alice`` if missing, installs the
switch under a temporary prefix, and adds sudo rules it removes at the end). Times, as the
account ``pilot``, ``--runs`` rounds of invocations, the cases taking turns within each
round so that they all see the same load:

- ``true``: ``/bin/true``, and ``sudo_true``: ``sudo /bin/true`` (the baselines);
- ``local_cold``, ``local_warm``: ``sudo pilotage-exec -- /bin/true`` with the local
  policy, cache cold (``cache_ttl_s = 0``: the proxy is validated and the policy read every
  time) and warm; ``remote_cold``, ``remote_warm``: the same with the remote
  ``pilotage site-authz`` service;
- ``job_warm``: a job's start as the agent makes it (local policy, warm), with the claim's
  directory (the user's copy and ``job/`` written), a family key (cgroup and registry
  entry) and syslog on; then ``signal_warm``: ``--signal KILL --job KEY`` for that job,
  which ends its family.

``--cases`` keeps some of them. Then ``--seconds`` of decisions per second that ``pilotage
site-authz serve`` answers to ``--clients`` processes on keep-alive HTTPS connections (0:
skipped). ``--profile N`` runs the warm local switch N times more as root, exactly as sudo
would (``SUDO_UID`` of ``pilot``), under ``python -X importtime``, and prints the median
import time of each module with the process's cpu time next to a bare ``python -IS``.

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
import resource
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pilotage import exec_install as install
from pilotage.credentials.proxy import make_proxy, proxy_pem
from pilotage.credentials.x509_testing import make_pki
from pilotage.siteauthz.testing import Service, ca_for_service
from pilotage.testing_accounts import ensure_accounts

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


def install_switch(root: Path, name: str, authz: str, ttl_s: int, syslog: bool = False) -> tuple[
    Path, Path
]:  # fmt: skip
    """Install a switch ``name``; return its wrapper and its sudo rule."""
    config = root / f"{name}.toml"
    config.write_text(
        f'mode = "setuid"\ninvokers = ["pilot"]\ntrust_dir = "{root}/certificates"\n'
        f'audit_log = "{root}/audit/{name}.jsonl"\nsyslog = {str(syslog).lower()}\n'
        f'syslog_socket = "{root}/syslog.sock"\ncache_ttl_s = {ttl_s}\n{authz}'
    )
    os.utime(config, ns=(0, 0))  # as if written long ago: the switch caches a settled config
    wrapper = install.install(root / name, str(config), f"{root}/state-{name}", interpreter())
    sudoers = Path(f"/etc/sudoers.d/pilotage-bench-{name}")
    install.write_sudoers(sudoers, wrapper, "pilot")
    return wrapper, sudoers


def time_rounds(
    cases: dict[str, tuple[list[str], dict[str, str]]], runs: int, label: str = ""
) -> dict[str, list[float]]:
    """Wall time of each case's invocation, as the account pilot, in milliseconds, for
    ``runs`` rounds in which the cases take turns. ``{n}`` in a command or variable becomes
    ``label`` and the round's number (a new job key each round)."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for number in range(runs):
        for name, (command, env) in cases.items():
            argv = [word.replace("{n}", f"{label}{number}") for word in command]
            variables = {k: v.replace("{n}", f"{label}{number}") for k, v in env.items()}
            started = time.perf_counter()
            subprocess.run(argv, env=variables, user="pilot", group="pilot", extra_groups=[],
                           check=True, stdout=subprocess.DEVNULL)  # fmt: skip
            times[name].append((time.perf_counter() - started) * 1000)
    return times


def profile(wrapper: Path, env: dict[str, str], runs: int) -> None:
    """Median import times of the warm switch, run as sudo would run it, and its cpu time."""
    python = wrapper.read_text().splitlines()[0].removeprefix("#!").split()[0]
    as_sudo = {**env, "SUDO_UID": str(pwd.getpwnam("pilot").pw_uid)}
    cpu: dict[str, list[float]] = {"python": [], "switch": []}
    imports: dict[str, list[int]] = {}
    for _ in range(runs):
        for name, command in (("python", [python, "-IS", "-c", "pass"]),
                              ("switch", [python, "-X", "importtime", "-IS", str(wrapper),
                                          "--", "/bin/true"])):  # fmt: skip
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            done = subprocess.run(command, env=as_sudo, capture_output=True, text=True, check=True)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            used = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
            cpu[name].append(used * 1000)
            for line in done.stderr.splitlines()[1:]:
                own, _, module = line.removeprefix("import time:").split("|")
                imports.setdefault(module.strip(), []).append(int(own))
    # Python's own start-up imports these before the switch's first line (-X importtime
    # lists them too): what is left is the switch's.
    start_up = {"_io", "marshal", "posix", "_frozen_importlib_external", "time", "zipimport",
                "_codecs", "codecs", "encodings.aliases", "encodings", "encodings.utf_8",
                "_signal", "_abc", "abc", "io"}  # fmt: skip
    own_ms = 0.0
    for module, values in sorted(imports.items(), key=lambda item: -statistics.median(item[1])):
        median_us = statistics.median(values)
        own_ms += median_us / 1000 if module not in start_up else 0
        print(f"PROFILE import {module} {median_us:.0f} us{' (start-up)' * (module in start_up)}")
    print(f"BENCH local_warm_cpu_ms {statistics.median(cpu['switch']):.1f} ms")
    print(f"BENCH python_start_cpu_ms {statistics.median(cpu['python']):.1f} ms")
    print(f"BENCH local_warm_switch_imports_ms {own_ms:.1f} ms")


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
    total = sum(int(queue.get()) for _ in workers)
    for worker in workers:
        worker.join()
    return total / seconds


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--cases", help="comma-separated: which cases to time (default: all)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--profile", type=int, default=0, metavar="N")
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
        claim = root / "claim"  # the claim's directory, as the agent makes it
        claim.mkdir(mode=0o711)
        os.chown(claim, pwd.getpwnam("pilot").pw_uid, pwd.getpwnam("pilot").pw_gid)
        job_env = {**env, "PILOTAGE_EXEC_TARGET_DIR": str(claim),
                   "PILOTAGE_EXEC_JOB_ID": "job-{n}", "PILOTAGE_EXEC_JOB_NAME": "{n}"}  # fmt: skip
        cases = {"true": (["/bin/true"], env), "sudo_true": (["sudo", "-n", "/bin/true"], env)}
        wrappers = {}
        for name, authz, ttl, syslog in (
            ("local_cold", local, 0, False), ("local_warm", local, 3600, False),
            ("remote_cold", remote, 0, False), ("remote_warm", remote, 3600, False),
            ("job_warm", local, 3600, True),
        ):  # fmt: skip
            wrapper, rule = install_switch(root, name, authz, ttl, syslog)
            rules.append(rule)
            wrappers[name] = wrapper
            cases[name] = (["sudo", "-n", str(wrapper), "--", "/bin/true"], env)
        cases["job_warm"] = (cases["job_warm"][0], job_env)
        cases["signal_warm"] = (["sudo", "-n", str(wrappers["job_warm"]), "--signal", "KILL",
                                 "--job", "job-{n}"], job_env)  # fmt: skip
        if args.cases:
            wanted = {*args.cases.split(","), *(["job_warm"] * ("signal_warm" in args.cases))}
            cases = {name: case for name, case in cases.items() if name in wanted}
        time_rounds(cases, 5, "w")  # page cache, and the warm caches' one miss
        results = time_rounds(cases, args.runs)
        for name, times in results.items():
            print(f"BENCH {name}_p50 {percentile(times, 0.5):.1f} ms")
            print(f"BENCH {name}_p99 {percentile(times, 0.99):.1f} ms")
        if "sudo_true" in results:
            base = statistics.median(results["sudo_true"])
            for name in ("local_cold", "local_warm", "remote_cold", "remote_warm", "job_warm",
                         "signal_warm"):  # fmt: skip
                if name in results:
                    overhead = statistics.median(results[name]) - base
                    print(f"BENCH {name}_overhead_vs_sudo_p50 {overhead:.1f} ms")
        if args.profile:
            profile(wrappers["local_warm"], env, args.profile)
        if args.seconds > 0:
            rate = decisions_per_second(service, args.clients, args.seconds)
            print(f"BENCH siteauthz_decisions_per_s {rate:.0f} 1/s")
    finally:
        service.stop()
        for rule in rules:
            rule.unlink(missing_ok=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

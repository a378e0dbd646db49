"""Soak test: a 5-node cluster under churn and chaos, then exact end checks (``make soak``).

Not a test of ``make test``: a benchmark-style run that prints a table and exits
non-zero when the cluster ends up wrong. What it does:

* starts ``--nodes`` standalone nodes (``python -m tracker_zmq node``) with short
  periods (heartbeat 0.05 s, down after 0.6 s), on 127.0.0.1; with ``--netns`` each
  node runs in its own network namespace (see below);
* connects ``--clients`` :class:`tracker_zmq.Client` per node, in this process, that
  track, update and untrack presences as fast as the machine lets them, on every node;
  now and then a client "crashes" (goes silent without bye; the node must untrack its
  presences when its lease runs out) and a new one takes its place;
* meanwhile a chaos loop, one event at a time: SIGKILL a node and restart it in place;
  SIGSTOP one past ``down_period`` and SIGCONT it; cut one off from the cluster for a
  few seconds. On loopback the cut is a long SIGSTOP (nothing can drop one node's
  traffic there without a firewall); with ``--netns`` it is a real partition: the
  node's link to the cluster bridge goes down while its clients, on a separate link,
  keep working. After each heal the loop measures how long until every node lists the
  same sentinel presences (one per node, held by a client that never changes them);
* samples every node's RSS from /proc once a second;
* at the end stops the churn, waits for quiet, and checks that every node lists exactly
  the presences the live clients hold (no ghost, none missing, the latest meta), that
  no node died but those it killed, and that memory stayed flat.

The model: a client's presences are what its last successful requests left. A request
that timed out (its node was killed or stopped) may or may not have been applied, so
the driver settles it: a track that timed out is untracked until a reply comes, an
update or untrack is repeated until one does. Clients of a killed node lose their
presences with it and re-track them all on the restarted node (``unknown_session``),
so they are expected again at the end.

Usage: ``python scripts/soak.py [--duration 75] [--nodes 5] [--clients 4] [--netns]``.
Exit status: 0 when every check passed (or ``--netns`` was skipped: not root, or no
``ip netns``), 1 otherwise. Every process and namespace it starts is stopped on every
exit path (also on SIGINT and SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the root, for tests.support
from tests.support.proc import CliNode, free_port
from tracker_zmq import AlreadyTracked, Client, ClientError, NoPresence, RequestTimeout

BROADCAST = 0.05
DOWN = 0.6
PERMDOWN = 15.0
LEASE = 2.0
TOPICS = [f"room:{i}" for i in range(20)]
SENTINEL = "sentinel"
NODE_OPTIONS = (
    "--broadcast-period", str(BROADCAST),
    "--max-silent-periods", "3",
    "--down-period", str(DOWN),
    "--permdown-period", str(PERMDOWN),
    "--gossip-interval", "0.1",
    "--peer-timeout", "1",
    "--client-min-lease", "0.5",
    "--client-max-presences", "1000",
    "--log-level", "WARNING",
    "--event-log-level", "DEBUG",
)  # fmt: skip


# ----------------------------------------------------------------- network namespaces


class Netns:
    """One namespace per node: ``eth0`` on a shared bridge (the cluster network) and
    ``eth1`` on a point-to-point veth to this namespace (its clients).

    Cutting a node off sets its host-side cluster veth down: the node loses the cluster
    but its clients keep talking to it, as in a real partition between hosts.
    """

    def __init__(self, count: int) -> None:
        self.tag = f"sk{os.getpid() % 100000}"
        self.bridge = f"{self.tag}br"
        self.count = count
        self.names = [f"{self.tag}-n{k}" for k in range(count)]
        self.made: list[str] = []  # namespaces and links to delete, in order

    @staticmethod
    def unavailable() -> str | None:
        """Why namespaces cannot be used here, or None."""
        if os.geteuid() != 0:
            return "not running as root"
        if shutil.which("ip") is None:
            return "no `ip` command (iproute2)"
        probe = f"skprobe{os.getpid() % 100000}"
        made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
        if made.returncode != 0:
            return f"`ip netns add` failed: {made.stderr.strip()}"
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
        return None

    def cluster_ip(self, k: int) -> str:
        return f"10.231.0.{k + 1}"

    def client_ip(self, k: int) -> str:
        return f"10.232.{k}.2"

    def _ip(self, *args: str, ns: str | None = None) -> None:
        command = ["ip", *(("-n", ns) if ns else ()), *args]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()}")

    def setup(self) -> None:
        self._ip("link", "add", self.bridge, "type", "bridge")
        self.made.append(f"link:{self.bridge}")
        self._ip("link", "set", self.bridge, "up")
        for k, ns in enumerate(self.names):
            self._ip("netns", "add", ns)
            self.made.append(f"ns:{ns}")
            self._ip("link", "set", "lo", "up", ns=ns)
            cluster, client = f"{self.tag}c{k}", f"{self.tag}k{k}"
            self._ip("link", "add", cluster, "type", "veth", "peer", "name", "eth0", "netns", ns)
            self.made.append(f"link:{cluster}")
            self._ip("link", "set", cluster, "master", self.bridge)
            self._ip("link", "set", cluster, "up")
            self._ip("addr", "add", f"{self.cluster_ip(k)}/24", "dev", "eth0", ns=ns)
            self._ip("link", "set", "eth0", "up", ns=ns)
            self._ip("link", "add", client, "type", "veth", "peer", "name", "eth1", "netns", ns)
            self.made.append(f"link:{client}")
            self._ip("addr", "add", f"10.232.{k}.1/30", "dev", client)
            self._ip("link", "set", client, "up")
            self._ip("addr", "add", f"{self.client_ip(k)}/30", "dev", "eth1", ns=ns)
            self._ip("link", "set", "eth1", "up", ns=ns)

    def cut(self, k: int, on: bool) -> None:
        self._ip("link", "set", f"{self.tag}c{k}", "down" if on else "up")

    def cleanup(self) -> None:
        for item in reversed(self.made):
            kind, name = item.split(":", 1)
            command = ["ip", "netns", "del", name] if kind == "ns" else ["ip", "link", "del", name]
            subprocess.run(command, capture_output=True)
        self.made.clear()


# ----------------------------------------------------------------------- node processes


@dataclass
class NodeSlot:
    """One node of the cluster: its addresses, its current process and its history."""

    index: int
    name: str
    bind: str
    client_endpoint: str
    peers: list[str]
    prefix: list[str]
    log_dir: Path
    node: CliNode | None = None
    incarnations: int = 0
    expected_exit: bool = False
    paused: bool = False
    crashes: list[str] = field(default_factory=list)
    rss: list[list[tuple[float, int]]] = field(default_factory=list)  # per incarnation

    @property
    def proc(self) -> subprocess.Popen[str] | None:
        return self.node.proc if self.node is not None else None

    def start(self) -> None:
        """Start (or restart in place) the node; returns once it printed its ready line."""
        self.incarnations += 1
        self.node = CliNode(
            self.name,
            self.log_dir,
            *NODE_OPTIONS,
            peers=self.peers,
            bind=self.bind,
            client_bind=self.client_endpoint,
            prefix=self.prefix,
            timeout=60.0,
            strict=False,
        )
        self.expected_exit = False
        self.paused = False
        self.rss.append([])

    def alive(self) -> bool:
        return self.node is not None and self.node.running()

    def signal(self, sig: signal.Signals) -> None:
        if self.node is not None:
            self.node.signal(sig)

    def kill(self) -> None:
        self.expected_exit = True
        if self.paused:
            self.signal(signal.SIGCONT)
            self.paused = False
        if self.node is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.node.kill()

    def sample_rss(self, now: float) -> None:
        if not self.alive() or self.paused:
            return
        assert self.proc is not None
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    self.rss[-1].append((now, int(line.split()[1]) * 1024))
                    return


# ------------------------------------------------------------------------ the clients


@dataclass
class Churner:
    """One client and the driver's model of what it holds: (topic, key) -> version."""

    client: Client
    held: dict[tuple[str, str], int] = field(default_factory=dict)
    counter: int = 0


class Soak:
    def __init__(self, args: argparse.Namespace, slots: list[NodeSlot], netns: Netns | None):
        self.args = args
        self.slots = slots
        self.netns = netns
        self.rng = random.Random(args.seed)
        self.churners: list[tuple[int, Churner]] = []
        self.sentinels: list[Client] = []
        self.listers: list[Client] = []
        self.ops = 0
        self.timeouts = 0
        self.client_crashes = 0
        self.events = {"kills": 0, "pauses": 0, "partitions": 0}
        self.convergence: list[tuple[str, float]] = []
        self.heals: list[float] = []  # when each chaos event was over and converged (or not)
        self.unconverged: list[str] = []
        self.seen_down_count = 0
        self.stopping = False
        self.client_seq = 0

    def client(self, slot: NodeSlot, label: str) -> Client:
        self.client_seq += 1
        return Client(
            slot.client_endpoint,
            client_id=f"{label}-{self.client_seq}",
            heartbeat_interval=0.4,
            lease=LEASE,
            timeout=1.0,
        )

    # -- churn

    async def settle(self, coro_fn: Any) -> Any:
        """Repeat a request until the node answers (it may be killed or stopped)."""
        while True:
            try:
                return await coro_fn()
            except (RequestTimeout, ClientError) as exc:
                if not isinstance(exc, RequestTimeout) and "unknown_session" not in str(exc):
                    raise
                self.timeouts += 1
                await asyncio.sleep(0.05)

    async def churn_one(self, ch: Churner) -> None:
        cl = ch.client
        held = len(ch.held)
        roll = self.rng.random()
        if held < 5 or (held < 40 and roll < 0.4):
            ch.counter += 1
            topic, key = self.rng.choice(TOPICS), f"{cl.client_id}-{ch.counter}"
            try:
                await cl.track(topic, key, {"v": 0})
            except RequestTimeout:
                self.timeouts += 1
                # applied or not: untrack until the node answers, so it is not held
                await self.settle(lambda: cl.untrack(topic, key))
                return
            except AlreadyTracked:
                raise AssertionError(f"{key} already tracked: the model is wrong") from None
            ch.held[(topic, key)] = 0
        elif held >= 40 or roll < 0.75:
            topic, key = self.rng.choice(list(ch.held))
            version = ch.held[(topic, key)] + 1
            try:
                await self.settle(lambda: cl.update(topic, key, {"v": version}))
            except NoPresence:
                raise AssertionError(f"{key} not held: the model is wrong") from None
            ch.held[(topic, key)] = version
        else:
            topic, key = self.rng.choice(list(ch.held))
            await self.settle(lambda: cl.untrack(topic, key))
            del ch.held[(topic, key)]
        self.ops += 1

    async def churn_loop(self, index: int) -> None:
        slot = self.slots[index]
        ch = Churner(await self.connected(slot, f"c{slot.index}"))
        self.churners.append((index, ch))
        while not self.stopping:
            await self.churn_one(ch)
            if self.rng.random() < self.args.client_crash_rate:
                # the client dies: no bye; its node untracks everything after the lease
                self.client_crashes += 1
                self.churners.remove((index, ch))
                await ch.client.close(bye=False)
                ch = Churner(await self.connected(slot, f"c{slot.index}"))
                self.churners.append((index, ch))

    async def connected(self, slot: NodeSlot, label: str) -> Client:
        """A client with a session on ``slot``'s node (retried while the node is away)."""
        while True:
            cl = self.client(slot, label)
            try:
                await cl.connect()
                return cl
            except RequestTimeout:
                self.timeouts += 1
                await cl.close(bye=False)

    # -- chaos

    def live(self) -> list[NodeSlot]:
        return [s for s in self.slots if s.alive() and not s.paused]

    async def converged(self, want: set[str] | None = None) -> bool:
        want = want if want is not None else {f"s-{s.index}" for s in self.slots}
        for slot in self.slots:
            try:
                got = {k for k, _ in await self.listers[slot.index].list(SENTINEL)}
            except ClientError:
                return False
            if got != want:
                return False
        return True

    async def wait_converged(self, what: str, since: float) -> None:
        deadline = since + 30.0
        try:
            while not await self.converged():
                if time.monotonic() > deadline:
                    self.unconverged.append(what)
                    return
                await asyncio.sleep(0.02)
            self.convergence.append((what, time.monotonic() - since))
        finally:
            if what != "start":
                self.heals.append(time.monotonic())

    async def seen_down(self, cut: NodeSlot) -> None:
        """Count a pause or cut that the other nodes noticed (its sentinel left them)."""
        want = {f"s-{s.index}" for s in self.slots if s is not cut}
        for slot in self.slots:
            if slot is not cut:
                with contextlib.suppress(ClientError):
                    got = {k for k, _ in await self.listers[slot.index].list(SENTINEL)}
                    if got != want:
                        return
        self.seen_down_count += 1

    async def chaos_loop(self, until: float) -> None:
        kinds = ["kill", "pause", "partition"]
        n = 0
        while time.monotonic() < until - 6:
            await asyncio.sleep(self.rng.uniform(0.5, 1.5))
            kind = kinds[n % 3]
            n += 1
            slot = self.rng.choice(self.slots)
            if kind == "kill":
                self.events["kills"] += 1
                slot.kill()
                await asyncio.sleep(self.rng.uniform(0.3, 1.5))
                await asyncio.to_thread(slot.start)
            elif kind == "pause":
                self.events["pauses"] += 1
                slot.paused = True
                slot.signal(signal.SIGSTOP)
                await asyncio.sleep(self.rng.uniform(DOWN * 1.5, DOWN * 3))
                await self.seen_down(slot)
                slot.signal(signal.SIGCONT)
                slot.paused = False
            else:
                self.events["partitions"] += 1
                hold = self.rng.uniform(2.0, 4.0)
                if self.netns is not None:
                    self.netns.cut(slot.index, True)
                    await asyncio.sleep(hold)
                    await self.seen_down(slot)
                    self.netns.cut(slot.index, False)
                else:  # loopback: cut off by a long stop
                    slot.paused = True
                    slot.signal(signal.SIGSTOP)
                    await asyncio.sleep(hold)
                    await self.seen_down(slot)
                    slot.signal(signal.SIGCONT)
                    slot.paused = False
            await self.wait_converged(f"{kind} {slot.name}", time.monotonic())

    async def monitor_loop(self) -> None:
        while True:
            now = time.monotonic()
            for slot in self.slots:
                if (
                    slot.proc is not None
                    and slot.proc.poll() is not None
                    and not slot.expected_exit
                ):
                    slot.crashes.append(f"exit {slot.proc.returncode} at {now:.1f}")
                    slot.expected_exit = True
                    await asyncio.to_thread(slot.start)
                slot.sample_rss(now)
            await asyncio.sleep(1.0)

    # -- the run

    async def run(self) -> dict[str, Any]:
        args = self.args
        for slot in self.slots:
            lister = self.client(slot, f"l{slot.index}")
            await lister.open()
            self.listers.append(lister)
            sentinel = await self.connected(slot, f"s{slot.index}")
            await sentinel.track(SENTINEL, f"s-{slot.index}", {})
            self.sentinels.append(sentinel)
        start = time.monotonic()
        await self.wait_converged("start", start)
        monitor = asyncio.create_task(self.monitor_loop())
        start = time.monotonic()
        until = start + args.duration
        churn = [
            asyncio.create_task(self.churn_loop(slot.index))
            for slot in self.slots
            for _ in range(args.clients)
        ]
        chaos = asyncio.create_task(self.chaos_loop(until))
        try:
            await asyncio.sleep(max(0.0, until - time.monotonic()))
            await chaos
            self.stopping = True
            await asyncio.gather(*churn)
            churn_end = time.monotonic()
            ops = self.ops
            # quiet: leases of crashed clients run out, replicas settle
            await asyncio.sleep(LEASE + DOWN + 1.0)
            mismatches, detail, settle = await self.final_check()
        finally:
            self.stopping = True
            for task in [*churn, chaos, monitor]:
                task.cancel()
            await asyncio.gather(*churn, chaos, monitor, return_exceptions=True)
            for _, ch in self.churners:
                await ch.client.close(bye=False)
            for cl in [*self.sentinels, *self.listers]:
                await cl.close(bye=False)
        return {
            "duration": churn_end - start,
            "ops": ops,
            "mismatches": mismatches,
            "detail": detail,
            "settle": settle,
        }

    def expected(self) -> dict[str, list[tuple[str, int]]]:
        want: dict[str, list[tuple[str, int]]] = {t: [] for t in TOPICS}
        for _, ch in self.churners:
            for (topic, key), version in ch.held.items():
                want[topic].append((key, version))
            # the client's own record must agree with the driver's model
            own = {(t, k): m.get("v") for (_, t, k), m in ch.client.presences().items()}
            assert own == ch.held, f"client {ch.client.client_id} disagrees with the model"
        return {t: sorted(v) for t, v in want.items()}

    async def listing(self, slot: NodeSlot) -> dict[str, list[tuple[str, int]]]:
        lister = self.listers[slot.index]
        return {t: sorted((str(k), m.get("v")) for k, m in await lister.list(t)) for t in TOPICS}

    async def final_check(self) -> tuple[int, list[str], float]:
        want = self.expected()
        started = time.monotonic()
        deadline = started + 30.0
        while True:
            detail: list[str] = []
            mismatches = 0
            for slot in self.slots:
                try:
                    got = await self.listing(slot)
                except ClientError as exc:
                    mismatches += 1
                    detail.append(f"{slot.name}: no answer ({exc})")
                    continue
                for topic in TOPICS:
                    g, w = got[topic], want[topic]
                    if g != w:
                        ghosts = sorted(set(g) - set(w))
                        missing = sorted(set(w) - set(g))
                        mismatches += len(ghosts) + len(missing) + (not ghosts and not missing)
                        detail.append(
                            f"{slot.name} {topic}: ghosts {ghosts[:3]} missing {missing[:3]}"
                        )
            if (mismatches == 0 and await self.converged()) or time.monotonic() > deadline:
                return mismatches, detail, time.monotonic() - started
            await asyncio.sleep(0.2)


# ------------------------------------------------------------------------------ report


MIB = 2**20
SETTLE = 2.0  # seconds after a heal before its window's growth counts


def rss_summary(slot: NodeSlot, heals: list[float]) -> tuple[int, str, bool]:
    """Peak RSS over all incarnations, and whether memory grew between heals.

    Judged on the longest-lived incarnation, window by window: a window runs from one
    heal to the next (the end of a chaos event, once the cluster converged again). A heal
    may raise RSS in a step that stays: the node catches up (a transfer, deltas piled up
    while it was cut off) and the allocator keeps the high water, so a short run shows a
    few steps that a long run shows as one flat plateau. Between heals the cluster only
    churns, and there a leak shows: RSS creeps up inside the windows. So after warm-up
    (the first third of the windows), the growth inside the windows (from a sample
    ``SETTLE`` s after the heal to the window's last sample), divided by the time those
    samples span, is the rate of growth between heals; memory is flat when that rate,
    over the whole time after warm-up, makes at most 15 % of the RSS at the end of
    warm-up, or 6 MiB. The steps at heals are reported, not judged. With fewer than 3
    windows after warm-up there is nothing to judge."""
    peak = max((rss for inc in slot.rss for _, rss in inc), default=0)
    longest = max(slot.rss, key=len, default=[])
    if not longest:
        return peak, "n/a (no samples)", True
    bounds = [t for t in heals if longest[0][0] < t < longest[-1][0]]
    windows = []
    for low, high in zip([longest[0][0], *bounds], [*bounds, longest[-1][0] + 1], strict=True):
        window = [(t, rss) for t, rss in longest if low + SETTLE <= t < high]
        if window:
            windows.append(window)
    warm = max(1, len(windows) // 3)
    if len(windows) - warm < 3:
        return peak, f"n/a ({len(windows)} heal-to-heal windows)", True
    baseline = windows[warm - 1][-1][1]
    judged = windows[warm:]
    inside = sum(w[-1][1] - w[0][1] for w in judged)
    span = sum(w[-1][0] - w[0][0] for w in judged)
    rate = max(0.0, inside / span) if span > 0 else 0.0  # bytes per second between heals
    projected = rate * (judged[-1][-1][0] - judged[0][0][0])
    steps = sum(max(0, w[0][1] - v[-1][1]) for v, w in itertools.pairwise(windows[warm - 1 :]))
    flat = projected <= max(0.15 * baseline, 6 * MIB)
    text = (
        f"{rate / MIB * 60:+.1f} MiB/min between heals ({projected / MIB:+.1f} MiB over the "
        f"run), {steps / MIB:+.1f} MiB at {len(judged)} heals"
    )
    return peak, text, flat


def report(soak: Soak, result: dict[str, Any], mode: str) -> bool:
    slots = soak.slots
    ok = result["mismatches"] == 0 and not soak.unconverged
    conv = [t for what, t in soak.convergence if what != "start"]
    median = sorted(conv)[len(conv) // 2] if conv else 0.0
    rate = result["ops"] / result["duration"]
    rows = [
        ("mode", mode),
        ("nodes / churn clients", f"{len(slots)} / {len(slots) * soak.args.clients}"),
        ("duration", f"{result['duration']:.1f} s"),
        ("operations (track/update/untrack)", f"{result['ops']} ({rate:.0f}/s)"),
        ("requests timed out and settled", str(soak.timeouts)),
        ("client crashes (no bye, lease expiry)", str(soak.client_crashes)),
        ("kills (SIGKILL + restart)", str(soak.events["kills"])),
        ("pauses (SIGSTOP > down_period)", str(soak.events["pauses"])),
        (
            "partitions" + (" (link down)" if mode == "netns" else " (SIGSTOP 2-4 s)"),
            str(soak.events["partitions"]),
        ),
        (
            "pauses and cuts the others saw as down",
            f"{soak.seen_down_count} of {soak.events['pauses'] + soak.events['partitions']}",
        ),
        ("final mismatches (must be 0)", str(result["mismatches"])),
        ("final settle time", f"{result['settle']:.2f} s"),
        ("max convergence after heal", f"{max(conv):.2f} s" if conv else "n/a"),
        ("median convergence after heal", f"{median:.2f} s" if conv else "n/a"),
        ("heals that did not converge in 30 s", str(len(soak.unconverged))),
    ]  # fmt: skip
    unexpected = [f"{s.name}: {c}" for s in slots for c in s.crashes]
    rows.append(("unexpected node exits", str(len(unexpected))))
    ok = ok and not unexpected
    for slot in slots:
        peak, growth, flat = rss_summary(slot, soak.heals)
        rows.append(
            (
                f"{slot.name}: peak RSS / RSS growth",
                f"{peak / MIB:.1f} MiB / {growth}{'' if flat else ' (grows)'}",
            )
        )
        ok = ok and flat
    width = max(len(k) for k, _ in rows)
    print(f"\n| {'measure'.ljust(width)} | value |\n|{'-' * (width + 2)}|-------|")
    for key, value in rows:
        print(f"| {key.ljust(width)} | {value} |")
    for line in result["detail"][:20]:
        print("  mismatch:", line)
    for line in unexpected:
        print("  unexpected exit:", line)
    for what in soak.unconverged:
        print("  did not converge:", what)
    print("\nsoak:", "PASS" if ok else "FAIL")
    return ok


# -------------------------------------------------------------------------------- main


@contextlib.contextmanager
def cleanup_on_signals() -> Iterator[None]:
    """Turn SIGTERM (and SIGHUP) into SystemExit so that every finally block runs."""

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=75.0, help="seconds of churn (75)")
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--clients", type=int, default=4, help="churn clients per node (4)")
    parser.add_argument("--client-crash-rate", type=float, default=0.002, help="per operation")
    parser.add_argument("--netns", action="store_true", help="nodes in network namespaces")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep-logs", action="store_true", help="keep the node logs")
    args = parser.parse_args()
    if args.seed is None:
        args.seed = random.randrange(2**32)
    netns: Netns | None = None
    if args.netns:
        why = Netns.unavailable()
        if why is not None:
            print(f"soak --netns skipped: {why}")
            return 0
        netns = Netns(args.nodes)
    log_dir = Path(tempfile.mkdtemp(prefix="soak-logs-"))
    slots: list[NodeSlot] = []
    ok = False
    with cleanup_on_signals():
        try:
            if netns is not None:
                netns.setup()
                binds = [f"tcp://{netns.cluster_ip(k)}:5550" for k in range(args.nodes)]
                clients = [f"tcp://{netns.client_ip(k)}:5560" for k in range(args.nodes)]
                prefixes = [["ip", "netns", "exec", ns] for ns in netns.names]
            else:
                binds = [f"tcp://127.0.0.1:{free_port()}" for _ in range(args.nodes)]
                clients = [f"tcp://127.0.0.1:{free_port()}" for _ in range(args.nodes)]
                prefixes = [[] for _ in range(args.nodes)]
            for k in range(args.nodes):
                slot = NodeSlot(
                    k, f"n{k}", binds[k], clients[k],
                    [b for j, b in enumerate(binds) if j != k], prefixes[k], log_dir,
                )  # fmt: skip
                slots.append(slot)
                slot.start()
            mode = "netns" if netns is not None else "loopback"
            print(
                f"soak: {args.nodes} nodes ({mode}), {args.clients} churn clients per node, "
                f"{args.duration:g} s, seed {args.seed}, logs in {log_dir}",
                flush=True,
            )
            soak = Soak(args, slots, netns)
            result = asyncio.run(soak.run())
            ok = report(soak, result, mode)
            (log_dir / "rss.json").write_text(
                json.dumps({s.name: s.rss for s in slots}, indent=None)
            )
            (log_dir / "heals.json").write_text(json.dumps(soak.heals))
        except KeyboardInterrupt:
            print("soak: interrupted")
        finally:
            for slot in slots:
                slot.kill()
            if netns is not None:
                netns.cleanup()
            if ok and not args.keep_logs:
                shutil.rmtree(log_dir, ignore_errors=True)
            elif slots:
                print(f"node logs kept in {log_dir}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

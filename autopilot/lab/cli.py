"""`autopilot lab …`: the click group mapped in autopilot/cli.py."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import click

from autopilot.lab import netns
from autopilot.lab.cluster import PROFILES, Lab, LabError, format_table

dir_option = click.option(
    "--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
    envvar="AUTOPILOT_LAB_DIR", default=".lab", show_default=True,
    help="Lab state directory (pids, logs, data); env AUTOPILOT_LAB_DIR.")


def _lab(directory: Path, need_running: bool = True) -> Lab:
    lab = Lab(directory)
    if need_running and not lab.running:
        raise click.ClickException(f"no lab is up in {lab.dir} (run `autopilot lab up redis`)")
    return lab


def _act(directory: Path, fn: Callable[[Lab], None], done: str) -> None:
    lab = _lab(directory)
    try:
        fn(lab)
    except LabError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(done)


@click.group()
def lab() -> None:
    """A whole autopilot-run cluster on this machine, and faults to inject into it.

    As root every node gets its own network namespace (ap-lab-N, address 10.231.0.1N on the
    bridge ap-lab-br0) and its own PID namespace with autopilot as PID 1; otherwise nodes
    share loopback with distinct ports (no partitions).
    """


@lab.command()
@click.argument("service", default="redis")
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(1, 9))
@click.option("--profile", type=click.Choice(sorted(PROFILES)), default="fast",
              show_default=True, help="Timing: fast = 200 ms checks, 0.8 s TTL (PostgreSQL 1.25 s), "
              "50 ms lock-delay; "
              "default = 1 s checks, 3 s TTL, 1 s lock-delay.")
@click.option("--no-loss", is_flag=True, help="Redis: min-replicas-to-write 1 (clients use "
              "WAIT 1); PostgreSQL: sync mode (synchronous_standby_names = 'ANY 1 (...)').")
@click.option("--loopback", is_flag=True, help="No namespaces, even as root.")
@click.option("--no-pidns", is_flag=True, help="Network namespaces but no PID namespaces "
              "(so `kill --only supervisor` leaves redis running).")
@click.option("--catalog-port", default=8500, show_default=True)
@click.option("--net", type=click.IntRange(0, 199), default=0, show_default=True,
              help="Lab network: 0 = ap-lab-br0, 10.231.0.0/24 (the workshop's); N = "
              "aplabN-br, 10.231.N.0/24, for labs side by side.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait until one primary and N-1 replicas are in place.")
@click.option("--timeout", default=60.0, show_default=True)
@click.option("--env", "env_pairs", multiple=True, metavar="NAME=VALUE",
              help="An extra environment variable for every node (repeatable), e.g. "
              "PG_AUTH_METHOD=scram-sha-256.")
@dir_option
def up(service: str, nodes: int, profile: str, no_loss: bool, loopback: bool, no_pidns: bool,
       catalog_port: int, net: int, wait: bool, timeout: float, env_pairs: tuple[str, ...],
       directory: Path) -> None:
    """Start the catalog and NODES autopilot-run SERVICE nodes (SERVICE: redis or
    postgres; PostgreSQL runs as the `postgres` user, --no-loss is its sync mode)."""
    env: dict[str, str] = {}
    for pair in env_pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--env")
        env[name] = value
    lab_ = _lab(directory, need_running=False)
    use_netns = netns.is_root() and not loopback
    st = lab_.state
    if lab_.running and (st.service, len(st.nodes), st.profile, st.no_loss, st.mode) == (
            service, nodes, profile, no_loss, "netns" if use_netns else "loopback") and (
            not use_netns or st.net == net):
        # the README's command already started this very lab: lab 01 picks it up from here
        click.echo(f"the same lab is already up in {lab_.dir}: using it")
        if wait:
            try:
                click.echo(format_table(lab_.wait_converged(timeout)))
            except LabError as exc:
                raise click.ClickException(str(exc)) from exc
        return
    if not netns.is_root() and not loopback:
        click.echo("not root: no namespaces; nodes run on 127.0.0.1 with distinct ports "
                   "(partition/heal unavailable)", err=True)
    try:
        lab_.up(nodes=nodes, service=service, netns_mode=use_netns, pidns=not no_pidns,
                profile=profile, no_loss=no_loss, catalog_port=catalog_port, net=net,
                env=env)
        click.echo(f"lab up in {lab_.dir}: catalog {lab_.catalog_address}, {nodes} nodes "
                   f"({lab_.state.mode}{', pid namespaces' if lab_.state.pidns else ''})")
        if wait:
            click.echo(format_table(lab_.wait_converged(timeout)))
    except LabError as exc:
        raise click.ClickException(str(exc)) from exc


@lab.command()
@click.option("--watch", is_flag=True, help="Refresh until Ctrl-C (or --count).")
@click.option("--interval", default=1.0, show_default=True)
@click.option("--count", default=0, help="With --watch: stop after this many refreshes.")
@click.option("--json", "as_json", is_flag=True)
@dir_option
def status(watch: bool, interval: float, count: int, as_json: bool, directory: Path) -> None:
    """Table of nodes: supervisor, Redis role, catalog health and tag, address, offset."""
    lab_ = _lab(directory)
    shown = 0
    try:
        while True:
            rows = lab_.status()
            if as_json:
                click.echo(json.dumps({"catalog": lab_.catalog_address,
                                       "leader": lab_.leader(), "nodes": rows}))
            else:
                if watch:
                    click.echo("\x1b[2J\x1b[H" + time.strftime("%H:%M:%S"), nl=True)
                click.echo(format_table(rows))
            shown += 1
            if not watch or (count and shown >= count):
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        return


@lab.command()
@click.option("--field", type=click.Choice(["name", "ip", "port", "address"]), default="name",
              show_default=True)
@dir_option
def primary(field: str, directory: Path) -> None:
    """Print the node whose Redis accepts writes now (exit 1 if none or several)."""
    lab_ = _lab(directory)
    rows = [r for r in lab_.status(partitions=False) if r["role"] == "primary"]
    if len(rows) != 1:
        raise click.ClickException(f"{len(rows)} writable nodes: "
                                   f"{', '.join(r['node'] for r in rows) or 'none'}")
    node = lab_.node(rows[0]["node"])
    click.echo({"name": node.name, "ip": node.ip, "port": str(node.port),
                "address": node.address}[field])


@lab.command()
@click.option("--timeout", default=30.0, show_default=True)
@dir_option
def wait(timeout: float, directory: Path) -> None:
    """Wait until the running nodes have one primary and in-sync replicas, then show them."""
    lab_ = _lab(directory)
    try:
        rows = lab_.wait_converged(timeout)
    except LabError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(format_table(rows))


@lab.command()
@click.option("--seconds", default=10.0, show_default=True, help="How long to write.")
@click.option("--wait-ms", default=0, help="WAIT 1 <ms> after every write (no-loss mode).")
@dir_option
def client(seconds: float, wait_ms: int, directory: Path) -> None:
    """Write and read for SECONDS, one line a second: who takes writes, acks, errors."""
    from autopilot.lab.workload import Member, Timeline, Workload

    lab_ = _lab(directory)
    members = [Member(n.name, n.ip, n.port) for n in lab_.state.nodes.values()]
    driver = lab_.service.driver(wait_ms)
    if lab_.state.service == "postgres":
        from autopilot.lab.pgload import create_schema

        try:
            create_schema(members, timeout=10)
        except RuntimeError as exc:
            raise click.ClickException(str(exc)) from exc
    timeline = Timeline()
    began = time.monotonic()
    wl = Workload(members, timeline, wait_ms=wait_ms, interval=0.01,
                  max_seconds=seconds + 1, driver=driver).start()
    shown = 0
    try:
        for second in range(1, int(seconds) + 1):
            time.sleep(1)
            res = wl.results
            acked = len(res.acks)
            click.echo(f"{second:>3}s  writes to {wl.current or '-':<7} acked {acked:>6}  "
                       f"errors {res.failures:>6}")
            for t, kind, detail in timeline.events[shown:]:
                if kind in ("write-error", "writes-ok", "I1-overlap"):
                    click.echo(f"      {t:6.2f}s {kind}: {detail}")
            shown = len(timeline.events)
    except KeyboardInterrupt:
        pass
    finally:
        res = wl.stop()
        ended = time.monotonic()
    seqs = [a.seq for a in res.acks]
    final = next((m for m in members if m.name == wl.current), None)
    try:
        lost: int | str = len(driver.missing(final, seqs)) if final and seqs else 0
    except Exception as exc:  # noqa: BLE001 - the last writer is gone (stopped, killed): say so
        lost = f"unknown ({type(exc).__name__}: cannot read them back)"
    click.echo(f"done: {len(seqs)} writes acknowledged, {res.failures} failed attempts, "
               f"{lost} acknowledged writes missing on {wl.current}")
    # the figure the workshop compares: how long no write was acknowledged (from the start
    # and up to the end too, so writes that never resume show as a long gap)
    times = [began, *sorted(a.t for a in res.acks), ended]
    gap = max(b - a for a, b in zip(times, times[1:], strict=False))
    click.echo(f"longest time without an acknowledged write: {gap:.2f}s")


@lab.command()
@click.argument("node")
@click.option("--only", "what", type=click.Choice(["all", "supervisor", "redis", "postgres"]),
              default="all", show_default=True)
@dir_option
def kill(node: str, what: str, directory: Path) -> None:
    """SIGKILL NODE's supervisor and redis (or only one of them); NODE `catalog` kills the
    catalog."""
    _act(directory, lambda lab_: lab_.kill(node, what), f"killed {node} ({what})")


@lab.command()
@click.argument("node")
@dir_option
def stop(node: str, directory: Path) -> None:
    """SIGTERM NODE's supervisor: a primary hands over, then the node exits."""
    _act(directory, lambda lab_: lab_.stop(node), f"stopped {node}")


@lab.command()
@click.argument("node")
@dir_option
def start(node: str, directory: Path) -> None:
    """Start NODE's supervisor again after kill or stop (NODE `catalog`: the catalog)."""
    _act(directory, lambda lab_: lab_.start(node), f"started {node}")


@lab.command()
@click.argument("node")
@dir_option
def pause(node: str, directory: Path) -> None:
    """SIGSTOP NODE's whole process tree."""
    _act(directory, lambda lab_: lab_.pause(node), f"paused {node}")


@lab.command()
@click.argument("node")
@dir_option
def resume(node: str, directory: Path) -> None:
    """SIGCONT NODE's process tree."""
    _act(directory, lambda lab_: lab_.resume(node), f"resumed {node}")


@lab.command()
@click.argument("node")
@dir_option
def partition(node: str, directory: Path) -> None:
    """Cut NODE off from the catalog only (iptables DROP inside its namespace)."""
    _act(directory, lambda lab_: lab_.partition(node), f"partitioned {node} from the catalog")


@lab.command()
@click.argument("node")
@dir_option
def heal(node: str, directory: Path) -> None:
    """Undo `partition NODE`."""
    _act(directory, lambda lab_: lab_.heal(node), f"healed {node}")


@lab.command()
@click.option("--net", type=int, default=None,
              help="Also tear down lab network N (one left behind by a lost state dir).")
@dir_option
def down(net: int | None, directory: Path) -> None:
    """Stop everything: processes, namespaces, bridge, iptables rules."""
    lab_ = _lab(directory, need_running=False)
    lab_.down(net=net)
    click.echo("lab down")

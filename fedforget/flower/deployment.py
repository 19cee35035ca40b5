"""``flwr run .`` with one SuperNode per scenario client.

Flower 1.42's ``flwr run`` starts a local SuperLink whose simulation has two
SuperNodes unless ``--federation-config "num-supernodes=N"`` says otherwise; a
fedforget scenario needs one per client. :func:`flwr_run` reads the scenario,
writes it resolved (overrides applied) to a file the ServerApp and ClientApp
load, calls ``flwr run`` with the matching SuperNode count and client resources,
and stops the local SuperLink afterwards if it started it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

import httpx

from fedforget.config import Scenario, load_scenario
from fedforget.results import check_out_dir, default_run_dir


def local_superlink_port() -> str:
    return os.environ.get("FLWR_LOCAL_SUPERLINK_HTTP_API_PORT", "39091")


def local_superlink_running() -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{local_superlink_port()}/health", timeout=0.4).is_success
    except httpx.HTTPError:
        return False


def flwr_home() -> Path:
    return Path(os.environ.get("FLWR_HOME") or Path.home() / ".flwr")


def _pids_with(*needles: str) -> list[int]:
    """Processes whose command line contains every needle (Linux /proc); a
    needle of several words must match consecutive arguments exactly."""
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        cmd = " ".join(argv)
        if all((n in cmd) if " " not in n else _has_args(argv, n.split()) for n in needles):
            pids.append(int(entry.name))
    return pids


def _has_args(argv: list[str], words: list[str]) -> bool:
    return any(argv[i : i + len(words)] == words for i in range(len(argv)))


def stop_local_superlink(home: Path | None = None, timeout_s: float = 15.0) -> list[int]:
    """Stop the local SuperLink of ``home`` (FLWR_HOME) and its SuperExec;
    returns the pids signalled."""
    log_dir = str((home or flwr_home()) / "local-superlink")
    links = _pids_with("flower-superlink", log_dir)
    execs = [p for link in links for p in _pids_with("flower-superexec", f"--parent-pid {link}")]
    pids = links + execs
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.2)
    pids_left = [p for p in pids if Path(f"/proc/{p}").exists()]
    for pid in pids_left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # exited meanwhile
            pass
    return pids


def flwr_command(app_dir: Path, scenario_file: Path, sc: Scenario, out: Path) -> list[str]:
    """The ``flwr run`` command line for a resolved scenario file."""
    flwr = Path(sys.executable).parent / "flwr"
    run_config = f'scenario="{scenario_file}" overrides="" out="{out}"'
    federation_config = (
        f"num-supernodes={sc.data.num_clients} "  # Flower wants whole CPUs here
        f"client-resources-num-cpus={max(1, round(sc.runtime.num_cpus))} "
        f"client-resources-num-gpus={float(sc.runtime.num_gpus)}"
    )
    return [str(flwr if flwr.exists() else "flwr"), "run", str(app_dir), "--federation-config", federation_config,
            "--run-config", run_config, "--stream"]


#: Lines of Flower's output that are stale here: fedforget always sets the
#: federation's SuperNode count to the scenario's clients.
STALE_FLOWER_LINES = (
    "default simulated SuperNodes changed from 10 to 2",
    "To change federation size, use the following command",
    "flwr federation simulation-config",
)


def relay(lines: Iterable[str], out: TextIO) -> None:
    """Copy ``flwr run``'s output line by line, leaving out the stale lines."""
    for line in lines:
        if not any(stale in line for stale in STALE_FLOWER_LINES):
            out.write(line)
            out.flush()


def flwr_run(
    config: str | Path,
    overrides: list[str] | None = None,
    out: str | Path | None = None,
    app_dir: str | Path = ".",
    stop_superlink: bool | None = None,
) -> Path:
    """Run a scenario through ``flwr run`` (Flower's deployment path) and
    return its run directory.

    ``stop_superlink``: stop the local SuperLink afterwards; by default only if
    this call started it.
    """
    sc = load_scenario(config, list(overrides or []))
    out = Path(out or default_run_dir(sc.name)).resolve()
    check_out_dir(out)
    app_dir = Path(app_dir).resolve()
    if not (app_dir / "pyproject.toml").exists():
        raise FileNotFoundError(f"{app_dir} has no pyproject.toml (the Flower app); run from the fedforget checkout")
    started_here = not local_superlink_running()
    env = {
        **os.environ,
        # Dependencies are installed already; Flower would otherwise fetch them with uv.
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    with tempfile.TemporaryDirectory(prefix="fedforget-flwr-") as tmp:
        scenario_file = Path(tmp) / f"{sc.name}.toml"
        scenario_file.write_text(sc.to_toml())
        try:
            proc = subprocess.Popen(flwr_command(app_dir, scenario_file, sc, out), env=env, cwd=app_dir,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
            relay(proc.stdout, sys.stdout)
            proc.wait()
        finally:
            if stop_superlink if stop_superlink is not None else started_here:
                stop_local_superlink()
    if proc.returncode != 0 or not (out / "metrics.parquet").exists():
        raise RuntimeError(
            f"`flwr run` did not complete the run (exit status {proc.returncode}; "
            f"no {out / 'metrics.parquet'}); its log is above and in {flwr_home() / 'local-superlink'}"
        )
    return out

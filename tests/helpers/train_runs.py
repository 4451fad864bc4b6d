"""Running ``train.py`` with the test callbacks of ``tests/helpers/run_callbacks.py`` inside it.

A site-packages package named ``tests`` shadows this directory in a subprocess, so the
callbacks are put on ``PYTHONPATH`` as the top-level module ``run_callbacks``:
``callback("SigtermAt", epoch=1)`` is the override list that adds one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO


def callback(name: str, **kwargs) -> list[str]:
    """Overrides adding ``run_callbacks.<name>(**kwargs)`` to a run's callbacks."""
    key = f"+callbacks.test_{name.lower()}"
    return [f"{key}._target_=run_callbacks.{name}"] + [f"{key}.{k}={v}" for k, v in kwargs.items()]


def run_train(args: list[str], timeout: int = 300, env: dict | None = None):
    """``python train.py args...`` from the repo root; the CompletedProcess (text output)."""
    path = os.pathsep.join(
        p for p in (str(REPO / "tests" / "helpers"), os.environ.get("PYTHONPATH")) if p
    )
    full_env = {**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}
    full_env.update({"PYTHONPATH": path, **(env or {})})
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def error_lines(stderr: str) -> list[str]:
    """The ``error: ...`` lines the entry point printed."""
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def probed_run(run_dir, probe: str, args: list[str], timeout: int = 300, **options):
    """``train.py args...`` into ``run_dir/run`` with the callback ``run_probes.<probe>``
    (tests/helpers/run_probes.py; ``options`` are its further arguments) writing
    ``run_dir/<probe>.json``; returns (CompletedProcess, the probe's record or None when the
    run wrote none)."""
    out = run_dir / f"{probe}.json"
    key = f"+callbacks.probe_{probe.lower()}"
    probe_args = [f"{key}._target_=run_probes.{probe}", f"{key}.out={out}"]
    probe_args += [f"{key}.{name}={value}" for name, value in options.items()]
    proc = run_train([f"hydra.run.dir={run_dir / 'run'}", *probe_args, *args], timeout=timeout)
    return proc, json.loads(out.read_text()) if out.is_file() else None

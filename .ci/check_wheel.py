"""Build the wheel, check it ships every config, and run it from outside the checkout.

Checks that the wheel holds ``lfbm_lightning/conf/train.yaml`` and every yaml of ``conf/``
(each group, ``experiment/paper/*.yaml``), installs it into a scratch directory, and from
another working directory runs ``lfbm-train --help`` and a one-epoch digits run with it.
Usage: ``python .ci/check_wheel.py`` (from the repository root, in the project's venv).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(*command: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, check=True, text=True, capture_output=True, **kwargs)


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(scratch), str(REPO))
        (wheel,) = scratch.glob("lfbm_lightning-*.whl")
        names = set(zipfile.ZipFile(wheel).namelist())
        expected = {
            "lfbm_lightning/conf/" + str(p.relative_to(REPO / "conf"))
            for p in (REPO / "conf").rglob("*.yaml")
        }
        missing = sorted(expected - names)
        assert "lfbm_lightning/conf/train.yaml" in names, "the wheel has no conf/train.yaml"
        assert any(n.startswith("lfbm_lightning/conf/experiment/paper/") for n in names)
        assert not missing, f"the wheel lacks {len(missing)} configs, e.g. {missing[:5]}"
        assert "lfbm_lightning/reporting/published_results.yaml" in names

        site = scratch / "site"
        run(
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(site),
            str(wheel),
        )
        env = {**os.environ, "PYTHONPATH": str(site)}
        work = scratch / "elsewhere"
        work.mkdir()
        lfbm_train = [str(site / "bin" / "lfbm-train")]
        page = run(*lfbm_train, "--help", cwd=work, env=env).stdout
        assert "dataset" in page and "digits" in page, page
        probe = "import lfbm_lightning; print(lfbm_lightning.CONF_DIR)"
        conf_dir = run(sys.executable, "-c", probe, cwd=work, env=env).stdout.strip()
        assert conf_dir == str(site / "lfbm_lightning" / "conf"), conf_dir
        run(
            *lfbm_train,
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1",
            "extras.print_config=false",
            f"hydra.run.dir={work / 'run'}",
            cwd=work,
            env=env,
        )
        assert (work / "run" / "checkpoints" / "last.ckpt").is_file()
        print(f"wheel ok: {wheel.name}, {len(expected)} configs, lfbm-train ran from {work}")


if __name__ == "__main__":
    main()

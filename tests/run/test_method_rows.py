"""Every method row of the paper's tables (``conf/experiment/paper/method/*.yaml``) trains on
digits through ``train.py``; the RAE run also evaluates reconstruction after fit. Checked from
the files a user gets: the status, the checkpoint's model (ABP's persistent chains, SRI's
none, the RAE's fitted mixture) and the reconstruction MSE."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import CONF, TINY
from tests.helpers.train_runs import run_train

METHODS = sorted(p.stem for p in (CONF / "experiment" / "paper" / "method").glob("*.yaml"))


@pytest.fixture(scope="module", params=METHODS)
def method_run(request, tmp_path_factory):
    """(method, run dir, CompletedProcess) of a few TINY batches of one method on digits."""
    method = request.param
    run_dir = tmp_path_factory.mktemp(method)
    args = [f"hydra.run.dir={run_dir}", f"+experiment/paper/method={method}", *TINY]
    args += ["extras.print_config=false"]
    if method == "rae":
        args += [
            "evaluate_after_fit=[reconstruction]",
            'evaluate_overrides=["device=cpu","progress=false","reconstruction.n_examples=32"]',
        ]
    return method, run_dir, run_train(args, timeout=300)


@pytest.mark.slow
def test_every_method_row_trains_on_digits(method_run):
    method, run_dir, proc = method_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    config = ckpt["hyper_parameters"]["config"]
    state = ckpt["state_dict"]
    chains = ckpt["posterior"].get("persistent_chains")
    if method == "abp":  # the original ABP: one warm-started chain per training example
        assert config["inference"]["persistent"] is True
        assert chains is not None and chains.shape[1] == config["latent_dim"]
        assert chains.shape[0] > 1000  # the training split of digits
    else:
        assert chains is None
    if method in ("vae", "two_stage_vae", "rae", "lfbm_vae"):
        assert any(k.startswith("posterior.encoder.") for k in state)
    if method == "rae":  # the mixture was fitted to the codes: no longer N(0, I)
        assert not torch.equal(state["prior.means"], torch.zeros_like(state["prior.means"]))
        weights = state["prior.weights"]
        assert weights.sum().item() == pytest.approx(1.0, abs=1e-6)
        assert metrics["evaluation"]["reconstruction"] == "completed"
        assert 0 < metrics["reconstruction/mse"] < 1.0

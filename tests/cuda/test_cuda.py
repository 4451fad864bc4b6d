"""What only a GPU exercises: device placement in training, evaluation and evaluate_after_fit,
the fast-step options (channels_last, bf16 autocast, torch.compile, CUDA graphs) against the
float32 chain, the fast fit under compile, FID features, and NCCL DDP on the devices present.
Skipped without CUDA; ``benchmarks/gpu_check.sh`` runs them (``--cpu``: a dry run on the CPU,
tests/helpers/gpu_device.py)."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from lfbm_lightning.generators import ConvTransposeGenerator
from lfbm_lightning.inference import langevin
from lfbm_lightning.inference.fit import fast_fit
from lfbm_lightning.langevin import frozen_parameters
from lfbm_lightning.metrics.fid import compute_feature_stats, frechet_distance
from lfbm_lightning.models.energy import posterior_energy_fn
from lfbm_lightning.priors import FlowPrior
from lfbm_lightning.run.training import train
from tests.conftest import TINY, compose_config, run_entry_point
from tests.helpers.gpu_device import ACCELERATOR, DEVICE, ON_CUDA, needs_device, record

pytestmark = [pytest.mark.cuda, needs_device]

D = 8
LAYERS = [[32, 4, 1, 0], [16, 4, 2, 1], [3, 4, 2, 1]]  # 16x16 RGB, the paper's block types


def setup(batch: int = 6):
    torch.manual_seed(0)
    generator = ConvTransposeGenerator(D, 3, LAYERS).to(DEVICE)
    prior = FlowPrior(D, depth=2, width=16).to(DEVICE)
    z = torch.randn(batch, D, device=DEVICE)
    with torch.no_grad():
        x = generator(torch.randn(batch, D, device=DEVICE))
    return generator, prior, x + 0.3 * torch.randn_like(x), z


def chain(energy, z0, n_steps=20, frozen=()):
    rng = torch.Generator(device=DEVICE).manual_seed(3)
    return langevin(z0, energy, n_steps, 0.1, rng=rng, frozen=frozen).z


@pytest.mark.slow
def test_training_and_evaluate_after_fit_keep_every_tensor_on_the_gpu(tmp_path):
    """During training every parameter, buffer and batch is on the device (after ``fit``
    Lightning moves the model back to the CPU, so it is recorded inside the run), and the
    tasks of evaluate_after_fit run there."""
    placement = tmp_path / "placement.json"
    cfg = compose_config(
        [
            *TINY,
            f"trainer.accelerator={ACCELERATOR}",
            "trainer.devices=1",
            "dataset.holdout_digit=9",
            "evaluate_after_fit=[reconstruction,anomaly]",
            f'evaluate_overrides=["device={DEVICE}","progress=false","++anomaly.n_steps=5"]',
            "extras.print_config=false",
            "+callbacks.placement._target_=tests.helpers.run_probes.DevicePlacement",
            f"+callbacks.placement.out={placement}",
        ],
        tmp_path,
    )
    _, metrics = train(cfg)
    seen = json.loads(placement.read_text())
    assert seen == {"parameters": [DEVICE], "batches": [DEVICE]}
    assert metrics["evaluation"] == {"reconstruction": "completed", "anomaly": "completed"}
    for task in ("reconstruction", "anomaly"):
        result = json.loads((tmp_path / "eval" / task / "metrics.json").read_text())
        assert result["device"].startswith(DEVICE), result


@pytest.mark.slow
def test_sharded_evaluation_on_the_gpu(tmp_path):
    run = tmp_path / "run"
    proc = run_entry_point(
        "train.py",
        [*TINY, f"trainer.accelerator={ACCELERATOR}", f"hydra.run.dir={run}"],
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "eval"
    processes = torch.cuda.device_count() if ON_CUDA else 1
    proc = run_entry_point(
        "evaluate.py",
        [
            f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
            "task=reconstruction",
            f"device={DEVICE}",
            f"devices={processes}",
            f"hydra.run.dir={out}",
            "progress=false",
        ],
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((out / "metrics.json").read_text())
    assert result["device"].startswith(DEVICE)
    assert result["processes"] == processes


def test_channels_last_chain_matches_float32():
    generator, prior, x, z0 = setup()
    plain = chain(posterior_energy_fn(x, generator, prior, 0.3, fast_decoder=False), z0)
    fast_gen = copy.deepcopy(generator).to(memory_format=torch.channels_last)
    fast = chain(posterior_energy_fn(x, fast_gen, prior, 0.3), z0, frozen=(fast_gen, prior))
    assert (fast - plain).abs().max() < 1e-3  # TF32 convolutions allowed


def test_bf16_autocast_chain_stays_close_to_float32():
    generator, prior, x, z0 = setup()
    ref = chain(posterior_energy_fn(x, generator, prior, 0.3), z0)
    energy = posterior_energy_fn(x, generator, prior, 0.3, autocast_dtype=torch.bfloat16)
    low = chain(energy, z0)
    assert (low - ref).abs().max() < 5e-2 < (ref - z0).abs().max()


@pytest.mark.parametrize("mode", [True, "reduce-overhead"], ids=["compile", "cuda-graphs"])
def test_compiled_chain_matches_eager(mode):
    generator, prior, x, z0 = setup()
    ref = chain(posterior_energy_fn(x, generator, prior, 0.3), z0, frozen=(generator, prior))
    compiled = posterior_energy_fn(x, generator, prior, 0.3, compile=mode)
    fast = chain(compiled, z0, frozen=(generator, prior))
    assert (fast - ref).abs().max() < 1e-3


@pytest.mark.parametrize("mode", [True, "reduce-overhead"], ids=["compile", "cuda-graphs"])
def test_fast_fit_under_compile_matches_eager(mode):
    """The L-BFGS fit (its line search runs E again at the same and at fewer rows, where
    CUDA graphs replay and overwrite their outputs) ends where the eager fit ends."""
    generator, prior, x, z0 = setup(batch=8)

    def energy_of(compile):
        def of(rows):
            return posterior_energy_fn(x[rows], generator, prior, 0.3, compile=compile)

        return of

    with frozen_parameters((generator, prior)):
        eager = fast_fit(z0, energy_of(False), max_passes=60)
        compiled = fast_fit(z0, energy_of(mode), max_passes=60)
    gap = float((compiled.z - eager.z).abs().max())
    name = "compile" if mode is True else "cuda_graphs"
    record(f"fast_fit_{name}", {"max_z_gap": gap, "passes": compiled.passes.tolist()})
    assert gap < 1e-2
    assert (compiled.passes - eager.passes).abs().max() <= 2


def test_fid_features_on_the_device(tmp_path):
    """Inception features of the same images on the device and on the CPU give the same
    statistics (random weights, as in the metric tests)."""
    from tests.metrics.conftest import _random_inception_state_dict

    weights = tmp_path / "random-inception.pth"
    torch.save(_random_inception_state_dict(seed=0), weights)
    images = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    here = compute_feature_stats(images, str(weights), batch_size=8, device=DEVICE)
    cpu = compute_feature_stats(images, str(weights), batch_size=8, device="cpu")
    mu_gap = float(abs(here.mu - cpu.mu).max() / abs(cpu.mu).max())
    sigma_gap = float(abs(here.sigma - cpu.sigma).max() / abs(cpu.sigma).max())
    fid = frechet_distance(here, cpu)
    record("fid_features", {"mu_gap": mu_gap, "sigma_gap": sigma_gap, "fid_vs_cpu": fid})
    assert mu_gap < 1e-2 and sigma_gap < 1e-2


@pytest.mark.slow
def test_nccl_ddp_trains_on_every_device(tmp_path):
    devices = torch.cuda.device_count()
    if not ON_CUDA or devices < 2:
        pytest.skip("NCCL DDP needs 2 or more GPUs")
    proc = run_entry_point(
        "train.py",
        [
            *TINY,
            "trainer.accelerator=gpu",
            f"trainer.devices={devices}",
            "trainer.strategy=ddp",
            f"hydra.run.dir={tmp_path}",
            "extras.print_config=false",
        ],
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "metrics.json").read_text())
    assert result["status"] == "completed"
    assert (tmp_path / f"train_rank{devices - 1}.log").is_file()

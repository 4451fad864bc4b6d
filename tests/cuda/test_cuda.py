"""What only a GPU exercises: device placement in training, evaluation and evaluate_after_fit,
the fast-step options (channels_last, bf16 autocast, torch.compile, CUDA graphs) against the
float32 chain on CUDA, and NCCL DDP on the devices present. Skipped without CUDA; run them
with ``benchmarks/gpu_check.sh``."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from lfbm_lightning.generators import ConvTransposeGenerator
from lfbm_lightning.inference import langevin
from lfbm_lightning.models.energy import posterior_energy_fn
from lfbm_lightning.priors import FlowPrior
from lfbm_lightning.run.training import train
from tests.conftest import TINY, compose_config, run_entry_point

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

D = 8
LAYERS = [[32, 4, 1, 0], [16, 4, 2, 1], [3, 4, 2, 1]]  # 16x16 RGB, the paper's block types


def setup(batch: int = 6):
    torch.manual_seed(0)
    generator = ConvTransposeGenerator(D, 3, LAYERS).cuda()
    prior = FlowPrior(D, depth=2, width=16).cuda()
    z = torch.randn(batch, D, device="cuda")
    with torch.no_grad():
        x = generator(torch.randn(batch, D, device="cuda"))
    return generator, prior, x + 0.3 * torch.randn_like(x), z


def chain(energy, z0, n_steps=20, frozen=()):
    rng = torch.Generator(device="cuda").manual_seed(3)
    return langevin(z0, energy, n_steps, 0.1, rng=rng, frozen=frozen).z


def on_cuda(module: torch.nn.Module) -> list[str]:
    """Names of the parameters and buffers of ``module`` that are not on a CUDA device."""
    tensors = [*module.named_parameters(), *module.named_buffers()]
    return [name for name, t in tensors if t.device.type != "cuda"]


def test_training_and_evaluate_after_fit_keep_every_tensor_on_the_gpu(tmp_path):
    cfg = compose_config(
        [
            *TINY,
            "trainer.accelerator=gpu",
            "trainer.devices=1",
            "dataset.holdout_digit=9",
            "evaluate_after_fit=[reconstruction,anomaly]",
            'evaluate_overrides=["device=cuda","progress=false","anomaly.n_steps=5"]',
            "extras.print_config=false",
        ],
        tmp_path,
    )
    model, metrics = train(cfg)
    assert on_cuda(model) == []
    assert metrics["evaluation"] == {"reconstruction": "completed", "anomaly": "completed"}
    for task in ("reconstruction", "anomaly"):
        record = json.loads((tmp_path / "eval" / task / "metrics.json").read_text())
        assert record["device"].startswith("cuda"), record


def test_sharded_evaluation_on_the_gpu(tmp_path):
    run = tmp_path / "run"
    proc = run_entry_point(
        "train.py",
        [*TINY, "trainer.accelerator=gpu", f"paths.output_dir={run}", "extras.print_config=false"],
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "eval"
    proc = run_entry_point(
        "evaluate.py",
        [
            f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
            "task=reconstruction",
            "device=cuda",
            f"devices={torch.cuda.device_count()}",
            f"hydra.run.dir={out}",
            "progress=false",
        ],
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((out / "metrics.json").read_text())
    assert record["device"].startswith("cuda")
    assert record["processes"] == torch.cuda.device_count()


def test_channels_last_chain_matches_float32_on_cuda():
    generator, prior, x, z0 = setup()
    plain = chain(posterior_energy_fn(x, generator, prior, 0.3, fast_decoder=False), z0)
    fast_gen = copy.deepcopy(generator).to(memory_format=torch.channels_last)
    fast = chain(posterior_energy_fn(x, fast_gen, prior, 0.3), z0, frozen=(fast_gen, prior))
    assert (fast - plain).abs().max() < 1e-3  # TF32 convolutions allowed


def test_bf16_autocast_chain_stays_close_to_float32_on_cuda():
    generator, prior, x, z0 = setup()
    ref = chain(posterior_energy_fn(x, generator, prior, 0.3), z0)
    energy = posterior_energy_fn(x, generator, prior, 0.3, autocast_dtype=torch.bfloat16)
    low = chain(energy, z0)
    assert (low - ref).abs().max() < 5e-2 < (ref - z0).abs().max()


@pytest.mark.parametrize("mode", [True, "reduce-overhead"], ids=["compile", "cuda-graphs"])
def test_compiled_chain_matches_eager_on_cuda(mode):
    generator, prior, x, z0 = setup()
    ref = chain(posterior_energy_fn(x, generator, prior, 0.3), z0, frozen=(generator, prior))
    compiled = posterior_energy_fn(x, generator, prior, 0.3, compile=mode)
    fast = chain(compiled, z0, frozen=(generator, prior))
    assert (fast - ref).abs().max() < 1e-3


def test_nccl_ddp_trains_on_every_device(tmp_path):
    devices = torch.cuda.device_count()
    if devices < 2:
        pytest.skip("NCCL DDP needs 2 or more GPUs")
    proc = run_entry_point(
        "train.py",
        [
            *TINY,
            "trainer.accelerator=gpu",
            f"trainer.devices={devices}",
            "trainer.strategy=ddp",
            f"paths.output_dir={tmp_path}",
            "extras.print_config=false",
        ],
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert (tmp_path / f"train_rank{devices - 1}.log").is_file()

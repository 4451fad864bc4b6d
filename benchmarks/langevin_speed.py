"""Cost of a posterior Langevin step and of a training iteration, against the floor and a
reference-style loop (issue 9, parts 1, 2 and 4). Not a test: it prints numbers.

For the paper's SVHN, CIFAR-10 and CelebA 64 settings (the real ``dataset=...`` configs), on
random data at batch 100 (``--batch``), it times in one process, interleaved, ``--repeats``
rounds each, and reports medians of:

- ``floor``: the default eager generator (contiguous, parameters requiring grad), one forward
  plus one backward to z of ||x - g(z)||^2 / (2 sigma^2), the way the issue defines the floor;
- ``ours``: a step of our chain, ``LatentPriorModel.infer`` with the default inference options
  (``conf/inference/langevin.yaml``), per step over ``--steps`` steps;
- ``reference``: the same math structured like the authors' code: two ``autograd.grad`` calls
  per step (likelihood, then prior), log|det W| recomputed at every call, parameters requiring
  grad, ``.item()`` logging every 5 steps (as their verbose chain does);
- option variants of ours (``--options``): each fast-step option switched against the default;
- training iterations (``--train-k`` chain steps, then the update): ours through a real
  Lightning ``Trainer`` on ``LatentPriorModel.training_step``; the reference as a plain loop
  with two backward passes, two Adam steps and per-parameter ``.item()`` logging of gradient
  norms. The table also extrapolates both to the setting's K: iter(k) + (K - k) * step;
- distance to the ceiling: ``gflops``, each step unit's achieved GFLOP/s (the FLOPs of the
  generator forward plus backward to z, counted by ``torch.utils.flop_counter``, over its
  median time), and ``of_matmul``, that rate over the GFLOP/s of a 2048 x 2048 float32 matmul
  measured in the same run (``matmul_gflops``), on CPU and on CUDA;
- peak memory: max-RSS growth of one step / one iteration, each in a fresh subprocess
  (``resource.getrusage``; on CUDA ``torch.cuda.max_memory_allocated``).

On CUDA the option variants also include bf16 autocast, ``torch.compile`` and CUDA graphs
(``torch.compile(mode="reduce-overhead")``), reported as separate rows.

``--throughput`` instead measures evaluation throughput (part 4): images/s of test-set
reconstruction (``LatentPriorModel.reconstruct`` with its default step count: ``eval_steps``
noise-free steps, or ``eval_refine_steps`` from the encoder, then a decode) and of sampling,
for each batch size of ``--batches``. Reconstruction at the full step count is extrapolated
from ``--steps`` timed steps for the paper settings, and measured end to end for ``digits``.
``--override`` adds Hydra overrides, e.g. ``--override inference=fast``.

Run from the repository root, e.g.:
    python benchmarks/langevin_speed.py --threads 2
    python benchmarks/langevin_speed.py --settings cifar10 --batch 20 --repeats 3
    python benchmarks/langevin_speed.py --throughput --settings digits svhn
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from lfbm_lightning import CONF_DIR  # noqa: E402
from lfbm_lightning.langevin import frozen_parameters, langevin  # noqa: E402
from lfbm_lightning.models import LatentPriorModel  # noqa: E402
from lfbm_lightning.models.energy import posterior_energy_fn, reconstruction_energy  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
PAPER_SETTINGS = ("svhn", "cifar10", "celeba")

OPTION_VARIANTS: dict[str, dict[str, Any]] = {
    "ours, contiguous": {"channels_last": False},
    "ours + bf16 autocast": {"autocast": "bfloat16"},
    "ours + compile": {"compile": True},
}
"""Each ``conf/inference`` fast-step option flipped against our default."""

CUDA_VARIANTS: dict[str, dict[str, Any]] = {
    "ours + compile (CUDA graphs)": {"compile": "reduce-overhead"},
}

ABLATIONS: dict[str, dict[str, bool]] = {
    "ours, conv stem": {"fast_decoder": False},
    "ours, not frozen": {"frozen": False},
}
"""The two switches that are always on in the model, turned off one at a time: the GEMM stem
of ``latent_decoder`` and the frozen parameters of ``langevin``."""


# ----------------------------------------------------------------------------- setup
def run_config(setting: str, overrides: list[str] = ()) -> dict[str, Any]:
    """The resolved training config of ``dataset=<setting>`` (the paper's settings)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"dataset={setting}", "paths.output_dir=/tmp/lfbm_bench", *overrides],
        )
    return OmegaConf.to_container(cfg, resolve=True)


def synchronize(device: torch.device) -> None:
    """Wait for queued device work (CUDA), so that wall-clock covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Setting:
    """One paper setting: our model, a default eager copy of its networks, random data.

    Args:
        name: ``svhn``, ``cifar10``, ``celeba`` (or ``digits``).
        batch: batch size of the random data.
        device: where everything runs.
        train_k: chain steps of the timed training iterations.
        overrides: more Hydra overrides (e.g. ``inference=fast``).
    """

    def __init__(
        self,
        name: str,
        batch: int,
        device: torch.device,
        train_k: int,
        overrides: list[str] = (),
    ) -> None:
        self.name = name
        self.device = device
        self.config = run_config(name, [f"inference.n_steps={train_k}", *overrides])
        self.paper_k = int(run_config(name)["inference"]["n_steps"])
        torch.manual_seed(0)
        self.model = LatentPriorModel(self.config).to(device)
        self.sigma = self.model.sigma
        self.step_size = float(self.config["inference"]["step_size"])
        shape = (batch, self.config["dataset"]["channels"], *[self.image_size] * 2)
        gen = torch.Generator().manual_seed(1)
        self.x = (torch.rand(shape, generator=gen) * 2 - 1).to(device)
        self.z0 = torch.randn(batch, self.model.latent_dim, generator=gen).to(device)
        # the reference: default eager modules, contiguous, parameters requiring grad
        self.ref_generator = copy.deepcopy(self.model.generator).to(
            memory_format=torch.contiguous_format
        )
        self.ref_prior = copy.deepcopy(self.model.prior)

    @property
    def image_size(self) -> int:
        return int(self.config["dataset"]["image_size"])

    def variant(self, options: dict[str, Any]) -> LatentPriorModel:
        """Our model with the same weights and some ``inference`` options changed."""
        config = copy.deepcopy(self.config)
        config["inference"].update(options)
        model = LatentPriorModel(config).to(self.device)
        model.load_state_dict(self.model.state_dict())
        return model


# ----------------------------------------------------------------------------- timed units
def floor(s: Setting) -> None:
    """The default eager generator's forward plus backward to z (the issue's floor)."""
    z = s.z0.detach().requires_grad_(True)
    energy = reconstruction_energy(s.x, s.ref_generator(z), s.sigma)
    torch.autograd.grad(energy.sum(), z)


def step_flops(s: Setting) -> int:
    """FLOPs of one step, counted by ``torch.utils.flop_counter`` on :func:`floor` (the
    generator forward plus the backward to z; convolutions and matmuls, 2 FLOPs per MAC)."""
    z = s.z0.detach().requires_grad_(True)
    # .backward() with frozen weights: the counter's module hooks refuse autograd.grad
    with frozen_parameters([s.ref_generator]), FlopCounterMode(display=False) as counter:
        reconstruction_energy(s.x, s.ref_generator(z), s.sigma).sum().backward()
    return int(counter.get_total_flops())


def matmul_gflops(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """The machine's ceiling in this run: GFLOP/s of an (n, n) x (n, n) float32 matmul
    (2 n^3 FLOPs), median of ``repeats`` after one warm-up."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    seconds = interleaved({"matmul": (lambda: a @ b, 1)}, repeats, device)["matmul"]
    return 2 * n**3 / seconds / 1e9


def our_chain(model: LatentPriorModel, s: Setting, n_steps: int) -> torch.Tensor:
    """``n_steps`` steps of our posterior chain from the setting's z0."""
    return model.infer(s.x, n_steps=n_steps, z0=s.z0).z


def reference_chain(s: Setting, n_steps: int, log: dict[str, float]) -> torch.Tensor:
    """The authors' chain structure (LEBM/LFBM ``sample_langevin_post_z``): per step one
    ``autograd.grad`` for the likelihood and one for the prior, ``z.data`` updates,
    log|det W| recomputed inside the prior at every call, ``.item()`` logging every 5 steps."""
    z = s.z0.clone()
    z.requires_grad = True
    for i in range(n_steps):
        x_hat = s.ref_generator(z)
        g_log_lkhd = ((x_hat - s.x) ** 2).sum() / (2.0 * s.sigma**2)
        z_grad_g = torch.autograd.grad(g_log_lkhd, z)[0]
        en = -s.ref_prior.log_prob(z)
        z_grad_e = torch.autograd.grad(en.sum(), z)[0]
        z.data = z.data - 0.5 * s.step_size**2 * (z_grad_g + z_grad_e)
        z.data += s.step_size * torch.randn_like(z).data
        if i % 5 == 0 or i == n_steps - 1:
            log[f"step{i}"] = (g_log_lkhd.item(), en.sum().item(), z_grad_g.mean().item())
    return z.detach()


class ReferenceTrainer:
    """The authors' training iteration: chain, then generator and prior updates, each with its
    own backward and Adam (betas (0.5, 0.999)), then per-parameter ``.item()`` logging."""

    def __init__(self, s: Setting, k: int) -> None:
        self.s, self.k = s, k
        lr = float(s.config["model"]["lr_generator"])
        self.opt_g = torch.optim.Adam(s.ref_generator.parameters(), lr=lr, betas=(0.5, 0.999))
        self.opt_e = torch.optim.Adam(s.ref_prior.parameters(), lr=lr, betas=(0.5, 0.999))
        self.log: dict[str, Any] = {}

    def iteration(self) -> None:
        s = self.s
        z = reference_chain(s, self.k, self.log)
        self.opt_g.zero_grad()
        loss_g = ((s.ref_generator(z) - s.x) ** 2).sum() / s.x.shape[0]
        loss_g.backward()
        self.opt_g.step()
        self.opt_e.zero_grad()
        loss_e = -s.ref_prior.log_prob(z).mean()
        loss_e.backward()
        self.opt_e.step()
        for name, p in [*s.ref_generator.named_parameters(), *s.ref_prior.named_parameters()]:
            self.log[name] = p.grad.norm().item()
        self.log["loss_g"], self.log["loss_e"] = loss_g.item(), loss_e.item()


class LightningIterations:
    """Our training iteration, timed inside a real ``Trainer.fit`` of ``LatentPriorModel``.

    Each call fits two batches of the setting's data (fresh Trainer, no logger, no validation)
    and returns the wall-clock of the second ``training_step`` (the first pays for the Adam
    state and the loop's start-up). It trains a copy of the model: a ``Trainer`` moves the
    model it fitted back to the CPU, and the other units run the shared model on the device.
    """

    def __init__(self, model: LatentPriorModel, s: Setting) -> None:
        import pytorch_lightning as pl

        self.pl, self.model, self.s = pl, copy.deepcopy(model), s
        batch = {"image": s.x.cpu(), "index": torch.arange(s.x.shape[0])}
        self.loader = torch.utils.data.DataLoader([batch, batch], batch_size=None)

    def __call__(self) -> float:
        times: list[float] = []
        device = self.s.device

        class Timer(self.pl.Callback):
            def on_train_batch_start(self, *args: Any) -> None:
                synchronize(device)
                self.t0 = time.perf_counter()

            def on_train_batch_end(self, *args: Any) -> None:
                synchronize(device)
                times.append(time.perf_counter() - self.t0)

        trainer = self.pl.Trainer(
            accelerator=device.type if device.type != "cuda" else "gpu",
            devices=1,
            max_epochs=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            callbacks=[Timer()],
        )
        trainer.fit(self.model, train_dataloaders=self.loader)
        return times[-1]


class BareIteration:
    """Our iteration's work without Lightning: ``k`` steps of the model's chain, its generator
    and prior losses, one backward and the Adams of ``configure_optimizers``. Against
    ``ours iteration`` it isolates what the ``Trainer`` itself holds (memory probes only)."""

    def __init__(self, model: LatentPriorModel, s: Setting, k: int) -> None:
        self.model, self.s, self.k = model, s, k
        self.optimizers, _ = model.configure_optimizers()

    def __call__(self) -> None:
        m, x, rng = self.model, self.s.x, torch.Generator(device=self.s.device)
        z = m.infer(x, n_steps=self.k, z0=self.s.z0, rng=rng).z
        loss = reconstruction_energy(x, m.generator(z), m.sigma).mean() + m.prior.loss(z, rng)
        for opt in self.optimizers:
            opt.zero_grad()
        loss.backward()
        for opt in self.optimizers:
            opt.step()


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall-clock seconds of fn(); a float returned by fn is taken as its own measurement."""
    synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    synchronize(device)
    return out if isinstance(out, float) else time.perf_counter() - t0


def interleaved(
    units: dict[str, tuple[Callable[[], Any], int]], repeats: int, device: torch.device
) -> dict[str, float]:
    """Median seconds per unit of work: every callable once to warm up, then ``repeats``
    rounds calling each once, in alternating order. ``units`` maps a name to (callable,
    number of units it performs, e.g. Langevin steps)."""
    for fn, _ in units.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in units}
    names = list(units)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            fn, n = units[name]
            samples[name].append(timed(fn, device) / n)
    return {name: statistics.median(v) for name, v in samples.items()}


# ----------------------------------------------------------------------------- variants
def option_models(s: Setting, cuda: bool) -> dict[str, LatentPriorModel]:
    """Our default model and one model per option variant (same weights)."""
    variants = {**OPTION_VARIANTS, **(CUDA_VARIANTS if cuda else {})}
    return {"ours": s.model, **{name: s.variant(opts) for name, opts in variants.items()}}


def ablation_chain(s: Setting, n_steps: int, fast_decoder: bool = True, frozen: bool = True):
    """Our default chain, built from its parts, with one always-on switch turned off."""
    m = s.model
    energy = posterior_energy_fn(s.x, m.generator, m.prior, m.sigma, fast_decoder=fast_decoder)
    modules = (m.generator, m.prior) if frozen else ()
    return langevin(s.z0, energy, n_steps, s.step_size, rng=m.langevin_rng(), frozen=modules).z


# ----------------------------------------------------------------------------- memory
def _rss_mb(field: str) -> float:
    """A field of /proc/self/status (VmRSS: resident now, VmHWM: peak) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def twice(fn: Callable[[], Any]) -> Callable[[], None]:
    """fn called two times (the memory probes compare two iterations with two)."""
    return lambda: [fn() for _ in range(2)] and None


def memory_probe(setting: str, unit: str, batch: int, train_k: int, device: str) -> float:
    """Peak memory growth (MiB) of one unit of work, measured in this (fresh) process.

    CPU: the peak resident set while the unit runs minus the resident set before it. On Linux
    the peak is reset first (``/proc/self/clear_refs``), so the set-up's own peak cannot hide
    the unit's; elsewhere it is the growth of ``getrusage``'s max RSS. Iteration units run two
    iterations (the first creates the Adam states), ours in a ``Trainer`` and without.
    """
    dev = torch.device(device)
    s = Setting(setting, batch, dev, train_k)
    work: dict[str, Callable[[], Any]] = {
        "floor": lambda: floor(s),
        "ours step": lambda: our_chain(s.model, s, 1),
        "reference step": lambda: reference_chain(s, 1, {}),
        # two iterations each: a LightningIterations call fits two batches
        "ours iteration": LightningIterations(s.model, s),
        "ours iteration, no Trainer": twice(BareIteration(s.model, s, train_k)),
        "reference iteration": twice(ReferenceTrainer(s, train_k).iteration),
    }
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        work[unit]()
        torch.cuda.synchronize(dev)
        return (torch.cuda.max_memory_allocated(dev) - base) / 2**20
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        base = _rss_mb("VmRSS")
        work[unit]()
        return _rss_mb("VmHWM") - base
    except OSError:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        work[unit]()
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024  # KiB


def measure_memory(setting: str, args: argparse.Namespace) -> dict[str, float]:
    """Run :func:`memory_probe` for every unit, each in a fresh subprocess."""
    out = {}
    units = ("floor", "ours step", "reference step", "ours iteration", "reference iteration")
    for unit in (*units, "ours iteration, no Trainer"):
        cmd = [
            sys.executable,
            __file__,
            "--memory-probe",
            unit,
            "--settings",
            setting,
            "--batch",
            str(args.batch),
            "--train-k",
            str(args.train_k),
            "--threads",
            str(args.threads),
            "--device",
            args.device,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO)
        out[unit] = float(done.stdout.strip().splitlines()[-1])
    return out


# ----------------------------------------------------------------------------- reports
def speed(setting: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Time every unit of one setting; returns the table rows."""
    device = torch.device(args.device)
    s = Setting(setting, args.batch, device, args.train_k)
    n = args.steps
    models = option_models(s, device.type == "cuda") if args.options else {"ours": s.model}
    units: dict[str, tuple[Callable[[], Any], int]] = {"floor": (lambda: floor(s), 1)}
    for name, model in models.items():
        units[name] = (lambda m=model: our_chain(m, s, n), n)
    if args.options:
        for name, switches in ABLATIONS.items():
            units[name] = (lambda sw=switches: ablation_chain(s, n, **sw), n)
    units["reference"] = (lambda: reference_chain(s, n, {}), n)
    if args.train_k > 0:
        units["ours iteration"] = (LightningIterations(s.model, s), 1)
        units["reference iteration"] = (ReferenceTrainer(s, args.train_k).iteration, 1)
    t = interleaved(units, args.repeats, device)
    flops, ceiling = step_flops(s), matmul_gflops(device)
    memory = measure_memory(setting, args) if args.memory else {}
    rows = []
    for name, seconds in t.items():
        row = {"setting": setting, "unit": name, "seconds": seconds}
        if "iteration" in name:
            step = t["ours" if name.startswith("ours") else "reference"]
            row["seconds_at_paper_k"] = seconds + (s.paper_k - args.train_k) * step
            row["vs_reference"] = seconds / t["reference iteration"]
        else:
            row["vs_floor"] = seconds / t["floor"]
            row["vs_reference"] = seconds / t["reference"]
            row["gflops"] = flops / seconds / 1e9  # the step's counted FLOPs per second
            row["of_matmul"] = row["gflops"] / ceiling  # fraction of the matmul ceiling
            row["matmul_gflops"] = ceiling
        unit_for_memory = {"ours": "ours step", "reference": "reference step"}.get(name, name)
        if unit_for_memory in memory:
            row["peak_mb"] = memory[unit_for_memory]
        rows.append(row)
    if "ours iteration, no Trainer" in memory:  # a memory probe only, not timed
        unit = "ours iteration, no Trainer"
        rows.append({"setting": setting, "unit": unit, "peak_mb": memory[unit]})
    return rows


def throughput(setting: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Images/s of reconstruction and sampling for each batch size of ``--batches``."""
    device = torch.device(args.device)
    rows = []
    for batch in args.batches:
        s = Setting(setting, batch, device, 1, args.override)
        model = s.model.eval()
        eval_steps = model.eval_chain_steps  # the default reconstruction's step count
        full = setting == "digits" or eval_steps <= args.steps
        n = eval_steps if full else args.steps
        units = {
            "rec": (lambda m=model, x=s.x, k=n: m.reconstruct(x, n_steps=k), 1),
            "sample": (lambda m=model, b=batch: m.sample_images(b), 1),
        }
        t = interleaved(units, args.repeats, device)
        rec_seconds = t["rec"] if full else t["rec"] / n * eval_steps
        rows.append(
            {
                "setting": " ".join([setting, *args.override]),
                "batch": batch,
                "eval_steps": eval_steps,
                "reconstruction_extrapolated": not full,
                "reconstruction_images_per_s": batch / rec_seconds,
                "sampling_images_per_s": batch / t["sample"],
            }
        )
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    print(" | ".join(keys))
    for row in rows:
        cells = []
        for k in keys:
            v = row.get(k, "")
            cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        print(" | ".join(cells))


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def machine() -> dict[str, Any]:
    """CPU model, thread count, load average: printed with every result."""
    model = "unknown"
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "load_1_5_15": os.getloadavg(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def quiet() -> None:
    """Silence Lightning's per-fit banners and the known warnings of the timed fits."""
    import logging
    import warnings

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def main() -> None:
    quiet()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", nargs="+", default=list(PAPER_SETTINGS))
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--steps", type=int, default=2, help="Langevin steps per timing")
    parser.add_argument("--train-k", type=int, default=2, help="chain steps of an iteration")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-options", dest="options", action="store_false")
    parser.add_argument("--no-memory", dest="memory", action="store_false")
    parser.add_argument("--throughput", action="store_true", help="part 4 instead of 1-2")
    parser.add_argument("--batches", type=int, nargs="+", default=[25, 50, 100, 200, 400])
    parser.add_argument("--override", nargs="*", default=[], help="Hydra overrides")
    parser.add_argument("--out", type=Path, default=None, help="CSV path")
    parser.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_probe:
        print(
            memory_probe(
                args.settings[0], args.memory_probe, args.batch, args.train_k, args.device
            )
        )
        return
    info = machine()
    print(json.dumps(info))
    rows = []
    for setting in args.settings:
        new = throughput(setting, args) if args.throughput else speed(setting, args)
        print_table(new)
        if args.throughput:
            for kind in ("reconstruction", "sampling"):
                best = max(new, key=lambda r, k=kind: r[f"{k}_images_per_s"])
                print(f"fastest batch for {kind}: {best['batch']}")
        rows += new
    info["load_after"] = os.getloadavg()
    kind = "throughput" if args.throughput else "speed"
    out = args.out or RESULTS / f"langevin_{kind}_{args.device}_b{args.batch}.csv"
    write_csv(
        [{**row, "threads": args.threads, "load_start": info["load_1_5_15"][0]} for row in rows],
        out,
    )
    print(f"machine: {json.dumps(info)}\nwrote {out}")


if __name__ == "__main__":
    main()

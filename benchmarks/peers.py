"""Against peers: the Hugging Face diffusion course's diffusers UNet2DModel (training speed, and quality at equal
training CPU-minutes) and the seed tutorial's bare training loop. diffusers is a benchmark-only dependency:
`pip install -r benchmarks/requirements.txt`."""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.core import BenchError, Param, alternate, case, median
from benchmarks.quality import scores


def course_unet():
    """UNet2DModel as the HF diffusion course (unit 1) configures it for MNIST: about 1.7M parameters."""
    try:
        from diffusers import UNet2DModel
    except ImportError:
        raise BenchError(
            "the peers suite compares against diffusers, which is not installed: "
            "pip install -r benchmarks/requirements.txt"
        ) from None
    return UNet2DModel(
        sample_size=28,
        in_channels=1,
        out_channels=1,
        layers_per_block=2,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    )


class CourseTrainer:
    """The course's training: cosine DDPM schedule (1000 steps), eps MSE, AdamW at lr 4e-4, no EMA."""

    def __init__(self, seed: int):
        import torch
        from diffusers import DDPMScheduler

        torch.manual_seed(seed)
        self.net, self.scheduler = course_unet().train(), DDPMScheduler(1000, beta_schedule="squaredcos_cap_v2")
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=4e-4)
        self.generator = torch.Generator().manual_seed(seed + 1)

    def step(self, x0) -> float:
        import torch
        import torch.nn.functional as F

        eps = torch.randn(x0.shape, generator=self.generator)
        t = torch.randint(0, 1000, (len(x0),), generator=self.generator)
        loss = F.mse_loss(self.net(self.scheduler.add_noise(x0, eps, t), t, return_dict=False)[0], eps)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.item()

    def sample(self, net, n: int, steps: int = 50):
        """n digits by DDIM (eta 0) in 50 steps, as the course samples, uint8 (n, 28, 28)."""
        import torch
        from diffusers import DDIMScheduler

        from mnist_diffusion.data import to_uint8

        ddim = DDIMScheduler.from_config(self.scheduler.config)
        ddim.set_timesteps(steps)
        x = torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            for t in ddim.timesteps:
                x = ddim.step(net(x, t, return_dict=False)[0], t, x).prev_sample
        return to_uint8(x, "signed")


@case(
    "peers.unet",
    threads=Param((2, 1), quick=(1,)),
    batch=Param(128, quick=16),
    steps=Param(3, quick=1),
    rounds=Param(5, quick=1),
)
def unet(threads, batch, steps, rounds):
    """Training steps (forward, backward, AdamW) of the project's default U-Net against the course's
    UNet2DModel on the same batch and threads: images/s and images per CPU-second."""
    import torch

    from mnist_diffusion.config import ModelConfig
    from mnist_diffusion.models.unet import UNet

    g = torch.Generator().manual_seed(0)
    x, target = torch.randn(batch, 1, 28, 28, generator=g), torch.randn(batch, 1, 28, 28, generator=g)
    t, labels = torch.randint(0, 1000, (batch,), generator=g), torch.randint(0, 10, (batch,), generator=g)
    for n in threads:
        torch.set_num_threads(n)
        torch.manual_seed(0)
        nets = {"ours": UNet(ModelConfig(num_classes=10)), "diffusers UNet2DModel": course_unet()}
        calls = {"ours": lambda net: net(x, t.float(), labels), "diffusers UNet2DModel": lambda net: net(x, t).sample}
        opts = {k: torch.optim.AdamW(net.parameters(), lr=1e-4) for k, net in nets.items()}
        cpu: dict[str, list[float]] = {k: [] for k in nets}

        def train(k, nets=nets, calls=calls, opts=opts, cpu=cpu):
            c0 = time.process_time()
            for _ in range(steps):
                loss = (calls[k](nets[k]) - target).pow(2).mean()
                opts[k].zero_grad(set_to_none=True)
                loss.backward()
                opts[k].step()
            cpu[k].append(time.process_time() - c0)

        seconds = alternate({k: (lambda k=k: train(k)) for k in nets}, rounds, warmup=1)
        for k, net in nets.items():
            yield (
                {"threads": n, "model": k},
                {
                    "images_per_s": batch * steps / median(seconds[k]),
                    "images_per_cpu_s": batch * steps / statistics.median(cpu[k][1:]),
                    "parameters": sum(p.numel() for p in net.parameters()),
                    "ours_over_peer": median(seconds["diffusers UNet2DModel"]) / median(seconds["ours"]),
                },
            )


@case(
    "peers.budget",
    budget=Param((5.0, 10.0, 20.0), quick=(0.05,), help="training CPU-minutes per snapshot"),
    n=Param(500, quick=50, help="samples per snapshot"),
    seed=Param(0),
)
def budget(budget, n, seed):
    """Quality at equal training compute: our ddpm-cond recipe and the course's model, each trained on one
    thread, snapshotted when its process CPU time passes each budget, N samples each (ours guided, labels 0-9;
    the peer unconditional, DDIM 50 steps) scored by the evaluator."""
    import torch

    from mnist_diffusion.config import with_changes
    from mnist_diffusion.data import load_split, to_float
    from mnist_diffusion.pipeline import from_training
    from mnist_diffusion.recipes import get_recipe
    from mnist_diffusion.training.loop import make_trainer

    torch.set_num_threads(1)
    images = torch.from_numpy(load_split("mnist", "train")[0])
    peer = CourseTrainer(seed)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = with_changes(get_recipe("ddpm-cond"), train={"threads": 1, "device": "cpu", "seed": seed})
        ours = make_trainer(cfg, Path(tmp) / "ours")
        ours.net.train()
        sides = {
            "ours": (
                lambda idx: ours.train_step(*ours.batch(idx)),
                lambda: from_training(cfg, ours.sampling_weights(), torch.device("cpu")),
            ),
            "peer": (lambda idx: peer.step(to_float(images[idx], "signed")), lambda: copy.deepcopy(peer.net)),
        }
        for side, (step, snapshot) in sides.items():
            g, steps, cpu0, todo = torch.Generator().manual_seed(seed), 0, time.process_time(), sorted(budget)
            while todo:
                step(torch.randint(0, len(images), (128,), generator=g))
                steps += 1
                spent = (time.process_time() - cpu0) / 60
                if spent < todo[0]:
                    continue
                c_eval, model, t0 = time.process_time(), snapshot(), time.perf_counter()
                if side == "ours":
                    out = model.sample(n, labels="0-9", seed=0)
                    drawn, labels = out.images, out.labels
                else:
                    drawn, labels = peer.sample(model.eval(), n), None
                rate = n / (time.perf_counter() - t0)
                got = scores(
                    drawn, labels, ("fid", "kid", "classes") + (("label_accuracy",) if labels is not None else ())
                )
                while todo and spent >= todo[0]:
                    yield (
                        {"side": side, "budget_min": todo.pop(0)},
                        {
                            **got,
                            "cpu_min": spent,
                            "steps": steps,
                            "images_seen": 128 * steps,
                            "sample_images_per_s": rate,
                        },
                    )
                cpu0 += time.process_time() - c_eval  # drawing and scoring a snapshot is not training


@case("peers.seed_loop", steps=Param(40, quick=3), rounds=Param(3, quick=1), batch=Param(128))
def seed_loop(steps, rounds, batch):
    """The package's `seed` recipe (its data order, batches and train_step) against the seed tutorial's own loop
    (DataLoader, BasicUNet, Adam) on the same images, batch and threads."""
    import torch
    from torch import nn

    from benchmarks.training import make
    from mnist_diffusion.data import load_split
    from mnist_diffusion.models.basic_unet import BasicUNet

    images = torch.from_numpy(load_split("mnist", "train")[0]).float().div(255).unsqueeze(1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images), batch_size=batch, shuffle=True)
    net, it = BasicUNet(), iter(loader)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def bare_step():
        nonlocal it
        (x,) = next(it, (None,))
        if x is None:
            it = iter(loader)
            (x,) = next(it)
        amount = torch.rand(len(x)).view(-1, 1, 1, 1)
        loss = nn.functional.mse_loss(net(x * (1 - amount) + torch.rand_like(x) * amount), x)
        opt.zero_grad()
        loss.backward()
        opt.step()

    with tempfile.TemporaryDirectory() as tmp:
        trainer, batches = make("seed", f"batch={batch}", Path(tmp), data_limit=60_000)
        seconds = alternate(
            {
                "bare seed loop": lambda: [bare_step() for _ in range(steps)],
                "package": lambda: [trainer.train_step(*next(batches)) for _ in range(steps)],
            },
            rounds,
            warmup=1,
        )
    for side in ("bare seed loop", "package"):
        yield (
            {"side": side},
            {
                "images_per_s": steps * batch / median(seconds[side]),
                "package_over_bare": median(seconds["bare seed loop"]) / median(seconds["package"]),
            },
        )

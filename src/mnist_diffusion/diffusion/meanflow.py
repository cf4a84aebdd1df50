"""MeanFlow (Geng et al. 2025, "Mean Flows for One-step Generative Modeling"): generation in one network pass,
trained without a teacher.

On the straight path of flow matching (`flow.py`: z_t = (1 - t) x0 + t eps, velocity v = eps - x0) the average
velocity over [r, t] is u(z_t, r, t) = (z_t - z_r) / (t - r), so z_r = z_t - (t - r) u and one evaluation at
(r, t) = (0, 1) maps noise to data. Differentiating (t - r) u = integral of v over [r, t] in t gives the MeanFlow
identity u = v - (t - r) du/dt, with du/dt = v . d_z u + d_t u the total derivative along the path: one
Jacobian-vector product with tangent (v, 0, 1) in (z, r, t). The network is trained to match its right-hand
side under stop-gradient. At r = t it is plain flow matching.

Classifier-free guidance is folded into the target (the paper's sec. 4.2): the velocity v is replaced by
w v + (1 - w) u(z_t, t, t | no label), the guided instantaneous velocity, so a guided digit is still one pass.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from mnist_diffusion.diffusion.ddpm_loss import drop_labels
from mnist_diffusion.diffusion.flow import NETWORK_TIME_SCALE, sample_times
from mnist_diffusion.diffusion.steps import Callback, visit
from mnist_diffusion.errors import UserError

AverageVelocity = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _per_sample(value, like: torch.Tensor) -> torch.Tensor:
    """A time (a number or (B,)) as a (B,) tensor on like's device, float64 for float64 samples, else float32."""
    dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    value = torch.as_tensor(value, device=like.device, dtype=dtype)
    return value.expand(like.shape[0]) if value.ndim == 0 else value


def average_velocity(net: Callable[..., torch.Tensor], labels: torch.Tensor | None = None) -> AverageVelocity:
    """u(z, r, t) of a network with an interval input, its labels bound in: net(z, 1000 t, labels, None,
    1000 (t - r)). r and t are numbers or (B,) tensors in [0, 1] with r <= t."""

    def u(z: torch.Tensor, r, t) -> torch.Tensor:
        t, r = _per_sample(t, z), _per_sample(r, z)
        return net(z, t * NETWORK_TIME_SCALE, labels, None, (t - r) * NETWORK_TIME_SCALE)

    return u


def sample_interval(
    batch: int,
    r_ratio: float,
    kind: str = "uniform",
    mean: float = 0.0,
    std: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
):
    """(r, t), each (B,) in (0, 1) with r <= t: two times from `flow.sample_times`, sorted; a share 1 - r_ratio of
    the samples get r = t (plain flow matching, which anchors u to the velocity)."""
    a = sample_times(batch, kind, mean, std, generator, device)
    b = sample_times(batch, kind, mean, std, generator, device)
    t, r = torch.maximum(a, b), torch.minimum(a, b)
    apart = torch.rand(batch, generator=generator, device=device) < r_ratio
    return torch.where(apart, r, t), t


def meanflow_target(
    u: AverageVelocity,
    z: torch.Tensor,
    r: torch.Tensor,
    t: torch.Tensor,
    v: torch.Tensor,
    tangent: torch.Tensor | None = None,
):
    """(u(z, r, t), its regression target v - (t - r) du/dt), the target detached; z, v (B, ...), r, t (B,).

    du/dt is the total derivative along the path, dz/dt . d_z u + d_t u: one forward-mode Jacobian-vector product
    with tangent (dz/dt, 0, 1), whose primal output keeps its graph for the loss's gradient. dz/dt is `tangent`,
    by default v itself.
    """
    tangent = v if tangent is None else tangent
    with sdpa_kernel(SDPBackend.MATH):  # attention's fused CPU kernels have no forward-mode derivative
        out, du_dt = torch.func.jvp(u, (z, r, t), (tangent, torch.zeros_like(r), torch.ones_like(t)))
    view = (-1,) + (1,) * (z.ndim - 1)
    return out, (v - (t - r).view(view) * du_dt).detach()


def meanflow_loss(
    net: Callable[..., torch.Tensor],
    x0: torch.Tensor,
    labels: torch.Tensor | None = None,
    num_classes: int = 0,
    label_dropout: float = 0.0,
    guidance: float = 1.0,
    r_ratio: float = 0.25,
    time_sampling: str = "logit_normal",
    mean: float = -0.4,
    std: float = 1.0,
    weight_power: float = 1.0,
    weight_eps: float = 1e-3,
    tangent: str = "sample",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The MeanFlow objective on a batch of clean samples x0 (B, C, H, W); `net` is the bare module (a JVP does not
    pass through DistributedDataParallel: average the gradients across ranks after backward yourself).

    Draws (r, t), then eps, then the label dropout from `generator`. The target v~ - (t - r) du/dt (v~ the guided
    velocity) is held fixed (stop-gradient); the loss per sample is its mean squared error, weighted adaptively by
    1 / (error + weight_eps)^weight_power (the weight held fixed too), which evens out the samples' pull.
    `tangent` is the direction du/dt is taken along: "sample", the sample's own velocity eps - x0 (the paper's), or
    "model", the network's guided instantaneous velocity at (z_t, t) (Geng et al. 2025b, "Improved Mean Flows"),
    the marginal field the identity speaks of, without the sample's noise.
    Returns (loss, per_sample_error (B,), t (B,)).
    """
    device = generator.device if generator is not None else x0.device
    r, t = (
        s.to(x0.device, x0.dtype)
        for s in sample_interval(x0.shape[0], r_ratio, time_sampling, mean, std, generator, device)
    )
    eps = torch.randn(x0.shape, generator=generator, device=device, dtype=x0.dtype).to(x0.device)
    conditional = labels is not None and num_classes > 0
    if conditional and label_dropout > 0:
        labels = drop_labels(labels, num_classes, label_dropout, generator)
    view = (-1,) + (1,) * (x0.ndim - 1)
    z = (1 - t).view(view) * x0 + t.view(view) * eps
    v = eps - x0
    guided = conditional and guidance != 1.0
    keep = (labels != num_classes).view(view) if guided else None  # dropped labels learn the unguided field
    with torch.no_grad():  # the net's own instantaneous velocities, held fixed
        v_free = average_velocity(net, torch.full_like(labels, num_classes))(z, t, t).to(v.dtype) if guided else None
        if tangent == "model":
            along = average_velocity(net, labels if conditional else None)(z, t, t).to(v.dtype)
            along = torch.where(keep, guidance * along + (1 - guidance) * v_free, along) if guided else along
    if guided:
        v = torch.where(keep, guidance * v + (1 - guidance) * v_free, v)
    along = along if tangent == "model" else v
    u, target = meanflow_target(average_velocity(net, labels if conditional else None), z, r, t, v, along)
    error = ((u.float() - target.float()) ** 2).flatten(1).mean(1)
    weight = 1.0 / (error.detach() + weight_eps) ** weight_power
    return (weight * error).mean(), error.detach(), t


@torch.no_grad()
def sample_meanflow(
    u: AverageVelocity,
    z: torch.Tensor,
    ts: list[float],
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Jumps z_r = z_t - (t - r) u(z_t, r, t) over a descending grid from 1 to 0 (one network pass a step); 1 step
    is the one-pass generator. The callback's clean estimate at t is z_t - t u(z_t, r, t) (exact at r = 0), and a
    replaced z_t jumps with the same average velocity. `generator` is unused (no noise is drawn)."""
    ts = [float(t) for t in ts]
    if len(ts) < 2 or ts[-1] != 0.0 or any(b >= a for a, b in zip(ts, ts[1:])):
        raise UserError(f"A MeanFlow grid must descend strictly to exactly 0, got {ts}.")
    steps = len(ts) - 1
    for i, (t, r) in enumerate(zip(ts[:-1], ts[1:])):
        avg = u(z, r, t)
        z = visit(callback, i, t, steps, z, z - t * avg)
        z = z - (t - r) * avg
    return z

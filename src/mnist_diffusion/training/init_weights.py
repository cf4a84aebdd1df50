"""Starting a run from another model's weights (`train.init`): a fine-tune, or a new kind of model that keeps
what an older one learnt (flow matching from a DDPM network; MeanFlow from a flow network, its interval input
new)."""

from __future__ import annotations

from torch import nn

from mnist_diffusion import checkpoint as ckpt
from mnist_diffusion.checkpoint import weights_sha256
from mnist_diffusion.config import ConfigError, RunConfig, with_changes


def init_weights(cfg: RunConfig, net: nn.Module, device) -> RunConfig:
    """Load `cfg.train.init`'s weights into `net` (in place) and return cfg with their hash recorded.

    Every tensor of the source must fit a tensor of `net` by name and shape; tensors `net` has beyond the source
    (layers the new model adds) keep their fresh initialisation. A recorded `train.init_sha256` must match.
    """
    path = ckpt.resolve_model_path(cfg.train.init)
    weights = ckpt.model_weights(ckpt.load_checkpoint(path, device))
    sha = weights_sha256(weights)
    if cfg.train.init_sha256 and sha != cfg.train.init_sha256:
        raise ConfigError(
            f"train.init {cfg.train.init} hashes to {sha[:12]}, not the recorded "
            f"{cfg.train.init_sha256[:12]}; point it at the model this run started from."
        )
    own = net.state_dict()
    foreign = [k for k in weights if k not in own or own[k].shape != weights[k].shape]
    if foreign:
        k = foreign[0]
        shape = f"shape {tuple(own[k].shape)} here" if k in own else "no such tensor here"
        raise ConfigError(
            f"train.init {cfg.train.init} does not fit this network: its {k} {tuple(weights[k].shape)} "
            f"has {shape}; start from a model with the same widths and levels."
        )
    net.load_state_dict(weights, strict=False)
    return with_changes(cfg, train={"init_sha256": sha})

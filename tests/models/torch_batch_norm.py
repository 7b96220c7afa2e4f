"""Batch-norm statistics that make a PyTorch parity test able to fail.

Random affine BN parameters first; then the running statistics are calibrated on a batch
(momentum 1: running = batch statistics) so activations stay O(1) through every layer; then
they are perturbed, so that using the running statistics (not batch statistics) and mapping
mean/var correctly both matter. Shared by the BNInception and ResNet18 converter tests.
"""

from __future__ import annotations


def randomise_batch_norm(model, batch, seed: int = 1) -> None:
    """Sets every ``BatchNorm2d`` of ``model`` as above (calibrated on ``batch``, NCHW float)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for m in bns:
            m.weight.uniform_(0.5, 1.5, generator=gen)
            m.bias.normal_(0.0, 0.2, generator=gen)
            m.momentum = 1.0
        model.train()
        model(batch)
        for m in bns:
            c = m.num_features
            m.running_mean.add_(0.05 * m.running_var.sqrt() * torch.randn(c, generator=gen))
            m.running_var.mul_(torch.empty(c).uniform_(0.9, 1.1, generator=gen))
    model.eval()

"""The SAE trainer on data with a known sparse structure: it recovers it, seeded."""

from __future__ import annotations

import torch

from monitor.sae.sae import SAE
from monitor.sae.train import TrainSettings, save_saelens, train


def sparse_data(n: int = 12_000, d: int = 32, atoms: int = 64, active: int = 3, seed: int = 1) -> torch.Tensor:
    """Each row: `active` random atoms of a fixed dictionary with positive weights, plus an offset."""
    g = torch.Generator().manual_seed(seed)
    dictionary = torch.randn(atoms, d, generator=g)
    dictionary /= dictionary.norm(dim=-1, keepdim=True)
    codes = torch.zeros(n, atoms)
    picks = torch.stack([torch.randperm(atoms, generator=g)[:active] for _ in range(n)])
    codes.scatter_(1, picks, torch.rand(n, active, generator=g) * 4 + 1)
    return (codes @ dictionary + 0.5).to(torch.float16) * 7  # a scale the trainer must normalise


def fvu(sae: SAE, x: torch.Tensor) -> float:
    x = x.float()
    return float((x - sae.reconstruct(x)).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def test_training_recovers_a_sparse_dictionary_and_is_reproducible(tmp_path):
    data = sparse_data()
    settings = TrainSettings(d_sae=128, k=4, epochs=30, batch_size=1024, dead_tokens=20_000, save_dtype="float32")
    sae, info = train(data, settings)
    again, _ = train(data, settings)
    assert torch.equal(sae.W_enc, again.W_enc) and torch.equal(sae.W_dec, again.W_dec)  # seeded
    held_out = sparse_data(n=2000, seed=1)[-2000:]
    assert fvu(sae, held_out) < 0.1, info["history"][-1]  # the folded SAE reads raw (unscaled) rows
    z = sae.encode(held_out.float())
    assert float((z > 0).sum(-1).float().mean()) <= 4
    assert info["history"][-1]["dead_fraction"] < 0.3
    assert torch.allclose(sae.W_dec.norm(dim=-1) * info["scale_folded"], torch.ones(128), atol=1e-4)

    directory = save_saelens(sae, tmp_path / "sae", model_name="toy", layer=3, settings=settings, extra=info)
    from monitor.sae import load_sae

    loaded = load_sae(directory)
    assert (loaded.format, loaded.activation, loaded.k, loaded.layer) == ("saelens", "topk", 4, 3)
    assert torch.allclose(loaded.reconstruct(held_out.float()), sae.reconstruct(held_out.float()), atol=1e-4)

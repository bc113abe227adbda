"""Float vs fixed-point accuracy of a trained run on a chip (``neuroplast chip eval``).

The float accuracy is the trained network's on its own inputs (normalised images where it was trained on
them); the chip runs ``runs.chip_view`` of it: the normalisation folded into the first layer, the images
sent as intensities in [0, 1] (8-bit graded payloads)."""
from __future__ import annotations

import time

import torch

from ..data import encode
from ..runs import batches, chip_view, load_run
from .hardware import load_chip
from .quantize import quantize


def chip_eval(run_dir, hw: str = "loihi2", *, timing: str = "sync", stochastic: bool = False, seed: int = 0,
              limit: int | None = None, data_dir: str | None = None, batch_size: int = 500) -> dict:
    """Test accuracy of the float network and of its quantised integer version, on the same inputs."""
    t0 = time.perf_counter()
    cfg, net, data = load_run(run_dir, data_dir)
    chip_net, chip_data = chip_view(net, data)
    chip = load_chip(hw)
    gen = torch.Generator().manual_seed(seed)
    fixed = quantize(chip_net, chip, encoding=cfg.encoding, time_steps=cfg.time_steps, stochastic=stochastic,
                     generator=gen, timing=timing)
    test = data.test
    n = len(test) if limit is None else min(limit, len(test))
    correct_f = correct_q = agree = 0
    rates: dict[str, float] = {}
    for i, ((x, y), (x_chip, _)) in enumerate(zip(batches(test, batch_size), batches(chip_data.test, batch_size))):
        if i * batch_size >= n:
            break
        x, x_chip, y = x[: n - i * batch_size], x_chip[: n - i * batch_size], y[: n - i * batch_size]
        x_seq = encode(cfg.encoding, x, cfg.time_steps, generator=gen)
        # the chip's inputs: the same samples as intensities (only a normalised run, direct input, differs:
        # direct encoding draws nothing, so a poisson run's spikes are the float network's)
        x_seq_chip = x_seq if chip_data is data else encode(cfg.encoding, x_chip, cfg.time_steps)
        with torch.no_grad():
            pf = net.simulate(x_seq, record=False).logits.argmax(1)
        out = fixed.simulate(x_seq_chip)
        pq = out["v_out"].argmax(1)
        correct_f += int((pf == y).sum())
        correct_q += int((pq == y).sum())
        agree += int((pf == pq).sum())
        for k, c in out["spikes"].items():
            rates[k] = rates.get(k, 0.0) + float(c.sum()) / (c[0].numel() * x_seq.shape[0])
    layers = []
    for layer in fixed.layers:
        if layer.synapse is None:
            continue
        w = chip_net.layers[layer.name].op.weight.detach().to(torch.float64)
        err = (w - layer.synapse.dequantized()).abs().max()
        layers.append({"layer": layer.name, "weight_exp": layer.synapse.weight_exp, "vth": layer.lif.vth,
                       "dv": layer.lif.dv, "du": layer.lif.du, "lsb": layer.synapse.lsb(),
                       "max_weight_error": float(err), "input_scale": layer.synapse.x_scale})
    return {"run": str(run_dir), "hw": chip.name, "timing": timing, "stochastic_rounding": stochastic,
            "samples": n, "float_acc": correct_f / n, "fixed_acc": correct_q / n, "gap": (correct_f - correct_q) / n,
            "agreement": agree / n, "input_norm_folded": None if data.norm.identity else
            {"mean": data.norm.mean, "std": data.norm.std}, "firing_rates_fixed": {k: v / n for k, v in rates.items()},
            "layers": layers, "wall_s": time.perf_counter() - t0}

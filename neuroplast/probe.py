"""Gradient-quality probe: how good is an estimator's (or a rule's) gradient at fixed weights?

For every batch n of one epoch (or the first N batches) and every synaptic layer l, the probed
gradient g_n (a rule + estimator) and a reference gradient r_n (by default BPTT with the sigmoid
surrogate) are taken on the same batch and the same weights. Reported per layer:

    mean      mean_i |ḡ_i|,               ḡ = (1/N) Σ_n g_n
    variance  (1/(N·D)) Σ_n ‖g_n − ḡ‖²    (OPZO, Xiao et al. 2024, Appendix C; D = #elements)
    rel. var  (1/N) Σ_n ‖g_n − ḡ‖² / ‖ḡ‖²  (scale-free: rules whose gradients differ in scale, e.g.
                                          OPZO's ∝ σ, compare on noise-to-signal)
    cosine    (1/N) Σ_n cos(g_n, r_n)      and cos(ḡ, r̄) of the epoch means

so LocalZO, the surrogates and (later) ZO, DFA and OPZO are compared on the same footing.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from .data import encode
from .experiment import batches, make_network, noise_generator, resolve_device
from .fileio import atomic_write, atomic_write_json, atomic_write_text, write_files
from .learn import CEMSELoss, make_rule
from .runs import load_data, load_weights
from .spec import TrainConfig


def _layer_grads(net) -> dict[str, torch.Tensor]:
    return {name: layer.op.weight.grad.detach().flatten().clone() for name, layer in net.layers.items()
            if hasattr(layer, "op") and layer.op.weight.grad is not None}


def probe_gradients(cfg: TrainConfig, estimators: list[str] | None = None, *, methods: list[str] | None = None,
                    reference: str = "bptt|sigmoid:k=4", max_batches: int | None = None,
                    weights: dict | None = None) -> dict:
    """Probe ``estimators`` (each with ``cfg.method``) and ``methods`` (each with ``cfg.estimator``)
    against ``reference`` ("method|estimator"), all at the same weights and on the same batches."""
    cfg = cfg.resolved()
    device = resolve_device(cfg.device)
    data = load_data(cfg)
    variants = [(cfg.method, e) for e in estimators or []] + [(m, cfg.estimator) for m in methods or []]
    ref_method, _, ref_est = reference.partition("|")
    ref_cfg = TrainConfig(**{**cfg.to_dict(), "method": ref_method, "estimator": ref_est or cfg.estimator})
    ref_net = make_network(ref_cfg, data, torch.Generator().manual_seed(cfg.seed)).to(device)
    ref_net.seed_draws(cfg.seed, device)   # the same dropout masks as the probed nets
    if weights is not None:   # strict=False: an estimator's own state (ASGL's α) may differ from the reference's
        load_weights(ref_net, weights, f"the weights do not fit network {cfg.net!r} (probe a run with the network it "
                     "was trained with: leave out --net)", strict=False)
    nets, rules = {}, {}
    for method, est in variants:
        net = make_network(TrainConfig(**{**cfg.to_dict(), "estimator": est}), data).to(device)
        net.load_state_dict(ref_net.state_dict(), strict=False)  # same weights for everyone
        if weights is not None:   # and the estimator's own trained state (ASGL's α), where it has one
            net.load_state_dict({k: v for k, v in weights.items() if k not in ref_net.state_dict()}, strict=False)
        rule = make_rule(method)
        net.seed_draws(cfg.seed, device)
        rule.generator = noise_generator(cfg.seed, device)
        nets[method, est], rules[method, est] = net, rule
    ref_rule = make_rule(ref_method)
    loss_fn = CEMSELoss(cfg.mse_weight)
    per = {v: {} for v in variants}  # variant -> layer -> list of grads
    ref_grads: dict[str, list] = {}
    enc_gen = torch.Generator().manual_seed(cfg.seed)
    for n, (x, y) in enumerate(batches(data.train, cfg.batch_size, generator=torch.Generator().manual_seed(cfg.seed))):
        if max_batches is not None and n >= max_batches:
            break
        x_seq, y = encode(cfg.encoding, x.to(device), cfg.time_steps, generator=enc_gen), y.to(device)
        ref_net.zero_grad(set_to_none=True)
        ref_rule.compute_grads(ref_net, x_seq, y, loss_fn)
        for k, g in _layer_grads(ref_net).items():
            ref_grads.setdefault(k, []).append(g)
        for v, net in nets.items():
            net.zero_grad(set_to_none=True)
            rules[v].compute_grads(net, x_seq, y, loss_fn)
            for k, g in _layer_grads(net).items():
                per[v].setdefault(k, []).append(g)
    rows = []
    for (method, est), layers in per.items():
        for layer, gs in layers.items():
            G, R = torch.stack(gs), torch.stack(ref_grads[layer])
            mean = G.mean(0)
            cos = torch.nn.functional.cosine_similarity(G, R, dim=1)
            rows.append({"method": method, "estimator": est, "layer": layer, "batches": len(gs),
                         "mean": float(mean.abs().mean()),
                         "variance": float((G - mean).pow(2).sum() / G.numel()),
                         "rel_variance": float((G - mean).pow(2).sum() / G.shape[0] / mean.pow(2).sum().clamp_min(1e-30)),
                         "cosine": float(cos.mean()),
                         "cosine_of_means": float(torch.nn.functional.cosine_similarity(mean, R.mean(0), dim=0))})
    return {"task": cfg.task, "net": cfg.net, "reference": reference,
            "batch_size": cfg.batch_size, "time_steps": cfg.time_steps, "seed": cfg.seed, "rows": rows}


def write_probe_report(result: dict, out_dir: str | Path, command: str = "") -> list[Path]:
    """Write gradients.md (table), gradients.json and gradients.png (variance and cosine per layer), all or
    none (``fileio.write_files``)."""
    out = Path(out_dir)
    rows = result["rows"]
    lines = [f"# Gradient quality: {result['task']}, `{result['net']}`", "",
             (f"Command: `{command}`  \n" if command else "")
             + f"Reference `{result['reference']}`, batch {result['batch_size']}, "
             f"T={result['time_steps']}, seed {result['seed']}, fixed weights (initialisation or loaded run).", "",
             "| method | estimator | layer | batches | mean abs | variance | rel. variance | cosine to ref | cosine of means |",
             "|---|---|---|---|---|---|---|---|---|",
             *(f"| `{r['method']}` | `{r['estimator']}` | {r['layer']} | {r['batches']} | {r['mean']:.3g} | {r['variance']:.3g} | {r['rel_variance']:.3g} | "
               f"{r['cosine']:.3f} | {r['cosine_of_means']:.3f} |" for r in rows), "",
             "Variance as in OPZO Appendix C: (1/(N·D)) Σ_n ‖g_n − ḡ‖² over the N batch gradients.",
             "![variance and cosine](gradients.png)", ""]
    return write_files(out, {"gradients.md": lambda p: atomic_write_text(p, "\n".join(lines)),   # all or nothing
                             "gradients.json": lambda p: atomic_write_json(p, result),
                             "gradients.png": lambda p: _plot(rows, p)})


def log_y_if_positive(ax) -> None:
    """A log y axis where some bar is positive; linear where none is (a variance over one mini-batch is 0),
    which a log axis cannot show."""
    if any(math.isfinite(p.get_height()) and p.get_height() > 0 for p in ax.patches):
        ax.set_yscale("log")


def _plot(rows: list[dict], path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    label = lambda r: r["estimator"] if len({q["method"] for q in rows}) == 1 else f"{r['method']}|{r['estimator']}"  # noqa: E731
    ests = list(dict.fromkeys(label(r) for r in rows))
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    width = 0.8 / max(len(ests), 1)
    for i, est in enumerate(ests):
        vals = {r["layer"]: r for r in rows if label(r) == est}
        xs = [j + i * width for j in range(len(layers))]
        axes[0].bar(xs, [vals[lay]["variance"] if lay in vals else math.nan for lay in layers], width, label=est)
        axes[1].bar(xs, [vals[lay]["cosine"] if lay in vals else math.nan for lay in layers], width, label=est)
    for ax, title in zip(axes, ("gradient variance (log)", "cosine to reference")):
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(layers))], layers)
        ax.set_title(title)
    log_y_if_positive(axes[0])
    axes[1].set_ylim(-0.1, 1.05)
    axes[1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110), binary=True)
    plt.close(fig)
    return path

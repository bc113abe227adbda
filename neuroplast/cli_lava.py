"""CLI commands of the Lava side: ``lava build`` and ``lava run`` (thin wrappers)."""
from __future__ import annotations

import sys
import time

from .limits import check_count


def add_parsers(sub, common) -> None:
    la = sub.add_parser("lava", help="run a trained network in Lava (lava-nc, fixed_pt) and check it against the engine")
    las = la.add_subparsers(dest="lava_command", required=True)
    for name, text in (("build", "build the Lava process graph of a run and list it"),
                       ("run", "run test samples in Lava's CPU backend, compare step by step with the engine")):
        p = las.add_parser(name, help=text)
        p.add_argument("run_dir", help="a run directory written by `neuroplast train --save`")
        p.add_argument("--hw", default="loihi2", help="chip whose numerics quantise the network (default loihi2)")
        p.add_argument("--steps", type=int, default=None, help="time steps per sample (default: the run's T)")
        p.add_argument("--samples", type=int, default=None,
                       help="samples to run (run only; default 3 test samples, 20 training samples with --learn)")
        p.add_argument("--timeout", type=float, default=300.0, help="seconds before a Lava run is stopped")
        p.add_argument("--data-dir", default=None, help="folder with data sets (or set NEUROPLAST_DATA)")
        if name == "run":
            p.add_argument("--learn", action="store_true",
                           help="run on-chip learning in Lava (one weight update per training sample) and check "
                                "spikes, voltages, weights and feedback against the engine")
            p.add_argument("--float", action="store_true", dest="float_models",
                           help="floating_pt instead of fixed_pt: the float network on Lava's Dense/LIF models "
                                "against the engine's float LIF; with --learn, the learning processes' float twin "
                                "(the chip's rule without rounding) against the engine's exact learner")
            p.add_argument("--method", default="opzo", help="on-chip rule with --learn: opzo (default) or dfa")
            p.add_argument("--lr", type=float, default=0.3, help="learning rate with --learn (a power-of-two shift)")
        common(p)


def _setup(args):
    import math

    from .errors import UserError
    from .lava import require_lava
    if args.device not in (None, "cpu"):
        raise UserError(f"Lava runs on its CPU backend here (--device cpu); got {args.device!r}")
    if getattr(args, "learn", False):
        args.samples = 20 if args.samples is None else args.samples
    elif args.samples is None:
        args.samples = 3
    check_count("--samples", args.samples)
    if args.steps is not None:
        check_count("--steps", args.steps)
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise UserError(f"--timeout must be a finite number of seconds > 0, got {args.timeout}")
    if getattr(args, "learn", False) and not (math.isfinite(args.lr) and args.lr > 0):
        raise UserError(f"--lr must be a finite number > 0, got {args.lr}")
    require_lava()
    from .chip.hardware import load_chip
    from .chip.quantize import quantize
    from .runs import chip_view, load_run
    cfg, trained, trained_data = load_run(args.run_dir, args.data_dir)
    net, data = chip_view(trained, trained_data)   # intensities in, the input normalisation folded in
    steps = args.steps or cfg.time_steps
    fixed = quantize(net, load_chip(args.hw), encoding=cfg.encoding, time_steps=steps, timing="lava")
    return cfg, (trained, trained_data), net, data, steps, fixed


def cmd_lava(args) -> dict:
    """Lava runs ``runs.chip_view`` of the run (intensities; a normalisation folded into the first layer);
    ``float_pred`` is the trained network's own prediction on its own inputs."""
    import torch

    from .chip.fixed_network import run_steps
    from .data import encode
    cfg, (trained, trained_data), net, data, steps, fixed = _setup(args)
    if getattr(args, "learn", False):
        warning = learn_input_warning(trained_data.norm)
        if warning:
            print(f"neuroplast: warning: {warning}", file=sys.stderr)
        return _learn(args, cfg, trained, data, steps)
    if getattr(args, "float_models", False):
        return _float(args, cfg, net, data, steps)
    x = encode(cfg.encoding, data.test.x[:args.samples], steps)
    x_trained = x if data is trained_data else encode(cfg.encoding, trained_data.test.x[:args.samples], steps)
    if args.lava_command == "build":
        from .lava.network import build_graph
        x0 = fixed.encode_input(x)[:, 0]
        graph = build_graph(fixed, x0.reshape(x0.shape[0], -1).numpy())
        rows = [{"layer": n, "dense": list(d.weights.shape), "lif": list(lif.v.shape)} for n, d, lif in graph.layers]
        for r in rows:
            print(f"  Dense{r['dense']} -> LIF{r['lif']}  ({r['layer']})", file=sys.stderr)
        print(f"RingBuffer input -> {len(rows)} Dense/LIF pairs, {graph.steps} steps per sample", file=sys.stderr)
        return {"layers": rows, "steps_per_sample": graph.steps}
    from .lava.equivalence import compare_sample
    t0, results = time.perf_counter(), []
    x_int = fixed.encode_input(x)
    for i in range(args.samples):
        mismatch, lava = compare_sample(fixed, x_int[:, i], i, timeout=args.timeout)
        v_out = lava[next(reversed(lava))]["v"][-1]
        with torch.no_grad():
            float_pred = int(trained.simulate(x_trained[:, i:i + 1], record=False).logits.argmax(1))
        results.append({"sample": i, "label": int(data.test.y[i]), "lava_pred": int(v_out.argmax()),
                        "float_pred": float_pred, "bit_exact": mismatch is None,
                        "first_mismatch": None if mismatch is None else str(mismatch)})
        print(f"sample {i}: label {results[-1]['label']}, Lava {results[-1]['lava_pred']}, float {float_pred}, "
              + ("bit-exact with the engine" if mismatch is None else f"MISMATCH: {mismatch}"), file=sys.stderr)
    wall = time.perf_counter() - t0
    return {"samples": results, "bit_exact": all(r["bit_exact"] for r in results), "wall_s": wall,
            "ok": all(r["bit_exact"] for r in results),
            "ms_per_step": 1000 * wall / (args.samples * run_steps(steps, len(fixed.synapses()), "lava"))}


def _float(args, cfg, net, data, steps) -> dict:
    from .data import encode
    from .lava.equivalence import compare_float_sample
    x = encode(cfg.encoding, data.test.x[:args.samples], steps)
    t0, results = time.perf_counter(), []
    for i in range(args.samples):
        mismatch, lava = compare_float_sample(net, x[:, i], i, timeout=args.timeout)
        v_out = lava[next(reversed(lava))]["v"][-1]
        results.append({"sample": i, "label": int(data.test.y[i]), "lava_pred": int(v_out.argmax()),
                        "match": mismatch is None, "first_mismatch": None if mismatch is None else str(mismatch)})
        print(f"sample {i}: label {results[-1]['label']}, Lava (floating_pt) {results[-1]['lava_pred']}, "
              + ("spikes equal, voltages within 1e-9 of the engine" if mismatch is None else f"MISMATCH: {mismatch}"),
              file=sys.stderr)
    return {"samples": results, "match": all(r["match"] for r in results), "tag": "floating_pt",
            "ok": all(r["match"] for r in results),
            "wall_s": time.perf_counter() - t0}


def learn_input_warning(norm) -> str | None:
    """Why ``lava run --learn`` on a run trained on normalised inputs does not start from the trained network
    (None for the identity normalisation). It warns rather than refuses: what it checks, the chip's learning
    in Lava against the engine's step by step, holds on any input, and the learner adapts to what a chip is
    sent; only its starting point (and so its losses) is not the trained network's."""
    if norm.identity:
        return None
    return (f"lava run --learn: this run trained on normalised inputs x = (v - {norm.mean:g})/{norm.std:g}, but the "
            "on-chip learner has no biases to hold that normalisation folded into its first layer, so it starts "
            "from the trained, unfolded weights and is fed intensities v in [0, 1] (what a chip is sent): its "
            "first predictions and losses are not the trained network's. The Lava-vs-engine comparison is exact "
            "all the same.")


def _learn(args, cfg, net, data, steps) -> dict:
    """On-chip learning from ``net``'s weights (the trained ones: the chip's learner has no biases, so a folded
    normalisation could not be kept) on ``data`` as intensities, the chip's graded payloads."""
    from .chip.hardware import load_chip
    from .chip.onchip import OnChipLearner
    from .data import encode
    from .errors import UserError
    from .lava.learning import (
        build_learning_graph,
        engine_learning,
        first_mismatch,
        run_learning,
        update_agreement,
        update_cosines,
    )
    if args.method not in ("opzo", "dfa"):
        raise UserError(f"--learn runs opzo or dfa in Lava; got --method {args.method!r}")
    if cfg.encoding != "direct":
        raise UserError("--learn takes runs with direct (graded) input encoding")
    exact = bool(getattr(args, "float_models", False))
    chip = load_chip(args.hw)
    learner = OnChipLearner(net, chip, args.method, lr=args.lr, time_steps=steps, seed=args.seed or 0, exact=exact)
    x, y = encode("direct", data.train.x[:args.samples], steps), data.train.y[:args.samples]
    t0 = time.perf_counter()
    engine, _ = engine_learning(learner, x, y)
    t1 = time.perf_counter()
    lava = run_learning(build_learning_graph(learner, learner.encode(x), y), timeout=args.timeout)
    t2 = time.perf_counter()
    mismatch = first_mismatch(engine, lava, rtol=1e-9 if exact else 0.0)
    chip_cos = None
    if exact:    # how far the chip's rounding takes the update from its float twin: cosine of Δw per layer
        chip_learner = OnChipLearner(net, chip, args.method, lr=args.lr, time_steps=steps, seed=args.seed or 0)
        chip_cos = update_cosines(chip_learner, engine_learning(chip_learner, x, y)[0], learner, engine)
    layers = update_agreement(learner, engine, lava)
    for r in layers:
        print(f"  layer {r['layer']}: {r['changed']}/{r['weights']} weights changed, "
              f"{100 * r['same_direction']:.1f}% in the engine's direction", file=sys.stderr)
    same = ("equal to the engine's exact learner within 1e-9 (spikes, voltages, weights, feedback)" if exact
            else "bit-exact with the engine (spikes, voltages, weights, feedback)")
    print(f"on-chip {args.method} in Lava ({'floating_pt' if exact else 'fixed_pt'}), {args.samples} samples x "
          f"{steps} steps: " + (same if mismatch is None else f"MISMATCH: {mismatch}")
          + f"; Lava {t2 - t1:.1f} s, engine {t1 - t0:.2f} s", file=sys.stderr)
    if chip_cos is not None:
        print("  cosine of the weight change, float twin vs the chip's integers: "
              + ", ".join(f"layer {k + 1} {c:.3f}" for k, c in enumerate(chip_cos)), file=sys.stderr)
    return {"method": args.method, "samples": args.samples, "tag": "floating_pt" if exact else "fixed_pt",
            "match": mismatch is None, "ok": mismatch is None, "bit_exact": mismatch is None and not exact, "chip_vs_float_cosine": chip_cos,
            "first_mismatch": None if mismatch is None else str(mismatch), "layers": layers,
            "loss_per_sample": [float(v) for v in lava["loss"]], "lava_s": t2 - t1, "engine_s": t1 - t0}


HANDLERS = {"lava": cmd_lava}

"""CLI commands of the Lava side: ``lava build`` and ``lava run`` (thin wrappers)."""
from __future__ import annotations

import sys
import time


def add_parsers(sub, common) -> None:
    la = sub.add_parser("lava", help="run a trained network in Lava (lava-nc, fixed_pt) and check it against the engine")
    las = la.add_subparsers(dest="lava_command", required=True)
    for name, text in (("build", "build the Lava process graph of a run and list it"),
                       ("run", "run test samples in Lava's CPU backend, compare step by step with the engine")):
        p = las.add_parser(name, help=text)
        p.add_argument("run_dir", help="a run directory written by `neuroplast train --save`")
        p.add_argument("--hw", default="loihi2", help="chip whose numerics quantise the network (default loihi2)")
        p.add_argument("--steps", type=int, default=None, help="time steps per sample (default: the run's T)")
        p.add_argument("--samples", type=int, default=3, help="test samples to run (run only)")
        p.add_argument("--timeout", type=float, default=300.0, help="seconds before a Lava run is stopped")
        p.add_argument("--data-dir", default=None, help="folder with data sets (or set NEUROPLAST_DATA)")
        common(p)


def _setup(args):
    from .errors import UserError
    from .lava import require_lava
    require_lava()
    if args.device not in (None, "cpu"):
        raise UserError(f"Lava runs on its CPU backend here (--device cpu); got {args.device!r}")
    if args.samples < 1 or (args.steps is not None and args.steps < 1):
        raise UserError("--samples and --steps must be >= 1")
    from .chip.hardware import load_chip
    from .chip.quantize import quantize
    from .runs import load_run
    cfg, net, data = load_run(args.run_dir, args.data_dir)
    steps = args.steps or cfg.time_steps
    fixed = quantize(net, load_chip(args.hw), encoding=cfg.encoding, time_steps=steps, timing="lava")
    return cfg, net, data, steps, fixed


def cmd_lava(args) -> dict:
    import torch

    from .data import encode
    cfg, net, data, steps, fixed = _setup(args)
    x = encode(cfg.encoding, data.test.x[:args.samples], steps)
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
            float_pred = int(net.simulate(x[:, i:i + 1], record=False).logits.argmax(1))
        results.append({"sample": i, "label": int(data.test.y[i]), "lava_pred": int(v_out.argmax()),
                        "float_pred": float_pred, "bit_exact": mismatch is None,
                        "first_mismatch": None if mismatch is None else str(mismatch)})
        print(f"sample {i}: label {results[-1]['label']}, Lava {results[-1]['lava_pred']}, float {float_pred}, "
              + ("bit-exact with the engine" if mismatch is None else f"MISMATCH: {mismatch}"), file=sys.stderr)
    wall = time.perf_counter() - t0
    return {"samples": results, "bit_exact": all(r["bit_exact"] for r in results), "wall_s": wall,
            "ms_per_step": 1000 * wall / (args.samples * (steps + len(fixed.synapses()) - 1))}


HANDLERS = {"lava": cmd_lava}

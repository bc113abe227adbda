"""CLI commands of the chip model: ``chip eval`` (thin wrapper)."""
from __future__ import annotations

import sys

from .limits import check_count


def add_parsers(sub, common) -> None:
    ch = sub.add_parser("chip", help="Loihi-style fixed-point execution of a trained run")
    chs = ch.add_subparsers(dest="chip_command", required=True)
    ev = chs.add_parser("eval", help="float vs fixed-point test accuracy of a run directory on a chip")
    ev.add_argument("run_dir", help="a run directory written by `neuroplast train --save`")
    ev.add_argument("--hw", default="loihi2", help="chip name (hardware_models/) or a chip .toml file")
    ev.add_argument("--timing", default="sync", choices=("sync", "lava"),
                    help="sync: the float engine's timing; lava: one step of Dense delay per layer, as in Lava")
    ev.add_argument("--stochastic-rounding", action="store_true", help="round weights stochastically")
    ev.add_argument("--limit", type=int, default=None, help="evaluate the first N test samples")
    ev.add_argument("--data-dir", default=None, help="folder with data sets (or set NEUROPLAST_DATA)")
    common(ev)
    add_cost_parser(sub, common)


def cmd_chip(args) -> dict:
    from .chip.evaluate import chip_eval
    from .errors import UserError
    if args.device not in (None, "cpu"):
        raise UserError(f"the fixed-point engine runs on the CPU (--device cpu); got {args.device!r}")
    if args.limit is not None:
        check_count("--limit", args.limit)
    res = chip_eval(args.run_dir, args.hw, timing=args.timing, stochastic=args.stochastic_rounding,
                    seed=args.seed or 0, limit=args.limit, data_dir=args.data_dir)
    print(f"{res['hw']} ({res['timing']} timing): float {100 * res['float_acc']:.2f}% -> fixed "
          f"{100 * res['fixed_acc']:.2f}% (gap {100 * res['gap']:+.2f} points, predictions agree on "
          f"{100 * res['agreement']:.1f}% of {res['samples']} test samples)", file=sys.stderr)
    for layer in res["layers"]:
        print(f"  {layer['layer']}: weight_exp {layer['weight_exp']}, vth {layer['vth']}, dv {layer['dv']}, "
              f"max |w - w_q| {layer['max_weight_error']:.3g} (LSB {layer['lsb']:.3g})", file=sys.stderr)
    return res




def add_cost_parser(sub, common) -> None:
    co = sub.add_parser("cost", help="training cost of a run on a chip: SynOps, memory, energy, time, core mapping")
    co.add_argument("run_dirs", nargs="+", help="run directories written by `neuroplast train --save`")
    co.add_argument("--hw", default="loihi1", help="chip name (hardware_models/) or a chip .toml file")
    co.add_argument("--data-dir", default=None, help="folder with data sets (or set NEUROPLAST_DATA)")
    common(co)


def cmd_cost(args) -> dict:
    from .chip.cost import run_cost
    from .experiment import resolve_device
    resolve_device(args.device or "cpu")   # checked like every command's; the cost model counts on the CPU
    rows = [run_cost(r, args.hw, args.data_dir) for r in args.run_dirs]
    print(f"{'method':>14} {'acc':>7} {'SynOps/sample':>14} {'feedback ops':>13} {'learn mem':>10} "
          f"{'energy uJ/sample':>17} {'cores':>6}", file=sys.stderr)
    for r in rows:
        p = r["per_sample"]
        acc = f"{100 * r['test_acc']:.2f}%" if r.get("test_acc") is not None else "-"
        print(f"{r['method']:>14} {acc:>7} {p['synops_forward']:>14.4g} {p['feedback_ops']:>13.4g} "
              f"{r['memory_entries']['learning_state']:>10} {r['energy_uj_per_sample_total']:>17.4g} "
              f"{r['mapping']['cores']:>6}", file=sys.stderr)
        if not r["mapping"]["fits_one_chip"]:
            print(f"  {r['method']}: needs {r['mapping']['cores']} cores, {r['mapping']['over_by_cores']} more than one "
                  f"{r['chip']} chip has ({r['mapping']['chips']} chips)", file=sys.stderr)
    if rows and rows[0]["estimated_figures"]:
        print(f"  note: {rows[0]['chip']} figures {rows[0]['estimated_figures']} are estimates (see the chip file)",
              file=sys.stderr)
    return {"runs": rows}


HANDLERS = {"chip": cmd_chip, "cost": cmd_cost}

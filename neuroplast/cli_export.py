"""CLI commands ``export``, ``import`` and ``report`` (thin wrappers)."""
from __future__ import annotations

import sys


def add_parsers(sub, common) -> None:
    ex = sub.add_parser("export", help="write a trained network as an NIR graph")
    ex.add_argument("run_dir", help="a run directory written by `neuroplast train --save`")
    ex.add_argument("out", help="output file, e.g. net.nir")
    ex.add_argument("--format", default="nir", choices=("nir",), help="nir (netx HDF5 is still to come)")
    ex.add_argument("--dt", type=float, default=1.0, help="NIR time step dt (LIF τ = dt/(1 − λ))")
    ex.add_argument("--data-dir", default=None, help="folder with data sets (or set NEUROPLAST_DATA)")
    common(ex)
    im = sub.add_parser("import", help="read an NIR file back into a runnable network (and evaluate it)")
    im.add_argument("file", help="an .nir file")
    im.add_argument("--task", default=None, help="evaluate on this data set's test split (e.g. digits)")
    im.add_argument("--time-steps", type=int, default=4, help="time steps T for the evaluation")
    im.add_argument("--data-dir", default=None, help="folder with data sets (or set NEUROPLAST_DATA)")
    common(im)
    rp = sub.add_parser("report", help="markdown report with PNG figures from run directories (grouped by method)")
    rp.add_argument("run_dirs", nargs="+", help="run directories written by `neuroplast train --save`")
    rp.add_argument("--out", default="reports", metavar="DIR", help="where NAME.md and its figures go")
    rp.add_argument("--name", default="report", help="file name stem (default report)")
    rp.add_argument("--hw", default="loihi1", help="chip for the cost table ('' for none)")
    common(rp)


def cmd_export(args) -> dict:
    from .export.nir_graph import export_nir
    from .runs import load_run
    _, net, _ = load_run(args.run_dir, args.data_dir)
    path = export_nir(net, args.out, dt=args.dt)
    print(f"wrote {path} (NIR graph of {net.arch})", file=sys.stderr)
    return {"out": str(path), "format": args.format, "arch": net.arch}


def cmd_import(args) -> dict:
    import torch

    from .data import encode, load_dataset
    from .export.nir_graph import import_nir
    net = import_nir(args.file)
    res = {"file": args.file, "arch": net.arch, "params": sum(p.numel() for p in net.parameters())}
    print(f"{args.file}: {net.arch} ({res['params']} parameters)", file=sys.stderr)
    if args.task:
        data = load_dataset(args.task, data_dir=args.data_dir, time_steps=args.time_steps)
        with torch.no_grad():
            logits = net.simulate(encode("direct", data.test.x, args.time_steps), record=False).logits
        res["test_acc"] = float((logits.argmax(1) == data.test.y).float().mean())
        print(f"test accuracy on {args.task}: {100 * res['test_acc']:.2f}%", file=sys.stderr)
    return res


def cmd_report(args) -> dict:
    from .report import build_report, write_report
    res = build_report(args.run_dirs, hw=args.hw or None)
    paths = write_report(res, args.out, name=args.name, command="neuroplast " + " ".join(sys.argv[1:]))
    for t in res["table"]:
        print(f"{t['method']:>20}: {100 * t['test_acc_mean']:.2f} ± {100 * t['test_acc_std']:.2f}% ({t['runs']} runs)",
              file=sys.stderr)
    print("wrote " + ", ".join(map(str, paths)), file=sys.stderr)
    return {"table": res["table"], "costs": res["costs"], "files": [str(p) for p in paths]}


HANDLERS = {"export": cmd_export, "import": cmd_import, "report": cmd_report}

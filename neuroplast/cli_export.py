"""CLI commands ``export``, ``import`` and ``report`` (thin wrappers)."""
from __future__ import annotations

import sys
from pathlib import Path


def add_parsers(sub, common) -> None:
    ex = sub.add_parser("export", help="write a trained network as an NIR graph or a lava-dl netx HDF5 file")
    ex.add_argument("run_dir", help="a run directory written by `neuroplast train --save`")
    ex.add_argument("out", help="output file, e.g. net.nir or net.net")
    ex.add_argument("--format", default=None, choices=("nir", "netx"),
                    help="nir (float graph) or netx (Loihi fixed point, lava-dl); default from the extension "
                         "(.nir -> nir, otherwise netx)")
    ex.add_argument("--hw", default=None, help="netx: chip whose numerics quantise the network (default loihi2)")
    ex.add_argument("--dt", type=float, default=1.0, help="NIR time step dt (LIF τ = dt/(1 − λ))")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    ex.add_argument("--data-dir", default=None, help="folder with data sets (or set NEUROPLAST_DATA)")
    common(ex)
    im = sub.add_parser("import", help="read an NIR or netx file back into a runnable network (and evaluate it)")
    im.add_argument("file", help="an NIR or netx HDF5 file (the format is detected from the content)")
    im.add_argument("--task", default=None, help="evaluate on this data set's test split (e.g. digits)")
    im.add_argument("--time-steps", type=int, default=None,
                    help="time steps T for the evaluation (default: the file's, else 4)")
    im.add_argument("--data-dir", default=None, help="folder with data sets (or set NEUROPLAST_DATA)")
    common(im)
    rp = sub.add_parser("report", help="markdown report with PNG figures from run directories (grouped by method)")
    rp.add_argument("run_dirs", nargs="+", help="run directories written by `neuroplast train --save`")
    rp.add_argument("--out", default="reports", metavar="DIR", help="where NAME.md and its figures go")
    rp.add_argument("--name", default="report", help="file name stem (default report)")
    rp.add_argument("--overwrite", action="store_true", help="replace an existing report of this name")
    rp.add_argument("--data-dir", default=None, help="folder with the runs' data sets (default: as each run "
                    "recorded it, or NEUROPLAST_DATA)")
    rp.add_argument("--hw", default="loihi1", help="chip for the cost table ('' for none)")
    rp.add_argument("--grad-batches", type=int, default=8, metavar="N",
                    help="mini-batches for the gradient variance of each run's rule at its trained weights (0: skip)")
    common(rp)


def cmd_export(args) -> dict:
    import torch

    from .experiment import resolve_device
    from .fileio import check_output_file
    from .runs import chip_view, load_run
    resolve_device(args.device or "cpu")   # checked like every command's; export itself computes on the CPU
    fmt = args.format or ("nir" if str(args.out).lower().endswith(".nir") else "netx")
    if fmt == "nir" and args.hw is not None:
        from .errors import UserError
        raise UserError("--hw quantises a netx export; an NIR graph is the float network: leave out --hw "
                        "or write netx (--format netx)")
    check_output_file(args.out, "output file", overwrite=args.overwrite)
    cfg, trained, data = load_run(args.run_dir, args.data_dir)
    if fmt == "nir":
        # the graph takes intensities in [0, 1]: a normalisation is folded into the first synapse, or written
        # as an input_norm node before a padded first convolution (export.nir_graph)
        from .export.nir_graph import export_nir
        path = export_nir(trained, args.out, dt=args.dt, time_steps=cfg.time_steps, encoding=cfg.encoding,
                          input_values="intensities", input_norm=data.norm)
        print(f"wrote {path} (NIR graph of {trained.arch})", file=sys.stderr)
        return {"out": str(path), "format": fmt, "arch": trained.arch}
    net, data = chip_view(trained, data)   # the chip takes intensities in [0, 1]: a normalisation is folded in
    from .chip.fixed_network import GRADED_INPUT
    from .chip.quantize import input_grid
    from .export.netx import export_netx, netx_fixed
    # inputs on a coarser grid (digits: 17 grey levels) go as exact smaller payloads: finer first-layer weights
    scale = input_grid(torch.cat([data.train.x.flatten(), data.test.x.flatten()])) if cfg.encoding == "direct" \
        else GRADED_INPUT
    fixed = netx_fixed(net, time_steps=cfg.time_steps, encoding=cfg.encoding, chip=args.hw or "loihi2", input_scale=scale)
    path = export_netx(fixed, args.out, meta={"arch": net.arch, "time_steps": cfg.time_steps, "dataset": cfg.dataset,
                                              "source_run": str(args.run_dir)})
    print(f"wrote {path} (netx HDF5, Loihi fixed point, of {net.arch})", file=sys.stderr)
    return {"out": str(path), "format": fmt, "arch": net.arch}


def detect_format(path) -> str:
    """'netx' (HDF5 with a 'layer' group, or neuroplast's netx format attribute) or 'nir' (any other file);
    DataError for a missing file or a folder."""
    from .errors import DataError
    from .export.netx import FORMAT
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder; give an NIR (.nir) or netx (.net) file")
    if not path.is_file():
        raise DataError(f"{path} not found")
    try:
        import h5py
        with h5py.File(path, "r") as f:
            return "netx" if "layer" in f or str(f.attrs.get("format", "")) == FORMAT else "nir"
    except OSError:
        return "netx" if path.suffix.lower() in (".net", ".h5", ".hdf5") else "nir"  # unreadable: the importer says why


def cmd_import(args) -> dict:
    import torch

    from .data import encode, load_dataset
    from .data.encode import encoding_names
    from .errors import UserError
    from .experiment import resolve_device
    from .limits import check_count
    device = resolve_device(args.device or "cpu")
    if args.time_steps is not None:
        check_count("--time-steps", args.time_steps)
    fmt = detect_format(args.file)
    if fmt == "netx" and args.task and device.type != "cpu":
        raise UserError(f"a netx file is evaluated by the fixed-point engine, on the CPU (--device cpu); got {args.device!r}")
    if fmt == "netx":
        import h5py
        import numpy as np

        from .errors import DataError
        from .export.netx import import_netx
        fixed, settings = import_netx(args.file), {}
        with h5py.File(args.file, "r") as f:
            arch, file_T = str(f.attrs.get("arch", "?")), f.attrs.get("time_steps")
        res = {"file": args.file, "format": fmt, "arch": arch,
               "params": sum(int(s.m.numel()) for s in fixed.synapses().values())}
        if args.time_steps is None and file_T is not None and not (isinstance(file_T, np.integer) and file_T >= 1):
            raise DataError(f"{args.file}: attribute time_steps = {file_T!r} is not a number of steps; "
                            "pass --time-steps")
        T = args.time_steps if args.time_steps is not None else (int(file_T) if file_T is not None else 4)
        print(f"{args.file}: netx, {arch} ({res['params']} integer weights, Loihi fixed point)", file=sys.stderr)
    else:
        from .export.nir_graph import read_nir
        net, settings = read_nir(args.file)
        net = net.to(device)
        T = args.time_steps if args.time_steps is not None else settings.get("time_steps", 4)
        enc = settings.get("encoding", "direct")
        res = {"file": args.file, "format": fmt, "arch": net.arch, "params": sum(p.numel() for p in net.parameters())}
        print(f"{args.file}: {net.arch} ({res['params']} parameters)", file=sys.stderr)
    if args.task:
        # a netx file takes the chip's payloads of intensities; an NIR graph what its metadata says (read_nir)
        normalize = settings.get("normalized_input", False)
        data = load_dataset(args.task, data_dir=args.data_dir, time_steps=T, normalize=normalize)
        if fmt == "netx":
            enc = fixed.encoding if fixed.encoding in encoding_names() else "poisson"
            x = encode(enc, data.test.x, T, generator=torch.Generator().manual_seed(0))
            pred = torch.cat([fixed.classify(x[:, i:i + 256]) for i in range(0, x.shape[1], 256)])
        else:
            with torch.no_grad():
                x = encode(enc, data.test.x, T, generator=torch.Generator().manual_seed(0)).to(device)
                pred = net.simulate(x, record=False).logits.argmax(1).cpu()
        res["test_acc"] = float((pred == data.test.y).float().mean())
        print(f"test accuracy on {args.task}: {100 * res['test_acc']:.2f}%", file=sys.stderr)
    return res


def cmd_report(args) -> dict:
    from .experiment import resolve_device
    from .fileio import check_output_dir, check_output_file
    from .report import build_report, check_report_name, write_report
    device = resolve_device(args.device or "cpu")
    check_output_dir(args.out, "--out")
    check_report_name(args.name)
    check_output_file(Path(args.out) / f"{args.name}.md", "report", overwrite=args.overwrite)
    res = build_report(args.run_dirs, hw=args.hw or None, grad_batches=args.grad_batches, device=str(device),
                       data_dir=args.data_dir)
    paths = write_report(res, args.out, name=args.name, command="neuroplast " + " ".join(sys.argv[1:]))
    for t in res["table"]:
        runs = f"{t['runs']} run" + ("s" if t["runs"] != 1 else "")
        print(f"{t['method']:>20}: {100 * t['test_acc_mean']:.2f} ± {100 * t['test_acc_std']:.2f}% ({runs})",
              file=sys.stderr)
    print("wrote " + ", ".join(map(str, paths)), file=sys.stderr)
    return {"table": res["table"], "costs": res["costs"], "gradients": res["gradients"], "files": [str(p) for p in paths]}


HANDLERS = {"export": cmd_export, "import": cmd_import, "report": cmd_report}

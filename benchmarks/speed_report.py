"""``reports/speed.md`` from the results of ``speed.py``: the tables, where the time goes, memory, and
the issue's targets against this run; hand-written notes after ``KEEP`` survive a new run."""
from __future__ import annotations

from pathlib import Path

from neuroplast.fileio import atomic_write_text


# ---------------------------------------------------------------- report
def write_report(res: dict, path: Path) -> None:
    idle = res["idle"]
    lines = [
        "# Speed of a training step against its GEMM lower bound (issue 9)", "",
        f"Command: `{res['command']}` at commit {res.get('commit', '?')}  ",
        (f"Machine: {res['machine']}; torch {res['torch']}; {res['threads']} intra-op thread(s); device {res['device']}"
        f"{' (float32, TF32 off)' if res['device'].startswith('cuda') else ''}; date {res['date']}.  "),
        ("Machine idle before the run (other processes < 0.1 core)." if idle["idle"] else
         f"**Machine NOT idle**: other processes used {idle['load_cores']:.2f} cores when the run started "
         f"(waited {idle['waited_s']:.0f} s); the load during each measurement is in the tables. "
         "Ratios within one table are comparable (round-robin blocks), absolute numbers are pessimistic."), "",
        ("A training step is `zero_grad` + `rule.compute_grads` + Adam `step` (the engine's `make_optimizer`: torch's "
        "fused Adam; the plain loop keeps torch's default Adam, as a user's own loop would), direct encoding (constant input), "
        "LIF λ=0.5 θ=1 hard reset, sigmoid surrogate k=4 (LocalZO: `localzo:m=2`), untrained weights. "
        "`infer` is `net.simulate` under `no_grad`; `infer_fixed` the quantised Loihi 2 integer network "
        "(`neuroplast.chip.quantize`, int64/float64 arithmetic on the CPU). `+compile` rows: the same net built with "
        "`--compile` (`build_network(compiled=True)`): the LIF backward scans and gates fused too (`snn/lif_fused.py`: C "
        "on the CPU, torch.compile on other devices; same spikes, gradients to float rounding). Rows without it run "
        "the default path, whose C kernels (`snn/native/*.c`: LIF forward, pooling, sigmoid-gate passes, transposes) "
        "give the eager ops' numbers bit for bit."), "",
        ("**Bound** = FLOPs of the synaptic GEMMs/convs of the step / measured float32 GEMM rate (the fastest of "
        "`torch.mm` and the engine's oneDNN GEMM, `snn/gemm.py`, at the net's largest GEMM, and `F.conv2d` at its "
        "largest conv layer, same run). "
        "Counted: forward F = Σ_l 2·rows·fan-in·outputs with rows = T·B, and B for "
        "the first layer on the constant input; BPTT/LocalZO/OTTT 3F − F₁ (weight grads F, input grads F without "
        "the first layer); DFA/OPZO 2F + the top-down products e·B_l; inference F. Not counted: LIF updates, "
        "surrogates, pooling, loss, optimizer (elementwise, memory-bound)."), "",
    ]
    for net in res["nets"].values():
        g = net["gemm"]
        lines += [f"## `{net['arch']}`, T={net['T']}, batch {net['batch']}", "",
                  (f"Input: {net['input']}. GEMM rate {net['gemm_gflops']:.0f} GFLOP/s ({net.get('rate_kernel', f'mm {g[0]}×{g[1]}·{g[1]}×{g[2]}')}; the faster kernel before or after the steps). "
                  f"{net['steps']} steps after {net['warmup']} warm-up, round-robin in blocks of {net['block']} consecutive steps "
                  f"of a method, the first of each block not timed; other processes used "
                  f"{net['other_load_cores']:.2f} cores on average during the measurement."), "",
                  "| method | ms/step median | p10–p90 | samples/s | GFLOP (bound) | bound ms | step / bound |",
                  "|---|---|---|---|---|---|---|"]
        for m, r in net["rows"].items():
            lines.append(f"| {m} | {r['ms_median']:.1f} | {r['ms_p10']:.1f}–{r['ms_p90']:.1f} | "
                         f"{r['samples_per_s']:.0f} | {r['step_gflop']:.2f} | {r['bound_ms']:.1f} | "
                         f"{r['ratio_to_bound']:.2f} |")
        rows = net["rows"]
        notes = []
        if "plain_loop_bptt" in rows and "bptt" in rows:
            notes.append(f"plain loop / engine BPTT = **{rows['plain_loop_bptt']['ms_median'] / rows['bptt']['ms_median']:.2f}×**")
        for m in ("dfa", "opzo", "opzo_rademacher", "ottt"):
            if m in rows and "bptt" in rows:
                notes.append(f"{m} / BPTT = {rows[m]['ms_median'] / rows['bptt']['ms_median']:.2f}")
        if "rng_ms" in rows.get("opzo", {}) and "bptt" in rows:
            r = rows["opzo"]
            notes.append(f"opzo draws {r['noise_draws'] / 1e6:.2f} M Gaussians per step, {r['rng_ms']:.1f} ms alone "
                         f"(the engine's counter-based draws, `snn/draws.py`); (opzo − draws) / BPTT = "
                         f"{(r['ms_median'] - r['rng_ms']) / rows['bptt']['ms_median']:.2f}")
        for m in ("dfa", "opzo"):
            if f"{m}+compile" in rows and "bptt+compile" in rows:
                notes.append(f"compiled: {m} / BPTT = "
                             f"{rows[m + '+compile']['ms_median'] / rows['bptt+compile']['ms_median']:.2f}")
        if notes:
            lines += ["", "; ".join(notes) + "."]
        lines.append("")
        if all("breakdown_ms" in r for r in rows.values()):
            lines += [(f"Where the time goes: self CPU time of every op under torch.profiler, ms per step, median "
                       f"over {net['breakdown_steps']} more steps profiled one at a time (`breakdown` in the script; the profiler adds a few µs per op, so a row "
                       "sums to more than the timed step). GEMM/conv = the synaptic products, against the "
                       "bound of the table above; pooling = the average-pool function, its 0/1 GEMM "
                       "included; other = LIF scans, surrogates, losses, traces, noise adds, copies."), "",
                      "| method | GEMM/conv | GEMM/conv ÷ bound | pooling | RNG | optimizer | other | other ÷ step |",
                      "|---|---|---|---|---|---|---|---|"]
            for m, r in rows.items():
                b = r["breakdown_ms"]
                lines.append(f"| {m} | {b['gemm']:.1f} | {b['gemm'] / r['bound_ms']:.2f} | {b['pooling']:.1f} | "
                             f"{b['rng']:.1f} | {b['optimizer']:.1f} | {b['other']:.1f} | "
                             f"{b['other'] / sum(b.values()):.0%} |")
            lines.append("")
    if res.get("memory"):
        lines += ["## Memory of a training step, FC net (fresh process each)", "",
                  ("Uniform random input (no data set loaded). Peak resident set of the process over 3 steps "
                  "(includes torch itself), its growth above the set-up process after one T=1 step (coarse: "
                  "the allocator reuses freed memory), and the peak bytes autograd holds for backward "
                  "(saved-tensor hooks; the folded online rules hold one window of min(T, 6) steps)."), "",
                  "| method | T | peak RSS (MiB) | RSS above set-up (MiB) | peak saved for backward (MiB) |",
                  "|---|---|---|---|---|",
                  *(f"| {r['method']} | {r['T']} | {r['peak_rss_MiB']:.0f} | {r['rss_above_setup_MiB']:.1f} | "
                    f"{r['saved_for_backward_MiB']:.1f} |" for r in res["memory"]), ""]
        by = {(r["method"], r["T"]): r for r in res["memory"]}
        flat = [f"{m}: T=30/T=6 peak RSS {by[(m, 30)]['peak_rss_MiB'] / by[(m, 6)]['peak_rss_MiB']:.3f}"
                for m in dict.fromkeys(r["method"] for r in res["memory"]) if (m, 6) in by and (m, 30) in by]
        lines += ["; ".join(flat) + ".", ""]
    if res.get("gpu_memory"):
        lines += ["## GPU memory of a training step, FC net", "",
                  ("Uniform random input. Peak bytes torch allocates on the GPU over 3 steps at T, after one "
                   "T=1 step (`torch.cuda.max_memory_allocated`; weights, Adam state and the data included)."), "",
                  "| method | T | peak allocated (MiB) |", "|---|---|---|",
                  *(f"| {r['method']} | {r['T']} | {r['peak_gpu_MiB']:.1f} |" for r in res["gpu_memory"]), ""]
    lines += targets(res)
    text = "\n".join(lines) + "\n"
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    if KEEP in old:   # hand-written notes at the end survive a new run
        text += "\n" + old[old.index(KEEP):]
    atomic_write_text(path, text)


#: a line after which ``reports/speed.md`` holds hand-written notes that a new run keeps
KEEP = "<!-- hand-written notes below: speed.py keeps them when it rewrites this report -->"


def targets(res: dict) -> list[str]:
    """The issue's targets against this run's numbers, as a markdown section (rows only for what was run)."""
    out = []

    def row(what, value, target, ok):
        out.append(f"| {what} | {value} | {target} | {'met' if ok else '**not met**'} |")

    def num(v, lim):   # 3 decimals where 2 would round onto the goal and hide the verdict
        return f"{v:.3f}" if abs(v - lim) < 0.005 else f"{v:.2f}"
    nets = res["nets"]
    fc, conv = (nets.get(k, {}).get("rows", {}) for k in ("fc", "conv"))
    for name, rows, lim in (("FC", fc, 1.4), ("conv", conv, 2.5)):
        for m in ("bptt", "bptt+compile"):
            if m in rows:
                r = rows[m]
                row(f"{name} {m} step / bound", num(r["ratio_to_bound"], lim), f"≤ {lim}", r["ratio_to_bound"] <= lim)
                if name == "FC":
                    row(f"{name} {m} step / bound without hoisting (the issue's 4.9 GFLOP count)",
                        num(r["ratio_to_unhoisted_bound"], lim), f"≤ {lim}", r["ratio_to_unhoisted_bound"] <= lim)
    if "plain_loop_bptt" in fc and "bptt" in fc:
        v = fc["plain_loop_bptt"]["ms_median"] / fc["bptt"]["ms_median"]
        row("FC plain loop / engine BPTT", f"{num(v, 1.5)}×", "≥ 1.5×", v >= 1.5)
    for m in ("infer", "infer+compile"):
        if m in fc:
            row(f"FC {m} / bound", num(fc[m]["ratio_to_bound"], 1.5), "≤ 1.5", fc[m]["ratio_to_bound"] <= 1.5)
    for name, rows in (("FC", fc), ("conv", conv)):
        for m in ("dfa", "opzo", "opzo_rademacher"):
            for suffix in ("", "+compile"):
                if m + suffix in rows and "bptt" + suffix in rows:
                    v = rows[m + suffix]["ms_median"] / rows["bptt" + suffix]["ms_median"]
                    row(f"{name} {m}{suffix} / bptt{suffix}", num(v, 0.8), "≤ 0.8", v <= 0.8)
    by = {(r["method"], r["T"]): r for r in res.get("memory", [])}
    for m in ("ottt", "opzo"):
        if (m, 6) in by and (m, 30) in by:
            v = by[(m, 30)]["peak_rss_MiB"] / by[(m, 6)]["peak_rss_MiB"]
            row(f"{m} peak RSS T=30 / T=6", f"{v:.3f}", "≤ 1.10", v <= 1.10)
    by = {(r["method"], r["T"]): r for r in res.get("gpu_memory", [])}
    for m in ("ottt", "opzo"):
        if (m, 6) in by and (m, 30) in by:
            v = by[(m, 30)]["peak_gpu_MiB"] / by[(m, 6)]["peak_gpu_MiB"]
            row(f"{m} peak GPU memory T=30 / T=6", f"{v:.3f}", "≤ 1.10", v <= 1.10)
    if not out:
        return []
    return ["## Targets (issue 9)", "",
            ("Step / bound uses the FLOPs this engine must do (the first layer's product on the constant input "
             "done once); the issue's own count for the FC net (4.9 GFLOP) does it T times, which is also shown."), "",
            "| target | this run | goal | |", "|---|---|---|---|", *out, ""]

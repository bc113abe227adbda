"""Record reference traces from Lava's own bit-accurate fixed-point models (PyDenseModelBitAcc +
PyLifModelBitAcc) into tests/data/lava_lif_reference.npz, so that the fixed-point engine is checked
bit for bit against Lava in CI even where lava-nc is not installed.

Run with a Python that has lava-nc 0.10.0 (see README: `pip install --only-binary=:all:
--ignore-requires-python lava-nc==0.10.0 "numpy<2"`) and this repository on PYTHONPATH:

    PYTHONPATH=. python benchmarks/lava_reference.py

Each case: RingBuffer input (binary spikes, or graded integer payloads with num_message_bits=8)
-> Dense(W0, weight_exp0) -> LIF0 -> Dense(W1, weight_exp1) -> LIF1, run step by step on Lava's CPU
backend with the fixed_pt tag; u, v and spikes of both LIFs are recorded after every step.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from neuroplast.lava import compat

compat.install()
from lava.magma.core.run_conditions import RunSteps  # noqa: E402
from lava.magma.core.run_configs import Loihi2SimCfg  # noqa: E402
from lava.proc.dense.process import Dense  # noqa: E402
from lava.proc.io.source import RingBuffer  # noqa: E402
from lava.proc.lif.process import LIF  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "lava_lif_reference.npz"
STEPS = 24


def case(rng, n_in, n0, n1, graded, big):
    """Random but plausible parameters; ``big`` makes activations large enough to wrap/clip."""
    hi = 2 ** 12 if graded else 2
    x = rng.integers(0, 256 if graded else 2, size=(n_in, STEPS)) * (rng.random((n_in, STEPS)) < 0.5)
    p = {
        "x": x.astype(np.int32),
        "w0": rng.integers(-256, 256, size=(n0, n_in)), "w1": rng.integers(-256, 256, size=(n1, n0)),
        "wexp0": np.array(rng.integers(0, 4) if big else rng.integers(-3, 1)),
        "wexp1": np.array(rng.integers(0, 3)),
        "du0": np.array(rng.integers(0, 4096)), "dv0": np.array(rng.integers(0, 4096)),
        "du1": np.array(4095), "dv1": np.array(rng.integers(0, 4096)),
        "vth0": np.array(rng.integers(1, 200) * (50 if big else 1)), "vth1": np.array(rng.integers(1, 400)),
        "bias_mant0": rng.integers(-4096, 4096, size=n0) // (1 if big else 64),
        "bias_exp0": rng.integers(0, 8, size=n0) if big else np.zeros(n0, int),
        "bias_mant1": rng.integers(-200, 200, size=n1), "bias_exp1": np.zeros(n1, int),
        "graded": np.array(int(graded)),
    }
    del hi
    src = RingBuffer(data=p["x"])
    d0 = Dense(weights=p["w0"], weight_exp=int(p["wexp0"]), num_message_bits=8 if graded else 0)
    l0 = LIF(shape=(n0,), du=int(p["du0"]), dv=int(p["dv0"]), vth=int(p["vth0"]), bias_mant=p["bias_mant0"],
             bias_exp=p["bias_exp0"])
    d1 = Dense(weights=p["w1"], weight_exp=int(p["wexp1"]))
    l1 = LIF(shape=(n1,), du=int(p["du1"]), dv=int(p["dv1"]), vth=int(p["vth1"]), bias_mant=p["bias_mant1"],
             bias_exp=p["bias_exp1"])
    src.s_out.connect(d0.s_in)
    d0.a_out.connect(l0.a_in)
    l0.s_out.connect(d1.s_in)
    d1.a_out.connect(l1.a_in)
    rec = {k: [] for k in ("u0", "v0", "u1", "v1")}
    cfg = Loihi2SimCfg(select_tag="fixed_pt")
    for t in range(STEPS):
        l1.run(condition=RunSteps(num_steps=1), run_cfg=cfg)
        for k, proc in (("0", l0), ("1", l1)):
            rec["u" + k].append(proc.u.get().astype(np.int64))
            rec["v" + k].append(proc.v.get().astype(np.int64))
    l1.stop()
    p.update({k: np.stack(v) for k, v in rec.items()})
    return p


def main() -> int:
    rng = np.random.default_rng(20261123)
    cases = [case(rng, 12, 10, 6, graded=False, big=False), case(rng, 12, 10, 6, graded=True, big=False),
             case(rng, 16, 8, 5, graded=True, big=True), case(rng, 16, 8, 5, graded=False, big=True)]
    flat = {f"c{i}_{k}": np.asarray(v) for i, c in enumerate(cases) for k, v in c.items()}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, n_cases=len(cases), **flat)
    print(f"wrote {OUT} ({len(cases)} cases, {STEPS} steps)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

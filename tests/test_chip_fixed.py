"""Fixed-point engine: bit-exact with traces recorded from Lava's own bit-accurate models."""
from pathlib import Path

import numpy as np
import pytest
import torch

from neuroplast.chip.fixed import IntLIFParams, int_dense, int_lif_step

REF = Path(__file__).parent / "data" / "lava_lif_reference.npz"


def _mantissa(w_lava: np.ndarray) -> torch.Tensor:
    """Lava's clip to [−256, 255] and LSB truncation of a mixed-sign matrix, as a mantissa."""
    return torch.from_numpy(np.clip(w_lava, -256, 255) >> 1)


def _cases():
    d = np.load(REF)
    return [{k.split("_", 1)[1]: d[k] for k in d.files if k.startswith(f"c{i}_")} for i in range(int(d["n_cases"]))]


@pytest.mark.parametrize("case", range(4))
def test_dense_and_lif_match_lava_bit_for_bit(case):
    """Dense -> LIF -> Dense -> LIF with Lava's one-step Dense delay: u and v of both layers equal
    Lava's at every step (binary and graded inputs; large cases wrap u and clip v)."""
    c = _cases()[case]
    x, T = torch.from_numpy(c["x"].astype(np.int64)).t(), c["x"].shape[1]
    layers = [(_mantissa(c["w0"]), int(c["wexp0"]), IntLIFParams(int(c["du0"]), int(c["dv0"]), int(c["vth0"]),
               torch.from_numpy(c["bias_mant0"]), torch.from_numpy(c["bias_exp0"]))),
              (_mantissa(c["w1"]), int(c["wexp1"]), IntLIFParams(int(c["du1"]), int(c["dv1"]), int(c["vth1"]),
               torch.from_numpy(c["bias_mant1"]), torch.from_numpy(c["bias_exp1"])))]
    state = [[torch.zeros(m.shape[0], dtype=torch.int64) for _ in range(3)] for m, _, _ in layers]  # u, v, buffer
    for t in range(T):
        inp = x[t]
        for k, (m, wexp, p) in enumerate(layers):
            u, v, buf = state[k]
            a, state[k][2] = buf, int_dense(m, inp, wexp)         # Dense sends what it accumulated at t − 1
            u, v, s = int_lif_step(u, v, a, p)
            state[k][0], state[k][1] = u, v
            for name, mine in (("u", u), ("v", v)):
                ref = torch.from_numpy(c[f"{name}{k}"][t])
                if not torch.equal(mine, ref):
                    j = int(torch.nonzero(mine != ref)[0])
                    pytest.fail(f"case {case}, step {t}, layer {k}, {name}[{j}]: ours {int(mine[j])}, Lava {int(ref[j])}")
            inp = s.to(torch.int64)
    if case == 2:  # this case drives u past 24 bits (wrap) and v into its clip
        assert c["u0"].min() < -2 ** 23 and c["v0"].min() == -(2 ** 23) + 1


def test_reference_traces_exercise_spikes_and_saturation():
    assert any((c["v0"] == 0).mean() > 0.1 for c in _cases())  # resets happen

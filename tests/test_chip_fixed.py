"""Fixed-point engine: bit-exact with traces recorded from Lava's own bit-accurate models."""
from pathlib import Path

import numpy as np
import pytest
import torch

from neuroplast.chip.fixed import (
    FLOAT_RUN_MAX_A,
    UV_MAX,
    IntLIFParams,
    _decay_in_range,
    _i32,
    dense_product,
    exact_float,
    float_product,
    int_dense,
    int_lif_step,
    int_lif_steps,
    int_product,
)

REF = Path(__file__).parent / "data" / "lava_lif_reference.npz"


def _mantissa(w_lava: np.ndarray) -> torch.Tensor:
    """Lava's clip to [−256, 255] and LSB truncation of a mixed-sign matrix, as a mantissa."""
    return torch.from_numpy(np.clip(w_lava, -256, 255) >> 1)


def _cases():
    d = np.load(REF)
    return [{k.split("_", 1)[1]: d[k] for k in d.files if k.startswith(f"c{i}_")} for i in range(int(d["n_cases"]))]


def _check_against(c, label):
    """Run Dense -> LIF -> Dense -> LIF with Lava's one-step Dense delay on our engine and compare u, v of
    both layers with the recorded Lava values at every step."""
    x, T = torch.from_numpy(c["x"].astype(np.int64)).t(), c["x"].shape[1]
    layers = [(_mantissa(c[f"w{k}"]), int(c[f"wexp{k}"]), IntLIFParams(int(c[f"du{k}"]), int(c[f"dv{k}"]), int(c[f"vth{k}"]),
               torch.from_numpy(np.asarray(c[f"bias_mant{k}"])), torch.from_numpy(np.asarray(c[f"bias_exp{k}"]))))
              for k in (0, 1)]
    state = [[torch.zeros(m.shape[0], dtype=torch.int64) for _ in range(3)] for m, _, _ in layers]  # u, v, buffer
    for t in range(T):
        inp = x[t]
        for k, (m, wexp, p) in enumerate(layers):
            u, v, buf = state[k]
            a, state[k][2] = buf, int_dense(m, inp, wexp)         # Dense sends what it accumulated at t − 1
            u, v, s = int_lif_step(u, v, a, p)
            state[k][0], state[k][1] = u, v
            for name, mine in (("u", u), ("v", v)):
                ref = torch.from_numpy(np.asarray(c[f"{name}{k}"][t]).astype(np.int64))
                if not torch.equal(mine, ref):
                    j = int(torch.nonzero(mine != ref)[0])
                    pytest.fail(f"{label}, step {t}, layer {k}, {name}[{j}]: ours {int(mine[j])}, Lava {int(ref[j])}")
            inp = s.to(torch.int64)


@pytest.mark.parametrize("case", range(4))
def test_dense_and_lif_match_lava_bit_for_bit(case):
    """Recorded from Lava 0.10.0 (benchmarks/lava_reference.py): binary and graded inputs; the large
    cases wrap u past 24 bits and clip v."""
    c = _cases()[case]
    _check_against(c, f"case {case}")
    if case == 2:  # this case drives u past 24 bits (wrap) and v into its clip
        assert c["u0"].min() < -2 ** 23 and c["v0"].min() == -(2 ** 23) + 1


def test_live_lava_matches_when_installed():
    """With lava-nc installed, fresh random cases run in Lava itself and are compared the same way."""
    pytest.importorskip("lava", reason="lava-nc is not installed; the recorded traces stand in for it")
    import importlib.util
    spec = importlib.util.spec_from_file_location("lava_reference", Path(__file__).parents[1] / "benchmarks" / "lava_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rng = np.random.default_rng(7)
    for graded, big in ((False, False), (True, True)):
        _check_against(mod.case(rng, 12, 9, 5, graded=graded, big=big), f"live graded={graded} big={big}")


def test_reference_traces_exercise_spikes_and_saturation():
    assert any((c["v0"] == 0).mean() > 0.1 for c in _cases())  # resets happen


def test_int32_wrap_is_modular():
    """_i32 = ((x + 2^31) mod 2^32) − 2^31 for every int64, edges and far outside int32 included."""
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randint(-2**62, 2**62, (10000,), generator=g),
                   torch.tensor([0, 2**31 - 1, 2**31, -2**31, -2**31 - 1, 2**32, -2**32, 2**40 + 5, -(2**40) - 5])])
    assert torch.equal(_i32(x), ((x + 2**31) % 2**32) - 2**31)


def test_synaptic_products_stay_exact_in_float32_only_when_they_fit():
    """int_dense takes float32 only where every partial sum is an integer below 2^24, and gives the
    exact integer product either way (against int64 arithmetic)."""
    g = torch.Generator().manual_seed(1)
    m = torch.randint(-127, 128, (7, 300), generator=g)
    for hi, dtype in [(2, torch.float32), (5000, torch.float64)]:   # spikes; 13-bit payloads
        x = torch.randint(0, hi, (5, 300), generator=g)
        assert exact_float(x, 2 * m) == dtype
        ref = (x.unsqueeze(1) * (2 * m).unsqueeze(0)).sum(-1)
        assert torch.equal(int_dense(m, x, 0), ((ref + 2**31) % 2**32) - 2**31)


@pytest.mark.parametrize("du,dv,a_max", [(0, 0, FLOAT_RUN_MAX_A), (4095, 4095, 3000), (1000, 300, FLOAT_RUN_MAX_A),
                                         (1000, 300, 2 ** 21)])   # the last is past the float run's bound
def test_lif_run_over_steps_equals_the_int64_step_loop(du, dv, a_max):
    """int_lif_steps (float64 on exact integers where inputs allow, else int64) gives the integers of
    int_lif_step step by step: states, spikes and every recorded step, through 24-bit wraps and clips."""
    g = torch.Generator().manual_seed(du + dv + a_max)
    T, shape = 9, (4, 500)
    p = IntLIFParams(du=du, dv=dv, vth=int(torch.randint(1, 2000, (), generator=g)),
                     bias_mant=torch.randint(-4095, 4096, (500,), generator=g), bias_exp=3)
    u = torch.randint(-UV_MAX + 1, UV_MAX + 1, shape, generator=g)
    v = torch.randint(-UV_MAX + 1, UV_MAX, shape, generator=g)
    a = torch.randint(-a_max, a_max + 1, (T, *shape), generator=g)
    ref_u, ref_v, ref_s, ref_trace, wraps = u, v, [], [], 0
    for t in range(T):
        pre = _decay_in_range(ref_u, 4096 - (du + 1)) + (a[t] << 6)
        wraps += int(((pre > UV_MAX) | (pre <= -UV_MAX)).sum())
        ref_u, ref_v, s = int_lif_step(ref_u, ref_v, a[t], p)
        ref_s.append(s)
        ref_trace.append((ref_u, ref_v))
    fu, fv, fs, trace = int_lif_steps(u, v, a, p, record=True)
    assert torch.equal(fu, ref_u) and torch.equal(fv, ref_v) and torch.equal(fs, torch.stack(ref_s))
    nu, nv, ns, _ = int_lif_steps(u, v, a, p)   # unrecorded: the C run (snn/native/int_lif.c) where it is built
    assert torch.equal(nu, ref_u) and torch.equal(nv, ref_v) and torch.equal(ns, fs)
    assert all(torch.equal(x, y) and torch.equal(x2, y2) for (x, x2), (y, y2) in zip(trace, ref_trace))
    assert fu.dtype == fv.dtype == torch.int64 and fs.dtype == torch.bool
    assert torch.stack(ref_s).any() and (a_max < 2 ** 16 or wraps > 0)   # spikes; wraps where inputs are large


@pytest.mark.parametrize("du,dv,a_max,constant", [(2048, 2048, 3000, False), (2048, 2048, 3000, True),
                                                  (0, 1, 31, False), (4095, 4095, 1000, True), (0, 0, 2 ** 16, True)])
def test_lif_run_from_small_states_equals_the_int64_step_loop(du, dv, a_max, constant):
    """Small initial states: where the bounds rule out the 24-bit wrap and the clip the float run skips
    them (first four cases), and a large constant input into slow decays reaches both within the run
    (last case); a constant input is one step as a stride-0 view. The same integers as the int64 loop."""
    g = torch.Generator().manual_seed(7 + du + a_max)
    T, shape = 12, (3, 400)
    p = IntLIFParams(du=du, dv=dv, vth=int(torch.randint(1, 200, (), generator=g)),
                     bias_mant=torch.randint(-300, 300, (400,), generator=g), bias_exp=0)
    u = torch.randint(-5000, 5000, shape, generator=g)
    v = torch.randint(-5000, 5000, shape, generator=g)
    a = (torch.randint(-a_max, a_max + 1, shape, generator=g).expand(T, *shape) if constant
         else torch.randint(-a_max, a_max + 1, (T, *shape), generator=g))
    ref_u, ref_v, ref_s = u, v, []
    for t in range(T):
        ref_u, ref_v, s = int_lif_step(ref_u, ref_v, a[t], p)
        ref_s.append(s)
    fu, fv, fs, _ = int_lif_steps(u, v, a, p)
    assert torch.equal(fu, ref_u) and torch.equal(fv, ref_v) and torch.equal(fs, torch.stack(ref_s))
    assert torch.stack(ref_s).any()
    if a_max == 2 ** 16:   # the wrap and the clip were reached
        assert int(ref_v.abs().max()) == UV_MAX - 1 or int(ref_u.abs().max()) > UV_MAX // 2


@pytest.mark.parametrize("weight_exp", [-3, 0, 2])
def test_float_product_gives_the_integers_of_int_product(weight_exp):
    """Dense and conv products with spikes and 8-bit payloads: float_product (float64, no int64 round
    trip) equals int_product (floor shifts of negative sums included); None where float32 is not exact."""
    g = torch.Generator().manual_seed(11 + weight_exp)
    m = torch.randint(-128, 128, (20, 50), generator=g)
    for x in (torch.rand(7, 50, generator=g) < 0.3, torch.randint(0, 256, (7, 50), generator=g)):
        a = float_product(m, x, weight_exp, dense_product)
        assert a.dtype == torch.float64 and torch.equal(a.to(torch.int64), int_product(m, x, weight_exp, dense_product))
        assert (a < 0).any() and (a != a.floor()).sum() == 0
    mc = torch.randint(-128, 128, (4, 3, 3, 3), generator=g)
    xc = torch.randint(0, 256, (2, 3, 9, 9), generator=g)
    conv = lambda u, w: torch.nn.functional.conv2d(u, w, padding=1)  # noqa: E731
    assert torch.equal(float_product(mc, xc, weight_exp, conv).to(torch.int64), int_product(mc, xc, weight_exp, conv))
    big = torch.full((3, 50), 5000)   # 5000·Σ|2m| > 2^24: float32 would not be exact
    assert float_product(m, big, weight_exp, dense_product) is None


def test_fixed_synapse_remakes_its_weights_when_the_mantissas_change():
    """The synapse makes 2m and its float copies once; an in-place change or a new m is seen."""
    from neuroplast.chip.fixed_network import FixedSynapse
    g = torch.Generator().manual_seed(4)
    syn = FixedSynapse(torch.randint(-128, 128, (5, 40), generator=g), -1, 1, 1.0)
    x = torch.rand(3, 40, generator=g) < 0.5
    assert torch.equal(syn.current(x), int_dense(syn.m, x, -1))
    assert syn.weights() is syn.weights()
    syn.m.mul_(-1)
    assert torch.equal(syn.current(x), int_dense(syn.m, x, -1))
    assert torch.equal(syn.current_exact(x).to(torch.int64), int_dense(syn.m, x, -1))
    syn.m = torch.randint(-128, 128, (5, 40), generator=g)
    assert torch.equal(syn.current(x), int_dense(syn.m, x, -1))

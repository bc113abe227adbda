"""Counter-based draws (``neuroplast.snn.draws``, ``counter_rng``): SplitMix64's reference stream, the C
kernel and its torch twin give the same bits, the numbers depend on the generator and the size only,
they have their distributions, and the fast paths still draw as the step loop."""
import math

import pytest
import torch

from neuroplast.learn import CEMSELoss, make_rule
from neuroplast.snn import build_network, counter_rng, draws, native_lib

KINDS = {
    "normal": lambda n, g: draws.normal(n, g, "cpu", 0.5, 2.0),
    "uniform": lambda n, g: draws.uniform(n, g, "cpu"),
    "words": lambda n, g: draws.words(n, g, "cpu"),
}
needs_c = pytest.mark.skipif(native_lib.library() is None, reason=f"C kernels: {native_lib.reason()}")


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _splitmix64(seed: int, k: int) -> list[int]:
    """SplitMix64 as Steele et al. give it, in Python integers."""
    out, s, m = [], seed, (1 << 64) - 1
    for _ in range(k):
        s = (s + counter_rng.GAMMA) & m
        z = ((s ^ (s >> 30)) * counter_rng.MIX[0]) & m
        z = ((z ^ (z >> 27)) * counter_rng.MIX[1]) & m
        out.append(z ^ (z >> 31))
    return out


def test_the_stream_is_splitmix64():
    assert _splitmix64(0, 1) == [0xE220A8397B1DCDAF]   # the published first output of seed 0
    for seed in (0, 1234567, (1 << 64) - 1, (1 << 63) + 5):
        want = _splitmix64(seed, 9)
        assert [w & ((1 << 64) - 1) for w in counter_rng.stream(seed, 9).tolist()] == want
        words = counter_rng.words(seed, 17).tolist()
        assert words == [h for w in want for h in (w >> 32, w & 0xFFFFFFFF)][:17]
        u = counter_rng.uniform(seed, 18).tolist()
        assert u == [h * 2.0 ** -24 for w in want for h in (w >> 40, (w >> 8) & 0xFFFFFF)]


@needs_c
@pytest.mark.parametrize("n", [1, 2, 31, 100_001])
def test_the_c_kernels_give_the_twins_bits(n):
    for seed in (0, 99, (1 << 64) - 3):
        assert torch.equal(counter_rng.words(seed, n), counter_rng.words(seed, n, native=False))
        assert torch.equal(counter_rng.uniform(seed, n), counter_rng.uniform(seed, n, native=False))
        for mean, std in ((0.0, 1.0), (0.3, 1.7), (0.0, 0.05)):
            assert torch.equal(counter_rng.normal(seed, n, mean, std),
                               counter_rng.normal(seed, n, mean, std, native=False))


@pytest.mark.parametrize("kind", KINDS)
def test_draws_do_not_depend_on_the_number_of_threads(kind, threads):
    n = 300_007
    out = []
    for t in (1, 2, 3):
        torch.set_num_threads(t)
        out.append(KINDS[kind](n, torch.Generator().manual_seed(11)))
    assert torch.equal(out[0], out[1]) and torch.equal(out[0], out[2])
    g = torch.Generator().manual_seed(11)
    KINDS[kind](n, g)
    assert not torch.equal(KINDS[kind](n, g), out[0])   # the generator moves on: a fresh stream


def test_draws_take_two_words_of_the_callers_generator():
    g, ref = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    z = draws.normal((4, 5), g, "cpu", 0.0, 0.3)
    hi, lo = torch.empty(2, dtype=torch.int64).random_(0, 1 << 32, generator=ref).tolist()
    assert torch.equal(z, counter_rng.normal(hi << 32 | lo, 20, 0.0, 0.3).view(4, 5))
    assert torch.equal(g.get_state(), ref.get_state())


def test_normal_draws_have_the_distribution():
    n = 2_000_000
    z = draws.normal(n, torch.Generator().manual_seed(0), "cpu", 0.5, 2.0).double()
    assert abs(z.mean() - 0.5) < 5 * 2.0 / math.sqrt(n) and abs(z.std() - 2.0) < 0.005
    s = ((z - 0.5) / 2.0).sort().values   # Kolmogorov–Smirnov distance to N(0, 1), 0.1% critical value
    emp = torch.arange(1, n + 1, dtype=torch.float64) / n
    assert (0.5 * (1 + torch.erf(s / math.sqrt(2))) - emp).abs().max() < 1.95 / math.sqrt(n)
    assert abs(((s - s.mean()) ** 4).mean() - 3.0) < 0.03   # kurtosis: the tails are there
    zz = (z - 0.5) / 2.0   # the two numbers of one word (r·cos θ, r·sin θ) are uncorrelated
    assert abs((zz[0::2] * zz[1::2]).mean()) < 5 / math.sqrt(n / 2)
    assert abs((zz[0::2] ** 2 * zz[1::2] ** 2).mean() - 1.0) < 0.02   # and independent (E z₁²z₂² = 1)


def test_uniform_and_word_draws_have_the_distribution():
    n = 2_000_000
    g = torch.Generator().manual_seed(1)
    u = draws.uniform(n, g, "cpu").double()
    assert 0 <= u.min() and u.max() < 1
    emp = torch.arange(1, n + 1, dtype=torch.float64) / n
    assert (u.sort().values - emp).abs().max() < 1.95 / math.sqrt(n)
    w = draws.words(n, g, "cpu")
    assert 0 <= w.min() and w.max() < 1 << 32 and abs(w.double().mean() / 2 ** 31 - 1) < 0.002
    bits = (w[:, None] >> torch.arange(32)) & 1      # every bit is a fair coin
    assert (bits.double().mean(0) - 0.5).abs().max() < 5 * 0.5 / math.sqrt(n)


@pytest.mark.parametrize("method", ["opzo", "opzo:noise=rademacher", "dfa"])
def test_folded_online_rules_draw_as_the_step_loop(method):
    grads = []
    for fold in (True, False):
        net = build_network("16-12-10-10", input_shape=(16,), num_classes=10,
                            generator=torch.Generator().manual_seed(0)).double()
        net.train()
        net.seed_draws(4)
        rule = make_rule(method)
        rule.generator = torch.Generator().manual_seed(3)
        rule.fold_time = fold
        x = torch.rand(6, 5, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
        rule.compute_grads(net, x, torch.tensor([0, 3, 5, 9, 1]), CEMSELoss())
        grads.append({k: p.grad for k, p in net.named_parameters()})
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], rtol=1e-6, atol=1e-6)


def test_draws_work_in_inference_mode():
    n = 70_001
    with torch.inference_mode():
        a = draws.uniform(n, torch.Generator().manual_seed(4), "cpu")
    assert torch.equal(a, draws.uniform(n, torch.Generator().manual_seed(4), "cpu"))


def test_gaussians_are_box_muller_to_float_rounding():
    """The float32 polynomials for log, cos and sin against float64 Box–Muller on the same words."""
    w = counter_rng.stream(3, 200_000)
    z = counter_rng.normal(3, 400_000).double().view(-1, 2)
    u1 = (counter_rng._shr(w, 40) + 1).double() * 2.0 ** -24
    b = counter_rng._shr(w, 8) & 0xFFFFFF
    theta = ((b >> 22).double() + ((b & 0x3FFFFF).double() + 0.5) * 2.0 ** -22 - 0.5) * (math.pi / 2)
    r = torch.sqrt(-2 * torch.log(u1))
    ref = torch.stack([r * torch.cos(theta), r * torch.sin(theta)], -1)
    assert ((z - ref).abs() / ref.abs().clamp_min(1e-3)).max() < 5e-7

"""Chunked draws (``neuroplast.snn.draws``): the numbers depend on the generator and the size only,
small draws are torch's own, and the fast paths still draw as the step loop when draws are chunked."""
import math

import pytest
import torch

from neuroplast.learn import CEMSELoss, make_rule
from neuroplast.snn import build_network, draws

KINDS = {
    "normal": lambda n, g: draws.normal(n, g, "cpu", 0.5, 2.0),
    "uniform": lambda n, g: draws.uniform(n, g, "cpu"),
    "words": lambda n, g: draws.words(n, g, "cpu"),
}


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("kind", KINDS)
def test_chunked_draws_do_not_depend_on_the_number_of_threads(kind, threads):
    n = 5 * draws.CHUNK + 7
    out = []
    for t in (1, 2, 3):
        torch.set_num_threads(t)
        out.append(KINDS[kind](n, torch.Generator().manual_seed(11)))
    assert torch.equal(out[0], out[1]) and torch.equal(out[0], out[2])
    # the chunks are different streams, and the generator moves on
    assert not torch.equal(out[0][: draws.CHUNK], out[0][draws.CHUNK: 2 * draws.CHUNK])
    g = torch.Generator().manual_seed(11)
    KINDS[kind](n, g)
    assert not torch.equal(KINDS[kind](n, g), out[0])


def test_small_draws_are_torchs_own():
    n = draws.CHUNK
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(draws.normal((n,), g1, "cpu", 0.0, 0.3), torch.empty(n).normal_(0.0, 0.3, generator=g2))
    assert torch.equal(draws.uniform((4, 5), g1, "cpu"), torch.rand(4, 5, generator=g2))
    assert torch.equal(draws.words(9, g1, "cpu"), torch.empty(9, dtype=torch.int64).random_(0, 1 << 32, generator=g2))


def test_chunked_draws_have_the_distribution():
    n = 40 * draws.CHUNK
    g = torch.Generator().manual_seed(0)
    z = draws.normal(n, g, "cpu", 0.5, 2.0).double()
    assert abs(z.mean() - 0.5) < 5 * 2.0 / math.sqrt(n) and abs(z.std() - 2.0) < 0.01
    # neighbouring chunks are uncorrelated
    a, b = z[: 20 * draws.CHUNK], z[20 * draws.CHUNK:]
    assert abs(((a - 0.5) * (b - 0.5)).mean() / 4.0) < 5 / math.sqrt(a.numel())
    u = draws.uniform(n, g, "cpu")
    assert 0 <= u.min() and u.max() < 1 and abs(u.double().mean() - 0.5) < 5 / math.sqrt(12 * n)
    w = draws.words(n, g, "cpu")
    assert 0 <= w.min() and w.max() < 1 << 32 and abs(w.double().mean() / 2 ** 31 - 1) < 0.002


@pytest.mark.parametrize("method", ["opzo", "opzo:noise=rademacher", "dfa"])
def test_folded_online_rules_draw_as_the_step_loop_with_chunked_draws(method, monkeypatch):
    """With chunks of 8 numbers every noise draw of this small net is chunked."""
    monkeypatch.setattr(draws, "CHUNK", 8)
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
    """Chunked in-place fills of a tensor made in inference mode give the numbers of a normal draw."""
    n = 4 * draws.CHUNK
    with torch.inference_mode():
        a = draws.uniform(n, torch.Generator().manual_seed(4), "cpu")
    assert torch.equal(a, draws.uniform(n, torch.Generator().manual_seed(4), "cpu"))


def test_chunk_generators_get_whole_random_states():
    """Each chunk's mt19937 state is 624 fresh words of the caller's stream, not a 32-bit seed (torch
    keeps 32 bits of a manual_seed, so seeded chunks of a long run would repeat each other)."""
    assert draws._state_template() is not None   # the layout this torch uses is the known one
    g = torch.Generator().manual_seed(6)
    words, seeds = draws._chunk_states(3, g)
    assert seeds is None
    assert torch.equal(words, torch.empty((3, draws._WORDS), dtype=torch.int64).random_(
        0, 1 << 32, generator=torch.Generator().manual_seed(6)))
    chunk = torch.Generator()
    for i in range(3):
        draws._set_chunk(chunk, words, None, i)
        assert torch.equal(chunk.get_state()[draws._OFFSET:draws._OFFSET + 8 * draws._WORDS].view(torch.int64),
                           words[i])
    z = draws.normal(3 * draws.CHUNK, torch.Generator().manual_seed(6), "cpu")
    draws._set_chunk(chunk, words, None, 0)
    assert torch.equal(z[: draws.CHUNK], torch.empty(draws.CHUNK).normal_(generator=chunk))

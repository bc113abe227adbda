"""Online training through time (OTTT; Xiao et al., NeurIPS 2022, Sec. 4).

At each step t the network advances one step with its state cut from the graph, the instantaneous
loss L[t] = L(o[t], y)/T is back-propagated through the layers of that step only, and each weight
gradient uses the presynaptic trace instead of the spike:

    x̂_l[t] = λ·x̂_l[t−1] + s_l[t],      ∂L/∂W_{l+1} += δ_{l+1}[t] ⊗ x̂_l[t]

Gradients accumulate over t; the update is applied once per sample batch (OTTT_A). Memory is
independent of T. With T = 1 it equals BPTT."""
from __future__ import annotations

from ..snn import detach_state
from . import batched
from .base import Rule, StepAccumulator, register
from .loss import step_losses


@register
class OTTT(Rule):
    name = "ottt"
    #: run the steps in windows with time folded into the batch when the net allows it (``batched``)
    fold_time = True

    def step_options(self, net, x_seq) -> dict:
        """Extra arguments of ``Network.step`` (feedback alignment passes its matrices here)."""
        return {}

    def compute_grads(self, net, x_seq, y, loss_fn):
        net.check_input(x_seq)
        T = x_seq.shape[0]
        options = self.step_options(net, x_seq)
        if self.fold_time and batched.supported(net):
            return self._compute_batched(net, x_seq, y, loss_fn, options.get("feedback"))
        state, acc = net.init_state(), StepAccumulator(T)
        for t in range(T):
            o, state, s_t = net.step(x_seq[t], state, traces=True, **options)
            loss = loss_fn(o, y) / T
            loss.backward()
            state = detach_state(state)
            acc.add(loss, o, s_t)
        return acc.result()

    def _compute_batched(self, net, x_seq, y, loss_fn, feedback):
        """The same gradients, T steps at a time per layer (``learn.batched``)."""
        T = x_seq.shape[0]
        sim, acc = batched.CutSimulator(net, feedback=feedback), StepAccumulator(T)
        for t0, t1 in batched.windows(T):
            o, spikes = sim.window(x_seq[t0:t1], last=t1 == T)
            losses = step_losses(loss_fn, o, y) / T
            losses.sum().backward()
            acc.add_window(losses, o, spikes)
            del o, spikes, losses  # free the window before the next one
        return acc.result()

"""Training cost on a neuromorphic chip, counted from a run's recorded activity (``neuroplast cost``).

Per training sample (T time steps), layers l = 1..L−1 hidden with N_l neurons, C outputs, N_0 inputs,
S_l = Σ_j s_j·fanout_j the counted synaptic events leaving layer l (spike-driven accumulates):

  forward (all methods)  SynOps = Σ_l S_l (+ input events: the non-zero payloads of what the chip is sent,
      intensities in [0, 1] also for a run trained on normalised images, ``runs.chip_view``);
      neuron updates = T·Σ_{l≥1} N_l
      except ZO/OPZO with noise after the neuron (``site=after``, the default): every hidden neuron
      then sends a graded s + σz at every step (``chip.onchip`` payloads), so a hidden layer sends
      T·N_l messages and the layer after it takes T·(its synapses) SynOps: the forward pass is no
      longer spike-sparse (noise before the neuron keeps it so; OPZO Sec. 4.4)
  BP  (OPZO Table 5, "if possible"): backward error through Wᵀ every step, T·Σ_{l≥2} N_l·N_{l−1}
      dense ops; memory: a transposed copy of every W plus T steps of activations (s and u per
      neuron) kept for the backward pass
  DFA: feedback e·B_l, T·C·Σ_{l<L} N_l ops; memory C·Σ N_l
  ZO:  one scalar broadcast per neuron, T·Σ N_l ops; T·Σ N_l noise draws; memory Σ N_l (the noise)
  OPZO: feedback e·M_l plus the momentum update of M_l, 2·T·C·Σ N_l ops; T·Σ N_l noise draws
      (T/2·Σ N_l with antithetic pairs; the counted figure is reported); memory C·Σ N_l
  + local learning: a readout per hidden layer, T·C·Σ N_l forward and T·C·Σ N_l feedback ops,
      memory C·Σ N_l
  weight updates: every synapse once per optimizer step; presynaptic traces Σ_l N_{l−1} (online rules)

Energy = SynOps·E_synop + feedback ops·E_synop + neuron updates·E_neuron(active) + weight updates·
E_update + spikes·E_spike (within tile), from the chip file; time likewise, spread over the cores in
use. The ANN-equivalent MAC count (Σ N_l·N_{l−1} per pass) is given for contrast. Core mapping: a
layer needs max(⌈N/neurons per core⌉, ⌈fan-in synapse bits/synaptic memory per core⌉) cores.
"""
from __future__ import annotations

import math

import torch

from ..errors import UserError
from .hardware import Chip


class CostUnavailable(UserError):
    """No cost for this run: its method has no cost model, or its training activity was not recorded and
    cannot be reconstructed (``report`` notes it; the ``cost`` command exits 2)."""


METHOD_FAMILY = {"bptt": "bp", "ottt": "bp", "fa": "bp", "dfa": "dfa", "zo": "zo", "opzo": "opzo"}


def _family(method: str) -> tuple[str, bool, bool]:
    """(cost family, local learning on?, hidden layers send graded noisy messages every step?) of a
    method spec, as ``make_rule`` reads it."""
    from ..learn import make_rule
    rule = make_rule(method)
    if rule.name not in METHOD_FAMILY:
        raise CostUnavailable(f"no cost model for method {rule.name!r}; known: {', '.join(METHOD_FAMILY)}")
    fam = METHOD_FAMILY[rule.name]
    return fam, bool(getattr(rule, "local", None)), fam in ("zo", "opzo") and getattr(rule, "site", "after") == "after"


#: ``activity["input_events"]`` of runs whose input events are counted on intensities (non-zero payloads of
#: what the chip is sent); runs recorded before counted a normalised image's every pixel (its zeros are not 0)
INPUT_EVENTS = "intensities"


def new_activity() -> dict:
    """The training activity a run records for the cost model (summed over its optimizer steps)."""
    return {"updates": 0, "noise_draws": 0, "samples": 0, "train_spikes": {}, "train_synops": {},
            "input_events": INPUT_EVENTS}


def record_step(activity: dict, net, x_seq, spike_counts: dict, noise_draws: int, samples: int,
                norm=None) -> None:
    """Add one optimizer step to ``activity``: its spikes per layer (counts [*shape] summed over the batch
    and T), the synaptic events they cause (``Network.count_synops``), noise draws and samples. Input
    events are the non-zero entries of what a chip is sent: with ``norm`` (``Dataset.norm`` of normalised
    inputs) those of the intensities, where a chip runs the network folded to take them (``runs.chip_view``)."""
    activity["updates"] += 1
    activity["noise_draws"] += int(noise_draws)
    if norm is not None and not norm.identity:
        x_seq = norm.intensities(x_seq[0]).expand(x_seq.shape) if x_seq.stride(0) == 0 else norm.intensities(x_seq)
    spikes = [v.sum() for v in spike_counts.values()]
    synops = net.synop_sums(x_seq, spike_counts)
    # every sum read in one transfer (one device sync on a GPU); float32 sums widen to float64 exactly
    values = torch.stack([t.double() for t in (*spikes, *synops.values())]).tolist()   # synops has "input"
    for k, v in zip(spike_counts, values[:len(spikes)]):
        activity["train_spikes"][k] = activity["train_spikes"].get(k, 0) + int(v)
    for k, v in zip(synops, values[len(spikes):]):
        activity["train_synops"][k] = activity["train_synops"].get(k, 0.0) + v
    activity["samples"] += int(samples)


def layer_table(net) -> list[dict]:
    """Synaptic layers of a network: neurons, fan-in synapses, and the spiking layer feeding each."""
    rows, prev = [], "input"
    for name, layer in net.layers.items():
        op = getattr(layer, "op", None)
        if op is None:
            continue
        n = math.prod(net.shapes[name])
        synapses = int(net.fan_out(prev).sum())
        rows.append({"layer": name, "neurons": n, "synapses": synapses, "pre": prev,
                     "pre_neurons": math.prod(net.input_shape if prev == "input" else net.shapes[prev]),
                     "weights": int(op.weight.numel()), "spiking": layer.records_spikes})
        prev = name
    return rows


def _per_layer(rows: list[dict], act: dict, samples, T: int, noisy: set) -> dict:
    """Per synaptic layer and training sample: neurons, synapses, spikes and firing rate, the messages it
    sends (its spikes, or T·N graded noisy payloads from a layer in ``noisy``), the SynOps it takes in (its
    input layer's counted events, or T·synapses from a noisy one), neuron updates and ANN MACs."""
    per = {}
    for r in rows:
        spikes = act["train_spikes"].get(r["layer"], 0) / samples
        synops_in = T * r["synapses"] if r["pre"] in noisy else act["train_synops"].get(r["pre"], 0.0) / samples
        per[r["layer"]] = {"neurons": r["neurons"], "synapses": r["synapses"],
                           "spikes": spikes, "firing_rate": spikes / (T * r["neurons"]) if r["spiking"] else None,
                           "messages": T * r["neurons"] if r["layer"] in noisy else spikes,
                           "synops_in": synops_in, "neuron_updates": T * r["neurons"],
                           "ann_macs": r["synapses"]}
    return per


def _learning_cost(fam: str, ll: bool, rows: list[dict], T: int, C: int, sum_hidden: int, synapses: int
                   ) -> tuple[int, int]:
    """(feedback ops, learning memory entries) per training sample of a method's family (the module
    docstring's BP, DFA, ZO and OPZO lines), plus local learning's readouts where ``ll``."""
    if fam == "bp":
        feedback_ops = T * sum(r["synapses"] for r in rows[1:])
        learn_mem = synapses + 2 * T * sum(r["neurons"] for r in rows)   # Wᵀ copy + stored s and u
    elif fam == "dfa":
        feedback_ops, learn_mem = T * C * sum_hidden, C * sum_hidden
    elif fam == "zo":
        feedback_ops, learn_mem = T * sum_hidden, sum_hidden
    else:
        feedback_ops, learn_mem = 2 * T * C * sum_hidden, C * sum_hidden
    if ll:
        feedback_ops += 2 * T * C * sum_hidden
        learn_mem += C * sum_hidden
    return feedback_ops, learn_mem


def cost_model(summary: dict, net, chip: Chip, *, time_steps: int, method: str) -> dict:
    """Per-training-sample counts, memory, energy and time of ``method`` on ``chip`` (``_per_layer``,
    ``_learning_cost``; the cores by ``core_mapping``)."""
    act = summary.get("activity") or {}
    samples = act.get("samples") or 0
    if not samples or "train_synops" not in act:
        raise CostUnavailable("this run has no recorded training activity (samples, train_synops); re-run it with this "
                        "version of neuroplast (`neuroplast train ... --save`)")
    fam, ll, graded = _family(method)
    T, C = time_steps, net.num_classes
    rows = layer_table(net)
    hidden = [r for r in rows if r["spiking"]]
    sum_hidden = sum(r["neurons"] for r in hidden)
    noisy = {r["layer"] for r in hidden} if graded else set()   # layers sending s + σz every step
    per = _per_layer(rows, act, samples, T, noisy)
    fwd_synops = sum(p["synops_in"] for p in per.values())
    neuron_updates = sum(p["neuron_updates"] for p in per.values())
    spikes = sum(p["spikes"] for p in per.values())
    messages = sum(p["messages"] for p in per.values())   # spikes, or graded noisy payloads
    synapses = sum(r["synapses"] for r in rows)
    weights = sum(r["weights"] for r in rows)
    feedback_ops, learn_mem = _learning_cost(fam, ll, rows, T, C, sum_hidden, synapses)
    noise = act.get("noise_draws", 0) / samples           # counted: T·Σ N_l, or T/2·Σ N_l with antithetic pairs
    updates = act.get("updates", 0) * synapses / samples           # weight updates per sample
    traces = sum(r["pre_neurons"] for r in rows) if fam != "bp" or method.startswith("ottt") else 0
    e = chip.energy_pj
    energy = {"forward_synops": fwd_synops * e["synaptic_op"], "feedback": feedback_ops * e["synaptic_op"],
              "neuron_updates": neuron_updates * e["neuron_update_active"],
              "weight_updates": updates * e["synaptic_update"], "spikes": messages * e["spike_within_tile"]}
    tn = chip.time_ns
    busy = (fwd_synops + feedback_ops) * tn["synaptic_op"] + neuron_updates * tn["neuron_update_active"] + \
        updates * tn["synaptic_update"] + messages * tn["spike_within_tile"]
    mapping = core_mapping(rows, chip, learn_entries=learn_mem if fam != "bp" else 0, hidden=hidden)
    return {"method": method, "family": fam, "local_learning": ll, "chip": chip.name, "time_steps": T,
            "samples": samples, "per_layer": per,
            "per_sample": {"synops_forward": fwd_synops, "feedback_ops": feedback_ops, "neuron_updates": neuron_updates,
                           "spikes": spikes, "messages": messages, "weight_updates": updates, "noise_draws": noise,
                           "ann_macs_forward": synapses, "ann_macs_training": 3 * synapses},
            "memory_entries": {"synapses": synapses, "parameters": weights, "learning_state": learn_mem,
                               "traces": traces},
            "energy_uj_per_sample": {k: v * 1e-6 for k, v in energy.items()},
            "energy_uj_per_sample_total": sum(energy.values()) * 1e-6,
            "time_us_per_sample": busy * 1e-3 / max(1, mapping["cores"]),
            "mapping": mapping, "estimated_figures": [k for k in ("energy.synaptic_op", "time.synaptic_op")
                                                      if chip.is_estimated(k)]}


def core_mapping(rows: list[dict], chip: Chip, *, learn_entries: int = 0, hidden=()) -> dict:
    """Cores per layer (neuron count or fan-in synaptic memory, whichever needs more) and chips."""
    per_core_n, mem = chip.capacity["neurons_per_core"], chip.capacity["synaptic_memory_bits_per_core"]
    bits = chip.numerics["weight_mantissa_bits"]
    layers = {}
    for r in rows:
        extra = learn_entries * r["neurons"] / max(1, sum(h["neurons"] for h in hidden)) if r in hidden else 0
        layers[r["layer"]] = max(math.ceil(r["neurons"] / per_core_n), math.ceil((r["synapses"] + extra) * bits / mem))
    cores = sum(layers.values())
    return {"cores_per_layer": layers, "cores": cores, "chips": math.ceil(cores / chip.capacity["cores_per_chip"]),
            "fits_one_chip": cores <= chip.capacity["cores_per_chip"],
            "over_by_cores": max(0, cores - chip.capacity["cores_per_chip"])}


def run_cost(run_dir, hw: str, data_dir: str | None = None) -> dict:
    """The training cost (``cost_model``) of a run directory on chip ``hw``, from its summary.json's activity."""
    from ..runs import load_run, read_summary
    from .hardware import load_chip
    summary = read_summary(run_dir)
    cfg, net, data = load_run(run_dir, data_dir)
    normalised = not data.norm.identity
    data = data.intensities()   # a chip is sent intensities (runs.chip_view): their zeros send nothing
    source = "recorded"
    act = summary.get("activity") or {}
    if "train_synops" not in act or not act.get("samples"):  # runs from before SynOps were recorded
        summary = {**summary, "activity": reconstruct_activity(act, net, data, cfg)}
        source = "reconstructed from spike totals (uniform fan-out)"
    elif normalised and act.get("input_events") != INPUT_EVENTS:   # recorded on normalised images: recount
        synops = {**act["train_synops"], "input": input_synops(net, data, cfg)}
        summary = {**summary, "activity": {**act, "train_synops": synops}}
        source = "recorded (input events recounted on intensities)"
    res = cost_model(summary, net, load_chip(hw), time_steps=cfg.time_steps, method=cfg.method)
    res.update(run=str(run_dir), net=cfg.net, dataset=cfg.dataset, test_acc=summary.get("test_acc"),
               activity_source=source)
    return res


def input_synops(net, data, cfg) -> float:
    """The input's SynOps over a run's training with direct input (the same sample at every step, every
    training sample once per epoch): T·epochs·Σ_j (samples with input j ≠ 0)·fanout_j, on ``data`` as the
    chip is sent it (intensities)."""
    nnz = (data.train.x != 0).sum(0).to(torch.float64)
    return float((nnz * net.fan_out("input").to(torch.float64)).sum()) * cfg.time_steps * cfg.epochs


def reconstruct_activity(act: dict, net, data, cfg) -> dict:
    """SynOps of an older run from its per-layer spike totals: exact when every neuron of a layer has
    the same fan-out (fully connected) and the input is direct (the same values every step)."""
    if not act.get("train_spikes") or cfg.encoding != "direct":
        raise CostUnavailable("this run has no recorded training activity (samples, train_synops); re-run it with this "
                        "version of neuroplast (`neuroplast train ... --save`)")
    synops = {}
    for name in ["input", *net.spiking_layers()]:
        f = net.fan_out(name)
        if float(f.min()) != float(f.max()):
            raise CostUnavailable(f"layer {name} has a non-uniform fan-out (conv); its SynOps cannot be reconstructed "
                            "from spike totals: re-run the training with this version of neuroplast")
        if name == "input":
            synops[name] = input_synops(net, data, cfg)
        elif name not in act["train_spikes"]:
            raise CostUnavailable(f"the recorded activity has no spike total of layer {name} of network {cfg.net!r}; "
                                  "re-run the training with --save")
        else:
            synops[name] = act["train_spikes"][name] * float(f.max())
    return {**act, "samples": cfg.epochs * len(data.train), "train_synops": synops}

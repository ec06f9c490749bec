"""Early exit per sample: stop simulating a sample once its prediction is decided.

The rule (on the readout margin against the largest change still possible). The readout
sums its input current ``y[t]``; after step ``t`` of at most ``T`` the sums are ``S[t]``
(after a readout warm-up of ``d`` steps, the sums since step ``d + 1``) and the prediction
is ``a = argmax S[t]``. The readout's input is an affine function of the spikes of the
layers that feed it, ``y[t] = G s[t] + y0`` with every spike count in ``[lo_j, hi_j]``
(``[0, 1]``; ``[0, B]`` for burst-B neurons, ``[-B, B]`` for signed ones), so one more step
can raise ``S_c - S_a`` by at most

    D[a, c] = sum_j max((G[c, j] - G[a, j]) hi_j, (G[c, j] - G[a, j]) lo_j) + y0[c] - y0[a]

(:func:`readout_bound`; ``G`` by back-propagation through the graph's affine part). A
sample exits after step ``t`` when, for every other class ``c``,

    S_a[t] - S_c[t] > beta * (T - t) * D[a, c]

With ``beta = 1`` the prediction at ``T`` can no longer change: early exit gives exactly
the predictions (and accuracy) of the full ``T`` steps, in fewer steps. ``beta < 1``
trusts that the remaining steps will not all conspire against the leader (the bound is
a worst case that spike trains practically never reach); :func:`early_exit` reports the
accuracy it costs, and the caller picks ``beta`` on data other than the test set.

The rule is causal (it reads the readout up to step ``t`` only), so :func:`early_exit`
simulates the batch once for ``T`` steps to find each sample's exit step ``t_i``; for the
energy it then simulates each group of samples that exit at the same step for exactly
that many steps, which gives the spikes, neuron updates and per-step costs an
early-exiting run spends (each sample is independent of the others in a batch), and
prices each group with :func:`snn.energy_report`. The energy report of the full run
carries the outcome (``EarlyExitResult.report.early_exit``) and renders it as its
"Early exit" section: accuracy, mean and distribution of exit steps, energy saved.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from snn import ir, ir_torch
from snn.errors import SnnError


def readout_bound(graph: ir.Graph) -> np.ndarray:
    """``D`` (K, K): ``D[a, c]`` is the largest increase of ``y_c - y_a`` (readout input) that
    one step can bring, a step's spike count being in ``[0, 1]`` (``[0, B]`` for burst
    neurons, ``[-B, B]`` for signed ones; see the module docstring)."""
    sources = set(graph.recorded_nodes())
    (top,) = graph.inputs_of(graph.output)
    need: set[str] = set()
    stack = [top]
    while stack:
        n = stack.pop()
        if n in need or n in sources:
            continue
        node = graph.nodes[n]
        if isinstance(node, ir.Input):
            raise SnnError("early exit needs a readout fed by spiking layers only; the readout of this network "
                           "depends on the input directly")
        if isinstance(node, (ir.MaxPool2d, ir.MaxPool1d)):
            raise SnnError(f"early exit: node {n!r} ({node.kind}) is a max-pool of currents between the last "
                           "spiking layer and the readout; the bound needs an affine readout")
        need.add(n)
        stack += graph.inputs_of(n)
    params = ir_torch.Params(graph, "cpu", torch.float64)
    leaves: dict[str, torch.Tensor] = {}
    vals: dict[str, torch.Tensor] = {}
    with torch.enable_grad():
        for n in graph.nodes:
            if n in sources and any(n in graph.inputs_of(m) for m in need):
                leaves[n] = vals[n] = torch.zeros((1,) + graph.shapes[n], dtype=torch.float64, requires_grad=True)
            elif n in need:
                vals[n] = ir_torch.forward(graph.nodes[n], params.t[n], [vals[i] for i in graph.inputs_of(n)], n)
        y = vals[top].reshape(-1)
        rows = []
        for k in range(len(y)):
            grads = torch.autograd.grad(y[k], list(leaves.values()), retain_graph=True, allow_unused=True)
            rows.append(torch.cat([(g if g is not None else torch.zeros_like(v)).reshape(-1)
                                   for g, v in zip(grads, leaves.values())]))
    G = torch.stack(rows).numpy()
    y0 = y.detach().numpy()
    hi, lo = (np.concatenate([np.full(int(np.prod(graph.shapes[n])), v, dtype=np.float64) for n, v in pairs])
              for pairs in ([(n, getattr(graph.nodes[n], "burst", 1)) for n in leaves],
                            [(n, -graph.nodes[n].burst if getattr(graph.nodes[n], "signed", False) else 0)
                             for n in leaves]))
    dG = G[None, :, :] - G[:, None, :]
    return np.maximum(dG * hi, dG * lo).sum(axis=2) + y0[None, :] - y0[:, None]


def exit_steps(outputs: np.ndarray, bound: np.ndarray, beta: float, delay: int = 0) -> np.ndarray:
    """The step (1..T) after which each sample exits, from the readout ``outputs`` (T, N, K)
    of a full simulation (what it reports after each step), the bound ``D`` of
    :func:`readout_bound`, the trust factor ``beta`` and the readout warm-up ``delay``."""
    T, n, _ = outputs.shape
    steps = np.arange(1, T + 1)
    counted = np.maximum(steps - delay, 0).astype(outputs.dtype)  # steps the sums run over
    sums = outputs * np.where(steps > delay, counted, steps)[:, None, None]
    lead = sums.argmax(axis=-1)  # (T, N)
    gap = np.take_along_axis(sums, lead[..., None], axis=-1) - sums  # S_a - S_c
    need = beta * (T - steps)[:, None, None] * bound[lead]  # (T, N, K)
    ok = (gap > need) | (np.arange(sums.shape[-1])[None, None, :] == lead[..., None])
    done = ok.all(axis=-1) & (steps > delay)[:, None]
    done[-1] = True
    return done.argmax(axis=0) + 1


@dataclass
class EarlyExitResult:
    """What early exit gave on ``n`` samples of at most ``max_steps`` steps.

    ``steps`` (N,): the step after which each sample exited; ``predictions`` (N,): its
    prediction then; ``accuracy`` (with labels) and ``full_accuracy`` (after all
    ``max_steps``); ``energy``: per hardware profile, the mean dynamic (and, where the
    profile has platform terms, total) SNN energy per inference with early exit and with
    the full ``max_steps``, and the fraction saved; ``report``: the
    :class:`snn.energy.EnergyReport` of the full ``max_steps`` run with this outcome as its
    ``early_exit`` section (None without energy); ``groups``: {exit step: samples}."""

    beta: float
    max_steps: int
    steps: np.ndarray
    predictions: np.ndarray
    accuracy: float | None
    full_accuracy: float | None
    energy: dict[str, dict[str, float]] = field(default_factory=dict)
    groups: dict[int, int] = field(default_factory=dict)
    report: Any = None

    @property
    def mean_steps(self) -> float:
        return float(self.steps.mean())

    def histogram(self) -> dict[int, int]:
        """{step: number of samples exiting after it}."""
        vals, counts = np.unique(self.steps, return_counts=True)
        return {int(v): int(c) for v, c in zip(vals, counts)}

    def to_dict(self) -> dict[str, Any]:
        return {"beta": self.beta, "max_steps": self.max_steps, "n_samples": int(len(self.steps)),
                "mean_steps": self.mean_steps, "median_steps": float(np.median(self.steps)),
                "steps_histogram": self.histogram(), "accuracy": self.accuracy,
                "full_accuracy": self.full_accuracy, "energy": self.energy}


def early_exit(net: Any, x: Any, max_steps: int, beta: float = 1.0, labels: Any = None, *,
               energy: bool = True, hardware: Any = ("45nm-fp32", "loihi"), outputs: np.ndarray | None = None,
               **sim_kwargs: Any) -> EarlyExitResult:
    """Run ``net`` on ``x`` with early exit (the rule of the module docstring, trust factor
    ``beta`` in ``(0, 1]``) for at most ``max_steps`` steps. ``outputs``: the readout of a
    full ``max_steps`` simulation of ``x`` already run (skips that run). With ``energy``,
    the samples are re-simulated in groups of equal exit step and priced on ``hardware``
    (:func:`snn.energy_report`) against the full ``max_steps``. ``sim_kwargs`` go to
    :func:`snn.simulate` (backend, batch_size, ...; the encoding must be constant, so that a
    sample's spikes do not depend on its batch)."""
    from snn.simulate import simulate

    graph = getattr(net, "graph", net)
    if not isinstance(graph, ir.Graph):
        raise SnnError(f"expected a SpikingNetwork or an snn.ir.Graph, got {type(net).__name__}")
    if not isinstance(max_steps, (int, np.integer)) or isinstance(max_steps, bool) or max_steps < 1:
        raise SnnError(f"max_steps must be an integer >= 1, got {max_steps!r}")
    if not isinstance(beta, (int, float)) or isinstance(beta, bool) or not 0 < beta <= 1:
        raise SnnError(f"beta must be in (0, 1] (1: the prediction after max_steps is guaranteed), got {beta!r}")
    if sim_kwargs.get("encoding", "constant") != "constant":
        raise SnnError("early exit runs with constant encoding (a Poisson sample's spikes depend on its batch)")
    for k in ("record", "timesteps"):
        if k in sim_kwargs:
            raise SnnError(f"early_exit sets {k!r} itself")
    delay = graph.nodes[graph.output].delay
    bound = readout_bound(graph)
    x = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
    if outputs is None:
        outputs = simulate(net, x, max_steps, record="none", **sim_kwargs).outputs
    if outputs.shape[:2] != (max_steps, len(x)):
        raise SnnError(f"outputs of shape {outputs.shape} for {len(x)} samples and max_steps={max_steps}")
    t_exit = exit_steps(outputs, bound, beta, delay)
    pred = outputs[t_exit - 1, np.arange(len(x))].argmax(axis=-1)
    y = None if labels is None else np.asarray(labels).reshape(-1)
    res = EarlyExitResult(beta=float(beta), max_steps=int(max_steps), steps=t_exit, predictions=pred,
                          accuracy=None if y is None else float((pred == y).mean()),
                          full_accuracy=None if y is None else float((outputs[-1].argmax(-1) == y).mean()),
                          groups={int(t): int((t_exit == t).sum()) for t in np.unique(t_exit)})
    if energy:
        res.energy, res.report = _energy(net, x, t_exit, max_steps, hardware, sim_kwargs, labels=y)
        res.report.early_exit = res.to_dict()
    return res


def _energy(net: Any, x: np.ndarray, t_exit: np.ndarray, max_steps: int, hardware: Any,
            sim_kwargs: dict[str, Any], labels: np.ndarray | None = None) -> tuple[dict[str, dict[str, float]], Any]:
    """Mean SNN energy per inference with early exit (each exit-step group simulated for
    exactly its steps and priced) and with all ``max_steps`` steps, per profile; and the
    energy report of the full run."""
    from snn.energy import energy_report
    from snn.simulate import simulate

    def priced(idx: np.ndarray, steps: int, full: bool = False) -> Any:
        r = simulate(net, x[idx], steps, record="steps", **sim_kwargs)
        return energy_report(net, r, hardware=hardware, **({"x": x, "labels": labels} if full else {}))

    def joules(rep: Any) -> dict[str, dict[str, float]]:
        return {p: {k: e[k] for k in ("snn_dynamic_j", "snn_total_j")} for p, e in rep.energy.items()}

    report = priced(np.arange(len(x)), max_steps, full=True)
    full = joules(report)
    acc = {p: {k: 0.0 for k, v in e.items() if v is not None} for p, e in full.items()}
    for t in np.unique(t_exit):
        idx = np.nonzero(t_exit == t)[0]
        part = joules(priced(idx, int(t)))
        for p in acc:
            for k in acc[p]:
                acc[p][k] += part[p][k] * len(idx) / len(x)
    out: dict[str, dict[str, float]] = {}
    for p in full:
        for k, short in (("snn_dynamic_j", "dynamic"), ("snn_total_j", "total")):  # total: where the profile has it
            if k in acc[p]:
                out.setdefault(p, {}).update({f"early_exit_{short}_j": acc[p][k], f"full_{short}_j": full[p][k],
                                              f"saved_{short}": 1 - acc[p][k] / full[p][k]})
    return out, report

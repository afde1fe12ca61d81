"""The targets of ``make bench``, in one table: ``benchmarks.run`` measures each against it and records the rows
in ``benchmarks/results.json`` (``evaluate``); the report renders those rows and argues from the same bounds
(``benchmarks.speed.report``: what the `exact` step would need to reach its bound, the serving section's RSS
limit).

Each target's label may name where it was measured (``{network}``, ``{batch}``, ...); ``evaluate`` fills them.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

GOALS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge}
VARIANTS = ("head", "first_order", "exact", "reference")
# what the neighbours section times besides the CE step (benchmarks.speed.neighbour_search), which the report renders
NEIGHBOUR_WORK = ("search", "label_sets", "teacher", "ema", "head_step")


@dataclass(frozen=True)
class Target:
    label: str
    goal: str  # one of GOALS
    bound: float

    def row(self, value: float | None, *, readings: list[float] | None = None, **where: object) -> dict:
        """The row ``results.json`` records: what was measured, the goal, and whether it is met; ``value`` None
        (results from before it was measured) gives ``value`` and ``met`` None: not measured.

        ``value`` is the median of repeated ``readings`` where there are several: the row then records their
        ``range`` and whether the bound lies within it (``within_noise``), where the run cannot tell whether the
        target is met."""
        row = {"target": self.label.format(**where), "value": None if value is None else round(value, 3),
               "goal": f"{self.goal} {self.bound:g}",
               "met": None if value is None else GOALS[self.goal](value, self.bound)}
        if value is not None and readings is not None and len(readings) > 1:
            low, high = min(readings), max(readings)
            row.update(range=[round(low, 3), round(high, 3)], within_noise=low <= self.bound <= high)
        return row


TARGETS = {
    # one MLNT training step on each network, as multiples of a CE step on the same batch
    "exact_time": Target("{network}: `exact` step time / CE step", "<=", 20),
    "exact_time_aim": Target("{network}: `exact` step time / CE step (aim)", "<", 15),
    "exact_memory": Target("{network}: `exact` peak memory / CE step", "<=", 5),
    "first_order_time": Target("{network}: `first_order` step time / CE step", "<=", 15),
    "head_time": Target("{network}: `head` step time / CE step", "<=", 1.5),
    # the per-set accumulation: peak memory independent of the number of label sets M
    "exact_memory_over_sets": Target("`exact` peak memory at M = {last} / at M = {first} (independent of M)", "<=",
                                     1.1),
    # what a loader delivers over what training consumes
    "in_memory_loader": Target("Fashion-MNIST loader (fetch + augment) / CE training, samples/s", ">=", 5),
    "clothing1m_loader": Target("Clothing1M loader, one worker (decode + resize + crop) / ResNet-50 CE training on "
                                "this CPU, images/s", ">=", 5),
    "onnx_speedup": Target("ONNX Runtime speed-up over eager PyTorch, batch 1", ">=", 2),
    "serving_errors": Target("predictor under load, batch {batch}: failed requests (of {sent})", "<=", 0),
    # MiB: what the reliability suite allows over its last 900 malformed requests (tests/reliability/test_serving.py)
    "serving_rss_growth": Target("predictor under load, batch {batch}: RSS growth over the second half of the "
                                 "requests (MiB)", "<=", 16),
}


def evaluate(results: dict) -> list[dict]:
    """Each target's row for ``results``, in the report's order."""
    t, rows = TARGETS, []
    for r in results["meta_step"]:
        n, time, memory, every = r["network"], r["time_ratio"], r["memory_ratio"], r.get("time_ratios", {})
        rows += [t["exact_time"].row(time["exact"], readings=every.get("exact"), network=n),
                 t["exact_time_aim"].row(time["exact"], readings=every.get("exact"), network=n),
                 t["exact_memory"].row(memory["exact"], network=n),
                 t["first_order_time"].row(time["first_order"], readings=every.get("first_order"), network=n),
                 t["head_time"].row(time["head"], readings=every.get("head"), network=n)]
    sweep = results["scaling"]["sets"]
    rows.append(t["exact_memory_over_sets"].row(sweep[-1]["memory_mb"]["exact"] / sweep[0]["memory_mb"]["exact"],
                                                last=sweep[-1]["sets"], first=sweep[0]["sets"]))
    loading = loading_ratios(results)
    rows += [t["in_memory_loader"].row(loading["in_memory"]), t["clothing1m_loader"].row(loading["clothing1m"])]
    batch1 = next(r for r in results["inference"]["results"] if r["batch"] == 1)
    rows.append(t["onnx_speedup"].row(batch1["pytorch_over_onnxruntime"]))
    for row in results["serving"]["results"]:
        b, rss = row["batch"], row["rss_mb"]
        rows += [t["serving_errors"].row(row["errors"], batch=b, sent=row["requests"] + row["errors"]),
                 t["serving_rss_growth"].row(rss["after"] - rss["half"], batch=b)]
    return rows


def consumption(results: dict) -> list[dict] | None:
    """Samples/s that training consumes on the small CNN, a row per step with the time / CE ratio it used and where
    that ratio comes from (``basis``): the CE step timed in the data_loading section beside the loader
    (``in_memory.ce_samples_per_s``, ``ce``); `head` at the whole step's ratio from the neighbours section
    (``whole_step``: label sets, teacher forward, meta loss, backward, EMA update), where it was measured; every other
    MLNT mode at its meta step's ratio from the meta_step section (``meta_step``: the meta loss and its backward
    alone). Each ratio was measured side by side, so it holds from one run to the next; absolute times do not. None
    for results from before data_loading timed a CE step."""
    ce = results["data_loading"]["in_memory"].get("ce_samples_per_s")
    if ce is None:
        return None
    r = next((r for r in results.get("meta_step", []) if r["network"] == "small_cnn"), None)
    neighbours = results.get("neighbours", {})
    whole = neighbours.get("head_step") if neighbours.get("network") == "small_cnn" else None
    ratios = {"ce": (1.0, "ce"), **({v: (r["time_ratio"][v], "meta_step") for v in VARIANTS} if r else {}),
              **({"head": (whole["ratio"], "whole_step")} if whole else {})}
    return [{"step": step, "samples_per_s": ce / ratio, "ratio": ratio, "basis": basis}
            for step, (ratio, basis) in ratios.items()]


def loading_ratios(results: dict) -> dict[str, float | None]:
    """What each loader delivers over what training consumes, each timed in the same section of the same run: the
    in-memory loader against the small CNN's CE step (None for results from before that step was timed there), one
    Clothing1M worker against a ResNet-50 CE step on the same machine."""
    data = results["data_loading"]
    c, m = data["clothing1m"], data["in_memory"]
    return {"in_memory": m["fetch_augment_samples_per_s"] / m["ce_samples_per_s"] if "ce_samples_per_s" in m else None,
            "clothing1m": c["worker"]["draft_images_per_s"] / c["consumer_samples_per_s"]}

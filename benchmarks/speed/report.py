"""``docs/benchmarks.md`` and its plots, from ``benchmarks/results.json`` alone.

The words are in ``templates/benchmarks.md`` (``benchmarks.template``); this module supplies the figures: every
one is a field of the results (the template names it, ``{workload[neighbours]}``), or arithmetic on fields that
is computed here and named for what it is (``{loading[in_memory]}``, ``{exact_budget}``). The targets and their
bounds are ``benchmarks.speed.targets``'s one table.

    python -m benchmarks.speed.report [--json benchmarks/results.json] [--output docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import io
import json
import math
from pathlib import Path

from benchmarks.gpu import report as gpu_report
from benchmarks.speed.measure import spread
from benchmarks.speed.targets import NEIGHBOUR_WORK, TARGETS, VARIANTS, consumption, loading_ratios
from benchmarks.template import Template
from components.common.atomic import write_atomic

SWEPT = ("first_order", "exact", "reference")
# The allocator row's `exact` time gain (retained / default) is called within noise when it is within the spread of
# the run's own repeated `exact` readings of either setting (``allocator_noise``). Results from before those readings
# were recorded fall back to this fixed band, as they were rendered then.
ALLOCATOR_NOISE = 0.03
FOLDER = "benchmarks"  # beside the report: the plots
SECTIONS = ("meta_step", "profiles", "scaling", "neighbours", "data_loading", "inference", "serving", "experiments",
            "allocator")
TEMPLATE = Template(Path(__file__).with_name("templates") / "benchmarks.md")


def render(results: dict, gpu: dict | None = None) -> str:
    """The report: the template's page filled with ``results`` and the figures computed from them; its GPU section
    from ``gpu``, ``make gpu-check``'s results (``benchmarks.gpu.report``), where there are some."""
    sections = (_header, _meta_step, _profiles, _scaling, _neighbours, _data_loading, _clothing1m, _inference,
                _serving, _experiments, _per_set_costs)
    fields = {**results, "folder": FOLDER}
    for section in sections:
        fields.update(section(results))
    fields.update(_gpu(results, gpu))
    return TEMPLATE.fill("page", fields) + "\n"


def _counted(count: int, noun: str) -> str:
    return TEMPLATE.fill("one" if count == 1 else "many", count=count, noun=noun)


def _header(r: dict) -> dict:
    s, retained = r["section_s"], r["machine"].get("freed_memory_retained")
    reruns = [{**x, "names": ", ".join(x["sections"]), "names_comma": ",".join(x["sections"])}
              for x in r.get("reruns", [])]
    return {"quick_note": TEMPLATE.fill("quick_note") if r["quick"] else "",
            "minutes": r["duration_s"] / 60,
            "section_times": TEMPLATE.rows("section_time", [{"name": name, "seconds": s[name]}
                                                            for name in SECTIONS if name in s], ", "),
            "reruns": TEMPLATE.rows("rerun", reruns, ""),
            "allocator_note": "" if retained is None else
            TEMPLATE.fill("allocator_note_retained" if retained else "allocator_note_default"),
            "target_rows": "\n".join(_target_row(t) for t in r["targets"]),
            "noise_note": TEMPLATE.fill("noise_note") if any(t.get("within_noise") for t in r["targets"]) else ""}


def _target_row(t: dict) -> str:
    """A target's row: not measured, within noise (its bound among the repetitions' readings: results from before
    those were recorded are called yes or no, as they were then), or met or not."""
    if t["value"] is None:  # results from before the target was measured
        return TEMPLATE.fill("target_row_not_measured", t)
    if t.get("within_noise"):
        low, high = t["range"]
        return TEMPLATE.fill("target_row", t, verdict=TEMPLATE.fill("within_noise", low=low, high=high))
    return TEMPLATE.fill("target_row", t, verdict=TEMPLATE.fill("met" if t["met"] else "not_met"))


def _meta_step(r: dict) -> dict:
    repeats = dict(r.get("settings", {}).get("repeats", []))
    rows = [TEMPLATE.fill("meta_step_first_row" if i == 0 else "meta_step_row", m, variant=v,
                          time=_time_cell(m, v, repeats.get(m["network"])), memory=m["memory_mb"][v],
                          memory_ratio=m["memory_ratio"][v])
            for m in r["meta_step"] for i, v in enumerate(VARIANTS)]
    recorded = all("time_ratios" in m for m in r["meta_step"])
    return {"noise_percent": 100 * r["workload"]["noise"]["rate"],
            "feature_training": _counted(r["workload"]["feature_epochs"], "epoch"), "meta_step_rows": "\n".join(rows),
            "time_spread_note": TEMPLATE.fill("time_spread_note") if recorded else "",
            "method_time": _method_time(r)}


def _time_cell(m: dict, variant: str, repeats: int | None) -> str:
    """A time / CE figure: the median, with the min-max of the repetitions, or marked as one measurement; for results
    that did not record the repetitions, as before unless their settings say there was one (``repeats``)."""
    ratios = m.get("time_ratios", {}).get(variant)
    if ratios is None and repeats != 1:
        return TEMPLATE.fill("time_plain", time=m["time_ratio"][variant])
    if ratios is None or len(ratios) == 1:
        return TEMPLATE.fill("time_one", time=m["time_ratio"][variant])
    return TEMPLATE.fill("time_spread", time=m["time_ratio"][variant], low=min(ratios), high=max(ratios))


def _method_time(r: dict) -> str:
    """The Method section's paragraph on time: how the run paired its measurements, and the control's readings."""
    if "pairing" not in r.get("method", {}):  # results from the best-of-several baseline
        return TEMPLATE.fill("method_time_best_of", r)
    controls = [TEMPLATE.fill("control", network=m["network"], ratio=m["control"]["ratio"],
                              low=min(m["control"]["ratios"]), high=max(m["control"]["ratios"]),
                              pairs=_counted(len(m["control"]["ratios"]), "pair"))
                for m in r["meta_step"] if "control" in m]
    repetitions = ", ".join(f"{m['network']} {len(next(iter(m['time_ratios'].values())))}"
                            for m in r["meta_step"] if m.get("time_ratios"))
    return TEMPLATE.fill("method_time_paired", repetitions=repetitions,
                         controls="; ".join(controls) if controls else TEMPLATE.fill("control_not_recorded"))


def _profiles(r: dict) -> dict:
    return {"profiles": "\n\n".join(TEMPLATE.fill("profile", p, rows=_profile_rows(p)) for p in r["profiles"])}


def _profile_rows(p: dict) -> str:
    nodes = p["nodes"] + [None] * len(p["ops"])
    return "\n".join(TEMPLATE.fill("profile_row_without_node" if node is None else "profile_row", op=op, node=node,
                                   op_percent=100 * op["share"], node_percent=100 * node["share"] if node else 0)
                     for op, node in zip(p["ops"], nodes, strict=False))


def _scaling(r: dict) -> dict:
    s = r["scaling"]
    return {f"{key}_rows": TEMPLATE.rows("sweep_row", [{**row, "value": row[key]} for row in s[key]])
            for key in ("sets", "batch")}


def _neighbours(r: dict) -> dict:
    """The neighbours table's cells for each piece of work; results from before a piece was timed say so."""
    found = r["neighbours"]
    return {f"{name}_cells": TEMPLATE.fill("work_not_measured") if name not in found else
            TEMPLATE.fill("work_cells", ms=found[name]["ms"], ratio=_ratio_cell(found[name]))
            for name in NEIGHBOUR_WORK}


def _ratio_cell(work: dict) -> str:
    """A ratio to the CE step, with the lowest and highest repetition where there were several."""
    ratios = work.get("ratios", [])
    if len(ratios) < 2:
        return TEMPLATE.fill("work_ratio", ratio=work["ratio"])
    return TEMPLATE.fill("work_ratio_spread", ratio=work["ratio"], low=min(ratios), high=max(ratios))


def _data_loading(r: dict) -> dict:
    use, loading = consumption(r), loading_ratios(r)
    rows = TEMPLATE.fill("consumption_not_measured") if use is None else "\n".join(
        TEMPLATE.fill("consumption_row", row, basis=TEMPLATE.fill(f"basis_{row['basis']}", row)) for row in use)
    delivers = TEMPLATE.fill("in_memory_not_measured") if loading["in_memory"] is None else \
        TEMPLATE.fill("in_memory_delivers", ratio=loading["in_memory"])
    return {"in_memory": r["data_loading"]["in_memory"], "loading": loading, "consumption_rows": rows,
            "in_memory_delivers": delivers}


def _clothing1m(r: dict) -> dict:
    """The Clothing1M loader: its throughput, disk space, and the arithmetic for a GPU node."""
    c = r["data_loading"]["clothing1m"]
    w, disk = c["worker"], c["disk"]
    rate = w["draft_images_per_s"]  # r: one worker's images/s, as the loader decodes
    jpeg, shard = disk["jpeg_bytes"] / disk["images"], disk["shard_bytes"] / disk["images"]
    index, decoded, n = disk["index_bytes"] / disk["images"], disk["decoded_bytes_per_image"], \
        c["assumed"]["epoch_images"]
    epochs = {e["workers"]: e for e in c["epochs"]}
    one, most = epochs[min(epochs)], epochs[max(epochs)]
    return {
        "c": c, "disk": disk, "rate": rate, "rate_ms": 1000 / rate, "full_ms": 1000 / w["full_images_per_s"],
        "ingest_ms": 1000 / c["ingest"]["images_per_s"],
        "photo_sizes": ", ".join(f"{a}x{b}" for a, b in c["sizes"]), "megapixels": c["source_mean_pixels"] / 1e6,
        "bits_per_pixel": 8 * jpeg / c["source_mean_pixels"], "jpeg_kb": jpeg / 1000,
        "epoch_rows": TEMPLATE.rows("epoch_row", [
            {**e, "source_images": c["images"], "batch": c["batch"], "ms": 1000 / e["images_per_s"],
             "workers_counted": _counted(e["workers"], "worker")} for e in c["epochs"]]),
        "draft_scales": _draft_scales(c["draft_decodes"], c["resize"]),
        "draft_saving": _less(1 - w["full_images_per_s"] / rate),
        "one": one, "most": most, "one_over_rate": one["images_per_s"] / rate,
        "most_over_one": most["images_per_s"] / one["images_per_s"],
        "epoch_images": n, "jpeg": jpeg, "shard": shard, "index": index, "decoded": decoded,
        "overhead": shard - jpeg, "decoded_shape": f"{c['crop']}x{c['crop']}x3",
        "shard_over_jpeg": shard / jpeg, "index_over_jpeg": disk["index_bytes"] / disk["jpeg_bytes"],
        "decoded_over_jpeg": decoded / jpeg, "shard_over_decoded": shard / decoded,
        **{f"epoch_images_{name}_gb": n * size / 1e9
           for name, size in (("jpeg", jpeg), ("shard", shard), ("index", index), ("decoded", decoded))},
        "gpu_rows": TEMPLATE.rows("gpu_row", [
            {"images_per_s": g, "rate": rate, "workers": g / rate, "whole": _ceil(g / rate),
             "reads_mb": g * shard / 1e6} for g in c["assumed"]["gpu_images_per_s"]]),
        "consumer_workers": c["consumer_samples_per_s"] / rate,
        "consumer_workers_whole": _ceil(c["consumer_samples_per_s"] / rate),
        "consumer_reads_mb": c["consumer_samples_per_s"] * shard / 1e6,
        "epoch_time_rows": TEMPLATE.rows("epoch_time_row", [
            {"workers": k, "epoch_images": n, "rate": rate, "seconds": n / (k * rate), "minutes": n / (k * rate) / 60}
            for k in c["assumed"]["workers"]])}


def _draft_scales(decodes: dict[str, list[int]], resize: int) -> str:
    """Which source sizes ``draft`` decodes at a reduced scale, and which at full size."""
    reduced = [TEMPLATE.fill("draft_size", size=size, width=a, height=b)
               for size, (a, b) in decodes.items() if f"{a}x{b}" != size]
    whole = [size for size, (a, b) in decodes.items() if f"{a}x{b}" == size]
    said = TEMPLATE.fill("draft_reduced", reduced=", ".join(reduced)) if reduced else \
        TEMPLATE.fill("draft_none_reduced")
    return said + (TEMPLATE.fill("draft_full", full=", ".join(whole), resize=resize) if whole else "")


def _less(share: float) -> str:
    return TEMPLATE.fill("less" if share >= 0 else "more", percent=100 * abs(share))


def _ceil(x: float) -> int:
    """Whole workers: at least one."""
    return max(1, math.ceil(x))


def _inference(r: dict) -> dict:
    return {"inference_rows": TEMPLATE.rows("inference_row", r["inference"]["results"])}


def _serving(r: dict) -> dict:
    s = r["serving"]
    return {"input_shape": ", ".join(map(str, s["input_shape"])), "rss_growth": TARGETS["serving_rss_growth"].bound,
            "serving_rows": TEMPLATE.rows("serving_row", [{**x, "body_kib": x["body_bytes"] / 1024}
                                                          for x in s["results"]])}


def _experiments(r: dict) -> dict:
    e = r["experiments"]
    t, big = e["time_ratio"], e["big_batch"]
    small, large = sorted((size for size in big if size.isdigit()), key=int)
    exact_gain = t["exact"] / t["exact_channels_last"]
    fields = {
        "per_set_rows": TEMPLATE.rows("per_set_row", [_per_set_row(p) for p in e["per_set"]]),
        "channels_last_exact": 1 / exact_gain, "channels_last_ratio": t["exact_channels_last"] / t["ce_channels_last"],
        "small_batch": small, "large_batch": large, "small_batch_us": big[small], "large_batch_us": big[large],
        "bigger_batch": big[large] / big[small], "bigger_batch_range": _spread(big.get("ratios", [])),
        "gaps": "; ".join(TEMPLATE.fill("gap", network=m["network"], first_order=m["time_ratio"]["first_order"],
                                        second_order=m["time_ratio"]["exact"] - m["time_ratio"]["first_order"])
                          for m in r["meta_step"]),
        "largest_nodes": "; ".join(_largest_nodes(p) for p in r["profiles"] if p["variant"] == "exact"),
        "allocator_row": "", "allocator_text": ""}
    if "allocator" in r:
        a = r["allocator"]
        gain = a["retained"]["time_ratio"]["exact"] / a["default"]["time_ratio"]["exact"]
        noise = allocator_noise(a)
        kept = _allocator_kept(gain, noise)
        readings = "" if noise is None else TEMPLATE.fill("allocator_readings", **{
            f"{kind}_{end}": f(a[kind]["time_ratios"]["exact"]) for kind in ("default", "retained")
            for end, f in (("low", min), ("high", max))})
        fields.update(allocator_row=TEMPLATE.fill("allocator_row", a, gain=gain, kept=kept, readings=readings),
                      allocator_text=TEMPLATE.fill("allocator_text", gain=gain))
    return fields


def allocator_noise(a: dict) -> float | None:
    """The spread of the run's repeated `exact` readings (every repetition in every process) of the setting whose
    readings spread most: max / min - 1. None for results that did not record the readings."""
    if not all("time_ratios" in a[kind] for kind in ("default", "retained")):
        return None
    return max(spread(a[kind]["time_ratios"]["exact"]) for kind in ("default", "retained"))


def _allocator_kept(gain: float, noise: float | None) -> str:
    """The allocator row's verdict for an `exact` time gain (retained / default): faster, within noise (the run's own
    spread, ``allocator_noise``; ``ALLOCATOR_NOISE`` where it was not recorded), or slower."""
    if noise is None and abs(1 - gain) < ALLOCATOR_NOISE:
        return TEMPLATE.fill("allocator_kept_faults_only_fixed", noise_percent=100 * ALLOCATOR_NOISE)
    if noise is not None and abs(1 - gain) <= noise:
        return TEMPLATE.fill("allocator_kept_faults_only", gain=gain, noise_percent=100 * noise)
    return TEMPLATE.fill("allocator_kept" if gain < 1 else "allocator_kept_slower", gain=gain)


def _largest_nodes(profile: dict, count: int = 3) -> str:
    nodes = ", ".join(TEMPLATE.fill("node_share", node=n["node"], percent=100 * n["share"])
                      for n in profile["nodes"][:count])
    return TEMPLATE.fill("largest_nodes", network=profile["network"], nodes=nodes)


def _per_set_row(p: dict) -> dict:
    """A per-set accumulation row: its time against the one-graph step, and what was adopted for what reason."""
    change = p["time_ratio"]["exact"] / p["time_ratio"]["one_graph"]
    adopted = "yes" if change <= 1.1 else f"yes, for the memory; the time was x{change:.2f} in this run"
    return {**p, "time_change": change, "adopted": adopted,
            **{f"{name}_spread": _spread(p.get("time_ratios", {}).get(name, [])) for name in ("exact", "one_graph")}}


def _per_set_costs(r: dict) -> dict:
    """A least-squares line through the M sweep: the fixed cost of a step and the cost of each label set, and what
    each set could cost for the `exact` and `first_order` steps to meet their time targets at the default M."""
    rows, sets = r["scaling"]["sets"], r["meta_step"][0]["sets"]
    fits = {v: _line([x["sets"] for x in rows], [x["time_ratio"][v] for x in rows]) for v in ("first_order", "exact")}
    (fo_fixed, fo_set), (ex_fixed, ex_set) = fits["first_order"], fits["exact"]
    exact_bound, first_order_bound = TARGETS["exact_time"].bound, TARGETS["first_order_time"].bound
    budget = (exact_bound - ex_fixed) / sets
    second_order = ex_set - fo_set
    network = next((m for m in r["meta_step"] if m["network"] == r["scaling"]["network"]), None)
    room = budget - fo_set
    if room <= 0:
        cut = TEMPLATE.fill("no_cut", fo_set=fo_set)
    elif network is None:
        cut = TEMPLATE.fill("cut_unknown", second_order=second_order, network=r["scaling"]["network"],
                            second_order_budget=room)
    else:
        cut = TEMPLATE.fill("cut", changed=network["changed_fraction"], times=second_order / room,
                            second_order_budget=room, second_order=second_order)
    return {"cut": cut,"fo_fixed": fo_fixed, "fo_set": fo_set, "ex_fixed": ex_fixed, "ex_set": ex_set, "sets": sets,
            "exact_bound": exact_bound, "first_order_bound": first_order_bound, "exact_budget": budget,
            "second_order": second_order, "first_order_budget": (first_order_bound - fo_fixed) / sets}


def _spread(ratios: list[float]) -> str:
    """`` (a-b over n runs)`` for a list of ratios, "" for none: the range of what the median summarises."""
    return f" ({min(ratios):.2f}-{max(ratios):.2f} over {len(ratios)} paired runs)" if ratios else ""


def _line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Intercept and slope of the least-squares line through the points."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def _gpu(r: dict, gpu: dict | None = None) -> dict:
    if gpu is not None:
        return {"gpu": gpu_report.section(gpu)}
    return {"gpu": TEMPLATE.fill("gpu_measured" if r["machine"]["device"] == "cuda" else "gpu_not_measured", r)}


# --- plots and files ---------------------------------------------------------------------------------------


def plots(results: dict, folder: Path) -> None:
    import matplotlib  # noqa: PLC0415 - only the report needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    folder.mkdir(parents=True, exist_ok=True)
    for name, key, title in (("time_ratios", "time_ratio", "time per step / CE step"),
                             ("memory_ratios", "memory_ratio", "peak memory / CE step")):
        fig, ax = plt.subplots(figsize=(6, 3.2))
        width = 0.8 / len(results["meta_step"])
        for i, m in enumerate(results["meta_step"]):
            ax.bar([j + i * width for j in range(len(VARIANTS))], [m[key][v] for v in VARIANTS], width,
                   label=m["network"])
        ax.set_xticks([j + width * (len(results["meta_step"]) - 1) / 2 for j in range(len(VARIANTS))], VARIANTS)
        ax.set_yscale("log")
        ax.set_title(title)
        ax.legend()
        _save(fig, folder / f"{name}.png")
    for name, key in (("scaling_sets", "sets"), ("scaling_batch", "batch")):
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
        rows = results["scaling"][key]
        for v in SWEPT:
            axes[0].plot([r[key] for r in rows], [r["time_ratio"][v] for r in rows], marker="o", label=v)
            axes[1].plot([r[key] for r in rows], [r["memory_mb"][v] for r in rows], marker="o", label=v)
        axes[1].plot([r[key] for r in rows], [r["ce_memory_mb"] for r in rows], marker="o", label="ce")
        for ax, ylabel in zip(axes, ("time / CE step", "peak memory (MB)"), strict=True):
            ax.set_xlabel("M (label sets)" if key == "sets" else "batch size")
            ax.set_ylabel(ylabel)
            ax.legend()
        _save(fig, folder / f"{name}.png")


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    write_atomic(path, lambda fh: fh.write(buffer.getvalue()))


def write(results: dict, output: Path, gpu: dict | None = None) -> None:
    """The report at ``output`` and its plots in the folder ``FOLDER`` beside it."""
    output = Path(output)
    plots(results, output.parent / FOLDER)
    write_atomic(output, lambda fh: fh.write(render(results, gpu).encode()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed.report", description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results.json"))
    parser.add_argument("--output", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--gpu-json", type=Path, default=gpu_report.RESULTS, help="make gpu-check's results")
    args = parser.parse_args(argv)
    write(json.loads(args.json.read_text()), args.output, gpu_report.load(args.gpu_json))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

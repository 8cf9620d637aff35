"""Writing a fleet run's results: CSV time series, a PNG of aggregate load, a JSON report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server

import matplotlib.pyplot as plt

from simulators.fleet import FleetResult


def write_results(result: FleetResult, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"stations": out_dir / "stations_power.csv", "aggregate": out_dir / "aggregate_power.csv",
             "plot": out_dir / "aggregate_load.png", "report": out_dir / "report.json"}
    stamps = [t.isoformat() for t in result.times]
    with paths["stations"].open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["interval_end", "station_id", "transformer", "power_kw"])
        for i, station_id in enumerate(result.station_ids):
            row = result.power_kw[i]
            transformer = result.transformers[i]
            writer.writerows((stamps[k], station_id, transformer, f"{row[k]:.3f}") for k in range(len(stamps)))
    aggregate = result.aggregate_kw()
    with paths["aggregate"].open("w", newline="") as f:
        writer = csv.writer(f)
        names = list(aggregate)
        writer.writerow(["interval_end", *(f"{n}_kw" for n in names),
                         *(f"{n}_capacity_kw" for n in result.capacity_kw)])
        for k, stamp in enumerate(stamps):
            writer.writerow([stamp, *(f"{aggregate[n][k]:.3f}" for n in names),
                             *(f"{c:g}" for c in result.capacity_kw.values())])
    plot_aggregate(result, paths["plot"])
    paths["report"].write_text(json.dumps(report(result), indent=2))
    return paths


def report(result: FleetResult) -> dict:
    aggregate = result.aggregate_kw()
    per_transformer = {}
    hours = result.sample_interval_s / 3600.0
    for name, capacity in result.capacity_kw.items():
        series = aggregate[name]
        over = series - capacity
        per_transformer[name] = {
            "capacity_kw": capacity, "peak_kw": round(float(series.max(initial=0.0)), 2),
            "energy_kwh": round(float(series.sum() * hours), 2),
            "intervals_over_capacity": int((over > 0).sum()),
            "kwh_over_capacity": round(float(over[over > 0].sum() * hours), 2),
        }
    return {"scenario": result.scenario, "stations": len(result.station_ids), "ocpp_versions": result.versions,
            "clock": result.clock, "sample_interval_s": result.sample_interval_s, "intervals": len(result.times),
            "transformers": per_transformer, "sessions": result.counters, "load": result.load}


def plot_aggregate(result: FleetResult, path: Path) -> None:
    aggregate = result.aggregate_kw()
    fig, ax = plt.subplots(figsize=(11, 5), dpi=100)
    for name, capacity in result.capacity_kw.items():
        line, = ax.step(result.times, aggregate[name], where="pre", label=f"{name} load")
        ax.axhline(capacity, linestyle="--", color=line.get_color(), alpha=0.6, label=f"{name} capacity")
    if len(result.capacity_kw) > 1:
        ax.step(result.times, aggregate["total"], where="pre", color="black", linewidth=1.5, label="total")
    ax.set_title(f"{result.scenario}: aggregate charging load ({result.sample_interval_s / 60:g}-min averages)")
    ax.set_ylabel("kW")
    ax.set_xlabel("simulated time (UTC)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

"""The suite's outputs besides the JSON: a Markdown table for the README and a PNG chart.

Used by ``bench/run_suite.py``; can also redraw from a results file::

    .venv/bin/python bench/suite_report.py bench/results/2026-11-28.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from sgx_quote_helper.benchmark.machine import machine_line


def _n(x: float | None, digits: int = 0) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}"


def markdown(doc: dict[str, Any], chart: str | None = None) -> str:
    """The README table of one suite result."""
    m = doc["machine"]
    c = doc["ceilings"]
    lines = [
        f"Benchmarks ({doc['profile']} run, {doc['started']}): {machine_line(m)}; load average "
        f"{'/'.join(map(str, m['load_average_before']))} before, {'/'.join(map(str, m['load_average_after']))} "
        f"after; daemon pinned to CPU {doc['pinned']['daemon_cpus'] or 'any'}, load generator to "
        f"CPU {doc['pinned']['load_cpus'] or 'any'}.",
        "",
        "| what | result |",
        "| --- | ---: |",
        f"| ECDSA P-256 sign, one core | {_n(c['ecdsa_p256_sign_per_s'])}/s |",
        f"| AES-128-CMAC of 384 B, one core | {_n(c['aes_cmac_384B_per_s'])}/s |",
        f"| in-process simulated engine, one core | {_n(c['engine_quotes_per_s'])} quotes/s "
        f"(p50 {_n(c['engine_latency_us']['p50_us'])} µs) |",
    ]
    for loop in ("uvloop", "asyncio"):
        for lv in doc["service"][loop]["levels"]:
            lat = lv["latency_us"]
            lines.append(
                f"| daemon ({loop}), aesmd style, {lv['clients']} client{'s' if lv['clients'] > 1 else ''} | "
                f"{_n(lv['quotes_per_s'])} quotes/s ({lv['vs_engine']:.2f}x engine), p50/p90/p99 "
                f"{_n(lat['p50_us'])}/{_n(lat['p90_us'])}/{_n(lat['p99_us'])} µs, {lv['errors']} errors |"
            )
    one = doc["one_client"]
    lines.append(
        f"| one client, out-of-process vs in-process (p50) | {_n(one['out_of_process_p50_us'])} µs vs "
        f"{_n(one['in_process_p50_us'])} µs: +{one['overhead_ms']:.3f} ms (keep-alive: "
        f"{_n(one['out_of_process_keepalive_p50_us'])} µs) |"
    )
    v = doc["verifier"]
    if "skipped" not in v:
        ref = (
            f"dcap-qvl {v['dcap_qvl_version']} {_n(v['dcap_qvl_per_s'])}/s"
            if v.get("dcap_qvl_per_s")
            else "no dcap-qvl"
        )
        lines.append(
            f"| verifier, real SGX quote, one core | cold {_n(v['cold_per_s'])}/s "
            f"({v.get('cold_vs_dcap_qvl', 'n/a')}x), warm {_n(v['warm_per_s'])}/s "
            f"({v.get('warm_vs_dcap_qvl', 'n/a')}x); {ref} |"
        )
    uv = doc["service"]["uvloop"]
    peak = max(lv["rss_peak_kib"] for lv in uv["levels"])
    mem = doc["memory"]
    lines += [
        f"| daemon RSS idle / under 64 clients | {uv['rss_idle_kib'] / 1024:.1f} MiB / {peak / 1024:.1f} MiB |",
        f"| daemon RSS over {mem['quotes']:,} quotes | {mem['rss_start_kib'] / 1024:.1f} → "
        f"{mem['rss_end_kib'] / 1024:.1f} MiB ({mem['growth_after_first_chunk_kib'] / 1024:+.1f} MiB after "
        f"the first tenth){'' if mem['full_million'] else ' (shortened run)'} |",
        f"| start-up to a served socket | {doc['startup']['median_s'] * 1e3:.0f} ms (median of "
        f"{len(doc['startup']['seconds'])}) |",
        "",
        "Targets (tracked, not asserted): "
        + "; ".join(
            f"{k} {t['value']} ({t['target']}): {'met' if t['met'] else 'NOT met'}"
            for k, t in doc["targets"].items()
        )
        + ".",
    ]
    if chart:
        lines += ["", f"![benchmarks]({chart})"]
    return "\n".join(lines) + "\n"


def write_chart(doc: dict[str, Any], path: Path) -> None:
    """Four panels: throughput vs clients, latency vs clients, verifier rates, RSS over quotes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ((a, b), (c, d)) = plt.subplots(2, 2, figsize=(12, 8))
    engine = doc["ceilings"]["engine_quotes_per_s"]
    for loop, style in (("uvloop", "o-"), ("asyncio", "s--")):
        levels = doc["service"][loop]["levels"]
        xs = [lv["clients"] for lv in levels]
        a.plot(xs, [lv["quotes_per_s"] for lv in levels], style, label=f"daemon, {loop}")
        b.plot(xs, [lv["latency_us"]["p50_us"] / 1e3 for lv in levels], style, label=f"p50, {loop}")
        b.plot(
            xs, [lv["latency_us"]["p99_us"] / 1e3 for lv in levels], style, alpha=0.5, label=f"p99, {loop}"
        )
    a.axhline(engine, color="grey", linestyle=":", label="in-process engine, one core")
    a.axhline(engine / 2, color="red", linestyle=":", alpha=0.5, label="target: 0.5x engine")
    a.set(xscale="log", xlabel="clients (aesmd style)", ylabel="quotes/s", title="Quote service throughput")
    b.set(xscale="log", yscale="log", xlabel="clients", ylabel="ms", title="Quote latency")
    for ax in (a, b):
        ax.set_xticks([lv["clients"] for lv in doc["service"]["uvloop"]["levels"]])
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    a.legend(fontsize=8)
    b.legend(fontsize=8)
    v = doc["verifier"]
    if "skipped" not in v:
        names = ["ours, cold", "ours, warm"] + (["dcap-qvl"] if v.get("dcap_qvl_per_s") else [])
        values = [v["cold_per_s"], v["warm_per_s"]] + (
            [v["dcap_qvl_per_s"]] if v.get("dcap_qvl_per_s") else []
        )
        c.bar(names, values, color=["tab:blue", "tab:green", "tab:grey"][: len(names)])
    c.set(ylabel="verifications/s (one core)", title="Verifier, real SGX quote")
    mem = doc["memory"]["series"]
    d.plot([p["quotes"] for p in mem], [p["rss_kib"] / 1024 for p in mem], "o-")
    d.set(xlabel="quotes served", ylabel="daemon RSS (MiB)", title="Daemon memory", ylim=(0, None))
    fig.suptitle(machine_line(doc["machine"]), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    src = Path(sys.argv[1])
    result = json.loads(src.read_text())
    write_chart(result, src.with_suffix(".png"))
    src.with_suffix(".md").write_text(markdown(result, src.with_suffix(".png").name))

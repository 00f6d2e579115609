"""The audit report's figures, drawn with matplotlib (Agg through Figure: no pyplot state) from
the rows of the queries in pipeline/audit_queries.py. Durations arrive in seconds and are drawn
in seconds, minutes or hours by magnitude; histogram groups are step outlines (no translucent
bars blending into a colour the legend does not show)."""
from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pipeline.audit_format import duration_unit
from pipeline.audit_queries import RUN, TOP_LANGUAGES, TOP_REASONS

CONTENT_COLORS = {"speech": "#4C72B0", "music": "#DD8452", "sound": "#55A868"}
OTHER_COLORS = ["#8172B3", "#C44E52", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974", "#64B5CD"]
STATUS_COLORS = {"kept": "#2E7D32", "selected": "#2E7D32", "dropped": "#C62828",
                 "not selected": "#C62828"}
LINESTYLES = ["-", "--", ":", "-."]
FIGSIZE = (9.0, 4.6)
DPI = 100


def _colors(names: list[str]) -> dict[str, str]:
    out, spare = {}, iter(OTHER_COLORS * 10)
    for name in names:
        out[name] = CONTENT_COLORS.get(name) or next(spare)
    return out


def _ordered_types(types: set[str]) -> list[str]:
    """speech, music, sound first (in that order), then the rest alphabetically."""
    known = list(CONTENT_COLORS)
    return sorted(types, key=lambda t: (known.index(t) if t in known else len(known), t))


def figure(ncols: int = 1, size: tuple[float, float] = FIGSIZE) -> tuple[Figure, list]:
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _empty(ax, title: str, message: str = "no data") -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=14, color="#555555",
            wrap=True, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def message_png(path: Path, title: str, message: str) -> None:
    fig, (ax,) = figure()
    _empty(ax, title, message)
    fig.savefig(path)


def _stacked(ax, x_labels: list[str], stacks: dict[str, list[float]], colors: dict[str, str],
             ylabel: str, title: str) -> None:
    if not x_labels or not any(v for vals in stacks.values() for v in vals):
        _empty(ax, title)
        return
    bottom = [0.0] * len(x_labels)
    positions = range(len(x_labels))
    for name, values in stacks.items():
        values = [float(v or 0.0) for v in values]  # DuckDB sums can be Decimal
        ax.bar(positions, values, bottom=bottom, label=name, color=colors[name],
               edgecolor="white", linewidth=0.5)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylim(0, max(bottom) * 1.08)  # the whole stack, not only its first layer
    ax.set_xticks(list(positions), x_labels, rotation=45 if len(x_labels) > 5 else 0,
                  ha="right" if len(x_labels) > 5 else "center")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def _hbars(ax, labels: list[str], values: list[float], title: str, xlabel: str,
           color: str = "#4C72B0") -> None:
    if not labels:
        _empty(ax, title)
        return
    labels, values = labels[::-1], values[::-1]  # largest on top
    ax.barh(range(len(labels)), values, color=color)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(axis="x", alpha=0.3)
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:g}", va="center", fontsize=7)


def draw_hours(rows: list[dict], kind: str, path: Path) -> Figure:
    """Audio per language stacked by content type, all segments and kept (selected); the axis
    in seconds, minutes or hours by the tallest stack."""
    part = "kept_audio_s" if kind == RUN else "selected_audio_s"
    totals: dict[str, float] = {}
    for r in rows:
        totals[r["language"]] = totals.get(r["language"], 0.0) + float(r["audio_s"] or 0.0)
    ranked = sorted(totals, key=lambda k: (-totals[k], k))
    shown = ranked[:TOP_LANGUAGES]
    other = f"other ({len(ranked) - len(shown)})" if len(ranked) > len(shown) else None
    x_labels = shown + ([other] if other else [])
    types = _ordered_types({r["content_type"] for r in rows})
    colors = _colors(types)
    stacked_max = max([sum(float(r["audio_s"] or 0.0) for r in rows if r["language"] == lang)
                       for lang in ranked] + [0.0])
    if other:
        stacked_max = max(stacked_max, sum(totals[k] for k in ranked[TOP_LANGUAGES:]))
    divisor, unit = duration_unit(stacked_max)
    fig, axes = figure(2)
    for ax, column, title in zip(axes, ["audio_s", part],
                                 ["all segments", "kept" if kind == RUN else "selected"]):
        stacks = {t: [0.0] * len(x_labels) for t in types}
        for r in rows:
            lang = r["language"] if r["language"] in shown else other
            stacks[r["content_type"]][x_labels.index(lang)] += float(r[column] or 0.0) / divisor
        _stacked(ax, x_labels, stacks, colors, unit, f"audio by language: {title}")
    fig.savefig(path)
    return fig


def draw_kept(rows: list[dict], kind: str, path: Path) -> Figure:
    parts = (["kept", "dropped"] if kind == RUN
             else ["selected", "eligible_not_selected", "not_eligible"])
    palette = {"kept": "#55A868", "dropped": "#C44E52", "selected": "#55A868",
               "eligible_not_selected": "#CCB974", "not_eligible": "#C44E52"}
    fig, (ax,) = figure()
    title = ("kept vs dropped segments" if kind == RUN
             else "selected / eligible, not selected / not eligible")
    labels = [r["content_type"] for r in rows]
    totals = [sum(r[p] for p in parts) for r in rows]
    if not rows or not any(totals):
        _empty(ax, title)
        fig.savefig(path)
        return fig
    left = [0.0] * len(rows)
    for p in parts:
        fractions = [r[p] / t if t else 0.0 for r, t in zip(rows, totals)]
        ax.barh(range(len(rows)), fractions, left=left, color=palette[p],
                label=p.replace("_", " "), edgecolor="white")
        for i, (r, f) in enumerate(zip(rows, fractions)):
            if f >= 0.06:
                ax.text(left[i] + f / 2, i, f"{r[p]} ({100 * f:.0f}%)", ha="center",
                        va="center", fontsize=8, color="white")
        left = [a + b for a, b in zip(left, fractions)]
    ax.set_yticks(range(len(rows)), [f"{lab} (n={t})" for lab, t in zip(labels, totals)])
    ax.set_xlim(0, 1)
    ax.set_xlabel("fraction of segments")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    fig.savefig(path)
    return fig


def draw_two_bars(left_rows, left_key, left_title, right_rows, right_key, right_title,
                  value_key_left, value_key_right, path: Path) -> Figure:
    fig, axes = figure(2)
    _hbars(axes[0], [str(r[left_key]) for r in left_rows[:TOP_REASONS]],
           [r[value_key_left] for r in left_rows[:TOP_REASONS]], left_title, value_key_left)
    _hbars(axes[1], [str(r[right_key]) for r in right_rows[:TOP_REASONS]],
           [r[value_key_right] for r in right_rows[:TOP_REASONS]], right_title,
           value_key_right, color="#C44E52")
    fig.savefig(path)
    return fig


def draw_hist(rows: list[dict], title: str, xlabel: str, path: Path) -> Figure:
    """One step outline per group over the same bins (no fill, so nothing blends); the legend
    shows each group's line with its count."""
    fig, (ax,) = figure()
    if not rows:
        _empty(ax, title)
        fig.savefig(path)
        return fig
    groups = sorted({r["grp"] for r in rows})
    spare = iter(OTHER_COLORS * 10)
    top = 0
    for i, g in enumerate(groups):
        mine = [r for r in rows if r["grp"] == g]
        width = float(mine[0]["width"] or 0.0) or 1.0
        lo = float(mine[0]["lo"])
        nbins = max(r["bin"] for r in rows) + 1
        counts = [0] * nbins
        for r in mine:
            counts[r["bin"]] += r["n"]
        top = max(top, max(counts))
        edges = [lo + k * width for k in range(nbins + 1)]
        ax.stairs(counts, edges, fill=False, baseline=0,
                  color=STATUS_COLORS.get(g) or next(spare),
                  linestyle=LINESTYLES[i % len(LINESTYLES)], linewidth=2,
                  label=f"{g} ({sum(counts)})")
    ax.set_ylim(0, top * 1.1 + 0.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("segments")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(path)
    return fig


def draw_tags(rows: list[dict], title: str, path: Path) -> Figure:
    fig, (ax,) = figure()
    _hbars(ax, [r["tag"] for r in rows], [r["segments"] for r in rows], title, "segments")
    fig.savefig(path)
    return fig


def draw_speakers(rows: list[dict], title: str, path: Path) -> Figure:
    counts = sorted({r["speaker_count"] for r in rows}, key=lambda v: (v is None, v or 0))
    x_labels = ["null" if c is None else str(c) for c in counts]
    types = _ordered_types({r["content_type"] for r in rows})
    stacks = {t: [0.0] * len(counts) for t in types}
    for r in rows:
        stacks[r["content_type"]][counts.index(r["speaker_count"])] += r["segments"]
    fig, (ax,) = figure()
    _stacked(ax, x_labels, stacks, _colors(types), "segments", title)
    if x_labels:
        ax.set_xlabel("speakers in the segment")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.savefig(path)
    return fig


def _boxes(ax, rows: list[dict], prefix: str, title: str, xlabel: str) -> None:
    """Per language: a box from the 25th to the 75th percentile, the median, whiskers at the
    10th and 90th (percentiles computed in SQL); '-' where the language has no value."""
    n = len(rows)
    stats, positions = [], []
    for i, r in enumerate(rows):
        if not r[f"{prefix}_n"]:
            ax.text(0.02, n - 1 - i, "no values", va="center", fontsize=7, color="#777777",
                    transform=ax.get_yaxis_transform())
            continue
        stats.append({"med": r[f"{prefix}_p50"], "q1": r[f"{prefix}_p25"],
                      "q3": r[f"{prefix}_p75"], "whislo": r[f"{prefix}_p10"],
                      "whishi": r[f"{prefix}_p90"], "fliers": [],
                      "label": r["language"]})
        positions.append(n - 1 - i)
    if stats:
        ax.bxp(stats, positions=positions, orientation="horizontal", widths=0.6, patch_artist=True,
               boxprops={"facecolor": "#A6C8E8", "edgecolor": "#2F4B7C"},
               medianprops={"color": "#C62828", "linewidth": 2}, manage_ticks=False)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_yticks(range(n), [f"{r['language']} (n={r[prefix + '_n']})" for r in rows][::-1],
                  fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)


def draw_language_quality(rows: list[dict], kind: str, path: Path) -> Figure:
    """Three panels by language: kept (selected) share, agreement, SNR."""
    height = max(FIGSIZE[1], 0.32 * len(rows) + 1.6)
    fig, axes = figure(3, (11.0, height))
    kept = "kept" if kind == RUN else "selected"
    if not rows:
        for ax, t in zip(axes, [f"{kept} share", "agreement", "SNR"]):
            _empty(ax, t)
        fig.savefig(path)
        return fig
    n = len(rows)
    ax = axes[0]
    shares = [float(r["kept_share"] or 0.0) for r in rows]
    ax.barh([n - 1 - i for i in range(n)], shares, color="#55A868")
    for i, (r, s) in enumerate(zip(rows, shares)):
        ax.text(min(s, 0.8), n - 1 - i, f" {100 * s:.0f}% of {r['segments']}", va="center",
                fontsize=7)
    ax.set_yticks(range(n), [r["language"] for r in rows][::-1], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"{kept} share of segments")
    ax.set_title(f"{kept} share by language")
    ax.grid(axis="x", alpha=0.3)
    if kind == RUN:
        _boxes(axes[1], rows, "agreement", "ASR agreement", "asr_agreement (0-1)")
        _boxes(axes[2], rows, "snr", "SNR", "snr_db (dB)")
    else:
        _boxes(axes[1], rows, "agreement", "agreement score", "q_agreement (0-1)")
        _boxes(axes[2], rows, "snr", "SNR score", "q_snr (0-1)")
    fig.savefig(path)
    return fig

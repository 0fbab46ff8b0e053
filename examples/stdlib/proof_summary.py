"""proof_summary.md and dev_curves.png of the task-distillation proof, from the dict that
`proof_report.collect` builds (and proof_summary.json keeps): text and figure only, no training.
"""

from __future__ import annotations

import json
import os

from examples.stdlib.proof_rows import STARTS


def _acc(values, stats):
    """`0.564` for one seed, `0.564 ± 0.012 (3 seeds)` for several."""
    if stats["sd"] is None:
        return f"{stats['mean']:.3f}"
    return f"{stats['mean']:.3f} ± {stats['sd']:.3f} ({len(values)} seeds)"


def _pct(value):
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _secs(value):
    return "n/a" if value is None else f"{value:,.0f} s"


def _num(value):
    return "n/a" if value is None else f"{value:.3f}"


def _teacher_lines(summary, ref):
    """Table lines of every member and of the ensemble (wall-clock: the one teachers stage)."""
    best = summary["best_member"]
    lines = []
    for t in summary["teachers"]:
        mark = " (best single, on dev)" if t["member"] == best else ""
        share = t["test"] / ref if ref else None
        lines.append(f"| — | {t['name']}: member {t['member']}, seed {t['seed']}{mark} | "
                     f"{t['dev']:.3f} | {t['test']:.3f} | {_pct(share)} | in the ensemble's |")
    ens = summary["ensemble"]
    share = ens.get("test") / ref if ref and ens.get("test") is not None else None
    lines.append(f"| — | ensemble of {len(summary['teachers'])} (mean probability) | "
                 f"{_num(ens.get('dev'))} | {_num(ens.get('test'))} | {_pct(share)} | "
                 f"{_secs(summary['ensemble_seconds'])} (all members) |")
    return lines


def _row_line(row):
    """The table line of one row; the best distilled row of its start in bold."""
    label = row["label"]
    if row["variant"] == "kE":
        label += f", T={row['key'].split('_T', 1)[1]}"
    if row["best_distilled"]:
        label = f"**{label}** (best distilled on dev)"
    return (f"| {STARTS[row['start']]} | {label} | {_acc(row['dev'], row['dev_stats'])} | "
            f"{_acc(row['test'], row['test_stats'])} | "
            f"{_pct(row['test_share_of_best_teacher'])} | {_secs(row['seconds'])} |")


def format_summary(summary):
    """The summary tables as Markdown: every row's dev and test accuracy (mean ± sd over seeds
    where several ran), its test share of the best single teacher, its stage wall-clock; the
    (kE) temperature sweep (dev only); the shared stages' wall-clock."""
    teachers = summary["teachers"]
    best = summary["best_member"]
    ref = teachers[best]["test"] if teachers else None
    lines = [
        "# Task distillation proof: summary", "",
        f"Every model: best dev checkpoint, at most {_epochs(summary)} epochs, early stop after "
        f"{_patience(summary)} dev evaluations without improvement. Shares: test accuracy / test "
        f"accuracy of teacher {best} (the best single teacher on dev). Mean ± sample standard "
        "deviation (ddof=1) over seeds where several ran; their per-seed values are in "
        "proof_summary.json. Wall-clock: the row's seed-0 stage ((tE): both steps).", "",
        "| start | row | dev acc | test acc | test share of best single teacher | "
        "stage wall-clock |",
        "|---|---|---:|---:|---:|---:|",
        *_teacher_lines(summary, ref),
        *(_row_line(row) for row in summary["rows"]), ""]
    lines += ["## (kE) temperature sweep (dev only)", "",
              "| start | T | dev acc | best step | stage wall-clock |", "|---|---:|---:|---:|---:|"]
    for start, sweep in summary["temperature_sweep"].items():
        for entry in sweep:
            chosen = " (chosen)" if entry["chosen"] else ""
            lines.append(f"| {STARTS[start]} | {entry['temperature']:g}{chosen} | "
                         f"{entry['dev']:.3f} | {entry['best_step']} | "
                         f"{_secs(entry['seconds'])} |")
    shown = {f"{r['start']}_{r['key']}_s0" for r in summary["rows"]}
    shown |= {f"{s}_{e['key']}_s0" for s, sw in summary["temperature_sweep"].items() for e in sw}
    others = {k: v for k, v in summary["timings_s"].items() if k not in shown}
    lines += ["", "## Wall-clock of the other stages", "",
              *(f"- {name}: {_secs(seconds)}" for name, seconds in others.items()), "",
              "![dev accuracy against training step](dev_curves.png)", ""]
    return "\n".join(lines)


def _epochs(summary):
    value = summary["settings"].get("max_epochs")
    return value if value is not None else "10 (the package's file-task default)"


def _patience(summary):
    value = summary["settings"].get("patience")
    return value if value is not None else "3 (the package's default)"


def write_summary(summary, workdir):
    """proof_summary.json + proof_summary.md in `workdir`; returns the Markdown path."""
    with open(os.path.join(workdir, "proof_summary.json"), "w") as f:
        json.dump(summary, f, indent=1, default=str)
    path = os.path.join(workdir, "proof_summary.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write(format_summary(summary))
    return path


def _curve(ax, selection, metric="accuracy", **style):
    """One dev curve from a selection.json history (nothing when the stage has not run)."""
    if not selection or not os.path.exists(selection):
        return
    with open(selection) as f:
        history = json.load(f)["history"]
    ax.plot([h["step"] for h in history], [h[metric] for h in history], marker=".", **style)


def plot_dev_curves(summary, path):
    """Dev accuracy against step from each stage's selection.json history: a panel of the
    teachers, then one per start with its rows' seed-0 runs (every (kE) temperature, the chosen
    one solid; (tE): its prediction step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 1 + len(STARTS), figsize=(5 * (1 + len(STARTS)), 3.8),
                             sharey=True)
    for t in summary["teachers"]:
        _curve(axes[0], t["selection"], label=t["name"])
    axes[0].set_title("teachers (fine-tuned members)", fontsize=10)
    best = summary["teachers"][summary["best_member"]]["dev"] if summary["teachers"] else None
    for ax, start in zip(axes[1:], STARTS):
        if best is not None:
            ax.axhline(best, color="k", ls="--", lw=1, label="best single teacher (dev)")
        for row in (r for r in summary["rows"] if r["start"] == start and r["variant"] != "kE"):
            _curve(ax, row["selection"], label=row["label"].split(",")[0])
        for entry in summary["temperature_sweep"][start]:
            _curve(ax, entry["selection"], ls="-" if entry["chosen"] else ":",
                   label=f"(kE) T={entry['temperature']:g}")
        ax.set_title(STARTS[start], fontsize=10)
    for ax in axes:
        ax.set_xlabel(f"step (batch {summary['settings']['batch_size']})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower right")
    axes[0].set_ylabel("dev accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

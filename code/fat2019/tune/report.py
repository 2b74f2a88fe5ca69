"""What a search leaves behind (docs/tuning.md): the table of every trial (trials.csv,
printed at the end), its plot (tune_report.png: best lwlrap against each parameter), what
the early stopping saved, and the best trial's front end (best_frontend.json).

Read from the trials' own records (trial.py), so the table is the same whether the search
ran in one go or was killed and continued.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fat2019 import layout
from fat2019.eval.reports import save_figure
from fat2019.tune import space, trial
from fat2019.util.atomic import atomic_write_text
from fat2019.util.progress import duration

NAMES = [p.name for p in space.PARAMETERS]


def trial_table(models_dir: Path, trials: list[tuple[str, dict, bool]], default: dict, max_epochs: int) -> pd.DataFrame:
    """One row per trial (id, config, failed?): its parameters, best lwlrap, epochs run,
    seconds, how it ended, and whether it is the profile's own front end (the baseline)."""
    rows = []
    for trial_id, values, failed in trials:
        record = trial.read_record(layout.trial_dir(models_dir, trial_id))
        scores = [e["val_lwlrap"] for e in record["epochs"]]
        ended = ("failed" if failed else "finished" if record["finished"] or len(scores) >= max_epochs
                 else "stopped" if scores else "not run")
        seconds = [e["seconds"] for e in record["epochs"]]
        rows.append({"trial": trial_id, **{name: values[name] for name in NAMES},
                     "best_lwlrap": max(scores) if scores else np.nan, "epochs": len(scores),
                     "seconds": round(sum(seconds), 1), "epoch_seconds": round(steady(seconds), 1),
                     "ended": ended, "baseline": all(values[name] == default[name] for name in NAMES)})
    table = pd.DataFrame(rows, columns=["trial", *NAMES, "best_lwlrap", "epochs", "seconds", "epoch_seconds",
                                        "ended", "baseline"])
    return table.sort_values("best_lwlrap", ascending=False, na_position="last").reset_index(drop=True)


def steady(seconds: list[float]) -> float:
    """A trial's time per epoch once started: the mean of its epochs after the first (which
    also builds and traces the model), or the first when it ran only one."""
    later = seconds[1:] or seconds
    return sum(later) / len(later) if later else float("nan")


def savings(table: pd.DataFrame, max_epochs: int) -> dict:
    """The epochs ASHA's stopped trials did not run, and their time at each such trial's
    own epoch time (`steady`: its later epochs take about the same time, same front end,
    crop and clips)."""
    stopped = table[table["ended"] == "stopped"]
    skipped = (max_epochs - stopped["epochs"]).clip(lower=0)
    seconds = float((skipped * stopped["epoch_seconds"]).sum())
    return {"stopped": len(stopped), "trials": int((table["ended"] != "not run").sum()),
            "epochs_skipped": int(skipped.sum()), "epochs_run": int(table["epochs"].sum()),
            "seconds_saved": seconds, "seconds_run": float(table["seconds"].sum())}


def savings_line(saved: dict) -> str:
    total = saved["seconds_run"] + saved["seconds_saved"]
    share = f" ({100 * saved['seconds_saved'] / total:.0f}% of the {duration(total)} all trials would " \
            f"have taken to the end)" if total > 0 else ""
    return (f"early stopping: ASHA stopped {saved['stopped']} of {saved['trials']} trials; they skipped "
            f"{saved['epochs_skipped']} epochs, about {duration(saved['seconds_saved'])} of training{share}; "
            f"the trials ran {saved['epochs_run']} epochs in {duration(saved['seconds_run'])}")


def shown_table(table: pd.DataFrame) -> str:
    """The table as printed: f_max at Nyquist shown as such, the baseline marked."""
    shown = table.copy()
    for name in NAMES:
        shown[name] = [f"{v:g}" for v in shown[name]]
    shown["f_max"] = [("Nyquist" if v >= space.NYQUIST else f"{v:g}") for v in table["f_max"]]
    shown["trial"] = [t + (" (default)" if b else "") for t, b in zip(shown["trial"], shown["baseline"])]
    shown["best_lwlrap"] = shown["best_lwlrap"].map(lambda v: f"{v:.4f}" if v == v else "-")
    shown["time"] = shown["seconds"].map(duration)
    return shown.drop(columns=["seconds", "epoch_seconds", "baseline"]).to_string(index=False)


def write_table(models_dir: Path, table: pd.DataFrame) -> Path:
    path = layout.tune_dir(models_dir) / layout.TRIALS_CSV
    atomic_write_text(path, table.to_csv(index=False))
    return path


def plot(models_dir: Path, table: pd.DataFrame, searched: dict[str, list], title: str) -> Path:
    """tune_report.png: best lwlrap against each parameter (every value `searched`, and
    the baseline's), one panel each; the baseline (the profile's front end) in red,
    trials ASHA stopped hollow."""
    scored = table[table["best_lwlrap"].notna()]
    fig = Figure(figsize=(16, 7.5))
    axes = fig.subplots(2, 4).ravel()
    rng = np.random.default_rng(0)   # a little sideways jitter, so equal values stay visible
    for ax, p in zip(axes, space.PARAMETERS):
        values = sorted(set(searched[p.name]) | set(table[p.name]))
        position = {v: i for i, v in enumerate(values)}
        x = np.array([position[v] for v in scored[p.name]], float) + rng.uniform(-0.12, 0.12, len(scored))
        for ended, face in (("finished", "tab:blue"), ("stopped", "none"), ("failed", "none")):
            pick = (scored["ended"] == ended).to_numpy() & ~scored["baseline"].to_numpy()
            if not pick.any():
                continue
            ax.scatter(x[pick], scored["best_lwlrap"][pick], facecolors=face, edgecolors="tab:blue", s=36,
                       label={"finished": "finished", "stopped": "stopped early (ASHA)", "failed": "failed"}[ended])
        base = scored["baseline"].to_numpy()
        ax.scatter(x[base], scored["best_lwlrap"][base], marker="*", color="tab:red", s=140, zorder=3,
                   label="the profile's front end")
        ax.set_xticks(range(len(values)),
                      ["Nyquist" if p.name == "f_max" and v >= space.NYQUIST else f"{v:g}" for v in values])
        ax.set_xlim(-0.5, len(values) - 0.5)
        ax.set_xlabel(p.name)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("best validation lwlrap")
    axes[4].set_ylabel("best validation lwlrap")
    axes[0].legend(fontsize=8, loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, layout.tune_dir(models_dir) / layout.TUNE_REPORT_PNG)

"""The rehearsal's section of BENCHMARKS.md, from one or more rehearsal.json files (one per
scale): the per-stage table side by side, time and clip ratios, the host feed, the stacker
and the fault check. Only the text between the two markers is replaced."""
from __future__ import annotations

from pathlib import Path

from fat2019.util.atomic import atomic_write_text

BEGIN = "<!-- rehearsal: start (written by code/tools/rehearse.py --report) -->"
END = "<!-- rehearsal: end -->"


def _scale(r: dict) -> str:
    return f"{r['scale']:g}" if r.get("scale") is not None else "?"


def _seconds(x: float | None) -> str:
    return "–" if x is None else f"{x:,.0f}"


def stage_table(runs: list[dict]) -> list[str]:
    """One row per stage and scale, then the growth from the second-largest scale to the
    largest: time per clip in CPU seconds (wall where CPU was not recorded)."""
    names = list(dict.fromkeys(n for r in runs for n in r["stages"]))
    lines = ["| stage | scale | clips | wall s | CPU s | peak RSS MB | disk MB | load |", "|" + " --- |" * 8]
    for n in names:
        for r in runs:
            g = r["stages"].get(n)
            if g is None:
                continue
            rc = "" if g["returncode"] == 0 else f" (rc {g['returncode']})"
            lines.append(f"| {n} | {_scale(r)} | {g['clips']:,} | {_seconds(g['wall_s'])}{rc} | "
                         f"{_seconds(g.get('cpu_s'))} | {g['peak_rss_mb']:,.0f} | {g['disk_mb']:,.0f} | "
                         f"{g['load_start']:.1f}-{g['load_end']:.1f} |")
    lines.append("")
    lines += [f"- {n} @{_scale(r)}: {r['stages'][n]['note']}" for n in names for r in runs
              if n in r["stages"] and r["stages"][n].get("note")]
    if len(runs) >= 2:
        lines += ["", *growth_table(runs[-2], runs[-1], names)]
    return lines


def growth_table(small: dict, big: dict, names: list[str]) -> list[str]:
    """How each stage's cost grew from `small` to `big` against its clips: 1.00 per clip is
    linear, above it worse."""
    lines = [f"Growth from scale {_scale(small)} to {_scale(big)} (per clip 1.00 = linear; CPU s where both "
             f"scales recorded it, else wall s):", "",
             "| stage | clip ratio | time ratio | per clip | measured by |", "|" + " --- |" * 5]
    for n in names:
        a, b = small["stages"].get(n), big["stages"].get(n)
        if not (a and b and a["returncode"] == 0 and b["returncode"] == 0 and a["clips"] > 0):
            continue
        key = "cpu_s" if a.get("cpu_s") and b.get("cpu_s") else "wall_s"
        if not a[key]:
            continue
        clips, time = b["clips"] / a["clips"], b[key] / a[key]
        lines.append(f"| {n} | {clips:.2f} | {time:.2f} | {time / clips:.2f} | "
                     f"{'CPU s' if key == 'cpu_s' else 'wall s'} |")
    return lines


def feed_table(runs: list[dict]) -> list[str]:
    lines = ["| scale | set | cache GB | threads | page cache | clips/s (wall) | clips per CPU-s | load |",
             "|" + " --- |" * 8]
    for r in runs:
        for f in r.get("feed", []):
            lines.append(f"| {_scale(r)} | {f['set']} | {f['cache_gb']} | {f['threads']} | {f['page_cache']} | "
                         f"{f['clips_per_s']:.0f} | {f.get('clips_per_cpu_s', float('nan')):.0f} | {f['load']:.1f} |")
    return lines


def compare_table(runs: list[dict]) -> list[str]:
    rows = [(r, f) for r in runs for f in r.get("feed_compare", [])]
    if not rows:
        return []
    lines = ["", "The feed before and after the fixes, on the largest cache (larger than RAM):", "",
             "| scale | code | cache GB | threads | page cache | clips/s (wall) | clips per CPU-s | load |",
             "|" + " --- |" * 8]
    for r, f in rows:
        lines.append(f"| {_scale(r)} | {f['code']} | {f['cache_gb']} | {f['threads']} | {f['page_cache']} | "
                     f"{f['clips_per_s']:.0f} | {f['clips_per_cpu_s']:.0f} | {f['load']:.1f} |")
    return lines


def generation_lines(runs: list[dict]) -> list[str]:
    out = []
    for r in runs:
        g = r.get("generation")
        if g:
            out.append(f"- data @{_scale(r)}: {g['gb']} GB of WAV written in {g['wall_s']} s by 2 writer processes "
                       f"(load {g['load']}){'; ' + g['note'] if g.get('note') else ''}")
    return out


def section(runs: list[dict]) -> str:
    first = runs[0]
    out = [BEGIN, "## Full-size rehearsal (host side)", "",
           f"`code/tools/rehearse.py` on data of `code/tools/make_full_size_data.py` (FSDKaggle2019's counts and lengths, "
           f"times the scale); profile `full` with `--set {' '.join(first['settings'])}`, models "
           f"{', '.join(first['models'])}, on {first['cpus']} shared CPU cores (load: the 1-minute load "
           f"average at the stage's start and end). Disk: what the stage added under the work folder. "
           f"CPU s and peak RSS: the stage's process and the processes it waited for (its decoding "
           f"workers); on a shared machine the CPU seconds compare across scales, the wall time less. "
           f"See docs/rehearsal.md.", ""]
    for r in runs:
        c = r["counts"]
        out.append(f"- scale {_scale(r)}: {c['curated']} curated, {c['noisy']} noisy, {c['test']} test clips")
    out += generation_lines(runs)
    out += [""] + stage_table(runs) + ["", "Host feed (TrainBatches: 5 s crops, batch 32, smoothing, mixup p 0.6; "
                                       "cold = the cache's pages evicted first):", ""] + feed_table(runs)
    out += compare_table(runs)
    for r in runs:
        if "stacker" in r:
            s = r["stacker"]
            out.append(f"\nStacker @{_scale(r)}: inputs {' x '.join(map(str, s['inputs']))}, {s['test']} test "
                       f"clips, 10 folds: {s['wall_s']} s in the fit (stage row 'stacker, 6 models + average').")
        if "fault_resume_equal" in r:
            out.append(f"\nFault @{_scale(r)}: the noisy set's features killed (SIGKILL) at half and rerun: the "
                       f"resumed cache {'equals' if r['fault_resume_equal'] else 'DIFFERS from'} the uninterrupted "
                       f"one (sha256 of index.csv, audio.int16, global_features.npy).")
    out += ["", END]
    return "\n".join(out) + "\n"


def write_section(path: Path, runs: list[dict]) -> None:
    text = Path(path).read_text() if Path(path).is_file() else "# Benchmarks\n"
    new = section(runs)
    if BEGIN in text and END in text:
        before, rest = text.split(BEGIN, 1)
        after = rest.split(END, 1)[1].lstrip("\n")
        text = before + new + ("\n" + after if after else "")
    else:
        text = text.rstrip("\n") + "\n\n" + new
    atomic_write_text(Path(path), text)

"""The CPU benchmark's memory measurement (code/tools/bench.py, item 5): the peak resident set
of a pretraining-sized run (an epoch of batches over a big cache, then a few full-size
training steps), each probe in a fresh process so that peaks do not mix:

    python -m fat2019.tools.bench.rss_probe CACHE_DIR TRAIN_STEPS BATCH_SIZE   # prints one JSON line
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

from fat2019 import config
from fat2019.tools.bench.cpu_models import full_model, model_batch, say
from fat2019.tools.bench.feed import epoch_of_batches, make_repeated_cache, repeated
from fat2019.data.feature_cache import FeatureCache

CODE_DIR = Path(__file__).resolve().parents[3]   # the folder that holds the package


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Not ru_maxrss: after fork + exec that
    still carries the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_probe(cache_dir: Path, train_steps: int, batch_size: int) -> dict:
    """Run in a child: one epoch of batches over the cache, then `train_steps` training
    steps of the full v1mix. Peak RSS after each phase, in MB."""
    cache = FeatureCache(cache_dir)
    data = repeated(cache, len(cache))
    crop = config.PROFILES["full"].scale(config.ZOO[0]).crop_samples
    seconds = epoch_of_batches(data, batch_size, crop, 2)
    result = {"clips": len(cache), "epoch_s": seconds,
              "rss_pipeline_mb": peak_rss_mb()}
    if train_steps:
        model = full_model("v1mix")
        x, y = model_batch(data, batch_size)
        for _ in range(train_steps):
            model.train_on_batch(x, y)
        result["rss_training_mb"] = peak_rss_mb()
    return result


def run_probe(cache_dir: Path, train_steps: int, batch_size: int) -> dict:
    """rss_probe in a fresh process (`python -m fat2019.tools.bench.rss_probe`), so peaks do not mix."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(CODE_DIR), os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, "-m", "fat2019.tools.bench.rss_probe", str(cache_dir), str(train_steps),
                          str(batch_size)], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"the memory probe failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_memory(cache: FeatureCache, work: Path, n_small: int, n_large: int, steps: int,
                 batch_size: int) -> list[dict]:
    small, large = work / f"cache{n_small}", work / f"cache{n_large}"
    make_repeated_cache(cache, small, n_small)
    make_repeated_cache(cache, large, n_large)
    say(f"memory probe 1 of 3: an epoch of batches over {n_small:,} clips")
    a = run_probe(small, 0, batch_size)
    say(f"memory probe 2 of 3: an epoch of batches over {n_large:,} clips")
    b = run_probe(large, 0, batch_size)
    say(f"memory probe 3 of 3: the same and {steps} full v1mix training step(s)")
    c = run_probe(large, steps, batch_size)
    return [
        dict(figure=f"peak RSS, epoch of batches over {n_small:,} clips, MB", ours=a["rss_pipeline_mb"],
             reference=None, goal=None, note=f"epoch built in {a['epoch_s']:.1f} s (TF imported, batch {batch_size})"),
        dict(figure=f"peak RSS, epoch of batches over {n_large:,} clips, MB", ours=b["rss_pipeline_mb"],
             reference=a["rss_pipeline_mb"], goal=None, ratio_label="vs the small run",
             note=f"epoch built in {b['epoch_s']:.1f} s; growth with 10x the clips: "
                  f"{b['rss_pipeline_mb'] - a['rss_pipeline_mb']:+.0f} MB"),
        dict(figure=f"peak RSS, {n_large:,}-clip epoch + {steps} full v1mix training steps on CPU, MB",
             ours=c["rss_training_mb"], reference=None, goal=4096,
             note=f"batch {batch_size}; on a CPU the activations of the step live in RAM"),
    ]


if __name__ == "__main__":
    cache_dir, train_steps, batch_size = sys.argv[1:4]
    print(json.dumps(rss_probe(Path(cache_dir), int(train_steps), int(batch_size))))

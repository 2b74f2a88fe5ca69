"""Stage 5: weighted average and stacker over the zoo's predictions -> the submission.

Reads models/<name>/oof.csv and test.csv of every selected model (refusing with exit code
2, naming each model and its folds, while any fold is not trained, predicted and gathered
by predict.py -- e.g. folds still training on another machine), then writes:

    submissions/average_oof.csv   weighted average of the out-of-fold predictions
    submissions/average.csv       weighted average of the test predictions
    submissions/stacker_oof.csv   the stacker's out-of-fold predictions
    submissions/submission.csv    the stacker's test predictions (sample_submission format)
    submissions/per_class.csv     per-class OOF lwlrap of the stacker, average and each model
    submissions/report.png        those per class, and the stacker's per-class model weights
    models/stacker/               each fold's stacker (fold<k>.weights.h5) and stacker.json
                                  (its models, average weights, classes), for code/tag.py

The stacker sees, per class, each model's score and the weighted average (last column);
it is trained per fold of models/folds.csv, its validation scored before each epoch's fit,
so the untrained state (a monotone map of the plain average) can win. Test = mean of the
fold stackers. A summary table of CV scores ends the stage; when the data has test labels
(test_labels.csv: the demo's, or the real ones from code/get_data.py) it adds the test
lwlrap, the competition's score, overall and for each leaderboard part (public, private)
the labels name. Data without test clips (own data: no sample_submission.csv, nothing in
audio_test/) gets the out-of-fold files only, with a note.

    .venv/bin/python code/ensemble.py --profile demo
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fat2019.cli import NotReady, run_stage, stage_parser  # first: it quiets TensorFlow's C++ log lines before anything imports TensorFlow
from fat2019 import layout, provenance
from fat2019.ensemble.predictions import read_predictions, write_predictions
from fat2019.util import machine

if TYPE_CHECKING:
    from fat2019.train.workspace import Workspace


def complete_rows(all_fnames: list[str], fnames: list[str], scores: np.ndarray) -> np.ndarray:
    """Scores for every clip of `all_fnames` (sample_submission's order): clips the feature
    cache left out (bad files skipped with `features.py --skip-bad`) get each class's mean
    score, so the submission still has every row the competition expects."""
    row = {f: i for i, f in enumerate(fnames)}
    filled = np.tile(scores.mean(axis=0) if len(scores) else 0.0, (len(all_fnames), 1)).astype(np.float32)
    have = [i for i, f in enumerate(all_fnames) if f in row]
    filled[have] = scores[[row[all_fnames[i]] for i in have]]
    return filled


def check_ready(ws: Workspace) -> None:
    """NotReady, naming each model and its folds, while any is not trained, predicted and gathered."""
    not_ready = []
    for m in ws.models:
        missing = layout.missing_folds(ws.model_dir(m.name), ws.profile.n_folds)
        if missing:
            not_ready.append(f"{m.name}: folds {missing} not trained and predicted")
        elif stale := provenance.stale_folds(ws.paths.models, ws.model_dir(m.name), list(range(ws.profile.n_folds))):
            not_ready += [f"{m.name}: {msg} (train.py trains it again)" for msg in stale]
        elif not layout.is_gathered(ws.model_dir(m.name), ws.profile.n_folds):
            not_ready.append(f"{m.name}: every fold predicted, but oof.csv/test.csv are missing or older "
                             f"(run predict.py to gather them)")
    if not_ready:
        raise NotReady("cannot ensemble, predictions missing (run train.py and predict.py for every fold; with "
                       "folds sharded over machines, every machine's folds must be in models/):\n  "
                       + "\n  ".join(not_ready))


def print_scores(ws: Workspace, test_fnames: list[str], y, rows) -> None:
    """The summary table: CV LRAP and lwlrap of each (name, oof, test) row and, when the data
    has held-back test labels, the test lwlrap overall and per leaderboard part (Public,
    Private) where test_labels.csv marks them."""
    from fat2019.data.dataset import read_test_labels, read_test_parts
    from fat2019.eval.metrics import lrap, lwlrap
    from fat2019.eval.test_set import ALL, score_test_set

    truth = read_test_labels(ws.paths.data, ws.dataset)
    parts = read_test_parts(ws.paths.data, ws.dataset) or {}
    scores = {name: {} for name, _, _ in rows}
    if truth is not None:
        keep = [ws.dataset.test.fnames.index(f) for f in test_fnames]
        scores = score_test_set(truth[keep], {name: t for name, _, t in rows},
                                {p: mask[keep] for p, mask in parts.items()})
    groups = [ALL, *parts] if truth is not None else []
    titles = {ALL: "test lwlrap", **{p: f"test {p}" for p in parts}}
    print("\n" + f"{'':<30} {'CV LRAP':>8} {'CV lwlrap':>10}" + "".join(f" {titles[g]:>13}" for g in groups))
    for name, o, _ in rows:
        cells = "".join(f" {scores[name][g]:>13.4f}" if g in scores[name] else f" {'-':>13}" for g in groups)
        print(f"{name:<30} {lrap(y, o):>8.4f} {lwlrap(y, o):>10.4f}" + cells)


def main(argv: list[str] | None = None) -> int:
    args = stage_parser(__doc__, folds=False, force=False, workers=False, precision=False).parse_args(argv)
    # imported once the options are parsed: --help stays free of TensorFlow/Keras (cli.py)
    from fat2019.ensemble.predictor import (SavedStacker, fit_calibration, normalised_weights, stack_inputs,
                                            weighted_average)
    from fat2019.ensemble.stacking import fit_stacker
    from fat2019.eval import reports
    from fat2019.train.workspace import Workspace

    ws = Workspace(args, "ensemble")
    check_ready(ws)
    curated, test = ws.curated, ws.clip_data(ws.dataset.test)
    y = curated.labels
    paths = [layout.gathered(ws.model_dir(m.name)) for m in ws.models]
    oofs = [read_predictions(oof, curated.fnames, ws.classes) for oof, _ in paths]
    tests = [read_predictions(tst, test.fnames, ws.classes) for _, tst in paths]

    weights = normalised_weights([m.weight for m in ws.models])
    avg_oof, avg_test = weighted_average(oofs, weights), weighted_average(tests, weights)
    out = ws.paths.submissions
    all_test = ws.dataset.test.fnames
    if len(test) < len(all_test):
        print(f"warning: {len(all_test) - len(test)} test clip(s) are not in the feature cache (bad files "
              f"skipped); average.csv and submission.csv give them each class's mean score")
    write_predictions(out / layout.AVERAGE_OOF_CSV, curated.fnames, ws.classes, avg_oof)
    if all_test:
        write_predictions(out / layout.AVERAGE_CSV, all_test, ws.classes, complete_rows(all_test, test.fnames, avg_test))

    stacker_dir = layout.stacker_dir(ws.paths.models)
    stacker_dir.mkdir(parents=True, exist_ok=True)
    layout.stacker_json(ws.paths.models).unlink(missing_ok=True)   # written last: the saved stacker is complete
    stack_oof, stack_test, stack_weights = fit_stacker(stack_inputs(oofs, avg_oof), y, ws.folds,
                                                       stack_inputs(tests, avg_test), ws.profile, args.seed,
                                                       save_dir=stacker_dir)
    SavedStacker([m.name for m in ws.models], weights.tolist(), ws.classes, ws.profile.n_folds,
                 ws.profile.stacker_offset, fit_calibration(stack_oof, y)).save(ws.paths.models)
    write_predictions(out / layout.STACKER_OOF_CSV, curated.fnames, ws.classes, stack_oof)
    if all_test:
        write_predictions(out / layout.SUBMISSION_CSV, all_test, ws.classes,
                          complete_rows(all_test, test.fnames, stack_test))
    else:   # own data without test clips: out-of-fold results only; no stale test files either
        for name in (layout.AVERAGE_CSV, layout.SUBMISSION_CSV):
            (out / name).unlink(missing_ok=True)
        print(f"note: no test clips in {ws.dataset.test_from}, so no {layout.AVERAGE_CSV} or "
              f"{layout.SUBMISSION_CSV}; the out-of-fold results are {out / layout.STACKER_OOF_CSV} and "
              f"{out / layout.AVERAGE_OOF_CSV}")
    reports.ensemble_report(out, ws.classes, y, [m.name for m in ws.models], oofs, avg_oof, stack_oof,
                            stack_weights)

    rows = [(m.name, o, t) for m, o, t in zip(ws.models, oofs, tests)]
    rows += [("weighted average", avg_oof, avg_test), ("stacker", stack_oof, stack_test)]
    print_scores(ws, test.fnames, y, rows)
    result = f"submission: {out / layout.SUBMISSION_CSV}" if all_test else f"out-of-fold: {out / layout.STACKER_OOF_CSV}"
    print(f"\n{result}; per-class report: {out / layout.REPORT_PNG}")
    print(machine.summary())   # CPU runs' last digits depend on it (docs/reproducibility-across-cpus.md)
    return 0


if __name__ == "__main__":
    run_stage(main)

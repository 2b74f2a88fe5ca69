"""Stage 5: the zoo's predictions combined three ways -> the submission.

Reads models/<name>/oof.csv and test.csv of every selected model (refusing with exit code
2, naming each model and its folds, while any fold is not trained, predicted and gathered
by predict.py -- e.g. folds still training on another machine), and combines them:

    average    the original's weighted average, with the zoo's fixed weights (config.ZOO)
    stacker    the original's stacker over the models and that average (the default)
    fitted     non-negative weights per model fitted on the out-of-fold predictions by
               greedy selection, cross-fitted over the folds so that its CV score never
               sees its own fitting clips; models that add nothing get weight 0
               (fat2019/ensemble/fitted.py, docs/ensemble.md)

--combine picks the one submission.csv holds. It writes:

    submissions/<combination>_oof.csv, <combination>.csv   each combination's out-of-fold and
                                  test predictions (average, stacker, fitted)
    submissions/submission.csv    the --combine combination's test predictions (sample_submission format)
    submissions/per_class.csv     per-class OOF lwlrap of the stacker, average and each model
    submissions/report.png        those per class, the stacker's per-class model weights, each
                                  combination's CV and test lwlrap, and the reliability of the
                                  submission's calibrated scores
    models/stacker/               each fold's stacker (fold<k>.weights.h5) and stacker.json
                                  (its models, average and fitted weights, calibrations, the
                                  submission's combination), for code/tag.py

The stacker sees, per class, each model's score and the weighted average (last column);
it is trained per fold of models/folds.csv, its validation scored before each epoch's fit,
so the untrained state (a monotone map of the plain average) can win. Test = mean of the
fold stackers. A rerun whose stacker inputs, labels, folds, settings and seed are unchanged
(by content hash) reuses the saved fold stackers; --force refits them.

A summary table of CV scores ends the stage, naming the best; when the data has test
labels (test_labels.csv: the demo's, or the real ones from code/get_data.py) it adds the
test lwlrap, the competition's score, overall and for each leaderboard part (public,
private) the labels name. Data without test clips (own data: no sample_submission.csv,
nothing in audio_test/) gets the out-of-fold files only, with a note.

    .venv/bin/python code/ensemble.py --profile demo
    .venv/bin/python code/ensemble.py --profile demo --combine fitted
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fat2019.cli import NotReady, run_stage, stage_parser  # first: it quiets TensorFlow's C++ log lines before anything imports TensorFlow
from fat2019 import config, layout, provenance
from fat2019.ensemble.predictions import read_predictions, write_predictions
from fat2019.util import machine

if TYPE_CHECKING:
    from fat2019.engine.workspace import Workspace


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


def score_rows(ws: Workspace, test_fnames: list[str], y, rows) -> tuple[dict, list[str]]:
    """{name: {"cv_lrap", "cv_lwlrap", and per test group (test_set.ALL, each leaderboard
    part) the test lwlrap}} of each (name, oof, test) row, and the test groups scored
    (none when the data has no test labels)."""
    from fat2019.data.dataset import read_test_labels, read_test_parts
    from fat2019.eval.metrics import lrap, lwlrap
    from fat2019.eval.test_set import ALL, score_test_set

    truth = read_test_labels(ws.paths.data, ws.dataset)
    parts = read_test_parts(ws.paths.data, ws.dataset) or {}
    tested = {name: {} for name, _, _ in rows}
    if truth is not None:
        keep = [ws.dataset.test.fnames.index(f) for f in test_fnames]
        tested = score_test_set(truth[keep], {name: t for name, _, t in rows},
                                {p: mask[keep] for p, mask in parts.items()})
    scores = {name: {"cv_lrap": lrap(y, o), "cv_lwlrap": lwlrap(y, o), **tested[name]} for name, o, _ in rows}
    return scores, ([ALL, *parts] if truth is not None else [])


def print_scores(scores: dict, groups: list[str], members: list[str], submission: str) -> None:
    """The summary table (CV LRAP and lwlrap of each row, the test lwlrap overall and per
    leaderboard part when there are test labels), the best member and the best
    combination on each score, and a warning when the submission's combination loses to
    a member."""
    from fat2019.eval.test_set import ALL

    titles = {ALL: "test lwlrap", **{g: f"test {g}" for g in groups if g != ALL}}
    print("\n" + f"{'':<30} {'CV LRAP':>8} {'CV lwlrap':>10}" + "".join(f" {titles[g]:>13}" for g in groups))
    for name, row in scores.items():
        cells = "".join(f" {row[g]:>13.4f}" if g in row else f" {'-':>13}" for g in groups)
        print(f"{name:<30} {row['cv_lrap']:>8.4f} {row['cv_lwlrap']:>10.4f}" + cells)
    for line in best_lines(scores, members, submission, ALL if ALL in groups else None):
        print(line)


def best_lines(scores: dict, members: list[str], submission: str, test: str | None) -> list[str]:
    """"best ..." lines naming, on CV lwlrap and on the test lwlrap (when scored), the best
    member and the best combination, and a "warning: ..." when the submission's
    combination scores below the best member on either."""
    combinations = [n for n in scores if n not in members]
    lines, losing = [], []
    for key, what in (("cv_lwlrap", "CV lwlrap"), (test, "test lwlrap")):
        if key is None:
            continue
        member = max(members, key=lambda n: scores[n][key])
        best = max(combinations, key=lambda n: scores[n][key])
        lines.append(f"best on {what}: {best} ({scores[best][key]:.4f}) among the combinations; "
                     f"{member} ({scores[member][key]:.4f}) among the models")
        if scores[submission][key] < scores[member][key]:
            losing.append(f"{what} {scores[submission][key]:.4f} < {member}'s {scores[member][key]:.4f}")
    if losing:
        lines.append(f"warning: the submission's combination ({submission}) loses to a single model: "
                     f"{'; '.join(losing)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__, folds=False, workers=False, precision=False)
    parser.add_argument("--combine", choices=config.ENSEMBLE_COMBINATIONS, default=config.SUBMISSION_COMBINATION,
                        help=f"the combination submission.csv holds (default {config.SUBMISSION_COMBINATION}, the "
                             f"original's); every one is written and scored")
    args = parser.parse_args(argv)
    # imported once the options are parsed: --help stays free of TensorFlow/Keras (cli.py)
    from fat2019.ensemble import fitted
    from fat2019.ensemble.predictor import (SavedStacker, fit_calibration, normalised_weights, stack_inputs,
                                            weighted_average)
    from fat2019.ensemble.stacking import inputs_digest
    from fat2019.eval import reports
    from fat2019.engine.workspace import Workspace

    ws = Workspace(args, "ensemble")
    check_ready(ws)
    curated, test = ws.curated, ws.clip_data(ws.dataset.test)
    y = curated.labels
    names = [m.name for m in ws.models]
    paths = [layout.gathered(ws.model_dir(m.name)) for m in ws.models]
    oofs = [read_predictions(oof, curated.fnames, ws.classes) for oof, _ in paths]
    tests = [read_predictions(tst, test.fnames, ws.classes) for _, tst in paths]
    out = ws.paths.submissions
    all_test = ws.dataset.test.fnames
    if len(test) < len(all_test):
        print(f"warning: {len(all_test) - len(test)} test clip(s) are not in the feature cache (bad files "
              f"skipped); the test CSVs give them each class's mean score")

    weights = normalised_weights([m.weight for m in ws.models])
    avg_oof, avg_test = weighted_average(oofs, weights), weighted_average(tests, weights)
    x_oof, x_test = stack_inputs(oofs, avg_oof), stack_inputs(tests, avg_test)
    digest = inputs_digest(x_oof, y, ws.folds, x_test, ws.profile, args.seed)
    stack_oof, stack_test, stack_weights = stacker_predictions(ws, x_oof, y, x_test, digest, args.seed, args.force)
    fit = fitted.cross_fit(oofs, y, ws.folds, ws.profile.n_folds)
    print_fitted_weights(names, fit.weights)
    combinations = {"average": (avg_oof, avg_test), "stacker": (stack_oof, stack_test),
                    "fitted": (fit.oof, fit.test(tests))}
    calibrations = {name: fit_calibration(o, y) for name, (o, _) in combinations.items() if name != "average"}
    SavedStacker(names, weights.tolist(), ws.classes, ws.profile.n_folds, ws.profile.stacker_offset,
                 calibrations["stacker"], fit.weights.tolist(), calibrations["fitted"], args.combine,
                 digest).save(ws.paths.models)
    write_combinations(ws, curated.fnames, test.fnames, combinations, args.combine)

    rows = [*zip(names, oofs, tests), *((name, o, t) for name, (o, t) in combinations.items())]
    scores, groups = score_rows(ws, test.fnames, y, rows)
    reports.ensemble_report(out, ws.classes, y, names, oofs, avg_oof, stack_oof, stack_weights,
                            scores=scores, submission=args.combine,
                            reliability=submission_reliability(ws, test.fnames, y, combinations[args.combine],
                                                               calibrations.get(args.combine)))
    print_scores(scores, groups, names, args.combine)
    result = (f"submission ({args.combine}): {out / layout.SUBMISSION_CSV}" if all_test
              else f"out-of-fold: {out / layout.COMBINATION_CSVS[args.combine][0]}")
    print(f"\n{result}; per-class report: {out / layout.REPORT_PNG}")
    print(machine.summary())   # CPU runs' last digits depend on it (docs/reproducibility-across-cpus.md)
    return 0


def stacker_predictions(ws: Workspace, x_oof, y, x_test, digest: str, seed: int, force: bool) -> tuple:
    """The stacker's (out-of-fold, test, per-class weights): the saved fold stackers
    applied when they were fitted on inputs of this `digest` (and not `force`), else
    stackers fitted and saved again."""
    from fat2019.ensemble.predictor import PredictorError, SavedStacker
    from fat2019.ensemble.stacking import apply_saved, fit_stacker

    stacker_dir = layout.stacker_dir(ws.paths.models)
    try:
        saved = SavedStacker.load(ws.paths.models)
    except PredictorError:   # weights missing: refit
        saved = None
    if saved is not None and saved.inputs_sha256 == digest and saved.n_folds == ws.profile.n_folds and not force:
        print(f"stacker: its inputs (the models' predictions, labels, folds, settings, seed) are unchanged since "
              f"{stacker_dir} was fitted (sha256 {digest[:12]}); reusing it (--force refits)")
        return apply_saved(saved.weights_paths(ws.paths.models), x_oof, ws.folds, x_test, saved.offset)
    stacker_dir.mkdir(parents=True, exist_ok=True)
    layout.stacker_json(ws.paths.models).unlink(missing_ok=True)   # written last: the saved stacker is complete
    return fit_stacker(x_oof, y, ws.folds, x_test, ws.profile, seed, save_dir=stacker_dir)


def print_fitted_weights(names: list[str], weights: np.ndarray) -> None:
    left_out = [n for n, w in zip(names, weights) if w == 0]
    print("fitted weights: " + ", ".join(f"{n} {w:.2f}" for n, w in zip(names, weights))
          + (f" (left out: {', '.join(left_out)})" if left_out else ""))


def write_combinations(ws: Workspace, fnames: list[str], test_fnames: list[str], combinations: dict,
                       combine: str) -> None:
    """Each combination's out-of-fold and test CSVs, and submission.csv (the `combine`
    one's test predictions), every test clip of the dataset in them (complete_rows). Data
    without test clips: the out-of-fold CSVs only, and no stale test CSV left (said)."""
    out, all_test = ws.paths.submissions, ws.dataset.test.fnames
    for name, (o, t) in combinations.items():
        oof_csv, test_csv = layout.COMBINATION_CSVS[name]
        write_predictions(out / oof_csv, fnames, ws.classes, o)
        if all_test:
            write_predictions(out / test_csv, all_test, ws.classes, complete_rows(all_test, test_fnames, t))
    if all_test:
        write_predictions(out / layout.SUBMISSION_CSV, all_test, ws.classes,
                          complete_rows(all_test, test_fnames, combinations[combine][1]))
    else:   # own data without test clips: out-of-fold results only; no stale test files either
        for name in [t for _, t in layout.COMBINATION_CSVS.values()] + [layout.SUBMISSION_CSV]:
            (out / name).unlink(missing_ok=True)
        print(f"note: no test clips in {ws.dataset.test_from}, so no {layout.SUBMISSION_CSV} or other test "
              f"predictions; the out-of-fold results are {out / layout.COMBINATION_CSVS[combine][0]} and the "
              f"other *_oof.csv files there")


def submission_reliability(ws: Workspace, test_fnames: list[str], y, scores: tuple, calibration: dict | None
                           ) -> dict:
    """The reliability of the submission's scores before and after its calibration, on the
    held-out test clips when the data has their labels, else on the out-of-fold rows:
    {"on": what, "curves": {label: Reliability}}."""
    from fat2019.data.dataset import read_test_labels
    from fat2019.ensemble.predictor import calibrate
    from fat2019.eval.calibration import reliability

    truth = read_test_labels(ws.paths.data, ws.dataset)
    if truth is not None and len(test_fnames):
        truth, raw, on = truth[[ws.dataset.test.fnames.index(f) for f in test_fnames]], scores[1], "the test clips"
    else:
        truth, raw, on = y, scores[0], "the out-of-fold rows (no test labels)"
    # the classes the models learnt: classes without a training clip (60 of the demo's 80)
    # would add thousands of easy near-zero pairs and shrink every error
    learnt = np.asarray(y).sum(axis=0) > 0
    truth, raw = truth[:, learnt], raw[:, learnt]
    curves = {"raw scores": reliability(truth, raw)}
    if calibration is not None and calibration.get("method") != "identity":
        curves["calibrated (tag.py)"] = reliability(truth, calibrate(raw, calibration))
    return {"on": on, "curves": curves}

if __name__ == "__main__":
    run_stage(main)

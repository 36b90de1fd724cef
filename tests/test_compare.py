import math

import duckdb
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st
from sklearn.metrics import accuracy_score, cohen_kappa_score, confusion_matrix, mean_absolute_error, \
    root_mean_squared_error

from scipy import stats as scipy_stats
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from analysis.compare import METRICS, SCORE_DELTA_STATS, compare, flip_matrix, score_delta
from steps.config import CompareConfig

CONFIG = CompareConfig(bootstrap_resamples=200, slices=())
RNG = np.random.default_rng(7)


def joined(production_label=None, candidate_label=None, production_score=None, candidate_score=None,
           truth=None, production_hash=None, candidate_hash=None, tolerant=None, replay_raw=None,
           production_raw=None, replay_score=None, replay_label=None, candidate_raw=None, n=None) -> pd.DataFrame:
    """A shadow_records-shaped frame; unspecified columns are null (hashes default to equal)."""
    columns = {"production_label": production_label, "candidate_label": candidate_label,
               "production_score": production_score, "candidate_score": candidate_score,
               "ground_truth_label": truth, "production_hash": production_hash, "candidate_hash": candidate_hash,
               "tolerant_match": tolerant, "production_replay_raw": replay_raw, "production_raw": production_raw,
               "production_replay_score": replay_score, "production_replay_label": replay_label,
               "candidate_raw": candidate_raw}
    n = n or max(len(v) for v in columns.values() if v is not None)
    frame = pd.DataFrame({name: pd.Series(values if values is not None else [None] * n, dtype=object)
                          for name, values in columns.items()})
    if production_hash is None:
        frame["production_hash"] = frame["candidate_hash"] = ["h"] * n
    for name in ("production_score", "candidate_score", "production_replay_score"):
        frame[name] = pd.to_numeric(frame[name])
    return frame


production_labels = list(RNG.choice(["0", "1", "2"], 200))
candidate_labels = [label if RNG.random() < 0.8 else str(RNG.integers(0, 3)) for label in production_labels]
truth_labels = [label if RNG.random() < 0.7 else str(RNG.integers(0, 3)) for label in production_labels]
production_scores = RNG.random(200)
candidate_scores = np.clip(production_scores + RNG.normal(0, 0.05, 200), 0, 1)
LABELLED = joined(production_label=production_labels, candidate_label=candidate_labels, truth=truth_labels,
                  production_score=production_scores, candidate_score=candidate_scores)
true_values = RNG.normal(10, 3, 50)
REGRESSION = joined(production_score=true_values + RNG.normal(0, 1, 50),
                    candidate_score=true_values + RNG.normal(0, 0.5, 50),
                    truth=[f"{v:.6f}" for v in true_values])


binary_truth = (RNG.random(300) < 0.4).astype(int)
binary_p_score = np.clip(binary_truth * 0.35 + RNG.random(300) * 0.65, 0, 1)
binary_c_score = np.clip(binary_p_score + RNG.normal(0, 0.1, 300), 0, 1)
BINARY = joined(production_score=binary_p_score, candidate_score=binary_c_score,
                production_label=[str(int(s >= 0.5)) for s in binary_p_score],
                candidate_label=[str(int(s >= 0.5)) for s in binary_c_score],
                truth=[str(t) for t in binary_truth])
BINARY_P = [int(s >= 0.5) for s in binary_p_score]
BINARY_C = [int(s >= 0.5) for s in binary_c_score]


def _sk(metric, **kw):
    """(production, candidate) per scikit-learn on BINARY."""
    return metric(binary_truth, BINARY_P, **kw), metric(binary_truth, BINARY_C, **kw)


def _macro(metric):
    return (metric(truth_labels, production_labels, average="macro", zero_division=0),
            metric(truth_labels, candidate_labels, average="macro", zero_division=0))


def value(comparison, name):
    return comparison.metric(name).value


# One case per declared metric: metric -> check(comparison of a frame built for it).
CASES = {
    "exact_match_rate": lambda: value(compare(joined(production_hash=["a", "b", "c", "d"],
                                                     candidate_hash=["a", "b", "x", "d"]), CONFIG),
                                      "exact_match_rate") == 0.75,
    "tolerant_match_rate": lambda: value(compare(joined(tolerant=[True, False, None, True]), CONFIG),
                                         "tolerant_match_rate") == 0.5,
    "label_agreement": lambda: math.isclose(value(compare(LABELLED, CONFIG), "label_agreement"),
                                            accuracy_score(production_labels, candidate_labels)),
    "cohen_kappa": lambda: math.isclose(value(compare(LABELLED, CONFIG), "cohen_kappa"),
                                        cohen_kappa_score(production_labels, candidate_labels)),
    "label_flip_rate": lambda: math.isclose(value(compare(LABELLED, CONFIG), "label_flip_rate"),
                                            1 - accuracy_score(production_labels, candidate_labels)),
    "mean_abs_score_delta": lambda: math.isclose(value(compare(LABELLED, CONFIG), "mean_abs_score_delta"),
                                                 mean_absolute_error(production_scores, candidate_scores)),
    "max_abs_score_delta": lambda: math.isclose(value(compare(LABELLED, CONFIG), "max_abs_score_delta"),
                                                np.abs(candidate_scores - production_scores).max()),
    "mean_score": lambda: _per_model(compare(LABELLED, CONFIG).metric("mean_score"),
                                     production_scores.mean(), candidate_scores.mean()),
    "accuracy": lambda: _per_model(compare(LABELLED, CONFIG).metric("accuracy"),
                                   accuracy_score(truth_labels, production_labels),
                                   accuracy_score(truth_labels, candidate_labels)),
    "mae": lambda: _per_model(compare(REGRESSION, CONFIG).metric("mae"),
                              mean_absolute_error(true_values, REGRESSION["production_score"]),
                              mean_absolute_error(true_values, REGRESSION["candidate_score"]), rel=1e-5),
    "rmse": lambda: _per_model(compare(REGRESSION, CONFIG).metric("rmse"),
                               root_mean_squared_error(true_values, REGRESSION["production_score"]),
                               root_mean_squared_error(true_values, REGRESSION["candidate_score"]), rel=1e-5),
    "replay_exact_match_rate": lambda: value(compare(joined(
        production_raw=['{"score": 0.5}', "0.25", '{"score":0.5}', "x"],
        replay_raw=['{"score":0.5000000001}', "0.25", '{"score":0.6}', None]), CONFIG),
        "replay_exact_match_rate") == pytest.approx(2 / 3),
    "replay_mean_abs_score_delta": lambda: value(compare(joined(
        production_score=[0.5, 0.2, 0.9], replay_score=[0.5, 0.3, None], replay_raw=["a", "b", "c"]), CONFIG),
        "replay_mean_abs_score_delta") == pytest.approx(0.05),
    "score_within_abs_tolerance_rate": lambda: value(compare(joined(
        production_score=[0.5, 0.5, 0.5, None], candidate_score=[0.5, 0.5000001, 0.6, 0.1]), CONFIG),
        "score_within_abs_tolerance_rate") == pytest.approx(2 / 3),
    "score_within_rel_tolerance_rate": lambda: value(compare(joined(
        production_score=[100.0, 100.0, 1.0], candidate_score=[100.005, 100.02, 1.00001]), CONFIG),
        "score_within_rel_tolerance_rate") == pytest.approx(2 / 3),
    "threshold_crossing_rate": lambda: value(compare(joined(
        production_score=[0.4, 0.6, 0.2, 0.5], candidate_score=[0.6, 0.4, 0.3, 0.5]), CONFIG),
        "threshold_crossing_rate") == 0.5,
    "one_sided_output_rate": lambda: value(compare(joined(
        production_raw=['{"score":1,"label":"a"}', '{"score":1}', "0.5,1"],
        candidate_raw=['{"score":1}', '{"score":2}', "0.5,1,extra"]), CONFIG), "one_sided_output_rate") == 2 / 3,
    "mean_score_delta": lambda: math.isclose(value(compare(LABELLED, CONFIG), "mean_score_delta"),
                                             float(np.mean(candidate_scores - production_scores))),
    "p95_abs_score_delta": lambda: math.isclose(value(compare(LABELLED, CONFIG), "p95_abs_score_delta"),
                                                np.quantile(np.abs(candidate_scores - production_scores), 0.95)),
    "score_psi": lambda: math.isclose(value(compare(LABELLED, CONFIG), "score_psi"), _psi_oracle(
        production_scores, candidate_scores), rel_tol=1e-9),
    "score_ks": lambda: math.isclose(value(compare(LABELLED, CONFIG), "score_ks"),
                                     scipy_stats.ks_2samp(production_scores, candidate_scores).statistic),
    "score_ks_p_value": lambda: math.isclose(value(compare(LABELLED, CONFIG), "score_ks_p_value"),
                                             scipy_stats.ks_2samp(production_scores, candidate_scores,
                                                                  method="asymp").pvalue, abs_tol=0.02),
    "real_difference_rate": lambda: value(compare(joined(
        production_score=[0.5, 0.5, 0.5, 0.5], candidate_score=[0.5005, 0.6, 0.5, 0.5],
        production_hash=["a", "b", "c", "d"], candidate_hash=["x", "y", "c", "z"],
        replay_raw=["r"] * 4, replay_score=[0.501, 0.5, 0.5, 0.5]), CONFIG), "real_difference_rate") == 0.25,
    "real_label_flip_rate": lambda: value(compare(joined(
        production_label=["1", "1", "0", "0"], candidate_label=["0", "0", "0", "1"],
        replay_label=["0", "1", "0", None], replay_raw=["r", "r", "r", None]), CONFIG),
        "real_label_flip_rate") == 0.5,
    "replay_label_flip_rate": lambda: value(compare(joined(
        production_label=["1", "1", "0", "0"], candidate_label=["1", "1", "0", "0"],
        replay_label=["0", "1", "0", None], replay_raw=["r", "r", "r", None]), CONFIG),
        "replay_label_flip_rate") == pytest.approx(1 / 3),
    "noise_score_band": lambda: value(compare(joined(
        production_score=[0.5] * 5, candidate_score=[0.5] * 5, replay_raw=["r"] * 5,
        replay_score=[0.5, 0.51, 0.52, 0.53, 0.54]), CompareConfig(noise_quantile=0.5, slices=())),
        "noise_score_band") == pytest.approx(0.02),
    "precision": lambda: _per_model(compare(BINARY, CONFIG).metric("precision"), *_sk(precision_score))
    and _per_model(compare(LABELLED, CONFIG).metric("precision"), *_macro(precision_score)),
    "recall": lambda: _per_model(compare(BINARY, CONFIG).metric("recall"), *_sk(recall_score))
    and _per_model(compare(LABELLED, CONFIG).metric("recall"), *_macro(recall_score)),
    "f1": lambda: _per_model(compare(BINARY, CONFIG).metric("f1"), *_sk(f1_score))
    and _per_model(compare(LABELLED, CONFIG).metric("f1"), *_macro(f1_score)),
    "roc_auc": lambda: _per_model(compare(BINARY, CONFIG).metric("roc_auc"),
                                  roc_auc_score(binary_truth, binary_p_score),
                                  roc_auc_score(binary_truth, binary_c_score)),
    "mcnemar_p_value": lambda: math.isclose(value(compare(BINARY, CONFIG), "mcnemar_p_value"), _mcnemar_oracle()),
    "class_recall": lambda: all(
        _per_model(compare(LABELLED, CONFIG).metric(f"class_recall:{label}"),
                   *(recall_score(truth_labels, side, labels=[label], average=None, zero_division=0)[0]
                     for side in (production_labels, candidate_labels)))
        for label in ("0", "1", "2"))
    and all(_per_model(compare(BINARY, CONFIG).metric(f"class_recall:{label}"),
                       *(recall_score(binary_truth, side, labels=[label], average=None)[0] for side in (BINARY_P, BINARY_C)))
            for label in (0, 1)),
    "candidate_answer_rate": lambda: value(compare(joined(
        production_score=[0.5, 0.5, None, 0.5, None], candidate_score=[0.5, None, 0.1, None, None],
        production_label=[None, None, None, None, "a"], candidate_label=[None, "b", None, None, None]), CONFIG),
        "candidate_answer_rate") == pytest.approx(2 / 4),
}


def _psi_oracle(expected, actual):
    edges = np.quantile(expected, np.linspace(0, 1, 11)[1:-1])
    e = np.maximum(np.histogram(expected, np.r_[-np.inf, edges, np.inf])[0] / len(expected), 1e-4)
    a = np.maximum(np.histogram(actual, np.r_[-np.inf, edges, np.inf])[0] / len(actual), 1e-4)
    return scipy_stats.entropy(a, e) + scipy_stats.entropy(e, a)


def _mcnemar_oracle():
    p_right = np.array(BINARY_P) == binary_truth
    c_right = np.array(BINARY_C) == binary_truth
    b, c = int(np.sum(p_right & ~c_right)), int(np.sum(~p_right & c_right))
    return scipy_stats.binomtest(min(b, c), b + c, 0.5).pvalue if b + c else 1.0


def _per_model(metric, production, candidate, rel=1e-9):
    return (math.isclose(metric.production, production, rel_tol=rel)
            and math.isclose(metric.candidate, candidate, rel_tol=rel)
            and math.isclose(metric.delta, candidate - production, rel_tol=rel, abs_tol=1e-12)
            and metric.value == metric.candidate)


def test_every_declared_metric_has_a_case():
    assert set(CASES) == set(METRICS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_metric_case(name):
    assert CASES[name]()


def test_flip_matrix_counts_match_sklearn_confusion_matrix():
    matrix = flip_matrix(LABELLED)
    labels = ["0", "1", "2"]
    expected = confusion_matrix(production_labels, candidate_labels, labels=labels)
    for i, production in enumerate(labels):
        for j, candidate in enumerate(labels):
            assert matrix.get(production, {}).get(candidate, 0) == expected[i, j]


def test_score_delta_matches_duckdb():
    stats = score_delta(LABELLED)
    frame = pd.DataFrame({"d": candidate_scores - production_scores})
    db = duckdb.connect()
    db.register("t", frame)
    row = db.execute("""SELECT avg(d), stddev_samp(d), min(d), quantile_cont(d, 0.01),
        quantile_cont(d, 0.05), quantile_cont(d, 0.5), quantile_cont(d, 0.95), quantile_cont(d, 0.99), max(d),
        avg(abs(d)) FROM t""").fetchone()
    assert list(stats) == list(SCORE_DELTA_STATS)
    assert [stats[name] for name in SCORE_DELTA_STATS] == pytest.approx(list(row))


def test_nothing_to_compare_gives_empty_values_not_errors():
    result = compare(joined(n=3), CONFIG)
    assert result.score_delta == {} and result.flip_matrix == {} and not result.has_ground_truth
    assert value(result, "label_agreement") is None and value(result, "cohen_kappa") is None
    assert result.metric("mean_score").delta is None
    assert result.metric("accuracy") is None and result.metric("replay_exact_match_rate") is None


def test_an_empty_frame_compares():
    result = compare(joined(n=1).iloc[0:0], CONFIG)
    assert value(result, "exact_match_rate") is None and result.metric("exact_match_rate").support == 0


def test_kappa_is_undefined_when_both_models_give_one_label():
    result = compare(joined(production_label=["1"] * 4, candidate_label=["1"] * 4), CONFIG)
    assert value(result, "cohen_kappa") is None and value(result, "label_agreement") == 1.0


def test_rows_without_labels_are_left_out_of_label_metrics():
    result = compare(joined(production_label=["1", "0", None, "1"], candidate_label=["1", "1", "0", None]), CONFIG)
    assert value(result, "label_agreement") == 0.5 and result.metric("label_agreement").support == 2


@pytest.mark.parametrize("truth, labels, scores, task, expected", [
    (["cat", "dog"], ["cat", "cat"], None, "auto", "accuracy"),
    (["1", "0"], ["1", "1"], [0.9, 0.8], "auto", "accuracy"),
    (["1.5", "2.25"], None, [1.0, 2.0], "auto", "mae"),
    (["3", "7"], None, [3.5, 6.0], "auto", "mae"),  # integral truth but the models give no labels
    (["1", "0"], ["1", "1"], [0.9, 0.8], "regression", "mae"),
])
def test_task_is_decided_by_data_or_asked(truth, labels, scores, task, expected):
    frame = joined(truth=truth, production_label=labels, candidate_label=labels,
                   production_score=scores, candidate_score=scores, n=2)
    result = compare(frame, CONFIG, task=task)
    assert result.has_ground_truth and result.metric(expected) is not None


@settings(max_examples=50)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from("abc")), min_size=1, max_size=30))
def test_swapping_sides_transposes_flips_and_keeps_agreement(pairs):
    production, candidate = [p for p, _ in pairs], [c for _, c in pairs]
    forward = compare(joined(production_label=production, candidate_label=candidate), CONFIG)
    backward = compare(joined(production_label=candidate, candidate_label=production), CONFIG)
    transposed = {}
    for p, row in forward.flip_matrix.items():
        for c, count in row.items():
            transposed.setdefault(c, {})[p] = count
    assert backward.flip_matrix == transposed
    assert value(forward, "label_agreement") == value(backward, "label_agreement")


@settings(max_examples=50)
@given(st.lists(st.sampled_from(["0", "1", "2"]), min_size=1, max_size=30))
def test_a_model_compared_with_itself_agrees_fully(labels):
    result = compare(joined(production_label=labels, candidate_label=labels), CONFIG)
    assert value(result, "label_agreement") == 1.0 and value(result, "label_flip_rate") == 0.0
    assert value(result, "exact_match_rate") == 1.0


def test_per_model_deltas_carry_a_paired_bootstrap_interval_that_covers_them():
    for name in ("accuracy", "precision", "recall", "f1", "roc_auc", "mean_score"):
        metric = compare(BINARY, CONFIG).metric(name)
        assert metric.ci_low <= metric.delta <= metric.ci_high, name
    for name in ("mae", "rmse"):
        metric = compare(REGRESSION, CONFIG).metric(name)
        assert metric.ci_low <= metric.delta <= metric.ci_high, name


def test_intervals_are_seeded_so_a_run_rejudged_gets_the_same_ones():
    first, again = compare(BINARY, CONFIG).metric("accuracy"), compare(BINARY, CONFIG).metric("accuracy")
    assert (first.ci_low, first.ci_high) == (again.ci_low, again.ci_high)
    other = compare(BINARY, CompareConfig(bootstrap_resamples=200, slices=(), seed=1)).metric("accuracy")
    assert (other.ci_low, other.ci_high) != (first.ci_low, first.ci_high)


def test_no_resamples_means_no_intervals():
    metric = compare(BINARY, CompareConfig(bootstrap_resamples=0, slices=())).metric("accuracy")
    assert metric.delta is not None and metric.ci_low is None and metric.ci_high is None


def test_replay_noise_is_not_blamed_on_the_candidate():
    """The candidate moves scores exactly as much as production replayed moves its own: no real difference."""
    noise = RNG.normal(0, 0.01, 200)
    frame = joined(production_score=production_scores, candidate_score=production_scores + noise[::-1] * 0.5,
                   replay_raw=["r"] * 200, replay_score=production_scores + noise,
                   production_hash=[f"p{i}" for i in range(200)], candidate_hash=[f"c{i}" for i in range(200)])
    frame["noise_abs_diff"] = np.abs(noise)
    result = compare(frame, CONFIG)
    assert value(result, "tolerant_match_rate") == 0.0  # without the noise floor everything differs
    assert value(result, "real_difference_rate") == 0.0
    assert value(result, "noise_score_band") == pytest.approx(np.quantile(np.abs(noise), CONFIG.noise_quantile))


def _streamed(frame: pd.DataFrame, config, parts: int, seed: int = 0):
    """compare() fed part by part (the compare stage's way), parts in a shuffled order."""
    from analysis.compare import Accumulator

    rng = np.random.default_rng(seed)
    shuffled = frame.iloc[rng.permutation(len(frame))].reset_index(drop=True)
    accumulator = Accumulator(config)
    for chunk in np.array_split(np.arange(len(shuffled)), parts):
        accumulator.add(shuffled.iloc[chunk])
    order = shuffled["record_id"].sort_values(kind="stable").index.to_numpy()
    return accumulator.finish(order, lambda positions: shuffled.iloc[positions])


def test_records_streamed_part_by_part_give_the_very_same_comparison():
    frame = BINARY.assign(record_id=[f"e{i:04d}:{i % 3}" for i in range(len(BINARY))],
                          production_raw=[f'{{"score": {s}}}' for s in binary_p_score],
                          candidate_raw=[f'{{"score": {s}, "x": 1}}' if i % 5 else f'{{"score": {s}}}'
                                         for i, s in enumerate(binary_c_score)],
                          production_replay_raw=[f'{{"score": {s}}}' for s in binary_p_score],
                          production_replay_score=binary_p_score + RNG.normal(0, 0.01, len(BINARY)),
                          input_text=[f"{i},{i % 4}" for i in range(len(BINARY))])
    from steps.config import SliceConfig
    config = CompareConfig(bootstrap_resamples=50, min_slice_support=5, top_changes=7,
                           slices=(SliceConfig("v", column=1),))
    whole = compare(frame, config)
    for parts in (1, 3, 17):
        streamed = _streamed(frame, config, parts, seed=parts)
        assert streamed == whole, parts  # every metric, interval, count and top change, bit for bit


def test_the_compare_stage_streams_parts_and_sorts_ids_in_duckdb(tmp_path):
    """steps.compare.run over join/records parts equals compare() over all the records in one frame."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from steps import compare as compare_step, join
    from steps.config import config_from_mapping

    n = len(BINARY)
    frame = BINARY.assign(record_id=[f"e{(i * 7919) % 1000:03d}:{i % 2}" for i in range(n)],
                          production_raw=[f'{{"score": {s}}}' for s in binary_p_score],
                          candidate_raw=[f'{{"score": {s}}}' for s in binary_c_score],
                          input_text=[f"{i}" for i in range(n)],
                          inference_time=pd.Timestamp("2025-03-01T12:00:00Z")
                          + pd.to_timedelta(np.arange(n) * 37, unit="s"))
    frame.loc[3, "record_id"] = frame.loc[4, "record_id"]  # a duplicate id: ties keep part, then row order
    records = join.RECORDS_SCHEMA
    folder = tmp_path / "runs" / "r" / "join" / "records"
    folder.mkdir(parents=True)
    for k, chunk in enumerate(np.array_split(np.arange(n), 4)):
        rows = frame.iloc[chunk].assign(run_id="r")
        table = pa.table({f.name: pa.array(rows[f.name].tolist() if f.name in rows else [None] * len(rows), f.type)
                          for f in records}, schema=records)
        pq.write_table(table, folder / f"{k}.parquet")
    config = config_from_mapping({"workspace": str(tmp_path), "compare": {"bootstrap_resamples": 40,
                                                                          "top_changes": 5}})
    streamed = compare_step.run(config, tmp_path / "runs" / "r")
    assert streamed == compare(join.load_joined(tmp_path / "runs" / "r"), config.compare)
    assert streamed.segments and streamed.diff.top_changes


def test_regression_truth_with_more_distinct_values_than_label_codes(monkeypatch):
    """Numeric ground truth of a regression is not label-coded past the cap; classification past it is refused."""
    import analysis.compare as module

    expected = compare(REGRESSION, CONFIG)
    monkeypatch.setattr(module, "_MAX_LABELS", 10)
    assert compare(REGRESSION, CONFIG) == expected and expected.task == "regression"
    with pytest.raises(ValueError, match="distinct labels"):
        compare(REGRESSION, CONFIG, task="classification")

"""The same model answering in another shape is the same model: joined record by record, and Approved.

A real scikit-learn artifact served by the local model server; production's capture holds its CSV
answers, the candidate is the same artifact whose output_fn answers a whole CSV batch with one JSON
document (`{"predictions": [...]}`), or with JSON Lines.
"""
from __future__ import annotations

import pytest
import yaml

import pipeline
from capture_helpers import at, capture_line, capture_path, write_capture_tree
from model_helpers import TRAIN_FEATURES, build_model_tar, train_model
from steps.config import load_config
from steps.join import load_joined

pytestmark = pytest.mark.slow  # serves a scikit-learn model: several seconds per case

OUTPUT_FNS = {
    "one-document": """
        import json

        def output_fn(prediction, accept):
            return json.dumps({"predictions": [int(x) for x in prediction]}), "application/json"
    """,
    "json-lines": """
        import json

        def output_fn(prediction, accept):
            return "".join(json.dumps({"score": float(x)}) + "\\n" for x in prediction), "application/jsonlines"
    """,
}


@pytest.mark.parametrize("shape", sorted(OUTPUT_FNS))
def test_the_same_model_in_another_answer_shape_is_approved(tmp_path, shape):
    labels = train_model().predict(TRAIN_FEATURES).tolist()
    rows = [",".join(str(v) for v in row) for row in TRAIN_FEATURES]
    calls = [(rows[i:i + 2], labels[i:i + 2]) for i in range(0, len(rows), 2)] * 4  # 16 calls of two rows
    lines = [capture_line("\n".join(inputs), "".join(f"{label}\n" for label in answers), event_id=f"call-{n}",
                          output_type="text/csv", inference_time=at(10, n))
             for n, (inputs, answers) in enumerate(calls)]
    write_capture_tree(tmp_path / "capture", {capture_path("ep", "v", at(10, 0)): lines})
    model = build_model_tar(tmp_path / "candidate.tar.gz", OUTPUT_FNS[shape])
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"workspace": str(tmp_path / "ws"), "capture": {"root": str(tmp_path / "capture")},
                                      "candidate": {"model": str(model)},
                                      # 32 unlabelled records cannot show equivalence within 1%; 20% they can
                                      "gate": {"min_records": 10, "policy": {"equivalence_margin": 0.2}}}))

    outcome = pipeline.run_local(load_config(config), run_id="shape")

    assert outcome.accounting.coverage == 1.0 and outcome.accounting.joined == 2 * len(calls)
    assert outcome.decision == "Approved"
    joined = load_joined(outcome.run_dir)
    assert joined["tolerant_match"].all() and (joined["candidate_label"] == joined["production_label"]).all()
    assert joined["candidate_label"].tolist() == [str(label) for _, answers in calls for label in answers]

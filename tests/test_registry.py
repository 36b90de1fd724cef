"""Local registry: versions per group, compare-and-set status changes, races and the audit history."""
from __future__ import annotations

import datetime as dt
import threading

import pytest

from steps.backends.registry import LocalRegistry, RegistryError

T0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def registry(tmp_path):
    return LocalRegistry(tmp_path / "registry.sqlite", clock=lambda: T0)


def test_register_numbers_versions_per_group(registry):
    ids = [registry.register("fraud", "s3://b/m1.tar.gz"), registry.register("fraud", "s3://b/m2.tar.gz"),
           registry.register("churn", "s3://b/c1.tar.gz")]
    assert ids == ["fraud/1", "fraud/2", "churn/1"]
    info = registry.describe("fraud/2")
    assert (info.group, info.version, info.model_uri, info.status) == ("fraud", 2, "s3://b/m2.tar.gz",
                                                                        "PendingManualApproval")
    assert info.created_at == info.updated_at == "2025-03-01T12:00:00.000000Z"
    assert [p.package_id for p in registry.list_packages("fraud")] == ["fraud/2", "fraud/1"]
    assert registry.list_groups() == ["churn", "fraud"]


def test_compare_and_set(registry):
    package = registry.register("fraud", "s3://b/m.tar.gz", metadata={"team": "risk"})
    assert registry.set_status(package, "PendingManualApproval", "Approved", "looks good", "run-1",
                               {"shadow_eval_run_id": "run-1"})
    info = registry.describe(package)
    assert (info.status, info.description) == ("Approved", "looks good")
    assert info.metadata == {"team": "risk", "shadow_eval_run_id": "run-1"}  # merged, as SageMaker merges
    # A stale expectation changes nothing: not the status, the description, the metadata or the history.
    assert not registry.set_status(package, "PendingManualApproval", "Rejected", "too late", "run-2",
                                   {"shadow_eval_run_id": "run-2"})
    assert registry.describe(package) == info
    assert len(registry.history(package)) == 2


def test_history_records_every_transition(registry):
    package = registry.register("fraud", "s3://b/m.tar.gz")
    registry.set_status(package, "PendingManualApproval", "Rejected", "coverage 90%", "run-1")
    registry.set_status(package, "Rejected", "Approved", "approved by hand", None)
    history = [(h.from_status, h.to_status, h.by, h.reason, h.run_id) for h in registry.history(package)]
    assert history == [
        (None, "PendingManualApproval", "shadow-eval", "registered", None),
        ("PendingManualApproval", "Rejected", "shadow-eval", "coverage 90%", "run-1"),
        ("Rejected", "Approved", "shadow-eval", "approved by hand", None),
    ]


def test_two_racing_runs_make_one_decision(tmp_path):
    path = tmp_path / "registry.sqlite"
    packages = [LocalRegistry(path).register("fraud", f"s3://b/m{i}.tar.gz") for i in range(10)]
    for package in packages:
        barrier = threading.Barrier(2)
        results: dict[str, bool] = {}

        def decide(status: str, run_id: str) -> None:
            registry = LocalRegistry(path)  # its own connections, as another process would have
            barrier.wait()
            results[status] = registry.set_status(package, "PendingManualApproval", status, status, run_id)

        threads = [threading.Thread(target=decide, args=("Approved", "run-a")),
                   threading.Thread(target=decide, args=("Rejected", "run-b"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results.values()) == [False, True]
        winner = next(status for status, won in results.items() if won)
        assert LocalRegistry(path).describe(package).status == winner
        assert [h.to_status for h in LocalRegistry(path).history(package)] == ["PendingManualApproval", winner]


BAD_CALLS = [
    ("unknown package", lambda r: r.describe("fraud/99"), "no model package"),
    ("id without version", lambda r: r.describe("fraud"), "<group>/<version>"),
    ("id with path tricks", lambda r: r.describe("../fraud/1"), "<group>/<version>"),
    ("bad group", lambda r: r.register("fraud models", "s3://b/m"), "group name"),
    ("empty model", lambda r: r.register("fraud", ""), "model_uri"),
    ("unknown status", lambda r: r.register("fraud", "s3://b/m", status="Approve"), "approval status"),
    ("unknown new status", lambda r: r.set_status("fraud/1", "PendingManualApproval", "OK", "", None),
     "approval status"),
    ("description too long", lambda r: r.set_status("fraud/1", "PendingManualApproval", "Approved", "x" * 1025,
                                                    None), "1024"),
    ("metadata value too long", lambda r: r.set_status("fraud/1", "PendingManualApproval", "Approved", "", None,
                                                       {"k": "v" * 257}), "256"),
    ("too many metadata entries", lambda r: r.register("fraud", "s3://b/m",
                                                       metadata={f"k{i}": "v" for i in range(51)}), "50"),
]


@pytest.mark.parametrize("call, message", [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
def test_bad_calls_are_refused_and_change_nothing(registry, call, message):
    registry.register("fraud", "s3://b/m.tar.gz")
    before = (registry.describe("fraud/1"), registry.history("fraud/1"), registry.list_packages("fraud"))
    with pytest.raises(RegistryError, match=message):
        call(registry)
    assert (registry.describe("fraud/1"), registry.history("fraud/1"), registry.list_packages("fraud")) == before


def test_survives_reopening(tmp_path):
    first = LocalRegistry(tmp_path / "r.sqlite")
    package = first.register("fraud", "s3://b/m.tar.gz")
    first.set_status(package, "PendingManualApproval", "Approved", "ok", "run-1")
    again = LocalRegistry(tmp_path / "r.sqlite")
    assert again.describe(package).status == "Approved"
    assert again.register("fraud", "s3://b/n.tar.gz") == "fraud/2"

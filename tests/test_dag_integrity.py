"""Every DAG file imports cleanly and follows the sending-safety rules (A4)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


EXPECTED = {
    "automail_create_transactional",
    "automail_send",
    "automail_campaigns",
    "automail_step_mails",
    "automail_bounces",
    "automail_maintenance",
    "automail_import",
}


@pytest.fixture(scope="module")
def dagbag():  # noqa: ANN201
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}


def test_expected_dags_exist_and_all_start_paused(dagbag) -> None:
    assert set(dagbag.dag_ids) >= EXPECTED
    for dag_id in dagbag.dag_ids:
        dag = dagbag.dags[dag_id]
        assert dag.is_paused_upon_creation is True, f"{dag_id} must start paused"
        assert "automail" in dag.tags, f"{dag_id} lacks the automail tag"


def test_ops_can_tell_where_sending_starts(dagbag) -> None:
    """Only automail_send is tagged `sending` and says so first; every DAG's doc tells
    ops what it does, when to unpause it and what it never does, without SPEC codes."""
    sending = {d for d in EXPECTED if "sending" in dagbag.dags[d].tags}
    assert sending == {"automail_send"}
    assert dagbag.dags["automail_send"].description.startswith("START SENDING HERE")
    for dag_id in EXPECTED:
        doc = dagbag.dags[dag_id].doc_md
        assert "When to unpause it" in doc and "never" in doc, dag_id
        assert "SPEC" not in doc, dag_id

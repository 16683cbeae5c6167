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

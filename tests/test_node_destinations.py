"""Destinations: one warning per state change, state per destination, a down veto destination hides nothing."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from pydicom import dcmread

from dermnode.node.audit import AuditStore
from dermnode.node.outbox import Dispatcher, Outbox
from dermnode.node.studies import destination_states
from node_support import make_study, node_settings, storescp_on
from peers import free_port

pytestmark = pytest.mark.peers


def _results(folder: Path, prefix: str) -> tuple[str, list]:
    study_uid, files = make_study(folder, 2, prefix=prefix)
    return study_uid, [dcmread(f) for f in files]


def test_one_warning_per_state_change_and_state_per_destination(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    veto_port = free_port()
    veto = f"VETO@127.0.0.1:{veto_port}"
    with storescp_on(tmp_path / "pacs", free_port(), "PACS") as pacs:
        settings = node_settings(tmp_path, destinations=[pacs], veto_destinations=[veto],
                                 retry_base_seconds=0.05, retry_max_seconds=0.1)
        audit = AuditStore(settings.database_url)
        outbox, dispatcher = Outbox(settings, audit), Dispatcher(settings, audit)
        vetoed, datasets = _results(tmp_path / "vetoed", "V")
        benign, others = _results(tmp_path / "benign", "B")
        outbox.put(vetoed, datasets, "vetoed", veto=True)
        outbox.put(benign, others, "benign", veto=False)
        caplog.set_level(logging.DEBUG)
        passes = 0
        deadline = time.monotonic() + 20
        while passes < 20 and time.monotonic() < deadline:  # twenty passes with the veto destination down
            dispatcher.run_once()
            passes += 1
            time.sleep(0.12)
        states = destination_states(audit)
        assert states[vetoed] == {pacs: "sent", veto: "retrying"}, "delivered to PACS, still owed to the veto destination"
        assert states[benign] == {pacs: "sent"}
        assert max(row["attempts"] for row in audit.deliveries(vetoed) if row["destination"] == veto) >= 5
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert [r.getMessage().split(" (")[0] for r in warnings] == [f"destination {veto} is down"], \
            [r.getMessage() for r in warnings]
        assert len(audit.events(kind="destination_down")) == 1
        assert len(audit.events(vetoed, kind="failed")) == 2, "audited on each delivery's first failure only"

        with storescp_on(tmp_path / "veto", veto_port, "VETO"):
            deadline = time.monotonic() + 20
            while destination_states(audit, vetoed)[vetoed][veto] != "sent" and time.monotonic() < deadline:
                dispatcher.run_once()
                time.sleep(0.1)
        assert destination_states(audit, vetoed) == {vetoed: {pacs: "sent", veto: "sent"}}
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert warnings[1:] == [f"destination {veto} is back up"], warnings
        assert len(audit.events(kind="destination_up")) == 1
        assert len(list((tmp_path / "veto").glob("*"))) == 2


def test_a_given_up_delivery_is_failed_at_its_destination_only(tmp_path: Path) -> None:
    veto = f"VETO@127.0.0.1:{free_port()}"
    with storescp_on(tmp_path / "pacs", free_port(), "PACS") as pacs:
        settings = node_settings(tmp_path, destinations=[pacs], veto_destinations=[veto], max_attempts=1)
        audit = AuditStore(settings.database_url)
        vetoed, datasets = _results(tmp_path / "vetoed", "G")
        Outbox(settings, audit).put(vetoed, datasets, "vetoed", veto=True)
        Dispatcher(settings, audit).run_once()
        assert destination_states(audit, vetoed) == {vetoed: {pacs: "sent", veto: "failed"}}
        assert len(audit.events(vetoed, kind="failed")) == 2  # audited when given up

"""The REST API, metrics and access rules of a running `dermnode serve`, over real HTTP, after real studies."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from web_support import (OPERATOR, OPERATOR_PASSWORD, READER, READER_PASSWORD, TOKEN, Served, served_studies,  # noqa: F401
                         wait_until)

pytestmark = pytest.mark.peers
OPERATOR_AUTH, READER_AUTH = (OPERATOR, OPERATOR_PASSWORD), (READER, READER_PASSWORD)


def metrics(served: Served) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value, parsed by prometheus_client's own parser."""
    reply = served.get("/metrics")
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(reply.body.decode()) for sample in family.samples}


def test_only_probes_and_metrics_are_open(served_studies: Served) -> None:
    served = served_studies
    assert served.get("/healthz").json() == {"status": "alive"}
    assert served.get("/readyz").status == 200
    assert served.get("/metrics").status == 200
    for path in ("/api/studies", f"/api/studies/{served.studies['PAT0']}/timeline", "/api/openapi.json", "/api/docs",
                 f"/studies/{served.studies['PAT0']}/images/1.2.3/thumbnail.png"):
        reply = served.get(path)
        assert reply.status == 401, path
        assert b"PAT0" not in reply.body
    assert served.get("/api/studies", user=(OPERATOR, "wrong password")).status == 401
    assert served.get("/api/studies", token="not-a-token").status == 401
    for page in ("/", f"/studies/{served.studies['PAT0']}"):
        reply = served.get(page)
        assert reply.status == 303 and reply.headers["location"].startswith("/login?next=/"), page


def test_actions_need_an_operator(served_studies: Served) -> None:
    served, study = served_studies, served_studies.studies["PAT1"]
    for who in ({"user": READER_AUTH}, {"token": TOKEN}):
        reply = served.post(f"/api/studies/{study}/cancel", **who)
        assert reply.status == 403 and "operator" in reply.json()["detail"]
    reply = served.post(f"/api/destinations/{served.dead.split('@')[0]}/retry", user=READER_AUTH)
    assert reply.status == 403
    assert served.get(f"/api/studies/{study}", user=READER_AUTH).status == 200  # reading is fine


def test_studies_filters_timeline_and_images(served_studies: Served) -> None:
    served = served_studies
    listing = served.get("/api/studies", user=READER_AUTH).json()
    studies = listing["studies"]
    assert listing["total"] == 5
    vetoes = [study["veto"] for study in studies]
    assert any(vetoes) and vetoes == sorted(vetoes, key=lambda v: not v), "vetoed studies first"
    for earlier, later in zip(studies, studies[1:]):
        if earlier["veto"] == later["veto"]:
            assert earlier["first_at"] >= later["first_at"], "then newest first"
    tiny = next(study for study in studies if study["patient_id"] == "PATTINY")
    assert tiny["not_analysable"] == 1 and tiny["veto"] is None and tiny["accession_number"] == "ACCTINY"
    vetoed = [study for study in studies if study["veto"]]
    for study in vetoed:  # the unreachable veto destination is retried; the other one acknowledged
        assert study["destinations"] == {served.pacs: "sent", served.dead: "retrying"}, study
        assert study["state"] == "retrying" and served.dead in study["export_errors"]
    assert all(study["destinations"] == {served.pacs: "sent"} for study in studies if study["veto"] is False)

    def uids(**query: str) -> set[str]:
        path = "/api/studies?" + "&".join(f"{key}={value}" for key, value in query.items())
        reply = served.get(path, token=TOKEN)
        assert reply.status == 200, reply.body
        return {study["study_uid"] for study in reply.json()["studies"]}

    assert uids(veto="true") == {study["study_uid"] for study in vetoed}
    assert uids(state="retrying") == {study["study_uid"] for study in vetoed}
    assert uids(destination="DEAD", destination_state="retrying") == {study["study_uid"] for study in vetoed}
    assert uids(patient_id="PAT2") == {served.studies["PAT2"]}
    assert uids(accession="ACC3") == {served.studies["PAT3"]}
    assert uids(since="2000-01-01T00:00:00Z", until="2000-01-02T00:00:00Z") == set()
    assert len(uids(since="2000-01-01T00:00:00Z")) == 5
    assert served.get("/api/studies?state=nonsense", token=TOKEN).status == 422

    study = vetoed[0]["study_uid"]
    kinds = [event["kind"] for event in served.get(f"/api/studies/{study}/timeline", token=TOKEN).json()]
    assert kinds[:2] == ["received", "queued"] and "analysed" in kinds and "sent" in kinds and "failed" in kinds
    (image,) = served.get(f"/api/studies/{study}/images", token=TOKEN).json()
    assert image["result"]["veto"] is True and image["result"]["bcc_sk_call"] in ("BCC", "SK")
    assert set(image["result"]["probabilities"]) == {"NV", "MEL", "BCC", "BKL", "AK", "SCC", "DF", "VASC"}
    assert image["result_uids"]["seg"] and image["result_uids"]["kos"]
    assert served.get("/api/studies/1.2.3.4", token=TOKEN).status == 404
    spec = served.get("/api/openapi.json", token=TOKEN).json()
    assert "/api/studies/{study_uid}/requeue" in spec["paths"]
    assert b"/api/destinations/{destination}/retry" in served.get("/api/docs", token=TOKEN).body


def test_metrics(served_studies: Served) -> None:
    found = metrics(served_studies)
    assert found[("dermnode_instances_received_total", ())] == 5
    vetoed = len(served_studies.get("/api/studies?veto=true", token=TOKEN).json()["studies"])
    assert found[("dermnode_vetoes_total", ())] == vetoed >= 1
    assert found[("dermnode_studies", (("state", "retrying"),))] == vetoed
    assert found[("dermnode_studies", (("state", "delivered"),))] == 5 - vetoed
    pacs, dead = served_studies.pacs, served_studies.dead
    assert found[("dermnode_exports", (("destination", pacs), ("state", "sent")))] >= 9  # SEG + SR per image (+ KOS)
    assert found[("dermnode_exports", (("destination", dead), ("state", "pending")))] == 3 * vetoed
    assert found[("dermnode_stage_duration_seconds_count", (("stage", "segmentation"),))] == 4
    assert found[("dermnode_stage_duration_seconds_bucket", (("le", "+Inf"), ("stage", "classifier")))] == 4
    assert found[("dermnode_workers_alive", (("models", "loaded"),))] == 1
    assert found[("dermnode_ready", ())] == 1
    assert found[("dermnode_queue_depth", (("queue", "dermnode"),))] == 0
    assert found[("dermnode_home_free_bytes", ())] > 0


def test_actions_from_the_api_and_the_command_line_are_audited(served_studies: Served) -> None:
    served = served_studies
    study = served.studies["PAT1"]
    operator = {"user": OPERATOR_AUTH}
    reply = served.post(f"/api/studies/{study}/requeue", **operator)
    assert reply.status == 409 and "nothing to requeue" in reply.json()["detail"]
    assert served.post("/api/studies/1.2.3.4/cancel", **operator).status == 404

    assert served.post(f"/api/studies/{study}/cancel", **operator).status == 200
    assert served.get(f"/api/studies/{study}", token=TOKEN).json()["state"] == "cancelled"
    assert served.post(f"/api/studies/{study}/cancel", **operator).status == 409
    assert served.post(f"/api/studies/{study}/requeue", **operator).status == 200  # lifts the cancellation
    wait_until(lambda: served.get(f"/api/studies/{study}", token=TOKEN).json()["state"] != "cancelled", 30,
               "the cancellation to be lifted")

    dead_ae = served.dead.split("@")[0]
    reply = served.post(f"/api/destinations/{dead_ae}/retry", **operator)
    assert reply.status == 200 and reply.json()["deliveries"] >= 3
    retried = served.cli("retry", "--destination", dead_ae)
    assert retried.returncode == 0 and "deliveries to DEAD are due now" in retried.stdout, retried.stderr
    refused = served.cli("requeue", "1.2.3.4")
    assert refused.returncode == 1 and refused.stderr.startswith("error: study 1.2.3.4 has no spooled images")
    assert "Traceback" not in refused.stderr
    assert served.cli("retry", "--destination", "NOBODY").returncode == 1

    events = served.get(f"/api/studies/{study}/timeline", token=TOKEN).json()
    by = {event["kind"]: event["details"].get("by") for event in events if event["details"].get("by")}
    assert by["cancelled"] == f"web:{OPERATOR}" and by["requeue_requested"] == f"web:{OPERATOR}"
    assert by["viewed"].startswith("web:")
    vetoed = [s["study_uid"] for s in served.get("/api/studies?veto=true", token=TOKEN).json()["studies"]]
    retries = [event["details"]["by"] for event in served.get(f"/api/studies/{vetoed[0]}/timeline", token=TOKEN).json()
               if event["kind"] == "retry_requested"]
    assert retries[0] == f"web:{OPERATOR}" and retries[1].startswith("cli:")


def test_every_view_of_patient_data_is_audited(served_studies: Served) -> None:
    served = served_studies
    study = served.studies["PAT3"]
    served.get(f"/api/studies/{study}/images", user=READER_AUTH)
    views = [event["details"] for event in served.get(f"/api/studies/{study}/timeline", token=TOKEN).json()
             if event["kind"] == "viewed"]
    assert {"by": f"web:{READER}", "role": "read-only", "via": "basic", "what": "api:images"} in views
    assert {"by": "web:monitor", "role": "read-only", "via": "token", "what": "api:timeline"} in views

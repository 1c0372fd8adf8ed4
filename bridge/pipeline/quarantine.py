"""Quarantine actions, a stage the console and the API both call: an administrator retries,
releases or discards a held instance, retries or discards a held report, sends a report's
held ORU^R01 to the EHR again. The state change is the
store's (``store/quarantine.py``), the spool files that go with it are removed here. The caller
checks the role and records the audit event."""

from __future__ import annotations

from bridge.domain.errors import Kind, SubmitError
from bridge.store import quarantine
from bridge.store.repo import Store
from bridge.store.spool import DEID, Spool


def act_on_instance(store: Store, spool: Spool, instance_id: int, action: str) -> str:
    """retry / release / discard a held instance; returns its case id (SubmitError 404/409)."""
    if action == "retry":
        rows = store.instances.by_id(instance_id)
        deid = rows[0].deid_name if rows else None
        exists = bool(deid and spool.path(DEID, deid).exists())
        return quarantine.retry_instance(store, instance_id, exists)
    if action == "release":
        return quarantine.release_instance(store, instance_id)
    if action == "discard":
        case_id, files = quarantine.discard_instance(store, instance_id)
        for area, name in files:
            spool.remove(area, name)
        return case_id
    raise SubmitError("unknown action: retry, release or discard", kind=Kind.NOT_FOUND)


def act_on_report(store: Store, report_id: int, action: str) -> str:
    """retry / discard a report held on return, retry-ehr its ORU held by the EHR; returns its
    case id."""
    if action == "retry":
        return quarantine.retry_report(store, report_id)
    if action == "discard":
        return quarantine.discard_report(store, report_id)
    if action == "retry-ehr":
        return quarantine.retry_ehr(store, report_id)
    raise SubmitError("unknown action: retry, discard or retry-ehr", kind=Kind.NOT_FOUND)

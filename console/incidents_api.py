"""Incidents, plans and responses over HTTP.

``/api/incidents`` (接报): create by hand or from a queued or active call
(``call_id``: the caller, the time and the recording carry over), read with the
timeline, change (a level change re-sizes a running response; closing ends it), post
messages, attach calls. ``POST /api/incidents/{id}/activate`` starts a plan's response
and answers with its acknowledgement board; ``/response`` reads it, ``/response/end``
ends it. ``/evidence`` is the review pack (one zip: an HTML report, the recordings in
order, the raw timeline). ``/api/plans`` holds the plans (supervisors write them).

Reads need the dispatcher role; every change is audited and, with who did it, on the
incident's timeline.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.background import BackgroundTask
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute

from dispatch import taxonomy
from dispatch.incidents import STATUSES, IncidentService
from dispatch.plans import RESOURCE_KINDS, PlanService
from dispatch.response import STATES, ResponseService

from .api import Api, ApiCall, Param
from .auth import Role

_LEVEL_IN: dict[str, Any] = {"description": "1-4 or I-IV; I (特别重大) is the most severe "
                                            "(checked by the service)"}
_LOCATION: dict[str, Any] = {"type": "object", "nullable": True,
                             "description": "WGS-84 degrees (null clears it)", "properties": {
    "lat": {"type": "number"}, "lon": {"type": "number"}, "address": {"type": "string"}}}
INCIDENT: dict[str, Any] = {"type": "object", "properties": {
    "id": {"type": "integer"}, "title": {"type": "string"},
    "type": {"type": "string", "description": "Subtype or category code (GET "
                                              "/api/incident-types)"},
    "type_zh": {"type": "string"}, "type_en": {"type": "string"},
    "category": {"type": "string"}, "level": {"type": "integer", "minimum": 1, "maximum": 4},
    "level_label": {"type": "string", "enum": list(taxonomy.LEVELS)},
    "status": {"type": "string", "enum": list(STATUSES)},
    "location": {**_LOCATION, "nullable": True}, "address": {"type": "string", "nullable": True},
    "reporter": {"type": "string", "nullable": True},
    "reporter_phone": {"type": "string", "nullable": True},
    "description": {"type": "string", "nullable": True},
    "source_call": {"type": "string", "nullable": True,
                    "description": "The call the incident was made from"},
    "reported_at": {"type": "number"}, "created_at": {"type": "number"},
    "updated_at": {"type": "number"}, "created_by": {"type": "string", "nullable": True},
    "closed_at": {"type": "number", "nullable": True}}}
ENTRY: dict[str, Any] = {"type": "object", "properties": {
    "id": {"type": "integer"}, "at": {"type": "number"}, "kind": {"type": "string"},
    "actor": {"type": "string", "nullable": True}, "data": {"type": "object"}}}
RESPONDER: dict[str, Any] = {"type": "object", "properties": {
    "id": {"type": "integer"}, "role": {"type": "string"}, "person": {"type": "string"},
    "deputy": {"type": "string", "nullable": True},
    "deputy_for": {"type": "integer", "nullable": True,
                   "description": "This row is the deputy called for that responder"},
    "state": {"type": "string", "enum": list(STATES)},
    "escalated": {"type": "boolean"}, "notified": {"type": "boolean"},
    "endpoint": {"type": "string", "nullable": True}, "attempts": {"type": "integer"},
    "leg_id": {"type": "string", "nullable": True},
    "answered_at": {"type": "number", "nullable": True},
    "confirmed_at": {"type": "number", "nullable": True},
    "level": {"type": "integer", "nullable": True,
              "description": "The role joins at this level or a more severe one"},
    "deadline": {"type": "number", "nullable": True,
                 "description": "When the deputy is called if not answered by then"},
    "updated_at": {"type": "number"}}}
RESPONSE: dict[str, Any] = {"type": "object", "properties": {
    "id": {"type": "integer"}, "incident_id": {"type": "integer"},
    "plan_id": {"type": "integer"}, "plan_name": {"type": "string"},
    "level": {"type": "integer"}, "state": {"type": "string",
                                            "enum": ["active", "ended", "interrupted"]},
    "call_id": {"type": "string", "description": "The command room (a dispatch call)"},
    "level_label": {"type": "string", "enum": list(taxonomy.LEVELS)},
    "recording_id": {"type": "string", "nullable": True,
                     "description": "The command room's recording"},
    "started_at": {"type": "number"}, "started_by": {"type": "string", "nullable": True},
    "ended_at": {"type": "number", "nullable": True},
    "escalate_after_s": {"type": "number", "nullable": True},
    "responders": {"type": "array", "items": RESPONDER},
    "counts": {"type": "object", "description": "Responders per state"}}}
TASK: dict[str, Any] = {"type": "object", "properties": {
    "id": {"type": "integer"}, "title": {"type": "string"},
    "role": {"type": "string", "nullable": True}, "due_at": {"type": "number", "nullable": True},
    "state": {"type": "string", "enum": ["open", "done"]}, "overdue": {"type": "boolean"}}}
DETAIL: dict[str, Any] = {"type": "object", "properties": {
    **INCIDENT["properties"], "timeline": {"type": "array", "items": ENTRY},
    "response": {**RESPONSE, "nullable": True}, "responders": {"type": "array",
                                                               "items": RESPONDER},
    "tasks": {"type": "array", "items": TASK},
    "calls": {"type": "array", "items": {"type": "string"}},
    "recordings": {"type": "array", "items": {"type": "object"}},
    "dispatches": {"type": "array", "items": {"type": "object"},
                   "description": "Resources dispatched to the incident"}}}
NEW_INCIDENT: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "description": "By hand: title, type and level are required. From a call (call_id): "
                   "all optional; the caller, time and recording carry over.",
    "properties": {
        "title": {"type": "string", "maxLength": 200},
        "type": {"type": "string", "maxLength": 64},
        "level": _LEVEL_IN, "location": _LOCATION,
        "status": {"type": "string", "enum": list(STATUSES)},
        "address": {"type": "string", "maxLength": 200},
        "reporter": {"type": "string", "maxLength": 100},
        "reporter_phone": {"type": "string", "maxLength": 64},
        "description": {"type": "string", "maxLength": 4000},
        "call_id": {"type": "string", "maxLength": 64,
                    "description": "A queued (Q1) or active call to make the incident from"}}}
PATCH_INCIDENT: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "minProperties": 1,
    "properties": {k: v for k, v in NEW_INCIDENT["properties"].items() if k != "call_id"}}
MESSAGE: dict[str, Any] = {"type": "object", "required": ["text"],
                           "additionalProperties": False,
                           "properties": {"text": {"type": "string", "minLength": 1,
                                                   "maxLength": 4000}}}
ATTACH: dict[str, Any] = {"type": "object", "required": ["call_id"],
                          "additionalProperties": False,
                          "properties": {"call_id": {"type": "string", "minLength": 1,
                                                     "maxLength": 64}}}
ACTIVATE: dict[str, Any] = {
    "type": "object", "required": ["plan_id"], "additionalProperties": False,
    "properties": {"plan_id": {"type": "integer", "minimum": 1},
                   "level": {**_LEVEL_IN, "description": "The response level (default: the "
                                                         "incident's); 1-4 or I-IV"}}}
TASK_PATCH: dict[str, Any] = {"type": "object", "required": ["done"],
                              "additionalProperties": False,
                              "properties": {"done": {"type": "boolean"}}}
_ROLE: dict[str, Any] = {"type": "object", "required": ["role", "person"], "properties": {
    "role": {"type": "string", "description": "e.g. 现场指挥 / incident commander"},
    "person": {"type": "string", "description": "A directory person's name or a SIP user"},
    "deputy": {"type": "string", "nullable": True,
               "description": "Called when the person is not reached in time"},
    "level": {**_LEVEL_IN, "description": "Only at this level or a more severe one "
                                          "(omit: always)"}}}
PLAN_FIELDS: dict[str, Any] = {
    "name": {"type": "string", "maxLength": 200},
    "incident_type": {"type": "string", "maxLength": 64},
    "level": _LEVEL_IN,
    "escalate_after_s": {"type": "number", "description": "Deadline for a responder to "
                                                          "answer before the deputy is "
                                                          "called (default 60)"},
    "roles": {"type": "array", "items": _ROLE},
    "resources": {"type": "array", "items": {"type": "object", "required": ["kind"],
                                             "properties": {
        "kind": {"type": "string", "enum": list(RESOURCE_KINDS)},
        "quantity": {"type": "integer"}, "name": {"type": "string"},
        "level": _LEVEL_IN}}},
    "tasks": {"type": "array", "items": {"type": "object", "required": ["title"], "properties": {
        "title": {"type": "string"}, "role": {"type": "string"},
        "deadline_s": {"type": "number", "description": "Due this long after activation"}}}},
    "notification": {"type": "string", "description": "Text for a responder no call "
                                                      "reached"},
    "closing_notice": {"type": "string", "description": "Text for everyone when the "
                                                        "response ends"},
    "description": {"type": "string"}}
NEW_PLAN: dict[str, Any] = {"type": "object", "additionalProperties": False,
                            "required": ["name", "incident_type", "level", "roles"],
                            "properties": PLAN_FIELDS}
PATCH_PLAN: dict[str, Any] = {"type": "object", "additionalProperties": False,
                              "minProperties": 1, "properties": PLAN_FIELDS}
PLAN: dict[str, Any] = {"type": "object", "properties": {
    "id": {"type": "integer"}, **PLAN_FIELDS, "level": {"type": "integer"}}}

EvidenceCollector = Callable[[int], Any]
"""Reads what goes in an incident's review pack (on the loop: the database is not shared
between threads)."""
EvidenceWriter = Callable[[Any, Path], Any]
"""Writes the pack from those facts: recordings exported, zip built (in a worker thread)."""


def incidents_routes(api: Api, incidents: IncidentService, plans: PlanService,
                     responses: ResponseService, *,
                     evidence: tuple[EvidenceCollector, EvidenceWriter] | None = None,
                     dispatches: Callable[[int], list[dict[str, Any]]] | None = None,
                     ) -> list[BaseRoute]:
    def incident_id(call: ApiCall) -> int:
        value = int(call.path["incident_id"])
        incidents.get(value)  # 404 for an unknown incident
        return value

    def detail_json(value: int) -> str:
        head = incidents.get(value)
        response = responses.get(value)
        head["response"] = response
        head["responders"] = response["responders"] if response else []
        head["tasks"] = responses.tasks(value)
        head["calls"] = incidents.calls(value)
        head["recordings"] = incidents.recordings(value)
        if dispatches is not None:
            head["dispatches"] = dispatches(value)
        text = json.dumps(head, ensure_ascii=False, separators=(",", ":"))
        return text[:-1] + ',"timeline":' + incidents.timeline_json(value) + "}"

    async def list_types(call: ApiCall) -> Any:
        return {"types": taxonomy.types_as_list(),
                "levels": [{"level": i + 1, "label": label, "zh": taxonomy.LEVEL_NAMES_ZH[i]}
                           for i, label in enumerate(taxonomy.LEVELS)],
                "statuses": list(STATUSES)}

    async def list_incidents(call: ApiCall) -> Any:
        q = call.query
        return incidents.find(status=q.get("status"), limit=q.get("limit") or 100,
                              active=bool(q.get("active")))

    async def create(call: ApiCall) -> Any:
        created = incidents.create(call.body, operator=call.operator.operator)
        call.status = 201
        call.target = str(created["id"])
        call.headers["location"] = f"/api/incidents/{created['id']}"
        return Response(detail_json(created["id"]), status_code=201,
                        media_type="application/json")

    async def get_incident(call: ApiCall) -> Any:
        return Response(detail_json(incident_id(call)), media_type="application/json")

    async def timeline(call: ApiCall) -> Any:
        value = incident_id(call)
        return Response(incidents.timeline_json(value, after=call.query.get("after") or 0,
                                                 limit=call.query.get("limit")),
                        media_type="application/json")

    async def update(call: ApiCall) -> Any:
        value = incident_id(call)
        operator = call.operator.operator
        _, changes = incidents.update(value, call.body, operator=operator)
        if "level" in changes:
            responses.set_level(value, changes["level"][1], operator=operator)
        if "status" in changes and changes["status"][1] == "closed" and value in responses.live:
            responses.end(value, operator=operator, reason="incident closed")
        return Response(detail_json(value), media_type="application/json")

    async def message(call: ApiCall) -> Any:
        call.status = 201
        return incidents.add_message(incident_id(call), call.body["text"],
                                     operator=call.operator.operator)

    async def attach(call: ApiCall) -> Any:
        value = incident_id(call)
        incidents.attach(value, call.body["call_id"])
        return Response(detail_json(value), media_type="application/json")

    async def activate(call: ApiCall) -> Any:
        value = incident_id(call)
        call.status = 201
        return responses.activate(value, call.body["plan_id"], call.body.get("level"),
                                  operator=call.operator.operator)

    async def get_response(call: ApiCall) -> Any:
        value = incident_id(call)
        result = responses.get(value)
        if result is None:
            from dispatch.errors import NotFound

            raise NotFound(f"incident {value} has no response; activate a plan")
        return result

    async def end_response(call: ApiCall) -> Any:
        return responses.end(incident_id(call), operator=call.operator.operator,
                             reason=f"ended by {call.operator.operator}")

    async def set_task(call: ApiCall) -> Any:
        return responses.set_task(incident_id(call), int(call.path["task_id"]),
                                  call.body["done"], operator=call.operator.operator)

    async def evidence_pack(call: ApiCall) -> Any:
        value = incident_id(call)
        assert evidence is not None
        collect, write = evidence
        facts = collect(value)
        folder = Path(tempfile.mkdtemp(prefix="hub-evidence-"))
        out = folder / f"incident-{value}-evidence.zip"

        def cleanup() -> None:
            out.unlink(missing_ok=True)
            folder.rmdir()

        try:
            await asyncio.to_thread(write, facts, out)
        except BaseException:
            cleanup()
            raise
        incidents.record(value, "evidence.exported", {"file": out.name},
                         actor=call.operator.operator)

        return FileResponse(out, media_type="application/zip", filename=out.name,
                            background=BackgroundTask(cleanup))

    async def list_plans(call: ApiCall) -> Any:
        q = call.query
        level = taxonomy.level(q["level"]) if q.get("level") is not None else None
        return plans.find(incident_type=q.get("incident_type"), level=level)

    async def create_plan(call: ApiCall) -> Any:
        created = plans.create(call.body)
        call.status = 201
        call.target = str(created["id"])
        call.headers["location"] = f"/api/plans/{created['id']}"
        return created

    async def get_plan(call: ApiCall) -> Any:
        return plans.get(int(call.path["plan_id"]))

    async def update_plan(call: ApiCall) -> Any:
        return plans.update(int(call.path["plan_id"]), call.body)

    async def remove_plan(call: ApiCall) -> Any:
        plans.remove(int(call.path["plan_id"]))
        call.status = 204

    disp, sup = Role.DISPATCHER, Role.SUPERVISOR
    tags = ("incidents",)
    one = "/api/incidents/{incident_id:int}"
    R = api.route
    routes: list[BaseRoute] = [
        R("GET", "/api/incident-types", list_types, role=disp, tags=tags,
          summary="Incident types (categories and subtypes, zh/en), levels and statuses",
          responses={200: ("The taxonomy", {"type": "object"})}),
        R("GET", "/api/incidents", list_incidents, role=disp, tags=tags,
          params=(Param("status", {"type": "string", "enum": list(STATUSES)}),
                  Param("active", {"type": "boolean"}, "Only those not closed"),
                  Param("limit", {"type": "integer", "minimum": 1, "maximum": 1000})),
          summary="Incidents, newest first",
          responses={200: ("Incidents", {"type": "array", "items": INCIDENT})}),
        R("POST", "/api/incidents", create, role=disp, action="incident.create", tags=tags,
          body=NEW_INCIDENT, summary="Report an incident, by hand or from a call",
          responses={201: ("The incident with its timeline", DETAIL)}),
        R("GET", one, get_incident, role=disp, tags=tags,
          summary="An incident with its timeline, response board, tasks, calls, recordings",
          responses={200: ("The incident", DETAIL)}),
        R("GET", one + "/timeline", timeline, role=disp, tags=tags,
          params=(Param("after", {"type": "integer", "minimum": 0},
                        "Only entries after this id (to follow it)"),
                  Param("limit", {"type": "integer", "minimum": 1, "maximum": 100000})),
          summary="The incident's timeline, oldest first",
          responses={200: ("Entries", {"type": "array", "items": ENTRY})}),
        R("PATCH", one, update, role=disp, action="incident.update", tags=tags,
          body=PATCH_INCIDENT, summary="Change an incident (status, level, location...)",
          description="A level change mobilises what the running plan adds at the new level "
                      "and stands down what it no longer needs; closing ends the response.",
          responses={200: ("The incident", DETAIL)}),
        R("POST", one + "/messages", message, role=disp, action="incident.message",
          tags=tags, body=MESSAGE, summary="Add a message to the timeline",
          responses={201: ("The timeline entry", ENTRY)}),
        R("POST", one + "/calls", attach, role=disp, action="incident.attach_call",
          tags=tags, body=ATTACH, summary="Attach a live call to the incident",
          responses={200: ("The incident", DETAIL)}),
        R("POST", one + "/activate", activate, role=disp, action="incident.activate",
          tags=tags, body=ACTIVATE, errors=(409,),
          summary="Activate a plan: open the command room and call every responder",
          description="Responders are dialled at once on their endpoints in order; who "
                      "answers hears two beeps and presses 1 to confirm. Not answered by "
                      "escalate_after_s: the deputy is called. Unreachable on every "
                      "endpoint: a text notification.",
          responses={201: ("The response and its acknowledgement board", RESPONSE)}),
        R("GET", one + "/response", get_response, role=disp, tags=tags,
          summary="The incident's response (running, else the latest) and its board",
          responses={200: ("The response", RESPONSE)}),
        R("POST", one + "/response/end", end_response, role=disp,
          action="incident.response_end", tags=tags, errors=(409,),
          summary="End the response: the room closes, the closing notice goes out",
          responses={200: ("The ended response", RESPONSE)}),
        R("PATCH", one + "/tasks/{task_id:int}", set_task, role=disp,
          action="incident.task", tags=tags, body=TASK_PATCH, summary="Mark a task done",
          responses={200: ("The task", TASK)}),
        R("GET", "/api/plans", list_plans, role=disp, tags=("plans",),
          params=(Param("incident_type", {"type": "string"}),
                  Param("level", {"type": "string"})),
          summary="Plans (预案), optionally those for an incident type and level",
          responses={200: ("Plans", {"type": "array", "items": PLAN})}),
        R("POST", "/api/plans", create_plan, role=sup, action="plan.create", tags=("plans",),
          body=NEW_PLAN, errors=(409,), summary="Write a plan",
          description="Every person and deputy must be in the directory; refused as a "
                      "whole (422, naming the field) otherwise.",
          responses={201: ("The plan", PLAN)}),
        R("GET", "/api/plans/{plan_id:int}", get_plan, role=disp, tags=("plans",),
          summary="One plan", responses={200: ("The plan", PLAN)}),
        R("PATCH", "/api/plans/{plan_id:int}", update_plan, role=sup, action="plan.update",
          tags=("plans",), body=PATCH_PLAN, errors=(409,), summary="Change a plan",
          responses={200: ("The plan", PLAN)}),
        R("DELETE", "/api/plans/{plan_id:int}", remove_plan, role=sup, action="plan.remove",
          tags=("plans",), errors=(409,), summary="Remove a plan never activated",
          responses={204: ("Removed", None)}),
    ]
    if evidence is not None:
        routes.append(R("GET", one + "/evidence", evidence_pack, role=disp,
                        action="incident.evidence", tags=tags, response_media="application/zip",
                        summary="The review pack (复盘): HTML report, recordings, timeline",
                        responses={200: ("A zip archive", None)}))
    return routes

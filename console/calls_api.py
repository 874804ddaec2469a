"""Call control over HTTP: ``/api/calls`` and what a dispatcher does to a call.

Every route needs the dispatcher role (or higher) and every change is audited. The
call service's errors carry their status: 404 for an unknown call or leg, 409 for an
action the call's state does not allow (a leg not answered yet, a call that ended),
422 for bad input, each with a message that says what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.routing import BaseRoute

from dispatch.calls import LEG_ACTIONS, MODES, CallService

from .api import Api, ApiCall
from .auth import Role
from .errors import ApiError

LEG: dict[str, Any] = {"type": "object", "properties": {
    "leg_id": {"type": "string"}, "target": {"type": "string"},
    "state": {"type": "string", "enum": ["new", "ringing", "up", "held", "ended"]},
    "outcome": {"type": "string", "enum": [
        "pending", "answered", "busy", "no-answer", "unreachable", "rejected",
        "cancelled", "failed"]},
    "status": {"type": "integer", "description": "The SIP status that decided the outcome"},
    "relation": {"type": "string", "enum": ["member", "barge", "monitor", "whisper"]},
    "whisper_to": {"type": "string", "nullable": True},
    "muted": {"type": "boolean"}, "deaf": {"type": "boolean"}, "held": {"type": "boolean"},
    "confirmed": {"type": "boolean", "nullable": True,
                  "description": "Roll call: pressed 1 (true), never did (false)"}}}
CALL: dict[str, Any] = {"type": "object", "properties": {
    "id": {"type": "string"}, "mode": {"type": "string", "enum": [*MODES, "sip"]},
    "targets": {"type": "array", "items": {"type": "string"}},
    "bridge_id": {"type": "string"}, "state": {"type": "string", "enum": ["active", "ended"]},
    "operator": {"type": "string", "nullable": True}, "record": {"type": "boolean"},
    "recording_id": {"type": "string", "nullable": True},
    "created": {"type": "number"}, "ended": {"type": "number", "nullable": True},
    "legs": {"type": "array", "items": LEG},
    "talking": {"type": "array", "items": {"type": "string"}},
    "locked": {"type": "boolean"}}}
CALLS: dict[str, Any] = {"type": "array", "items": CALL}
NEW_CALL: dict[str, Any] = {
    "type": "object", "required": ["targets"], "additionalProperties": False,
    "properties": {
        "targets": {"type": "array", "minItems": 1, "maxItems": 500,
                    "items": {"type": "string", "minLength": 1, "maxLength": 64},
                    "description": "Directory names, SIP user names or numbers"},
        "mode": {"type": "string", "enum": list(MODES), "default": "group"},
        "record": {"type": "boolean", "default": False},
        "incident_id": {"type": "integer", "minimum": 1,
                        "description": "Attach the call to this incident: its legs' outcomes "
                                       "and its recording go to the incident's timeline"}}}
_SDP = {"type": "string", "minLength": 1, "maxLength": 65536,
        "description": "The browser's WebRTC offer (Opus audio); the answer comes back"}
JOIN: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "description": "Give either phone or sdp",
    "properties": {
        "phone": {"type": "string", "minLength": 1, "maxLength": 64,
                  "description": "The dispatcher's own phone (a SIP user), dialled into "
                                 "the call"},
        "sdp": _SDP,
        "leg_id": {"type": "string", "description": "whisper: the party who hears it"}}}
NEW_BROWSER_CALL: dict[str, Any] = {
    "type": "object", "required": ["targets", "sdp"], "additionalProperties": False,
    "properties": {**NEW_CALL["properties"], "sdp": _SDP}}
MEMBER: dict[str, Any] = {
    "type": "object", "required": ["target"], "additionalProperties": False,
    "properties": {"target": {"type": "string", "minLength": 1, "maxLength": 64}}}
LOCK: dict[str, Any] = {
    "type": "object", "required": ["locked"], "additionalProperties": False,
    "properties": {"locked": {"type": "boolean"}}}
RECORDING: dict[str, Any] = {
    "type": "object", "required": ["on"], "additionalProperties": False,
    "properties": {"on": {"type": "boolean"}}}


def calls_routes(api: Api, calls: CallService,
                 incident_exists: Callable[[int], bool] | None = None) -> list[BaseRoute]:
    def incident_of(body: dict[str, Any]) -> int | None:
        incident_id = body.get("incident_id")
        if incident_id is None:
            return None
        if incident_exists is None or not incident_exists(incident_id):
            raise ApiError(422, "invalid-input", f"incident_id: no incident {incident_id}")
        return int(incident_id)

    async def list_calls(call: ApiCall) -> Any:
        return calls.list()

    async def create_call(call: ApiCall) -> Any:
        body = call.body
        created = calls.create(list(body["targets"]), body.get("mode", "group"),
                               record=bool(body.get("record", False)),
                               operator=call.operator.operator,
                               incident_id=incident_of(body))
        call.status = 201
        call.headers["location"] = f"/api/calls/{created.id}"
        call.target = created.id
        return created.as_dict()

    async def create_browser_call(call: ApiCall) -> Any:
        body = call.body
        incident_id = incident_of(body)
        created, leg, answer = await calls.create_from_browser(
            list(body["targets"]), body["sdp"], body.get("mode", "single"),
            record=bool(body.get("record", False)), operator=call.operator.operator)
        created.incident_id = incident_id
        call.status = 201
        call.headers["location"] = f"/api/calls/{created.id}"
        call.target = created.id
        return {"call": created.as_dict(), "leg": leg.as_dict(), "sdp": answer}

    async def get_call(call: ApiCall) -> Any:
        return calls.get(call.path["call_id"]).as_dict()

    async def end_call(call: ApiCall) -> Any:
        return calls.end(call.path["call_id"], f"ended by {call.operator.operator}").as_dict()

    async def leg_action(call: ApiCall) -> Any:
        p = call.path
        call.target = f"{p['call_id']}/{p['leg_id']}"
        call.detail = {"leg_action": p["action"]}
        return calls.leg_action(p["call_id"], p["leg_id"], p["action"]).as_dict()

    def joiner(relation: str) -> Any:
        async def join(call: ApiCall) -> Any:
            body = call.body
            answer = None
            if body.get("sdp"):
                leg, answer = await calls.join_browser(
                    call.path["call_id"], relation, body["sdp"], leg_id=body.get("leg_id"),
                    operator=call.operator.operator)
            elif body.get("phone"):
                leg = calls.join(call.path["call_id"], relation, body["phone"],
                                 leg_id=body.get("leg_id"), operator=call.operator.operator)
            else:
                raise ApiError(422, "invalid-input", "give the dispatcher's phone, or the "
                               "browser's WebRTC offer as sdp")
            call.status = 201
            result: dict[str, Any] = {"call": calls.get(call.path["call_id"]).as_dict(),
                                      "leg": leg.as_dict()}
            if answer is not None:
                result["sdp"] = answer
            return result

        join.__name__ = f"{relation}_call"
        return join

    async def add_member(call: ApiCall) -> Any:
        leg = calls.add_member(call.path["call_id"], call.body["target"])
        call.status = 201
        return leg.as_dict()

    async def lock(call: ApiCall) -> Any:
        return calls.lock(call.path["call_id"], bool(call.body["locked"])).as_dict()

    async def recording(call: ApiCall) -> Any:
        return calls.set_recording(call.path["call_id"], bool(call.body["on"])).as_dict()

    dispatcher = Role.DISPATCHER
    tags = ("calls",)
    routes: list[BaseRoute] = [
        api.route("GET", "/api/calls", list_calls, role=dispatcher, tags=tags,
                  summary="Live calls: the hub's dispatch calls and phone-to-phone calls",
                  responses={200: ("The live calls", CALLS)}),
        api.route("POST", "/api/calls", create_call, role=dispatcher, action="call.create",
                  tags=tags, body=NEW_CALL,
                  summary="Place a call: single, group, broadcast or roll call",
                  description="Members ring in parallel (one after another for a roll "
                              "call); whoever answers joins the call's bridge.",
                  responses={201: ("The call, its legs ringing", CALL)}),
        api.route("POST", "/api/calls/browser", create_browser_call, role=dispatcher,
                  action="call.create", tags=tags, body=NEW_BROWSER_CALL, errors=(409,),
                  summary="Place a call with the dispatcher's browser as their own voice",
                  description="The page's WebRTC offer (Opus) is answered; the browser "
                              "joins the call's bridge first, then the targets ring.",
                  responses={201: ("The call, the browser's leg and the SDP answer",
                                   {"type": "object", "properties": {
                                       "call": CALL, "leg": LEG, "sdp": {"type": "string"}}})}),
        api.route("GET", "/api/calls/{call_id}", get_call, role=dispatcher, tags=tags,
                  summary="A call with its legs and their states",
                  responses={200: ("The call", CALL)}),
        api.route("DELETE", "/api/calls/{call_id}", end_call, role=dispatcher,
                  action="call.end", tags=tags, errors=(409,),
                  summary="End a call: every leg is released",
                  responses={200: ("The ended call", CALL)}),
        api.route("POST", "/api/calls/{call_id}/legs/{leg_id}/{action}", leg_action,
                  role=dispatcher, action="call.leg", tags=tags, errors=(409,),
                  summary=f"Act on one leg: {', '.join(LEG_ACTIONS)}",
                  description="kick releases the party (强拆); hold plays music to it.",
                  responses={200: ("The call", CALL)}),
        api.route("POST", "/api/calls/{call_id}/members", add_member, role=dispatcher,
                  action="call.add_member", tags=tags, body=MEMBER, errors=(409,),
                  summary="Dial one more member into the call",
                  responses={201: ("The new leg", LEG)}),
        api.route("POST", "/api/calls/{call_id}/lock", lock, role=dispatcher,
                  action="call.lock", tags=tags, body=LOCK, errors=(409,),
                  summary="Lock or unlock a call or room: nobody new joins while locked",
                  responses={200: ("The call", CALL)}),
        api.route("POST", "/api/calls/{call_id}/recording", recording, role=dispatcher,
                  action="call.recording", tags=tags, body=RECORDING, errors=(409,),
                  summary="Start or stop recording the call",
                  responses={200: ("The call", CALL)}),
    ]
    for relation, summary in (
            ("barge", "Barge in (强插): the dispatcher's phone joins and is heard"),
            ("monitor", "Monitor (监听): the dispatcher hears all, is heard by none"),
            ("whisper", "Whisper (耳语): the dispatcher is heard by one leg only")):
        routes.append(api.route(
            "POST", f"/api/calls/{{call_id}}/{relation}", joiner(relation), role=dispatcher,
            action=f"call.{relation}", tags=tags, body=JOIN, errors=(409,), summary=summary,
            responses={201: ("The call and the dispatcher's new leg",
                             {"type": "object", "properties": {"call": CALL, "leg": LEG}})}))
    return routes

"""The dispatch queue and call transfer over HTTP.

``GET /api/queue`` lists the callers waiting on the dispatch number (position, caller,
waiting since); ``POST /api/queue/{queue_id}/answer`` dials the dispatcher's phone into
the caller's bridge, and the entry becomes call ``queue_id`` in ``/api/calls`` with
``answered_by``. ``POST /api/calls/{call_id}/legs/{leg_id}/transfer`` transfers that
leg's party: ``{"target"}`` is a blind transfer (the other side is replaced by the
target, dialled by the hub), ``{"to_call"}`` an attended one (the party of the
consultation call ``to_call`` joins this call and talks with the leg's party; the
dispatcher's legs in both calls are released and ``to_call`` ends). These routes must
come before ``calls_routes`` (its ``/legs/{leg_id}/{action}`` would match ``transfer``
first). Dispatcher role; changes audited (``queue.answer``, ``call.transfer``).
"""

from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute

from dispatch.calls import CallService

from .api import Api, ApiCall
from .auth import Role
from .calls_api import CALL

ENTRY: dict[str, Any] = {"type": "object", "properties": {
    "queue_id": {"type": "string"},
    "position": {"type": "integer", "nullable": True,
                 "description": "1 is next; null while a dispatcher is picking it up"},
    "caller": {"type": "string"}, "caller_display": {"type": "string", "nullable": True},
    "since": {"type": "number", "description": "Waiting since (Unix time)"},
    "state": {"type": "string", "enum": ["waiting", "answering"]},
    "answered_by": {"type": "string", "nullable": True},
    "leg_id": {"type": "string"}, "bridge_id": {"type": "string"}}}
QUEUE: dict[str, Any] = {"type": "array", "items": ENTRY}
ANSWER: dict[str, Any] = {
    "type": "object", "required": ["phone"], "additionalProperties": False,
    "properties": {"phone": {"type": "string", "minLength": 1, "maxLength": 64,
                             "description": "The dispatcher's own phone (a SIP user), "
                                            "dialled into the caller's bridge"}}}
TRANSFER: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "description": "Give either target (blind) or to_call (attended)",
    "properties": {
        "target": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": r"\S",
                   "description": "Blind transfer: a SIP user or number, dialled by the hub"},
        "to_call": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": r"\S",
                    "description": "Attended transfer: the consultation call (the one "
                                   "with the party to connect), e.g. D7"}},
    "oneOf": [{"required": ["target"]}, {"required": ["to_call"]}]}


def queue_routes(api: Api, calls: CallService) -> list[BaseRoute]:
    async def list_queue(call: ApiCall) -> Any:
        return calls.queue_list()

    async def answer(call: ApiCall) -> Any:
        queue_id = call.path["queue_id"]
        call.target = queue_id
        answered = calls.answer_queued(queue_id, call.body["phone"],
                                       operator=call.operator.operator)
        call.status = 201
        call.headers["location"] = f"/api/calls/{answered.id}"
        return answered.as_dict()

    async def transfer(call: ApiCall) -> Any:
        p = call.path
        body = call.body
        call.target = f"{p['call_id']}/{p['leg_id']}"
        if "to_call" in body:
            return calls.attended_transfer(p["call_id"], p["leg_id"], body["to_call"],
                                           operator=call.operator.operator).as_dict()
        return calls.transfer(p["call_id"], p["leg_id"], body["target"],
                              operator=call.operator.operator).as_dict()

    dispatcher = Role.DISPATCHER
    return [
        api.route("GET", "/api/queue", list_queue, role=dispatcher, tags=("queue",),
                  summary="Callers waiting on the dispatch number, next first",
                  responses={200: ("The queue", QUEUE)}),
        api.route("POST", "/api/queue/{queue_id}/answer", answer, role=dispatcher,
                  action="queue.answer", tags=("queue",), body=ANSWER, errors=(409,),
                  summary="Pick a queued caller up with the dispatcher's phone",
                  description="The phone is dialled into the caller's bridge; when it "
                              "answers the waiting tone stops. The entry becomes the call "
                              "with the same id, answered_by the operator.",
                  responses={201: ("The call (the phone ringing)", CALL)}),
        api.route("POST", "/api/calls/{call_id}/legs/{leg_id}/transfer", transfer,
                  role=dispatcher, action="call.transfer", tags=("calls",), body=TRANSFER,
                  errors=(409,),
                  summary="Transfer this leg's party: blind (target) or attended (to_call)",
                  description="Blind (`target`): the hub dials the target into the call; "
                              "the replaced party (the other side, or the call's other "
                              "members) is released once the target answers. Attended "
                              "(`to_call`): the answered party of the consultation call "
                              "`to_call` moves into this call's bridge at once (nobody is "
                              "dialled) and talks with this leg's party; this call keeps "
                              "its id and recording, `to_call` ends. The dispatcher's "
                              "legs in both calls are released: in a dispatch call its "
                              "browser, barge/monitor/whisper phones and the phone that "
                              "picked a queued caller up; in a phone-to-phone call the "
                              "other side (the transferor), whose phone must also be in a "
                              "phone-to-phone `to_call`. 404: unknown call, leg or "
                              "to_call; 409: either call cannot do it now (not answered, "
                              "ended, already transferring, a queued caller to move, a "
                              "room); 422: a bad body (both or neither field, to_call the "
                              "same call).",
                  responses={200: ("The call that goes on", CALL)}),
    ]

"""The directory over HTTP: ``/api/directory`` and its units, people, endpoints, groups.

Everyone reads (every endpoint comes with its live status). Supervisors and admins
write; dispatchers may also make, change and remove *temporary* groups (the ones they
assemble for an incident). ``POST /api/directory/import`` takes the CSV described in
``dispatch.directory_csv``: all or nothing, 422 with every bad line otherwise.
"""

from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute

from dispatch.directory import (
    ENDPOINT_KINDS,
    GROUP_KINDS,
    PERSON_KINDS,
    STATUSES,
    UNSET,
    DirectoryService,
    EndpointSpec,
)
from dispatch.directory_csv import COLUMNS, MAX_BYTES

from .api import Api, ApiCall, Param, require_role
from .auth import Role
from .validation import name_schema, text_schema

_ID = {"type": "string"}
_NULLABLE_ID = {"type": "string", "nullable": True}
_NAME = name_schema()
_UNIT_NAME = name_schema(extra_forbidden="/")
_STATUS = {"type": "string", "enum": list(STATUSES)}

UNIT: dict[str, Any] = {"type": "object", "properties": {
    "id": _ID, "name": {"type": "string"}, "parent_id": _NULLABLE_ID,
    "path": {"type": "string", "description": "Names from the top, '/' between"},
    "created_at": {"type": "number"}}}
ENDPOINT: dict[str, Any] = {"type": "object", "properties": {
    "id": {"type": "string", "description": "KIND:ADDRESS, e.g. sip:1001"},
    "kind": {"type": "string", "enum": list(ENDPOINT_KINDS)},
    "address": {"type": "string"}, "person_id": _ID,
    "position": {"type": "integer", "description": "0 = preferred"},
    "label": {"type": "string", "nullable": True}, "status": _STATUS}}
PERSON: dict[str, Any] = {"type": "object", "properties": {
    "id": {"type": "string", "description": "p<N>, or user:NAME for a SIP user not stored"},
    "name": {"type": "string"}, "kind": {"type": "string", "enum": list(PERSON_KINDS)},
    "title": {"type": "string", "nullable": True}, "unit_id": _NULLABLE_ID,
    "implicit": {"type": "boolean"},
    "endpoints": {"type": "array", "items": _ID, "description": "Preferred first"},
    "groups": {"type": "array", "items": _ID}, "status": _STATUS,
    "created_at": {"type": "number"}}}
GROUP: dict[str, Any] = {"type": "object", "properties": {
    "id": _ID, "name": {"type": "string"}, "kind": {"type": "string", "enum": list(GROUP_KINDS)},
    "members": {"type": "array", "items": _ID}, "created_by": {"type": "string", "nullable": True},
    "created_at": {"type": "number"}}}
DIRECTORY: dict[str, Any] = {"type": "object", "properties": {
    "units": {"type": "array", "items": UNIT}, "people": {"type": "array", "items": PERSON},
    "groups": {"type": "array", "items": GROUP},
    "endpoints": {"type": "array", "items": ENDPOINT}}}

# What an address looks like for each kind (the service normalises a mobile number's
# spaces, dashes, dots and brackets away).
_ADDRESS_RULES: list[dict[str, Any]] = [
    {"properties": {"kind": {"enum": ["sip"]},
                    "address": {"pattern": "^[A-Za-z0-9._~-]{1,64}$"}}},
    {"properties": {"kind": {"enum": ["mobile"]},
                    "address": {"pattern": "^[\\s().-]*\\+?[\\s().-]*(?:[0-9][\\s().-]*){3,20}$"}}},
    {"properties": {"kind": {"enum": ["browser", "app", "radio"]},
                    "address": {"pattern": "^[A-Za-z0-9._~@+-]{1,64}$"}}},
]
ENDPOINT_SPEC: dict[str, Any] = {
    "type": "object", "required": ["kind", "address"], "additionalProperties": False,
    "description": "sip: a hub user name; mobile: a phone number (3-20 digits, + allowed);"
                   " browser: an operator name; app, radio: 1-64 of A-Z a-z 0-9 . _ ~ @ + -",
    "properties": {
        "kind": {"type": "string", "enum": list(ENDPOINT_KINDS)},
        "address": {"type": "string", "minLength": 1, "maxLength": 64},
        "label": text_schema(64)},
    "anyOf": _ADDRESS_RULES}
NEW_UNIT: dict[str, Any] = {
    "type": "object", "required": ["name"], "additionalProperties": False,
    "properties": {"name": _UNIT_NAME, "parent_id": _NULLABLE_ID}}
UNIT_CHANGES: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "properties": {"name": _UNIT_NAME, "parent_id": _NULLABLE_ID}}
_PERSON_FIELDS: dict[str, Any] = {
    "name": _NAME, "kind": {"type": "string", "enum": list(PERSON_KINDS)},
    "title": text_schema(128),
    "unit_id": _NULLABLE_ID,
    "endpoints": {"type": "array", "items": ENDPOINT_SPEC, "maxItems": 32,
                  "description": "Preferred first; on PATCH, replaces them all"}}
NEW_PERSON: dict[str, Any] = {"type": "object", "required": ["name"],
                              "additionalProperties": False, "properties": _PERSON_FIELDS}
PERSON_CHANGES: dict[str, Any] = {"type": "object", "additionalProperties": False,
                                  "properties": _PERSON_FIELDS}
NEW_ENDPOINT: dict[str, Any] = {
    **ENDPOINT_SPEC,
    "properties": {**ENDPOINT_SPEC["properties"],
                   "position": {"type": "integer", "minimum": 0, "maximum": 1000,
                                "description": "Where in the order (default: last)"}}}
ENDPOINT_CHANGES: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "properties": {"label": text_schema(64),
                   "position": {"type": "integer", "minimum": 0, "maximum": 1000}}}
_MEMBERS = {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 80},
            "maxItems": 1000, "uniqueItems": True,
            "description": "Person ids in order (user:NAME stores a SIP user's person)"}
NEW_GROUP: dict[str, Any] = {
    "type": "object", "required": ["name"], "additionalProperties": False,
    "properties": {"name": _NAME,
                   "kind": {"type": "string", "enum": list(GROUP_KINDS),
                            "description": "fixed (default; supervisors) or temporary"},
                   "members": _MEMBERS}}
GROUP_CHANGES: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "properties": {"name": _NAME, "members": _MEMBERS}}
IMPORT_RESULT: dict[str, Any] = {"type": "object", "properties": {
    key: {"type": "integer"} for key in
    ("units_created", "people_created", "people_updated", "groups_created", "endpoints")}}


def _specs(items: list[dict[str, Any]]) -> list[EndpointSpec]:
    return [EndpointSpec(i["kind"], i["address"], i.get("label")) for i in items]


def directory_routes(api: Api, directory: DirectoryService) -> list[BaseRoute]:
    # -- reading
    async def get_directory(call: ApiCall) -> Any:
        return directory.view(query=call.query.get("q"), unit_id=call.query.get("unit")).to_dict()

    async def search(call: ApiCall) -> Any:
        return directory.view(query=call.query["q"], unit_id=call.query.get("unit")).to_dict()

    # -- units
    async def list_units(call: ApiCall) -> Any:
        return {"units": [u.to_dict() for u in directory.list_units()]}

    async def create_unit(call: ApiCall) -> Any:
        unit = directory.create_unit(call.body["name"], call.body.get("parent_id"))
        call.status, call.target = 201, unit.id
        return unit.to_dict()

    async def get_unit(call: ApiCall) -> Any:
        return directory.get_unit(call.path["unit_id"]).to_dict()

    async def update_unit(call: ApiCall) -> Any:
        body = call.body
        return directory.update_unit(
            call.path["unit_id"], name=body.get("name", UNSET),
            parent_id=body["parent_id"] if "parent_id" in body else UNSET).to_dict()

    async def remove_unit(call: ApiCall) -> Any:
        directory.remove_unit(call.path["unit_id"])
        call.status = 204

    # -- people
    async def list_people(call: ApiCall) -> Any:
        return {"people": [p.to_dict() for p in directory.list_people()]}

    async def create_person(call: ApiCall) -> Any:
        body = call.body
        person = directory.create_person(
            body["name"], kind=body.get("kind", "person"), title=body.get("title"),
            unit_id=body.get("unit_id"), endpoints=_specs(body.get("endpoints", [])))
        call.status, call.target = 201, person.id
        return person.to_dict()

    async def get_person(call: ApiCall) -> Any:
        return directory.get_person(call.path["person_id"]).to_dict()

    async def update_person(call: ApiCall) -> Any:
        body = call.body
        changes: dict[str, Any] = {key: body[key] for key in ("name", "kind", "title", "unit_id")
                                   if key in body}
        if "endpoints" in body:
            changes["endpoints"] = _specs(body["endpoints"])
        person = directory.update_person(call.path["person_id"], **changes)
        if person.id != call.path["person_id"]:
            call.detail = {"stored_as": person.id}
        return person.to_dict()

    async def remove_person(call: ApiCall) -> Any:
        directory.remove_person(call.path["person_id"])
        call.status = 204

    # -- endpoints
    async def add_endpoint(call: ApiCall) -> Any:
        body = call.body
        endpoint = directory.add_endpoint(
            call.path["person_id"], EndpointSpec(body["kind"], body["address"], body.get("label")),
            body.get("position"))
        call.status, call.target = 201, endpoint.id
        call.detail = {"person_id": endpoint.person_id}
        return endpoint.to_dict()

    async def get_endpoint(call: ApiCall) -> Any:
        return directory.get_endpoint(call.path["endpoint_id"]).to_dict()

    async def update_endpoint(call: ApiCall) -> Any:
        body = call.body
        return directory.update_endpoint(
            call.path["endpoint_id"], label=body["label"] if "label" in body else UNSET,
            position=body.get("position", UNSET)).to_dict()

    async def remove_endpoint(call: ApiCall) -> Any:
        directory.remove_endpoint(call.path["endpoint_id"])
        call.status = 204

    # -- groups: dispatchers may handle temporary ones, fixed ones need a supervisor
    async def list_groups(call: ApiCall) -> Any:
        return {"groups": [g.to_dict() for g in directory.list_groups()]}

    async def create_group(call: ApiCall) -> Any:
        body = call.body
        kind = body.get("kind", "fixed")
        if kind == "fixed":
            require_role(call, Role.SUPERVISOR, "creating a fixed group")
        group = directory.create_group(body["name"], kind=kind,
                                       members=body.get("members", []),
                                       created_by=call.operator.operator)
        call.status, call.target = 201, group.id
        call.detail = {"kind": kind}
        return group.to_dict()

    async def get_group(call: ApiCall) -> Any:
        return directory.get_group(call.path["group_id"]).to_dict()

    async def update_group(call: ApiCall) -> Any:
        if directory.get_group(call.path["group_id"]).kind == "fixed":
            require_role(call, Role.SUPERVISOR, "changing a fixed group")
        body = call.body
        return directory.update_group(call.path["group_id"], name=body.get("name", UNSET),
                                      members=body.get("members", UNSET)).to_dict()

    async def remove_group(call: ApiCall) -> Any:
        if directory.get_group(call.path["group_id"]).kind == "fixed":
            require_role(call, Role.SUPERVISOR, "removing a fixed group")
        directory.remove_group(call.path["group_id"])
        call.status = 204

    # -- import
    async def import_csv(call: ApiCall) -> Any:
        result = directory.import_csv(call.body)
        call.detail = result.to_dict()
        return result.to_dict()

    sup, disp = Role.SUPERVISOR, Role.DISPATCHER
    tags = ("directory",)
    unit1 = {200: ("The unit", UNIT)}
    person1 = {200: ("The person", PERSON)}
    endpoint1 = {200: ("The endpoint", ENDPOINT)}
    group1 = {200: ("The group", GROUP)}
    removed = {204: ("Removed", None)}
    query = Param("q", {"type": "string", "maxLength": 128},
                  "Text to find in names, titles, unit paths, addresses, group names")
    unit = Param("unit", {"type": "string", "maxLength": 24},
                 "Only this unit (u<N>) and its sub-units")
    R = api.route
    return [
        R("GET", "/api/directory", get_directory, role=disp, tags=tags, params=(query, unit),
          errors=(404,),
          summary="The whole directory with every endpoint's live status",
          responses={200: ("Units, people, groups and endpoints", DIRECTORY)}),
        R("GET", "/api/directory/search", search, role=disp, tags=tags,
          params=(Param(query.name, {"type": "string", "minLength": 1, "maxLength": 128},
                        query.description, required=True), unit), errors=(404,),
          summary="Search the directory",
          responses={200: ("What matched, shaped like GET /api/directory", DIRECTORY)}),
        R("GET", "/api/directory/units", list_units, role=disp, tags=tags, summary="List units",
          responses={200: ("Every unit", {"type": "object", "properties": {
              "units": {"type": "array", "items": UNIT}}})}),
        R("POST", "/api/directory/units", create_unit, role=sup, tags=tags,
          action="directory.unit.create", summary="Add a unit", body=NEW_UNIT, errors=(404, 409),
          responses={201: ("The new unit", UNIT)}),
        R("GET", "/api/directory/units/{unit_id}", get_unit, role=disp, tags=tags,
          summary="One unit", responses=unit1),
        R("PATCH", "/api/directory/units/{unit_id}", update_unit, role=sup, tags=tags,
          action="directory.unit.update", summary="Rename or move a unit", body=UNIT_CHANGES,
          errors=(409,), responses=unit1),
        R("DELETE", "/api/directory/units/{unit_id}", remove_unit, role=sup, tags=tags,
          action="directory.unit.remove", summary="Remove an empty unit", errors=(409,),
          responses=removed),
        R("GET", "/api/directory/people", list_people, role=disp, tags=tags,
          summary="List people and devices (SIP users included)",
          responses={200: ("Everyone", {"type": "object", "properties": {
              "people": {"type": "array", "items": PERSON}}})}),
        R("POST", "/api/directory/people", create_person, role=sup, tags=tags,
          action="directory.person.create", summary="Add a person or device",
          body=NEW_PERSON, errors=(404, 409), responses={201: ("The new person", PERSON)}),
        R("GET", "/api/directory/people/{person_id}", get_person, role=disp, tags=tags,
          summary="One person", responses=person1),
        R("PATCH", "/api/directory/people/{person_id}", update_person, role=sup, tags=tags,
          action="directory.person.update", summary="Change a person",
          description="A SIP user's implicit person (user:NAME) is stored first; the answer "
                      "has its new id.", body=PERSON_CHANGES, errors=(409,), responses=person1),
        R("DELETE", "/api/directory/people/{person_id}", remove_person, role=sup, tags=tags,
          action="directory.person.remove", summary="Remove a person and its endpoints",
          errors=(409,), responses=removed),
        R("POST", "/api/directory/people/{person_id}/endpoints", add_endpoint, role=sup,
          tags=tags, action="directory.endpoint.create", summary="Give a person an endpoint",
          body=NEW_ENDPOINT, errors=(409,), responses={201: ("The new endpoint", ENDPOINT)}),
        R("GET", "/api/directory/endpoints/{endpoint_id}", get_endpoint, role=disp, tags=tags,
          summary="One endpoint with its live status", responses=endpoint1),
        R("PATCH", "/api/directory/endpoints/{endpoint_id}", update_endpoint, role=sup,
          tags=tags, action="directory.endpoint.update",
          summary="Relabel an endpoint or move it in its person's order",
          body=ENDPOINT_CHANGES, responses=endpoint1),
        R("DELETE", "/api/directory/endpoints/{endpoint_id}", remove_endpoint, role=sup,
          tags=tags, action="directory.endpoint.remove", summary="Remove an endpoint",
          errors=(409,), responses=removed),
        R("GET", "/api/directory/groups", list_groups, role=disp, tags=tags,
          summary="List groups", responses={200: ("Every group", {"type": "object", "properties": {
              "groups": {"type": "array", "items": GROUP}}})}),
        R("POST", "/api/directory/groups", create_group, role=disp, tags=tags,
          action="directory.group.create", summary="Add a group",
          description="Dispatchers may add temporary groups; fixed ones need a supervisor.",
          body=NEW_GROUP, errors=(404, 409), responses={201: ("The new group", GROUP)}),
        R("GET", "/api/directory/groups/{group_id}", get_group, role=disp, tags=tags,
          summary="One group", responses=group1),
        R("PATCH", "/api/directory/groups/{group_id}", update_group, role=disp, tags=tags,
          action="directory.group.update", summary="Rename a group or set its members",
          description="Fixed groups need a supervisor.", body=GROUP_CHANGES, errors=(409,),
          responses=group1),
        R("DELETE", "/api/directory/groups/{group_id}", remove_group, role=disp, tags=tags,
          action="directory.group.remove", summary="Remove a group",
          description="Fixed groups need a supervisor.", responses=removed),
        R("POST", "/api/directory/import", import_csv, role=sup, tags=tags,
          action="directory.import", summary="Import people, units and groups from CSV",
          description=f"Columns (header row, any order, only name required): "
                      f"{', '.join(COLUMNS)}. endpoints is KIND:ADDRESS items separated by ';'"
                      " (preferred first), unit a '/'-separated path, groups ';'-separated "
                      "names. All or nothing: a 422 lists every bad line.",
          body={"type": "string"}, body_media=("text/csv", "text/plain"), max_body=MAX_BYTES,
          responses={200: ("What was imported", IMPORT_RESULT)}),
    ]

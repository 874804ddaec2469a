"""Emergency resources over HTTP: ``/api/resources`` and dispatches to incidents.

Dispatchers read, call a resource's contact (one click: a single call to that phone)
and dispatch resources to incidents or release them; supervisors and admins add,
change, remove and import resources. ``GET /api/resources?near=<incident_id>`` lists
the nearest first with their distance. ``POST /api/resources/import`` takes the CSV
described in ``dispatch.resources_csv``: all or nothing, 422 with every bad line.

The body schemas say per kind which fields it has (``anyOf`` pinned by ``kind``), so a
quantity on a team, or a negative quantity, is a 422 naming the field before the
service is asked; the service checks the same again for its other callers.
"""

from __future__ import annotations

from typing import Any, Protocol

from starlette.routing import BaseRoute

from dispatch.errors import NotFound
from dispatch.resources import (
    ADDRESS_MAX,
    DEFAULT_LIMIT,
    KIND_FIELDS,
    KIND_LABELS,
    MAX_CONTACTS,
    MAX_COUNT,
    MAX_ID,
    MAX_LIMIT,
    NAME_MAX,
    NOTE_MAX,
    PERSON_MAX,
    PHONE_MAX,
    RESOURCE_KINDS,
    SETTABLE_STATUSES,
    STATUSES,
    FieldSpec,
    ResourceService,
)
from dispatch.resources_csv import COLUMNS, MAX_BYTES

from .api import Api, ApiCall, Param
from .auth import Role
from .calls_api import CALL
from .errors import invalid
from .validation import name_schema, text_schema


class PlacedCall(Protocol):
    @property
    def id(self) -> str: ...

    def as_dict(self) -> dict[str, Any]: ...


class CallPlacer(Protocol):
    """What the routes need of ``dispatch.calls.CallService``."""

    def create(self, targets: list[str], mode: str = ..., *, operator: str | None = ...,
               incident_id: int | None = ...) -> PlacedCall: ...


_LAT = {"type": "number", "minimum": -90, "maximum": 90,
        "description": "Latitude, decimal degrees (WGS-84), north positive"}
_LON = {"type": "number", "minimum": -180, "maximum": 180,
        "description": "Longitude, decimal degrees (WGS-84), east positive"}
LOCATION: dict[str, Any] = {
    "type": "object", "nullable": True, "required": ["lat", "lon"],
    "additionalProperties": False, "properties": {"lat": _LAT, "lon": _LON},
    "description": "Where it is (WGS-84, as a GPS gives it; points from 高德/腾讯 maps are "
                   "GCJ-02 and shifted by up to ~700 m: use one datum throughout); null for "
                   "unknown"}
CONTACT: dict[str, Any] = {
    "type": "object", "required": ["name", "phone"], "additionalProperties": False,
    "properties": {
        "name": {**name_schema(PERSON_MAX), "description": "Who (联系人)"},
        "phone": {**name_schema(PHONE_MAX),
                  "description": "What the hub dials: a directory person's name, a SIP user "
                                 "or a telephone number (spaces, dashes, dots and brackets in "
                                 "a number are dropped)"},
        "title": {**text_schema(PERSON_MAX), "description": "Their role (队长, 值班室...)"}}}
_CONTACTS = {"type": "array", "items": CONTACT, "maxItems": MAX_CONTACTS,
             "description": "People to call about it, in order (the first is the default "
                            "of the one-click call); on PATCH, replaces them all"}
_COMMON: dict[str, Any] = {
    "name": {**name_schema(NAME_MAX), "description": "The resource's name"},
    "status": {"type": "string", "enum": list(SETTABLE_STATUSES),
               "description": "available (default) or unavailable; dispatched is set by "
                              "dispatching it"},
    "location": LOCATION,
    "address": {**text_schema(ADDRESS_MAX), "description": "Where it is, in words"},
    "contacts": _CONTACTS,
}


def _field_schema(spec: FieldSpec) -> dict[str, Any]:
    schema: dict[str, Any]
    if spec.type == "text":
        schema = text_schema(spec.limit)
    elif spec.type == "names":
        schema = {"type": "array", "items": name_schema(PERSON_MAX), "maxItems": spec.limit,
                  "uniqueItems": True}
    else:
        schema = {"type": "integer", "minimum": 0, "maximum": MAX_COUNT}
        if spec.nullable:
            schema["nullable"] = True
    kinds = [k for k in RESOURCE_KINDS if spec in KIND_FIELDS[k]]
    return {**schema, "description": f"{spec.description} ({', '.join(kinds)} only)"}


_KIND_PROPERTIES: dict[str, dict[str, Any]] = {
    kind: {spec.name: _field_schema(spec) for spec in KIND_FIELDS[kind]}
    for kind in RESOURCE_KINDS}
_ALL_KIND_PROPERTIES: dict[str, Any] = {
    name: schema for kind in RESOURCE_KINDS for name, schema in _KIND_PROPERTIES[kind].items()}
_KIND = {"type": "string", "enum": list(RESOURCE_KINDS),
         "description": "; ".join(f"{k}: {KIND_LABELS[k]}" for k in RESOURCE_KINDS)}

NEW_RESOURCE: dict[str, Any] = {
    "type": "object", "required": ["kind", "name"], "additionalProperties": False,
    "description": "A resource: the common fields and those of its kind only",
    "properties": {"kind": _KIND, **_COMMON, **_ALL_KIND_PROPERTIES},
    "anyOf": [{"properties": {"kind": {"enum": [kind]}, **_COMMON, **_KIND_PROPERTIES[kind]},
               "additionalProperties": False} for kind in RESOURCE_KINDS]}
RESOURCE_CHANGES: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "description": "The fields to change (the others stay); kind-specific fields must be "
                   "the resource's kind's, and the kind itself cannot change",
    "properties": {**_COMMON, **_ALL_KIND_PROPERTIES}}

RESOURCE: dict[str, Any] = {"type": "object", "properties": {
    "id": {"type": "integer"}, "kind": _KIND, "name": {"type": "string"},
    "status": {"type": "string", "enum": list(STATUSES)},
    "location": LOCATION, "address": {"type": "string", "nullable": True},
    "contacts": {"type": "array", "items": CONTACT},
    **{name: {**schema, "nullable": True} for name, schema in _ALL_KIND_PROPERTIES.items()},
    "dispatched_to": {"type": "array", "items": {"type": "integer"},
                      "description": "Incidents it is out on now"},
    "created_at": {"type": "number"}, "updated_at": {"type": "number"},
    "distance_m": {"type": "number", "nullable": True,
                   "description": "Only when sorted by distance: metres from the incident "
                                  "or point (null: the resource has no location)"}}}
RESOURCES: dict[str, Any] = {
    "type": "array", "items": RESOURCE,
    "description": "Nearest first with distance_m when near= or lat/lon is given"}
DISPATCH: dict[str, Any] = {"type": "object", "properties": {
    "id": {"type": "integer"}, "incident_id": {"type": "integer"},
    "resource_id": {"type": "integer", "nullable": True,
                    "description": "null once the resource was removed"},
    "kind": _KIND, "name": {"type": "string"},
    "quantity": {"type": "integer", "nullable": True,
                 "description": "Taken from stock (supplies, equipment)"},
    "unit": {"type": "string", "nullable": True}, "note": {"type": "string", "nullable": True},
    "distance_m": {"type": "number", "nullable": True,
                   "description": "From the incident when dispatched, if both had a location"},
    "state": {"type": "string", "enum": ["active", "released"]},
    "dispatched_by": {"type": "string", "nullable": True}, "dispatched_at": {"type": "number"},
    "released_by": {"type": "string", "nullable": True},
    "released_at": {"type": "number", "nullable": True}}}
_INCIDENT_ID = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
NEW_DISPATCH: dict[str, Any] = {
    "type": "object", "required": ["resource_id"], "additionalProperties": False,
    "properties": {
        "resource_id": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
        "quantity": {"type": "integer", "minimum": 1, "maximum": MAX_COUNT,
                     "description": "Supplies and equipment: how many to take from stock "
                                    "(required, at most what is in stock); others: omit"},
        "note": {**text_schema(NOTE_MAX), "description": "For the incident's timeline"}}}
CONTACT_CALL: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "contact": {"description": "Which contact: its index (0 = first, the default) or "
                                   "its name (the first of that name)",
                    "anyOf": [{"type": "integer", "minimum": 0, "maximum": MAX_CONTACTS - 1},
                              {**name_schema(PERSON_MAX)}]},
        "incident_id": {**_INCIDENT_ID,
                        "description": "The incident the call is about: the call is "
                                       "attached to it and its timeline notes the call"}}}
IMPORT_RESULT: dict[str, Any] = {"type": "object", "properties": {
    "created": {"type": "integer"}, "updated": {"type": "integer"}}}


def _path_id(call: ApiCall, key: str, what: str) -> int:
    text = call.path[key]
    if not text.isascii() or not text.isdigit() or len(text) > 18 or int(text) < 1:
        raise NotFound(f"no {what} {text!r}", f"{what}-not-found")
    return int(text)


def resources_routes(api: Api, resources: ResourceService,
                     calls: CallPlacer) -> list[BaseRoute]:
    """The routes of the resources feature (``calls``: the hub's ``CallService``)."""

    async def list_resources(call: ApiCall) -> Any:
        q = call.query
        if ("lat" in q) != ("lon" in q):
            raise invalid("give lat and lon together")
        point = (q["lat"], q["lon"]) if "lat" in q else None
        if point is not None and "near" in q:
            raise invalid("give either near (an incident) or lat and lon, not both")
        found = resources.list(kind=q.get("kind"), status=q.get("status"), query=q.get("q"),
                               near=point, near_incident=q.get("near"),
                               radius_m=q.get("radius"),
                               limit=q.get("limit", DEFAULT_LIMIT))
        return [r.as_dict() for r in found]

    async def create_resource(call: ApiCall) -> Any:
        fields = dict(call.body)
        resource = resources.create(fields.pop("kind"), fields.pop("name"), **fields)
        call.status, call.target = 201, f"resource:{resource.id}"
        call.headers["location"] = f"/api/resources/{resource.id}"
        call.detail = {"kind": resource.kind, "name": resource.name}
        return resource.as_dict()

    async def get_resource(call: ApiCall) -> Any:
        return resources.get(_path_id(call, "resource_id", "resource")).as_dict()

    async def update_resource(call: ApiCall) -> Any:
        call.target = f"resource:{call.path['resource_id']}"
        call.detail = {"fields": sorted(call.body)}
        return resources.update(_path_id(call, "resource_id", "resource"),
                                **call.body).as_dict()

    async def remove_resource(call: ApiCall) -> Any:
        call.target = f"resource:{call.path['resource_id']}"
        resources.remove(_path_id(call, "resource_id", "resource"))
        call.status = 204

    async def import_csv(call: ApiCall) -> Any:
        result = resources.import_csv(call.body)
        call.detail = result.to_dict()
        return result.to_dict()

    async def call_contact(call: ApiCall) -> Any:
        call.target = f"resource:{call.path['resource_id']}"
        body = call.body or {}
        incident_id: int | None = body.get("incident_id")
        operator = call.operator.operator

        def dial(phone: str) -> PlacedCall:
            return calls.create([phone], "single", operator=operator, incident_id=incident_id)

        _, contact, placed = resources.call_contact(
            _path_id(call, "resource_id", "resource"), body.get("contact", 0), dial,
            incident_id=incident_id, operator=operator)
        call.status = 201
        call.headers["location"] = f"/api/calls/{placed.id}"
        call.detail = {"contact": contact.name, "phone": contact.phone, "call_id": placed.id,
                       "incident_id": incident_id}
        return placed.as_dict()

    async def dispatch_resource(call: ApiCall) -> Any:
        body = call.body
        call.target = f"resource:{body['resource_id']}"
        incident_id = _path_id(call, "incident_id", "incident")
        call.detail = {"incident_id": call.path["incident_id"]}
        dispatch = resources.dispatch(incident_id, body["resource_id"],
                                      quantity=body.get("quantity"), note=body.get("note"),
                                      operator=call.operator.operator)
        call.status = 201
        call.detail = {"incident_id": incident_id, "dispatch_id": dispatch.id,
                       "quantity": dispatch.quantity}
        return dispatch.as_dict()

    async def list_dispatches(call: ApiCall) -> Any:
        found = resources.dispatches(_path_id(call, "incident_id", "incident"))
        return {"dispatches": [d.as_dict() for d in found]}

    async def release_dispatch(call: ApiCall) -> Any:
        call.target = f"dispatch:{call.path['dispatch_id']}"
        dispatch = resources.release(_path_id(call, "dispatch_id", "dispatch"),
                                     incident_id=_path_id(call, "incident_id", "incident"),
                                     operator=call.operator.operator)
        call.detail = {"incident_id": dispatch.incident_id,
                       "resource_id": dispatch.resource_id, "quantity": dispatch.quantity}
        return dispatch.as_dict()

    sup, disp = Role.SUPERVISOR, Role.DISPATCHER
    tags = ("resources",)
    one = {200: ("The resource", RESOURCE)}
    params = (
        Param("kind", {"type": "string", "enum": list(RESOURCE_KINDS)}, "Only this kind"),
        Param("status", {"type": "string", "enum": list(STATUSES)}, "Only this status"),
        Param("q", {"type": "string", "maxLength": NAME_MAX},
              "Text to find in names, addresses, contacts, leaders and members, fields, "
              "warehouses, keepers, plates (case-insensitive)"),
        Param("near", _INCIDENT_ID,
              "An incident id: nearest to its location first, with distance_m (422 if the "
              "incident has no coordinates); resources without a location come last"),
        Param("lat", _LAT, "With lon: nearest to this point first (instead of near)"),
        Param("lon", _LON, "With lat"),
        Param("radius", {"type": "number", "minimum": 1, "maximum": 20_100_000},
              "With near or lat/lon: only resources within this many metres"),
        Param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                        "default": DEFAULT_LIMIT}, f"At most this many (default {DEFAULT_LIMIT})"),
    )
    R = api.route
    return [
        R("GET", "/api/resources", list_resources, role=disp, tags=tags, params=params,
          errors=(404,), summary="List resources, or the nearest to an incident",
          description="By id, or nearest first with near (an incident) or lat/lon.",
          responses={200: ("The resources", RESOURCES)}),
        R("POST", "/api/resources", create_resource, role=sup, tags=tags,
          action="resource.create", body=NEW_RESOURCE, errors=(409,),
          summary="Add a resource: team, expert, supply, equipment, shelter or vehicle",
          description="A name is unique per kind (and, for supplies and equipment, per "
                      "warehouse): 409 otherwise.",
          responses={201: ("The new resource (its URL in Location)", RESOURCE)}),
        R("POST", "/api/resources/import", import_csv, role=sup, tags=tags,
          action="resource.import", summary="Import resources from CSV",
          description=f"Columns (header row, any order, kind and name required): "
                      f"{', '.join(COLUMNS)}. contacts is NAME:PHONE[:TITLE] items separated "
                      "by ';', members names separated by ';' or '、'. A row matching a "
                      "stored resource by kind and name (and warehouse, for supplies and "
                      "equipment) updates its non-empty cells. All or nothing: a 422 lists "
                      "every bad line.",
          body={"type": "string"}, body_media=("text/csv", "text/plain"), max_body=MAX_BYTES,
          errors=(409,), responses={200: ("How many were added and updated", IMPORT_RESULT)}),
        R("GET", "/api/resources/{resource_id}", get_resource, role=disp, tags=tags,
          summary="One resource", responses=one),
        R("PATCH", "/api/resources/{resource_id}", update_resource, role=sup, tags=tags,
          action="resource.update", body=RESOURCE_CHANGES, errors=(409,),
          summary="Change a resource's fields",
          description="409 when changing the status of a resource out on an incident, or "
                      "a name another resource of its kind has.", responses=one),
        R("DELETE", "/api/resources/{resource_id}", remove_resource, role=sup, tags=tags,
          action="resource.remove", errors=(409,),
          summary="Remove a resource (not while it is dispatched)",
          description="Its dispatch history stays, with its name.",
          responses={204: ("Removed", None)}),
        R("POST", "/api/resources/{resource_id}/call", call_contact, role=disp, tags=tags,
          action="resource.call", body=CONTACT_CALL, body_required=False, errors=(409,),
          summary="Call one of the resource's contacts (one click)",
          description="Places a single call to the contact's phone; with incident_id the "
                      "call belongs to that incident and its timeline notes "
                      "resource.contact_called.",
          responses={201: ("The call, ringing (its URL in Location)", CALL)}),
        R("GET", "/api/incidents/{incident_id}/dispatches", list_dispatches, role=disp,
          tags=tags, summary="Resources dispatched to an incident (released ones too)",
          responses={200: ("Its dispatches, oldest first", {"type": "object", "properties": {
              "dispatches": {"type": "array", "items": DISPATCH}}})}),
        R("POST", "/api/incidents/{incident_id}/dispatches", dispatch_resource, role=disp,
          tags=tags, action="resource.dispatch", body=NEW_DISPATCH, errors=(409,),
          summary="Dispatch a resource to an incident",
          description="A team, expert, shelter or vehicle becomes dispatched (409 if it is "
                      "already, or unavailable); supplies and equipment give quantity, taken "
                      "from stock. The incident's timeline gets resource.dispatched.",
          responses={201: ("The dispatch", DISPATCH)}),
        R("POST", "/api/incidents/{incident_id}/dispatches/{dispatch_id}/release",
          release_dispatch, role=disp, tags=tags, action="resource.release", errors=(409,),
          summary="Release a dispatched resource",
          description="It is available again and its quantity back in stock; the "
                      "incident's timeline gets resource.released.",
          responses={200: ("The released dispatch", DISPATCH)}),
    ]

"""Structured response plans (预案): who is mobilised, what is dispatched, what is done.

A plan is written for an incident type (a subtype such as ``fire`` or a whole
category) and a nominal level. Its body:

* ``roles``: the response organisation, each filled by a person (by directory name,
  or a SIP user: ``hub user add NAME`` makes NAME a person) with a ``deputy`` called
  when the person cannot be reached in time. A role with a ``level`` joins only when
  the response is at that level or a more severe one (I is the most severe): raising
  the level mobilises those additions, lowering it stands them down.
* ``resources``: what to dispatch (a kind and a quantity, optionally a name).
* ``tasks``: titles with deadlines (seconds after activation), optionally a role's.
* ``notification``: the text sent to a responder no call reached; ``closing_notice``
  the one sent to everyone when the response ends.

Plans are validated as a whole before anything is stored: a missing person, a level
out of range or a negative quantity is refused with the field's path in the message.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from storage.sql import Conflict as DbConflict
from storage.sql import Database, Row

from . import taxonomy
from .errors import Conflict, InvalidInput, NotFound
from .incidents import COMPONENT, MIGRATIONS, clean_text

RESOURCE_KINDS: Final = ("team", "expert", "supply", "equipment", "shelter", "vehicle")
DEFAULT_ESCALATE_S: Final = 60.0
MAX_ROLES: Final = 500


def _seconds(value: object, field: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{field} must be a number of seconds")
    if not low < value <= high:
        raise InvalidInput(f"{field} must be more than {low:g} and at most {high:g} seconds")
    return float(value)


def _only(item: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(item) - allowed
    if unknown:
        raise InvalidInput(f"{where}: unknown field {sorted(unknown)[0]!r}")


class PlanService:
    """Plans on the incidents database (they share its migrations)."""

    def __init__(self, db: Database, *, person_exists: Callable[[str], bool],
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.person_exists = person_exists
        self.clock = clock
        db.migrate(COMPONENT, MIGRATIONS)

    def validate(self, fields: Mapping[str, Any], *, partial: bool = False,
                 base: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The plan ``fields`` describe, checked whole (``base`` + ``fields`` for PATCH)."""
        allowed = {"name", "incident_type", "level", "escalate_after_s", "roles", "resources",
                   "tasks", "notification", "closing_notice", "description"}
        _only(fields, allowed, "plan")
        merged = {**(base or {}), **fields}
        for required in ("name", "incident_type", "level", "roles"):
            if required not in merged:
                raise InvalidInput(f"{required} is required")
        plan: dict[str, Any] = {
            "name": clean_text(merged["name"], "name", 200, required=True),
            "incident_type": taxonomy.incident_type(merged["incident_type"],
                                                    "incident_type").code,
            "level": taxonomy.level(merged["level"]),
            "escalate_after_s": _seconds(merged.get("escalate_after_s", DEFAULT_ESCALATE_S),
                                         "escalate_after_s", 0.0, 3600.0),
            "notification": clean_text(merged.get("notification"), "notification", 1000),
            "closing_notice": clean_text(merged.get("closing_notice"), "closing_notice", 1000),
            "description": clean_text(merged.get("description"), "description", 4000),
        }
        plan["roles"] = self._roles(merged["roles"])
        plan["resources"] = self._resources(merged.get("resources") or [])
        plan["tasks"] = self._tasks(merged.get("tasks") or [], {r["role"] for r in plan["roles"]})
        return plan

    def _roles(self, roles: object) -> list[dict[str, Any]]:
        if not isinstance(roles, list) or not roles:
            raise InvalidInput("roles must be a non-empty list")
        if len(roles) > MAX_ROLES:
            raise InvalidInput(f"roles: at most {MAX_ROLES}")
        out = []
        people: set[str] = set()
        for i, role in enumerate(roles):
            where = f"roles[{i}]"
            if not isinstance(role, Mapping):
                raise InvalidInput(f"{where} must be an object")
            _only(role, {"role", "person", "deputy", "level"}, where)
            name = clean_text(role.get("role"), f"{where}.role", 100, required=True)
            person = clean_text(role.get("person"), f"{where}.person", 100, required=True)
            deputy = clean_text(role.get("deputy"), f"{where}.deputy", 100)
            assert person is not None
            for who, field in ((person, "person"), (deputy, "deputy")):
                if who is not None and not self.person_exists(who):
                    raise InvalidInput(f"{where}.{field}: no person {who!r} in the directory")
            if deputy == person:
                raise InvalidInput(f"{where}.deputy must be someone other than the person")
            if person in people:
                raise InvalidInput(f"{where}.person: {person!r} already fills another role")
            people.add(person)
            level = taxonomy.level(role["level"], f"{where}.level") \
                if role.get("level") is not None else None
            out.append({"role": name, "person": person, "deputy": deputy, "level": level})
        return out

    @staticmethod
    def _resources(items: object) -> list[dict[str, Any]]:
        if not isinstance(items, list):
            raise InvalidInput("resources must be a list")
        out = []
        for i, item in enumerate(items):
            where = f"resources[{i}]"
            if not isinstance(item, Mapping):
                raise InvalidInput(f"{where} must be an object")
            _only(item, {"kind", "quantity", "name", "level"}, where)
            kind = item.get("kind")
            if kind not in RESOURCE_KINDS:
                raise InvalidInput(f"{where}.kind must be one of {', '.join(RESOURCE_KINDS)}")
            quantity = item.get("quantity", 1)
            if isinstance(quantity, bool) or not isinstance(quantity, int):
                raise InvalidInput(f"{where}.quantity must be an integer")
            if quantity < 1:
                raise InvalidInput(f"{where}.quantity must be at least 1, not {quantity}")
            level = taxonomy.level(item["level"], f"{where}.level") \
                if item.get("level") is not None else None
            out.append({"kind": kind, "quantity": quantity,
                        "name": clean_text(item.get("name"), f"{where}.name", 200),
                        "level": level})
        return out

    @staticmethod
    def _tasks(items: object, roles: set[str | None]) -> list[dict[str, Any]]:
        if not isinstance(items, list):
            raise InvalidInput("tasks must be a list")
        out = []
        for i, item in enumerate(items):
            where = f"tasks[{i}]"
            if not isinstance(item, Mapping):
                raise InvalidInput(f"{where} must be an object")
            _only(item, {"title", "role", "deadline_s"}, where)
            role = clean_text(item.get("role"), f"{where}.role", 100)
            if role is not None and role not in roles:
                raise InvalidInput(f"{where}.role: the plan has no role {role!r}")
            deadline = item.get("deadline_s")
            out.append({"title": clean_text(item.get("title"), f"{where}.title", 300,
                                            required=True),
                        "role": role,
                        "deadline_s": None if deadline is None else _seconds(
                            deadline, f"{where}.deadline_s", 0.0, 30 * 86400.0)})
        return out

    # -- storage -------------------------------------------------------------------------------
    @staticmethod
    def _body(plan: Mapping[str, Any]) -> str:
        keys = ("roles", "resources", "tasks", "notification", "closing_notice", "description")
        return json.dumps({k: plan[k] for k in keys}, ensure_ascii=False)

    @staticmethod
    def as_dict(row: Row) -> dict[str, Any]:
        body = json.loads(row["body"])
        return {"id": row["id"], "name": row["name"], "incident_type": row["incident_type"],
                "level": row["level"], "level_label": taxonomy.level_label(row["level"]),
                "escalate_after_s": row["escalate_after_s"], **body,
                "created_at": row["created_at"], "updated_at": row["updated_at"]}

    def create(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        plan = self.validate(fields)
        now = self.clock()
        try:
            with self.db.transaction() as tx:
                plan_id = tx.insert(
                    "INSERT INTO plans (name, incident_type, level, escalate_after_s, body,"
                    " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (plan["name"], plan["incident_type"], plan["level"],
                     plan["escalate_after_s"], self._body(plan), now, now))
        except DbConflict:
            raise Conflict(f"a plan named {plan['name']!r} already exists") from None
        return self.get(plan_id)

    def get(self, plan_id: int) -> dict[str, Any]:
        row = self.db.query_one("SELECT * FROM plans WHERE id = ?", (plan_id,))
        if row is None:
            raise NotFound(f"no plan {plan_id}")
        return self.as_dict(row)

    def find(self, *, incident_type: str | None = None,
             level: int | None = None) -> list[dict[str, Any]]:
        plans = [self.as_dict(r) for r in self.db.query("SELECT * FROM plans ORDER BY id")]
        if incident_type is not None:
            code = taxonomy.incident_type(incident_type, "incident_type").code
            plans = [p for p in plans if taxonomy.matches(p["incident_type"], code)]
        if level is not None:
            plans = [p for p in plans if p["level"] == level]
        return plans

    def update(self, plan_id: int, fields: Mapping[str, Any]) -> dict[str, Any]:
        current = self.get(plan_id)
        plan = self.validate(fields, base={
            k: v for k, v in current.items()
            if k not in ("id", "level_label", "created_at", "updated_at")})
        try:
            with self.db.transaction() as tx:
                tx.execute("UPDATE plans SET name = ?, incident_type = ?, level = ?,"
                           " escalate_after_s = ?, body = ?, updated_at = ? WHERE id = ?",
                           (plan["name"], plan["incident_type"], plan["level"],
                            plan["escalate_after_s"], self._body(plan), self.clock(), plan_id))
        except DbConflict:
            raise Conflict(f"a plan named {plan['name']!r} already exists") from None
        return self.get(plan_id)

    def remove(self, plan_id: int) -> None:
        self.get(plan_id)
        try:
            with self.db.transaction() as tx:
                tx.execute("DELETE FROM plans WHERE id = ?", (plan_id,))
        except DbConflict:
            raise Conflict(f"plan {plan_id} has been activated: it stays for the "
                           "record") from None

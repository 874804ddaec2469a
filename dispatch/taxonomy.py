"""Incident types and levels as the emergency-management field names them.

Categories follow the national emergency classification (自然灾害、事故灾难、公共卫生
事件、社会安全事件); each has subtypes. An incident's ``type`` is a subtype code
(``fire``) or, when not yet known, a category code (``accident``); the Chinese or
English label is accepted as input too (``火灾``, ``Fire``). Levels run from I (特别
重大, the most severe) to IV (一般); the API speaks them as 1..4 and accepts ``"III"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from .errors import InvalidInput


@dataclass(frozen=True, slots=True)
class IncidentType:
    code: str
    category: str
    """The category's code (a category is its own category)."""
    zh: str
    en: str


_CATEGORIES: Final = (
    ("natural_disaster", "自然灾害", "Natural disaster", (
        ("earthquake", "地震", "Earthquake"), ("flood", "洪涝", "Flood"),
        ("typhoon", "台风", "Typhoon"), ("rainstorm", "暴雨", "Rainstorm"),
        ("landslide", "山体滑坡", "Landslide"), ("debris_flow", "泥石流", "Debris flow"),
        ("forest_fire", "森林火灾", "Forest fire"), ("drought", "干旱", "Drought"),
        ("snowstorm", "暴雪冰冻", "Snowstorm and freezing"),
        ("geological", "地质灾害", "Geological hazard"))),
    ("accident", "事故灾难", "Accident", (
        ("fire", "火灾", "Fire"), ("traffic", "交通事故", "Traffic accident"),
        ("hazmat", "危险化学品事故", "Hazardous chemicals"),
        ("mine", "矿山事故", "Mine accident"),
        ("building_collapse", "建筑坍塌", "Building collapse"),
        ("gas_leak", "燃气泄漏", "Gas leak"),
        ("industrial", "生产安全事故", "Industrial accident"),
        ("power_outage", "大面积停电", "Power outage"),
        ("explosion", "爆炸事故", "Explosion"), ("drowning", "溺水事故", "Drowning"),
        ("environmental", "环境污染事件", "Environmental pollution"))),
    ("public_health", "公共卫生事件", "Public health", (
        ("epidemic", "传染病疫情", "Epidemic"), ("food_poisoning", "食物中毒", "Food poisoning"),
        ("occupational_poisoning", "职业中毒", "Occupational poisoning"),
        ("animal_epidemic", "动物疫情", "Animal epidemic"))),
    ("public_safety", "社会安全事件", "Public safety", (
        ("mass_incident", "群体性事件", "Mass incident"),
        ("terrorism", "恐怖袭击", "Terrorist attack"),
        ("criminal", "刑事案件", "Criminal case"),
        ("stampede", "踩踏事件", "Stampede"))),
    ("other", "其他", "Other", ()),
)

TYPES: Final[dict[str, IncidentType]] = {}
for _code, _zh, _en, _subtypes in _CATEGORIES:
    TYPES[_code] = IncidentType(_code, _code, _zh, _en)
    for _sub, _szh, _sen in _subtypes:
        TYPES[_sub] = IncidentType(_sub, _code, _szh, _sen)

_ALIASES: Final[dict[str, str]] = {}
for _t in TYPES.values():
    _en = _t.en.lower()
    for _name in (_t.code, _t.zh, _en, _en.replace(" ", "_"), _en.replace(" ", "-"),
                  _t.code.replace("_", " "), _t.code.replace("_", "-")):
        _ALIASES.setdefault(_name, _t.code)
# Other words the field uses for the same things.
for _name, _code in (("public_security", "public_safety"), ("security", "public_safety"),
                     ("natural", "natural_disaster"), ("disaster", "natural_disaster"),
                     ("health", "public_health"), ("chemical", "hazmat"),
                     ("chemical_leak", "hazmat"), ("collapse", "building_collapse"),
                     ("traffic_accident", "traffic"), ("road_accident", "traffic"),
                     ("wildfire", "forest_fire"), ("building_fire", "fire"),
                     ("infectious_disease", "epidemic"), ("terror", "terrorism"),
                     ("火警", "fire"), ("车祸", "traffic"), ("危化品泄漏", "hazmat"),
                     ("疫情", "epidemic"), ("暴恐", "terrorism"), ("山洪", "flood"),
                     ("洪水", "flood"), ("森林火灾", "forest_fire")):
    _ALIASES.setdefault(_name, _code)

LEVELS: Final = ("I", "II", "III", "IV")
# Roman numeral characters and Chinese numerals as dispatchers type them (Ⅲ级, 三级).
_LEVEL_WORDS: Final = {"Ⅰ": "I", "Ⅱ": "II", "Ⅲ": "III", "Ⅳ": "IV",
                       "一": "I", "二": "II", "三": "III", "四": "IV"}
LEVEL_NAMES_ZH: Final = ("特别重大", "重大", "较大", "一般")


def incident_type(value: object, field: str = "type") -> IncidentType:
    """The type ``value`` names (code, Chinese or English label), or InvalidInput."""
    if isinstance(value, str):
        text = value.strip()
        # "accident/fire", "accident.fire": a category and its subtype, named together.
        for sep in ("/", ".", ":"):
            if sep in text:
                category, _, sub = text.rpartition(sep)
                found = _ALIASES.get(sub.strip()) or _ALIASES.get(sub.strip().lower())
                if found is not None and TYPES[found].category == (
                        _ALIASES.get(category.strip()) or _ALIASES.get(category.strip().lower())):
                    return TYPES[found]
        code = _ALIASES.get(text) or _ALIASES.get(text.lower())
        if code is not None:
            return TYPES[code]
    known = ", ".join(TYPES)
    raise InvalidInput(f"{field}: unknown incident type {value!r}; one of {known}")


def level(value: object, field: str = "level") -> int:
    """1..4 from ``3``, ``"3"``, ``"III"`` or ``"iii"``; InvalidInput otherwise."""
    if isinstance(value, bool):
        raise InvalidInput(f"{field} must be 1-4 or I-IV, not {value!r}")
    if isinstance(value, int) and 1 <= value <= 4:
        return value
    if isinstance(value, str):
        text = value.strip().upper().removeprefix("LEVEL").strip().removesuffix("级")
        text = _LEVEL_WORDS.get(text, text)
        if text in LEVELS:
            return LEVELS.index(text) + 1
        if text.isdigit() and 1 <= int(text) <= 4:
            return int(text)
    raise InvalidInput(f"{field} must be 1-4 or I-IV (I is the most severe), not {value!r}")


def level_label(value: int) -> str:
    return LEVELS[value - 1]


def types_as_list() -> list[dict[str, Any]]:
    return [{"code": t.code, "category": t.category, "zh": t.zh, "en": t.en}
            for t in TYPES.values()]


def matches(plan_type: str, incident_type_code: str) -> bool:
    """A plan written for a category covers all its subtypes."""
    wanted = TYPES.get(plan_type)
    got = TYPES.get(incident_type_code)
    if wanted is None or got is None:
        return False
    return wanted.code == got.code or wanted.code == got.category

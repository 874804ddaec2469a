"""Distances on the Earth for "what is nearest to this incident": pure functions.

Coordinates are decimal degrees, WGS-84 (what a GPS, a phone's location or a GB28181
device reports). Chinese web maps show GCJ-02 (高德, 腾讯) or BD-09 (百度) instead,
shifted by up to ~700 m: distances stay right if every point uses the same datum, so
enter them all from one source.

The haversine formula on a sphere of the WGS-84 mean radius is within 0.5 % of the
ellipsoidal distance, which is plenty for ranking teams and warehouses; it is also
well-conditioned for short distances, unlike the spherical law of cosines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from .errors import InvalidInput

EARTH_RADIUS_M: Final = 6_371_008.8
"""The WGS-84 mean radius R1 = (2a + b) / 3, in metres."""

LatLon = tuple[float, float]
"""``(lat, lon)`` in decimal degrees."""


def check_coordinates(lat: object, lon: object, what: str = "location") -> LatLon:
    """``(lat, lon)`` as floats if they are finite numbers in range; ``InvalidInput`` else."""
    values: list[float] = []
    for name, value, limit in (("lat", lat, 90.0), ("lon", lon, 180.0)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInput(f"{what}.{name} must be a number of degrees, got {value!r}",
                               "invalid-location")
        number = float(value)
        if not math.isfinite(number) or not -limit <= number <= limit:
            raise InvalidInput(f"{what}.{name} must be between {-limit:g} and {limit:g}, "
                               f"got {value!r}", "invalid-location")
        values.append(number)
    return values[0], values[1]


def distance_m(a: LatLon, b: LatLon) -> float:
    """The great-circle distance between two points, in metres (haversine)."""
    lat1, lon1 = math.radians(a[0]), math.radians(a[1])
    lat2, lon2 = math.radians(b[0]), math.radians(b[1])
    h = (math.sin((lat2 - lat1) / 2) ** 2
         + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2)
    # Rounding can push h a hair above 1 for antipodal points.
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, h)))


@dataclass(frozen=True, slots=True)
class BoundingBox:
    """Every point within some distance of a centre lies in this box (and more do).

    Used to let the database discard far rows with plain ``BETWEEN`` on ``lat``/``lon``
    before the exact distance is computed. ``west > east`` when the box crosses the
    antimeridian (its longitudes wrap from 180 to -180).
    """

    south: float
    north: float
    west: float
    east: float

    @property
    def crosses_antimeridian(self) -> bool:
        return self.west > self.east

    def lon_ranges(self) -> tuple[tuple[float, float], ...]:
        """The box's longitudes as one or two ``(low, high)`` intervals."""
        if self.crosses_antimeridian:
            return (self.west, 180.0), (-180.0, self.east)
        return ((self.west, self.east),)

    def contains(self, point: LatLon) -> bool:
        lat, lon = point
        return self.south <= lat <= self.north and any(
            low <= lon <= high for low, high in self.lon_ranges())


def bounding_box(centre: LatLon, radius_m: float) -> BoundingBox:
    """The smallest latitude/longitude box holding the circle of ``radius_m`` metres
    around ``centre`` (a whole band of longitudes when the circle holds a pole).

    After J. P. Matuschek, "Finding points within a distance of a latitude/longitude
    using bounding coordinates" (2010).
    """
    if not math.isfinite(radius_m) or radius_m < 0:
        raise InvalidInput(f"the radius must be a finite number of metres >= 0, got "
                           f"{radius_m!r}", "invalid-radius")
    lat, lon = check_coordinates(*centre, what="centre")
    # A hair wider than exact, so rounding never drops a point on the circle itself.
    angle = radius_m * (1 + 1e-9) / EARTH_RADIUS_M + 1e-12
    if angle >= math.pi:
        return BoundingBox(-90.0, 90.0, -180.0, 180.0)
    phi = math.radians(lat)
    south, north = phi - angle, phi + angle
    if south <= -math.pi / 2 or north >= math.pi / 2:
        # A pole is inside the circle: every longitude is.
        return BoundingBox(math.degrees(max(south, -math.pi / 2)),
                           math.degrees(min(north, math.pi / 2)), -180.0, 180.0)
    delta = math.degrees(math.asin(math.sin(angle) / math.cos(phi)))
    west, east = lon - delta, lon + delta
    if west < -180.0:
        west += 360.0
    if east > 180.0:
        east -= 360.0
    return BoundingBox(math.degrees(south), math.degrees(north), west, east)

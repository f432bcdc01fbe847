"""HubSpot contact properties as an account defines them, and values in the form each type takes.

HubSpot receives every value as a string and checks it against the property's type: a `date`
only `YYYY-MM-DD` (or epoch ms at midnight UTC), a `datetime` ISO 8601 with a zone, a `number`
digits with at most one period and no commas, a `bool` `true`/`false`, an `enumeration` one of
its option values (several, `;`-separated, for a checkbox). One bad value fails a whole batch
of 100, so values are converted here and a contact whose value cannot be is refused alone,
before it costs a request.
"""

from __future__ import annotations

import collections
import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from etl_assets import settings
from etl_assets.contacts.mapping import ColumnMap, FieldSpec
from etl_assets.text import clip

# The field type HubSpot pairs with each type when the sync creates a property.
CREATED_FIELD_TYPES = {
    "string": "text",
    "number": "number",
    "date": "date",
    "datetime": "date",
    "bool": "booleancheckbox",
}
# A contact field that holds dates (`type: date` in the map) fits these property types only.
DATE_FIELD_TARGETS = {"date", "datetime", "string"}
# Values refused in a row, none converted, before a property counts as refused throughout.
REFUSED_THROUGHOUT = 20
_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?")
_TRUE = {"true", "yes", "y", "1", "on"}
_FALSE = {"false", "no", "n", "0", "off"}


@dataclass(frozen=True)
class PropertyDefinition:
    name: str
    type: str
    field_type: str = "text"
    options: tuple[tuple[str, str], ...] = ()  # (value, label)
    read_only: bool = False  # modificationMetadata.readOnlyValue
    calculated: bool = False
    external_options: bool = False  # options live elsewhere (owners, pipelines): not checkable here

    @classmethod
    def from_api(cls, prop: Any) -> PropertyDefinition:
        """From the client's `Property` model (GET /crm/v3/properties/contacts)."""
        meta = prop.modification_metadata
        return cls(
            name=prop.name,
            type=prop.type,
            field_type=prop.field_type or "",
            options=tuple((str(o.value), str(o.label)) for o in prop.options or []),
            read_only=bool(meta and meta.read_only_value),
            calculated=bool(prop.calculated),
            external_options=bool(prop.external_options),
        )

    @property
    def writable(self) -> bool:
        return not (self.read_only or self.calculated)

    @property
    def multiple(self) -> bool:
        return self.field_type == "checkbox"

    @property
    def checks_options(self) -> bool:
        """A dropdown whose options are checked here (owners and pipelines keep theirs elsewhere)."""
        return self.type == "enumeration" and not self.external_options


class ValueRefused(ValueError):
    """A value the target property's type cannot take; `code` is HubSpot's name for the error."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def declared(spec: FieldSpec) -> PropertyDefinition:
    """What the column map alone says of a property: its declared type, else the field's."""
    return PropertyDefinition(
        name=spec.hubspot or "",
        type=spec.hubspot_type or spec.type,
        field_type=CREATED_FIELD_TYPES.get(spec.hubspot_type or spec.type, "text"),
    )


def incompatibility(spec: FieldSpec, definition: PropertyDefinition) -> str | None:
    """Why `definition` cannot take the map's field, whatever the contact; None when it can."""
    where = f"HubSpot property {definition.name!r} (field {spec.field!r})"
    if definition.calculated:
        return f"{where} is calculated by HubSpot: no value can be written to it"
    if definition.read_only:
        return f"{where} is read-only: no value can be written to it"
    if spec.hubspot_type and spec.hubspot_type != definition.type:
        return f"{where} has type {definition.type}; the column map declares {spec.hubspot_type}"
    if spec.type == "date" and definition.type not in DATE_FIELD_TARGETS:
        return f"{where} has type {definition.type}; the field holds dates"
    return None


def mapping_problems(
    column_map: ColumnMap, definitions: Mapping[str, PropertyDefinition], may_create: bool
) -> dict[str, str | None]:
    """Each mapped property's problem, None when it has none (a missing one the sync may create has none)."""
    problems: dict[str, str | None] = {}
    for spec in column_map.hubspot_fields:
        name = spec.hubspot or ""
        if name in definitions:
            problems[name] = incompatibility(spec, definitions[name])
        elif not may_create:
            problems[name] = (
                f"HubSpot property {name!r} (field {spec.field!r}) does not exist; create it or set "
                f"{settings.HUBSPOT_CREATE_PROPERTIES}=true"
            )
        elif declared(spec).type not in CREATED_FIELD_TYPES:
            problems[name] = (
                f"HubSpot property {name!r} (field {spec.field!r}) does not exist and the sync creates "
                f"no {declared(spec).type} property: create it with its options in HubSpot"
            )
        else:
            problems[name] = None
    return problems


def to_hubspot(value: Any, definition: PropertyDefinition) -> str:
    """`value` as HubSpot takes it for `definition`'s type, or ValueRefused."""
    kind = definition.type
    if kind == "date":
        return _date(value)
    if kind == "datetime":
        return _datetime(value)
    if kind == "number":
        return _number(value)
    if kind == "bool":
        return _bool(value)
    if definition.checks_options:
        return _enumeration(value, definition)
    return value.isoformat() if isinstance(value, (dt.date, dt.datetime)) else str(value)


def _date(value: Any) -> str:
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        return value.isoformat()
    else:
        text = str(value).strip()
        try:
            return dt.date.fromisoformat(text).isoformat()
        except ValueError:
            pass
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueRefused("INVALID_DATE", f"{clip(text, 40)!r} is not a date (YYYY-MM-DD)") from None
    # A time of day would be lost: HubSpot's date properties hold midnight UTC only.
    if moment.utcoffset() not in (None, dt.timedelta(0)) or moment.time() != dt.time(0):
        raise ValueRefused(
            "INVALID_DATE", f"{moment.isoformat()} is not at midnight UTC; a date property holds days only"
        )
    return moment.date().isoformat()


def _datetime(value: Any) -> str:
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        moment = dt.datetime.combine(value, dt.time(0))
    else:
        text = str(value).strip()
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueRefused("INVALID_DATETIME", f"{clip(text, 40)!r} is not an ISO 8601 date-time") from None
    # A source value without a zone is taken as UTC, the zone HubSpot itself reports in.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _number(value: Any) -> str:
    text = str(value).strip()
    if not _NUMBER.fullmatch(text):
        # Commas are refused, not dropped: "1,5" may mean 1.5 or 15.
        raise ValueRefused(
            "INVALID_LONG", f"{clip(text, 40)!r} is not a number (digits, at most one period, no commas)"
        )
    return text.removeprefix("+")


def _bool(value: Any) -> str:
    text = str(value).strip().lower()
    if text in _TRUE:
        return "true"
    if text in _FALSE:
        return "false"
    raise ValueRefused("INVALID_BOOLEAN", f"{clip(str(value), 40)!r} is not true or false")


def _enumeration(value: Any, definition: PropertyDefinition) -> str:
    """Option values as they are; a label or a value in other letter case becomes its value."""
    text = str(value).strip()
    parts = [part.strip() for part in text.split(";")] if definition.multiple else [text]
    values = [option for option, _label in definition.options]
    by_folded: dict[str, set[str]] = {}
    for option, label in definition.options:
        by_folded.setdefault(option.casefold(), set()).add(option)
        by_folded.setdefault(label.casefold(), set()).add(option)
    chosen = []
    for part in parts:
        if part in values:
            chosen.append(part)
            continue
        candidates = by_folded.get(part.casefold(), set())
        if len(candidates) != 1:
            raise ValueRefused(
                "INVALID_OPTION",
                f"{clip(part, 40)!r} is not one of the options of {definition.name!r}: {clip(', '.join(values), 200)}",
            )
        chosen.append(next(iter(candidates)))
    return ";".join(chosen)


class PropertyWriter:
    """A contact row's HubSpot properties, each value in the form its property's type takes.

    `definitions` are the account's (by name); a property without one is converted by what the
    column map declares (the dry run, which reads nothing from HubSpot). It counts the values it
    converted and refused per property, for `refused_throughout`.
    """

    def __init__(self, column_map: ColumnMap, definitions: Mapping[str, PropertyDefinition] | None = None):
        self.column_map = column_map
        self._targets = [
            (spec, (definitions or {}).get(spec.hubspot or "") or declared(spec)) for spec in column_map.hubspot_fields
        ]
        self._converted: collections.Counter[str] = collections.Counter()
        self._refused: collections.Counter[tuple[str, str]] = collections.Counter()

    def refused_throughout(self, at_least: int = REFUSED_THROUGHOUT) -> tuple[str, str, int] | None:
        """(property, code, values) when a property refused every one of at least `at_least` values:
        then the property (an enumeration no value is an option of, say) is at fault, not the data."""
        for (name, code), refused in self._refused.most_common():
            if refused >= at_least and not self._converted[name]:
                return name, code, refused
        return None

    def properties(self, row: Mapping[str, Any]) -> dict[str, str]:
        """Empty values are left out, not blanked; ValueRefused names the property at fault."""
        properties = {}
        for spec, definition in self._targets:
            value = row.get(spec.field)
            if value is None or value == "":
                continue
            try:
                properties[definition.name] = to_hubspot(value, definition)
            except ValueRefused as exc:
                self._refused[(definition.name, exc.code)] += 1
                raise ValueRefused(exc.code, f"{definition.name} ({definition.type}): {exc}") from None
            self._converted[definition.name] += 1
        return properties

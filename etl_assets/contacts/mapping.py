"""The column map: which source column becomes which contact field and HubSpot property.

Loaded from `ETL_COLUMN_MAP` (YAML or JSON) or the packaged default for the "customers"
CSV shape. A bad map fails before any data moves, naming the entry at fault. `company: name`
and `company: domain` mark the columns the company sync reads (etl_assets/hubspot/companies_keys.py).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from etl_assets.errors import PermanentError

EMAIL_FIELD = "email"
FIELD_TYPES = ("string", "date")
# HubSpot's property types (etl_assets.hubspot.properties converts values to each).
HUBSPOT_TYPES = ("string", "number", "date", "datetime", "enumeration", "bool")
# What a column tells the company sync: the company's name, or its website (whose domain is kept).
COMPANY_ROLES = ("name", "domain")
# Columns the tables add around the mapped fields; a mapped field may not take these names.
# `hubspot_id` is the name the sync gives the id HubSpot returned (hubspot/sync.py).
RESERVED_FIELDS = {"id", "content_hash", "source_row", "first_loaded_at", "updated_at", "hubspot_id"}
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class FieldSpec:
    source: str
    field: str
    hubspot: str | None = None
    hubspot_label: str | None = None
    hubspot_type: str | None = None  # the HubSpot property's type, checked against the account's
    required: bool = False
    type: str = "string"
    max_length: int = 255
    company: str | None = None  # one of COMPANY_ROLES: the column names the contact's company


@dataclass(frozen=True)
class ColumnMap:
    fields: tuple[FieldSpec, ...]
    origin: str

    @property
    def sources(self) -> list[str]:
        return [spec.source for spec in self.fields]

    @property
    def field_names(self) -> list[str]:
        return [spec.field for spec in self.fields]

    @property
    def email_source(self) -> str:
        return next(spec.source for spec in self.fields if spec.field == EMAIL_FIELD)

    def by_field(self, name: str) -> FieldSpec:
        return next(spec for spec in self.fields if spec.field == name)

    @property
    def hubspot_fields(self) -> list[FieldSpec]:
        return [spec for spec in self.fields if spec.hubspot]

    def company_field(self, role: str) -> str | None:
        """The field marked `company: <role>`, if any."""
        return next((spec.field for spec in self.fields if spec.company == role), None)

    def fingerprint(self) -> str:
        """Changes whenever the mapping changes what is stored or sent.

        `company` is left out: it changes what the company sync reads, not what `contacts` holds,
        so marking a column reloads nothing.
        """
        specs = [{k: v for k, v in spec.__dict__.items() if k != "company"} for spec in self.fields]
        text = json.dumps(specs, sort_keys=True)
        return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _field_spec(entry: Any, position: int, origin: str) -> FieldSpec:
    where = f"{origin}: fields[{position}]"
    if not isinstance(entry, dict):
        raise PermanentError(f"{where} must be a mapping with 'source' and 'field', got {entry!r}")
    unknown = set(entry) - set(FieldSpec.__dataclass_fields__)
    if unknown:
        raise PermanentError(f"{where} has unknown keys {sorted(unknown)}")
    if not entry.get("source") or not entry.get("field"):
        raise PermanentError(f"{where} needs both 'source' and 'field'")
    spec = FieldSpec(**{**entry, "source": str(entry["source"]), "field": str(entry["field"])})
    if not _IDENTIFIER.match(spec.field) or spec.field in RESERVED_FIELDS:
        raise PermanentError(
            f"{where}: field name {spec.field!r} must be a lowercase SQL identifier "
            f"and not one of {sorted(RESERVED_FIELDS)}"
        )
    if spec.type not in FIELD_TYPES:
        raise PermanentError(f"{where}: type {spec.type!r} is not one of {FIELD_TYPES}")
    if spec.hubspot_type is not None and (spec.hubspot_type not in HUBSPOT_TYPES or not spec.hubspot):
        raise PermanentError(
            f"{where}: hubspot_type {spec.hubspot_type!r} needs a 'hubspot' property and must be one of {HUBSPOT_TYPES}"
        )
    if not 1 <= int(spec.max_length) <= 2000:
        raise PermanentError(f"{where}: max_length must be between 1 and 2000")
    if spec.company is not None and (spec.company not in COMPANY_ROLES or spec.type != "string"):
        raise PermanentError(
            f"{where}: company {spec.company!r} must be one of {COMPANY_ROLES} (the company's name or its "
            "website column), on a string field"
        )
    return spec


def parse_column_map(document: Any, origin: str) -> ColumnMap:
    if not isinstance(document, dict) or not isinstance(document.get("fields"), list):
        raise PermanentError(f"{origin}: expected a top-level 'fields' list")
    specs = tuple(_field_spec(entry, i, origin) for i, entry in enumerate(document["fields"]))
    for attribute in ("field", "source", "hubspot", "company"):
        values = [getattr(spec, attribute) for spec in specs if getattr(spec, attribute)]
        duplicates = sorted({value for value in values if values.count(value) > 1})
        if duplicates:
            raise PermanentError(f"{origin}: {attribute} names used twice: {duplicates}")
    if EMAIL_FIELD not in [spec.field for spec in specs]:
        raise PermanentError(f"{origin}: no entry maps to the '{EMAIL_FIELD}' field, the contact key")
    email = next(spec for spec in specs if spec.field == EMAIL_FIELD)
    if email.hubspot not in (None, "email"):
        raise PermanentError(f"{origin}: the email field must map to HubSpot's 'email' property")
    fields = tuple(
        FieldSpec(**{**spec.__dict__, "required": True, "hubspot": "email", "max_length": 254})
        if spec.field == EMAIL_FIELD
        else spec
        for spec in specs
    )
    return ColumnMap(fields=fields, origin=origin)


def load_column_map(path: str | None) -> ColumnMap:
    """The map at `path` (YAML or JSON), or the packaged default when `path` is None."""
    if path is None:
        text = resources.files("etl_assets.data").joinpath("default_column_map.yaml").read_text()
        return parse_column_map(yaml.safe_load(text), "default column map")
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise PermanentError(f"ETL_COLUMN_MAP: cannot read {file}: {exc.strerror}") from None
    try:
        document = yaml.safe_load(text)  # JSON is a subset of YAML
    except yaml.YAMLError as exc:
        raise PermanentError(f"ETL_COLUMN_MAP: {file} is not valid YAML/JSON: {exc}") from None
    return parse_column_map(document, str(file))

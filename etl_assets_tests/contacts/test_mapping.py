import json

import pytest

from etl_assets.contacts.mapping import load_column_map, parse_column_map
from etl_assets.errors import PermanentError

pytestmark = pytest.mark.fast  # pure: no service, no subprocess


def test_default_map_fits_the_customers_shape():
    column_map = load_column_map(None)
    assert column_map.email_source == "Email"
    assert column_map.by_field("email").required
    assert column_map.by_field("subscription_date").type == "date"
    assert {spec.hubspot for spec in column_map.hubspot_fields} >= {"email", "firstname", "source_customer_id"}


def test_yaml_and_json_files_give_the_same_map(tmp_path):
    document = {
        "fields": [{"source": "Mail", "field": "email"}, {"source": "Name", "field": "name", "hubspot": "firstname"}]
    }
    (tmp_path / "map.json").write_text(json.dumps(document))
    (tmp_path / "map.yaml").write_text(
        "fields:\n  - {source: Mail, field: email}\n  - {source: Name, field: name, hubspot: firstname}\n"
    )
    from_json = load_column_map(str(tmp_path / "map.json"))
    from_yaml = load_column_map(str(tmp_path / "map.yaml"))
    assert from_json.fields == from_yaml.fields
    assert from_json.by_field("email").hubspot == "email"  # the key always maps to HubSpot's email
    assert from_json.fingerprint() == from_yaml.fingerprint()


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"fields": [{"source": "Name", "field": "name"}]}, "no entry maps to the 'email' field"),
        ({"fields": [{"source": "A", "field": "email"}, {"source": "B", "field": "email"}]}, "field names used twice"),
        (
            {"fields": [{"source": "A", "field": "email"}, {"source": "B", "field": "Bad Name"}]},
            "lowercase SQL identifier",
        ),
        (
            {"fields": [{"source": "A", "field": "email"}, {"source": "B", "field": "content_hash"}]},
            "lowercase SQL identifier",
        ),
        ({"fields": [{"source": "A", "field": "email", "colour": "red"}]}, "unknown keys ['colour']"),
        ({"fields": [{"source": "A", "field": "email"}, {"source": "B", "field": "b", "type": "int"}]}, "type 'int'"),
        ({"columns": []}, "top-level 'fields' list"),
        # hubspot_type: a typo, and a type without a property to have it
        (
            {
                "fields": [
                    {"source": "A", "field": "email"},
                    {"source": "B", "field": "b", "hubspot": "b", "hubspot_type": "datetme"},
                ]
            },
            "hubspot_type 'datetme' needs a 'hubspot' property and must be one of",
        ),
        (
            {"fields": [{"source": "A", "field": "email"}, {"source": "B", "field": "b", "hubspot_type": "number"}]},
            "hubspot_type 'number' needs a 'hubspot' property",
        ),
        # company: a typo, a role marked twice, a date column
        (
            {"fields": [{"source": "A", "field": "email"}, {"source": "B", "field": "b", "company": "nmae"}]},
            "fields[1]: company 'nmae' must be one of",
        ),
        (
            {
                "fields": [
                    {"source": "A", "field": "email"},
                    {"source": "B", "field": "b", "company": "name"},
                    {"source": "C", "field": "c", "company": "name"},
                ]
            },
            "company names used twice: ['name']",
        ),
        (
            {
                "fields": [
                    {"source": "A", "field": "email"},
                    {"source": "B", "field": "b", "type": "date", "company": "domain"},
                ]
            },
            "website column., on a string field",
        ),
        ({"fields": [{"source": "A", "field": "email", "compnay": "name"}]}, "unknown keys ['compnay']"),
        # the sync's own name for the id HubSpot returned
        (
            {"fields": [{"source": "A", "field": "email"}, {"source": "B", "field": "hubspot_id"}]},
            "lowercase SQL identifier",
        ),
    ],
)
def test_bad_maps_fail_naming_the_problem(document, message):
    with pytest.raises(PermanentError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        parse_column_map(document, "test map")


def test_unreadable_map_names_the_variable_and_path(tmp_path):
    with pytest.raises(PermanentError, match="ETL_COLUMN_MAP: cannot read .*missing.yaml"):
        load_column_map(str(tmp_path / "missing.yaml"))
    (tmp_path / "broken.yaml").write_text("fields: [unclosed")
    with pytest.raises(PermanentError, match="not valid YAML/JSON"):
        load_column_map(str(tmp_path / "broken.yaml"))


def test_the_default_map_marks_the_company_name_and_website_without_changing_the_fingerprint():
    column_map = load_column_map(None)
    assert (column_map.company_field("name"), column_map.company_field("domain")) == ("company", "website")
    unmarked = parse_column_map(
        {"fields": [{k: v for k, v in spec.__dict__.items() if k != "company"} for spec in column_map.fields]}, "x"
    )
    assert unmarked.company_field("name") is None
    assert unmarked.fingerprint() == column_map.fingerprint()  # marking a column reloads nothing

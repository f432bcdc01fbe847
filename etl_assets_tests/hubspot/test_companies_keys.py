"""Company names and websites as they come, made comparable; contacts grouped into companies."""

import pytest

from etl_assets.errors import PermanentError
from etl_assets.hubspot.companies_keys import key_mode, normalise_domain, normalise_name, plan_companies

pytestmark = pytest.mark.fast


@pytest.mark.parametrize(
    ("raw", "domain"),
    [
        ("https://www.Acme.com/about", "acme.com"),
        ("acme.com", "acme.com"),
        ("http://acme.com?x=1", "acme.com"),
        ("  WWW.ACME.COM.  ", "acme.com"),
        ("acme.com:8443/shop#top", "acme.com"),
        ("https://user@shop.acme.co.uk/", "shop.acme.co.uk"),
        ("bücher.de", "xn--bcher-kva.de"),
        ("n/a", None),
        ("-", None),
        ("", None),
        (None, None),
        ("unknown", None),
        ("localhost", None),
        ("192.168.0.1", None),
        ("not a website", None),
        ("http://", None),
        ("acme..com", None),
        ("-acme.com", None),
    ],
)
def test_domains_keep_only_the_host(raw, domain):
    assert normalise_domain(raw) == domain


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("Acme Inc.", "acme"),
        ("ACME, Inc", "acme"),
        ("  acme   inc  ", "acme"),
        ("Acme Corp. Ltd", "acme"),
        ("Acme L.L.C.", "acme"),
        ("Société Générale S.A.", "societe generale"),
        ("Smith & Sons", "smith and sons"),
        ("Vaughn, Moran and Sons", "vaughn moran and sons"),
        ("Inc", "inc"),  # never the first word
        ("n/a", None),
        ("-", None),
        ("???", None),
        (None, None),
    ],
)
def test_names_fold_case_punctuation_and_legal_suffixes(raw, name):
    assert normalise_name(raw) == name


def test_key_mode_rejects_a_typo_naming_the_setting():
    assert key_mode(None) == "domain-then-name"
    assert key_mode(" Name ") == "name"
    with pytest.raises(PermanentError, match="HUBSPOT_COMPANY_KEY must be one of .* got 'domian'"):
        key_mode("domian")


ROWS = [
    ("a@x.com", "Acme Inc.", "https://www.acme.com/about"),
    ("b@x.com", "ACME, Inc", "acme.com"),
    ("c@x.com", "Acme Inc.", ""),  # no website: its name comes with one domain elsewhere
    ("d@x.com", "Globex LLC", "n/a"),  # a name only
    ("e@x.com", "globex", None),
    ("f@x.com", "n/a", "-"),  # nothing usable
    ("g@x.com", "Initech", "initech.io"),
]


def test_domain_then_name_groups_dirty_spellings_into_one_company():
    plan = plan_companies(ROWS, "domain-then-name")
    assert set(plan.companies) == {"domain:acme.com", "name:globex", "domain:initech.io"}
    assert plan.members == {
        "a@x.com": "domain:acme.com",
        "b@x.com": "domain:acme.com",
        "c@x.com": "domain:acme.com",
        "d@x.com": "name:globex",
        "e@x.com": "name:globex",
        "g@x.com": "domain:initech.io",
    }
    acme = plan.companies["domain:acme.com"]
    assert acme.properties() == {"name": "Acme Inc.", "domain": "acme.com"}  # the spelling most contacts use
    assert plan.companies["name:globex"].properties() == {"name": "Globex LLC"}  # ties: first in sort order


def test_domain_mode_drops_contacts_without_a_domain_and_name_mode_ignores_domains():
    by_domain = plan_companies(ROWS, "domain")
    assert set(by_domain.companies) == {"domain:acme.com", "domain:initech.io"}
    assert "d@x.com" not in by_domain.members and by_domain.members["c@x.com"] == "domain:acme.com"
    by_name = plan_companies(ROWS, "name")
    assert set(by_name.companies) == {"name:acme", "name:globex", "name:initech"}
    assert by_name.companies["name:acme"].domain == "acme.com"


def test_a_name_seen_with_two_domains_stays_a_company_of_its_own():
    rows = [("a@x.com", "Acme", "acme.com"), ("b@x.com", "Acme", "acme.de"), ("c@x.com", "Acme", "")]
    assert plan_companies(rows, "domain-then-name").members["c@x.com"] == "name:acme"


def test_content_hash_follows_what_hubspot_gets():
    first = plan_companies(ROWS, "domain-then-name").companies["domain:acme.com"]
    renamed = plan_companies([("a@x.com", "Acme Holdings", "acme.com")], "domain-then-name")
    assert renamed.companies["domain:acme.com"].content_hash != first.content_hash
    again = plan_companies(list(reversed(ROWS)), "domain-then-name").companies["domain:acme.com"]
    assert again.content_hash == first.content_hash  # order does not matter

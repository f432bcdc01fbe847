"""Which company each contact works for: names and websites as they come, made comparable.

Plain functions, no I/O. The rules:

* **Domain** (from the `company: domain` column, a website): trimmed, lowercased; a value without a
  scheme is read as `http://…`; only the host is kept (no scheme, user, port, path, query or
  fragment), a trailing dot and one leading `www.` dropped, then IDNA-encoded (`bücher.de` ->
  `xn--bcher-kva.de`). So `https://www.Acme.com/about`, `acme.com` and `http://acme.com?x=1` are all
  `acme.com`. Refused (no domain): blanks and placeholders (`n/a`, `-`, `none`, `unknown`, …),
  IP addresses, hosts without a dot, and labels that are not letters, digits and inner hyphens.
* **Name** (from the `company: name` column): Unicode-normalised (NFKD, accents dropped),
  casefolded; `&` reads as `and`; dots and apostrophes vanish (`L.L.C.` -> `llc`), any other
  punctuation separates words; whitespace collapsed; then common legal suffixes (`inc`, `llc`,
  `ltd`, `gmbh`, `corp`, `co`, … see LEGAL_SUFFIXES) are dropped from the end, repeatedly, but
  never the first word. So `Acme Inc.` and `ACME, Inc` are both `acme`. Placeholders (as for
  domains) and names without a letter or digit give no name.
* **Key** (HUBSPOT_COMPANY_KEY): `domain-then-name` (default) keys a contact's company by its
  domain; a contact without one by the domain its normalised name has elsewhere in the data when
  that name comes with exactly one domain, else by the name. `domain` keys by the domain only
  (found the same way; no domain, no company); `name` by the normalised name only. Keys read `domain:acme.com` or
  `name:acme`.
* **What HubSpot gets** per company: `domain` (the key's domain; under `name`, the domain most
  of its contacts give) and `name`: the spelling most of its contacts use (ties: the first in
  sort order), so a company's content changes only when its contacts' data does.
"""

from __future__ import annotations

import collections
import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from etl_assets.errors import PermanentError

KEY_MODES = ("domain-then-name", "domain", "name")
PLACEHOLDERS = frozenset({"", "-", "--", "?", "n/a", "na", "n.a.", "none", "null", "nil", "unknown", "tbd"})
LEGAL_SUFFIXES = frozenset(
    {
        "inc", "incorporated", "corp", "corporation", "co", "company", "llc", "pllc", "ltd", "limited",
        "plc", "lp", "llp", "gmbh", "ag", "kg", "ug", "sa", "sas", "sarl", "srl", "spa", "bv", "nv",
        "oy", "ab", "as", "pty", "pvt", "lda", "kk",
    }
)  # fmt: skip
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_SPACES = re.compile(r"\s+")


def normalise_domain(raw: str | None) -> str | None:
    """The website's domain as the module docstring says, or None."""
    text = unicodedata.normalize("NFKC", raw or "").strip().lower()
    if text in PLACEHOLDERS:
        return None
    if "://" not in text:
        text = "http://" + text  # urlsplit finds a host only after a scheme
    try:
        host = urlsplit(text).hostname  # without user and port, lowercased
    except ValueError:  # a malformed port or bracket
        return None
    host = (host or "").rstrip(".").removeprefix("www.")
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:  # empty or over-long labels, characters IDNA refuses
        return None
    labels = host.split(".")
    if len(labels) < 2 or len(host) > 253 or labels[-1].isdigit():
        return None
    return host if all(_LABEL.fullmatch(label) for label in labels) else None


def normalise_name(raw: str | None) -> str | None:
    """The company name as the module docstring says, or None."""
    text = unicodedata.normalize("NFKD", raw or "")
    text = "".join(char for char in text if not unicodedata.combining(char)).casefold().strip()
    if text in PLACEHOLDERS:
        return None
    text = re.sub(r"[.'’]", "", text.replace("&", " and "))
    words = _SPACES.sub(" ", re.sub(r"[^\w\s]|_", " ", text)).split()
    while len(words) > 1 and words[-1] in LEGAL_SUFFIXES:
        words.pop()
    name = " ".join(words)
    return name if name and name not in PLACEHOLDERS else None


def key_mode(value: str | None) -> str:
    """HUBSPOT_COMPANY_KEY, checked."""
    mode = (value or KEY_MODES[0]).strip().lower()
    if mode not in KEY_MODES:
        raise PermanentError(f"HUBSPOT_COMPANY_KEY must be one of {list(KEY_MODES)}, got {value!r}")
    return mode


@dataclass(frozen=True)
class Company:
    key: str
    name: str | None
    domain: str | None

    def properties(self) -> dict[str, str]:
        """As HubSpot's company properties take them."""
        return {name: value for name, value in (("name", self.name), ("domain", self.domain)) if value}

    @property
    def content_hash(self) -> str:
        """What change detection compares (hubspot_company_state.synced_hash)."""
        text = json.dumps([self.name, self.domain])
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


@dataclass
class CompanyPlan:
    """The distinct companies, and each contact's company key (contacts without one are absent)."""

    companies: dict[str, Company] = field(default_factory=dict)
    members: dict[str, str] = field(default_factory=dict)  # email -> company key


def _most_common(counter: collections.Counter) -> str | None:
    if not counter:
        return None
    return min(counter.items(), key=lambda item: (-item[1], item[0]))[0]


def plan_companies(rows: Iterable[tuple[str, str | None, str | None]], mode: str) -> CompanyPlan:
    """Distinct companies from (email, raw name, raw website) rows, keyed as `mode` says."""
    seen: list[tuple[str, str | None, str | None, str | None]] = []  # email, name, domain, spelling
    domains_of_name: dict[str, set[str]] = collections.defaultdict(set)
    for email, raw_name, raw_website in rows:
        name, domain = normalise_name(raw_name), normalise_domain(raw_website)
        spelling = _SPACES.sub(" ", raw_name).strip() if name and raw_name else None
        seen.append((email, name, domain, spelling))
        if name and domain:
            domains_of_name[name].add(domain)

    spellings: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    domains: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    plan = CompanyPlan()
    for email, name, domain, spelling in seen:
        if mode != "name" and domain is None and name and len(domains_of_name[name]) == 1:
            domain = next(iter(domains_of_name[name]))  # a name known with one domain elsewhere
        if mode == "name":
            key = f"name:{name}" if name else None
        elif domain:
            key = f"domain:{domain}"
        else:
            key = f"name:{name}" if name and mode == "domain-then-name" else None
        if key is None:
            continue
        plan.members[email] = key
        if spelling:
            spellings[key][spelling] += 1
        if domain:
            domains[key][domain] += 1
    for key in dict.fromkeys(plan.members.values()):
        plan.companies[key] = Company(key, _most_common(spellings[key]), _most_common(domains[key]))
    return plan

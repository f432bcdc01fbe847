"""Generate the synthetic "customers" CSV shipped inside the package.

The file lets `make run` work with nothing configured and no network. It has the
column layout of the datablist "customers" CSVs mirrored on Kaggle, and a few
deliberately bad rows (invalid or duplicate emails, a missing email) so the
validation and reject paths are exercised on the embedded defaults too.

    python scripts/generate_sample_dataset.py            # rewrites the shipped file
    python scripts/generate_sample_dataset.py --rows 200000 --out /tmp/big.csv
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import random
from pathlib import Path

COLUMNS = [
    "Index",
    "Customer Id",
    "First Name",
    "Last Name",
    "Company",
    "City",
    "Country",
    "Phone 1",
    "Phone 2",
    "Email",
    "Subscription Date",
    "Website",
]
FIRST = [
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "Ken",
    "Margaret",
    "Linus",
    "Radia",
    "Tim",
    "Sophie",
    "Dennis",
    "Hedy",
    "John",
    "Katherine",
    "Niklaus",
    "Shafi",
    "Yukihiro",
]
LAST = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Allen",
    "Thompson",
    "Hamilton",
    "Torvalds",
    "Perlman",
    "Berners-Lee",
    "Wilson",
    "Ritchie",
    "Lamarr",
    "Backus",
    "Johnson",
    "Wirth",
]
COMPANIES = [
    "Acme Corp",
    "Globex",
    "Initech",
    "Umbrella Ltd",
    "Hooli",
    "Vandelay Industries",
    "Stark Industries",
    "Wayne Enterprises",
    "Tyrell Corp",
    "Cyberdyne Systems",
]
PLACES = [
    ("Berlin", "Germany"),
    ("Lyon", "France"),
    ("Austin", "United States"),
    ("Osaka", "Japan"),
    ("Porto", "Portugal"),
    ("Toronto", "Canada"),
    ("Nairobi", "Kenya"),
    ("Quito", "Ecuador"),
]
DOMAINS = ["example.com", "example.org", "example.net", "mail.example.com"]


def contact_row(index: int, rng: random.Random) -> dict[str, str]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    company = rng.choice(COMPANIES)
    city, country = rng.choice(PLACES)
    day = dt.date(2020, 1, 1) + dt.timedelta(days=rng.randrange(0, 900))
    return {
        "Index": str(index),
        "Customer Id": f"{rng.getrandbits(60):015X}"[:15],
        "First Name": first,
        "Last Name": last,
        "Company": company,
        "City": city,
        "Country": country,
        "Phone 1": f"+1-{rng.randrange(200, 999)}-{rng.randrange(200, 999)}-{rng.randrange(1000, 9999)}",
        "Phone 2": f"{rng.randrange(200, 999)}.{rng.randrange(200, 999)}.{rng.randrange(1000, 9999)}",
        "Email": f"{first}.{last}.{index}@{rng.choice(DOMAINS)}".lower(),
        "Subscription Date": day.isoformat(),
        "Website": f"https://www.{company.split()[0].lower()}-{index}.example.com/",
    }


def generate(rows: int, seed: int = 7, dirty: bool = True):
    """Yield `rows` contact rows; with `dirty`, about 0.5% carry a known defect."""
    rng = random.Random(seed)
    earlier_emails: list[str] = []
    for index in range(1, rows + 1):
        row = contact_row(index, rng)
        if dirty and index % 200 == 50:
            row["Email"] = row["Email"].replace("@", " at ")  # invalid syntax
        elif dirty and index % 200 == 120 and earlier_emails:
            # An earlier email again with other case and padding: a duplicate after normalising.
            row["Email"] = f"  {rng.choice(earlier_emails).upper()} "
        elif dirty and index % 500 == 300:
            row["Email"] = ""  # required field missing
        else:
            earlier_emails.append(row["Email"])
        yield row


def write_csv(path: Path, rows: int, seed: int = 7, dirty: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(generate(rows, seed, dirty))


def write_new_version(source: Path, path: Path, every: int = 100) -> dict[str, int]:
    """`source` as its next version: of every `every` data rows one removed and ten changed (City),
    and one new row (another email) per `every` appended: 10% changed, 1% new, 1% removed."""
    counts = {"changed": 0, "removed": 0, "new": 0}
    with source.open(newline="", encoding="utf-8") as reading, path.open("w", newline="", encoding="utf-8") as handle:
        rows = csv.DictReader(reading)
        writer = csv.DictWriter(handle, fieldnames=rows.fieldnames or COLUMNS)
        writer.writeheader()
        added = []
        for number, row in enumerate(rows):
            if number % every == 0:
                counts["removed"] += 1
                added.append({**row, "Email": f"new.{number}@bench.example.org"})
                continue
            if number % every <= 10:
                row["City"] += " Nord"
                counts["changed"] += 1
            writer.writerow(row)
        writer.writerows(added)
        counts["new"] = len(added)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--clean", action="store_true", help="no deliberately bad rows")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent.parent / "etl_assets" / "data" / "sample_customers.csv",
    )
    args = parser.parse_args()
    write_csv(args.out, args.rows, args.seed, dirty=not args.clean)
    print(f"wrote {args.rows} rows to {args.out}")


if __name__ == "__main__":
    main()

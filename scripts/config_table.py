"""Regenerate the README's configuration tables from the settings registry (etl_assets/settings.py).

.venv/bin/python scripts/config_table.py --write-readme   # rewrite the tables between the markers
.venv/bin/python scripts/config_table.py --check          # exit 1 when the README differs
.venv/bin/python scripts/config_table.py                  # print the full table
"""

import sys

from etl_assets.settings import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

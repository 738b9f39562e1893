"""The `wavu` command: Django's manage.py with Wavu's settings.

Commands are spelled with hyphens on the command line (`wavu trial-balance`, `wavu billing-run`)
while Django names them after their modules (`trial_balance.py`), so a hyphenated command name is
mapped to underscores; the underscore spelling keeps working.
"""

import os
import sys


def normalize_command_name(argv: list[str]) -> list[str]:
    """`wavu trial-balance …` → `wavu trial_balance …` (also after `help`); options are left alone."""
    argv = list(argv)
    index = 2 if len(argv) > 2 and argv[1] == "help" else 1
    if len(argv) > index and not argv[index].startswith("-") and "-" in argv[index]:
        argv[index] = argv[index].replace("-", "_")
    return argv


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wavu.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(normalize_command_name(sys.argv))


if __name__ == "__main__":
    main()

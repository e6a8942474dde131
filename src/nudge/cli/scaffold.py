"""``nudge new app NAME``: a folder with a working app made from the templates in ``new_app/``."""

from __future__ import annotations

import json
import re
from pathlib import Path

from nudge.ids import new_webhook_secret

TEMPLATES = Path(__file__).parent / "new_app"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _-]{0,63}")


class ScaffoldError(Exception):
    pass


def scaffold(folder: Path) -> tuple[Path, str]:
    """Write the app into ``folder`` (new or empty); return it and a development secret."""
    title = folder.name
    if not NAME.fullmatch(title):
        raise ScaffoldError(
            f"name {title!r}: use 1-64 letters, digits, spaces, '-' or '_', starting with a "
            "letter or digit"
        )
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ScaffoldError(f"{folder} already exists and is not an empty folder")
    folder.mkdir(parents=True, exist_ok=True)
    # The title lands in Python strings and JSON: json.dumps escapes it for both (minus quotes).
    quoted = json.dumps(title)[1:-1]
    for template in sorted(TEMPLATES.glob("*.tmpl")):
        text = template.read_text().replace("__TITLE__", quoted)
        (folder / template.name.removesuffix(".tmpl")).write_text(text)
    return folder, new_webhook_secret()

"""YAML reading and atomic writing shared by graphs and expert knowledge."""

from __future__ import annotations

from pathlib import Path

import yaml

from bayesrad.errors import MissingFileError


def dump_yaml(data, path: str | Path | None = None) -> str:
    """YAML text of ``data``; written to ``path`` via a temporary file when given."""
    text = yaml.safe_dump(data, sort_keys=False)
    if path is not None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return text


def load_yaml(path_or_text: str | Path, what: str, error: type[Exception]):
    """Parse a YAML file, or YAML text (a string containing a newline).

    ``what`` names the document in messages; ``error`` is raised for unparsable text.
    """
    if isinstance(path_or_text, str) and "\n" in path_or_text:
        text = path_or_text
    else:
        path = Path(path_or_text)
        if not path.exists():
            raise MissingFileError(f"{what} file {str(path)!r} does not exist")
        text = path.read_text()
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{what} YAML cannot be parsed: {exc}") from exc

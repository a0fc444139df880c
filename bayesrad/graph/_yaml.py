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
        text, source = path_or_text, f"{what} YAML text"
    else:
        path = Path(path_or_text)
        source = f"{what} file {str(path)!r}"
        if not path.is_file():
            raise MissingFileError(f"{source} does not exist (or is not a file)")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error(f"{source} is not UTF-8 text; re-save it as UTF-8 YAML") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:  # syntax errors, and unsafe tags (!!python/...) never executed
        raise error(f"{source} cannot be parsed as YAML: {' '.join(str(exc).split())}; "
                    f"fix the line it names") from exc


def source_name(path_or_text, what: str) -> str:
    """How messages name a YAML document: its file, or 'graph YAML text'."""
    if isinstance(path_or_text, str) and "\n" in path_or_text:
        return f"{what} YAML text"
    return f"{what} file {str(path_or_text)!r}"

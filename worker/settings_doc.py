"""The configuration table of docs/configuration.md, generated from the settings model so the two
never drift (tests/unit/test_config.py checks it)."""

from __future__ import annotations

from pydantic import BaseModel

from worker.config import ENV_PREFIX, Settings


def _rows(model: type[BaseModel], prefix: str, flag: str):
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _rows(
                annotation, f"{prefix}{name.upper()}__", f"{flag}{name.replace('_', '-')}."
            )
            continue
        default = field.get_default()
        shown = "" if default is None else f"`{default}`"
        yield (
            f"{prefix}{name.upper()}",
            f"--{flag}{name.replace('_', '-')}",
            shown,
            field.description or "",
        )


def settings_table() -> str:
    lines = [
        "| Environment variable | Flag (`run`) | Default | Meaning |",
        "| --- | --- | --- | --- |",
    ]
    for env, flag, default, doc in _rows(Settings, ENV_PREFIX, ""):
        cells = (f"`{env}`", f"`{flag}`", default, doc)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)

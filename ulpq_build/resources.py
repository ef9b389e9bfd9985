"""Where the Jinja templates and the JS runtime are, from a checkout or from an installed wheel."""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """Return the folder `templates` or `web_runtime`.

    A checkout (or an editable install) keeps them beside the package; a wheel carries them
    inside the package under `_data/` (see pyproject.toml's force-include).
    """
    for candidate in (_PACKAGE_DIR / "_data" / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"ulpq_build is installed without its {name!r} folder; reinstall the package")


def templates_dir() -> Path:
    return data_dir("templates")


def web_runtime_dir() -> Path:
    return data_dir("web_runtime")


def models_dir() -> Path:
    """The models that ship inside the package (the small Fashion-MNIST ViT)."""
    return _PACKAGE_DIR / "models"

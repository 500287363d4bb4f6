"""Judge prompt templates: the built-in Jinja2 files, or a user's own (file or inline, Jinja2 or ``str.format``).

A template renders the *user message* sent to the judge (a system message, if any, is the reward's ``system``
parameter). What a template may use depends on the reward: ``prompt``, ``completion``, ``reference``,
``instructions``, ``min_score``/``max_score`` (``judge_score``); ``criteria`` (``judge_rubric``: a list of
``{name, description, weight, min, max}``); ``completions`` and ``n`` (``judge_group``); and every other column of
the row by its name.

How ``template`` is read: ``builtin:<name>`` is a packaged template (``score``, ``reference``, ``rubric``,
``group_score``, ``group_rank``); a string ending in ``.j2``/``.jinja``/``.jinja2``/``.txt``/``.md``/``.tmpl``
without a line break is a file path (an error if it does not exist); anything else is the template text itself.
The syntax is Jinja2 if the text contains ``{{`` or ``{%``, otherwise ``str.format`` (``{completion}``), unless
``template_format`` says which.

Jinja2 runs with ``StrictUndefined`` so a misspelt variable is an error naming it, not a silently empty string.
Templates come from configuration, never from dataset rows: row values are data inserted into the prompt, never
rendered as templates themselves.
"""

from __future__ import annotations

import string
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from rewardflow.errors import ConfigError, MissingDependencyError

__all__ = ["BUILTIN_TEMPLATES", "Template", "load_template"]

BUILTIN_TEMPLATES = ("score", "reference", "rubric", "group_score", "group_rank")
_FILE_SUFFIXES = (".j2", ".jinja", ".jinja2", ".txt", ".md", ".tmpl")
TemplateFormat = Literal["auto", "jinja", "format"]


class Template:
    """A compiled prompt template; :meth:`render` fills it."""

    def __init__(self, source: str, *, fmt: TemplateFormat = "auto", name: str = "<inline>") -> None:
        if fmt == "auto":
            fmt = "jinja" if ("{{" in source or "{%" in source) else "format"
        if fmt not in ("jinja", "format"):
            raise ConfigError(f"template_format must be 'auto', 'jinja' or 'format', got {fmt!r}")
        self.source = source
        self.name = name
        self.format = fmt
        self._jinja: Any = None
        if fmt == "jinja":
            self._jinja = _compile_jinja(source, name)
        else:
            try:
                self.fields = {f for _, f, _, _ in string.Formatter().parse(source) if f}
            except ValueError as exc:
                raise ConfigError(f"template {name}: not a valid format string: {exc}") from exc

    def __repr__(self) -> str:
        return f"Template({self.name!r}, format={self.format!r})"

    def render(self, **variables: Any) -> str:
        """The filled-in text. A variable the template uses but nobody supplied raises ConfigError naming it."""
        if self._jinja is not None:
            import jinja2

            try:
                return self._jinja.render(**variables).strip()
            except jinja2.UndefinedError as exc:
                raise ConfigError(f"template {self.name}: {exc} (available: {sorted(variables)})") from exc
        try:
            return self.source.format_map(variables).strip()
        except (KeyError, IndexError, AttributeError) as exc:
            raise ConfigError(f"template {self.name}: unknown field {exc} (available: {sorted(variables)})") from exc


def _compile_jinja(source: str, name: str) -> Any:
    try:
        import jinja2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError("jinja2", "judge") from exc
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # prompts are plain text, not HTML
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"template {name}: Jinja2 syntax error on line {exc.lineno}: {exc.message}") from exc


def builtin_source(name: str) -> str:
    if name not in BUILTIN_TEMPLATES:
        raise ConfigError(f"no built-in judge template {name!r}; choose one of {list(BUILTIN_TEMPLATES)}")
    return resources.files("rewardflow.judge").joinpath("templates", f"{name}.j2").read_text(encoding="utf-8")


def load_template(spec: str | None, default: str, fmt: TemplateFormat = "auto") -> Template:
    """Resolve a reward's ``template`` parameter (see the module docstring); ``None`` means the built-in ``default``."""
    if spec is None or spec.startswith("builtin:"):
        name = default if spec is None else spec.removeprefix("builtin:")
        return Template(builtin_source(name), fmt="jinja", name=f"builtin:{name}")
    if "\n" not in spec and spec.strip().lower().endswith(_FILE_SUFFIXES):
        path = Path(spec.strip()).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read judge template file {str(path)!r}: {exc.strerror}") from exc
        return Template(text, fmt=fmt, name=str(path))
    if not spec.strip():
        raise ConfigError("the judge template is empty")
    return Template(spec, fmt=fmt)

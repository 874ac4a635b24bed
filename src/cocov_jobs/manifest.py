"""The ``.cocov.yaml`` manifest, format ``0.1.alpha`` (docs/architecture.md §6.6, §7.13).

:func:`parse_manifest` turns the file's text into a :class:`Manifest` or raises
:class:`InvalidManifestError`; no input (``str`` or ``bytes``) makes it raise anything else.
Checks run in this order, the first failure wins:

1. reading the YAML safely (below) — ``manifest_invalid_or_missing_data``;
2. the root is a mapping — ``manifest_root_must_be_mapping``;
3. ``version`` is present and not blank (an explicit null is missing) —
   ``manifest_missing_version``; is a string — ``manifest_version_type_mismatch``; is
   ``"0.1.alpha"`` — ``manifest_version_unsupported``;
4. the schema, keys in document order then missing required keys —
   ``manifest_invalid_or_missing_data`` with Cocov's validator messages (paths like
   ``checks.1.plugin``; the root's path is empty, so an unknown top-level key reads
   ``Unexpected extra key `foo' on `'`` exactly as Cocov prints it);
5. mounts of ``defaults.checks``, then each check's own mounts in order: duplicated
   destinations — ``manifest_duplicated_mount_destination``; sources not starting with
   ``secrets:`` — ``manifest_invalid_mount_source``;
6. the size of each ``exclude_paths`` pattern's brace expansion (see
   :data:`cocov_jobs.ruby_glob.MAX_PATTERN_EXPANSION_CHARS`) —
   ``manifest_invalid_or_missing_data``.

Where we differ from Cocov on purpose: explicit nulls mean "absent" for every optional key;
default envs are merged into each check's envs (the check's values win); YAML that Cocov's
Psych rejects with a generic error (aliases, dates, unknown tags, syntax errors) is an
:class:`InvalidManifestError` here.

YAML safety. The text is read as one YAML 1.1 document with PyYAML's safe scalar rules, except:

* more than :data:`MAX_MANIFEST_BYTES` bytes of UTF-8, or bytes that are not UTF-8: rejected;
* anchors and aliases: rejected (billion laughs);
* tags other than ``!`` and the core ``!!str``, ``!!int``, ``!!float``, ``!!bool``,
  ``!!null``, ``!!seq``, ``!!map``: rejected;
* dates and timestamps (``2024-01-01``) stay plain strings: every place in the schema wants
  either a string (where the text as written is the useful value) or an integer (where the
  string then fails the type check with a clear message);
* ``=`` and ``<<`` are plain strings (no YAML value or merge keys);
* mapping keys that are not strings (``1:``, ``~:``, ``[a]:``): rejected; a duplicated key
  keeps its last value, as in Psych;
* collections nested deeper than :data:`MAX_NESTING_DEPTH`: rejected;
* more than one document (``---`` twice): rejected. An empty file is a null root.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, cast

import yaml
from yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    DocumentStartEvent,
    Event,
    MappingStartEvent,
    NodeEvent,
    ScalarEvent,
)
from yaml.nodes import ScalarNode

from cocov_jobs.ruby_glob import (
    MAX_PATTERN_EXPANSION_CHARS,
    PatternTooComplexError,
    compile_glob,
    glob_match,
)
from cocov_jobs.ruby_text import ruby_blank, ruby_inspect

#: The manifest's file name at the repository root (``.cocov.yml`` is not recognised).
MANIFEST_FILE = ".cocov.yaml"
#: The only manifest format version there is.
MANIFEST_VERSION = "0.1.alpha"

#: Larger manifests are rejected before parsing (1 MiB of UTF-8).
MAX_MANIFEST_BYTES = 1024 * 1024
#: Deepest nesting of YAML sequences and mappings accepted; the root collection is level 1.
MAX_NESTING_DEPTH = 64
#: Most checks a manifest may declare.
MAX_CHECKS = 1000
#: Most ``exclude_paths`` patterns a manifest may declare (each is compiled to a regex; its
#: brace expansion is bounded by ``ruby_glob.MAX_PATTERN_EXPANSION_CHARS``).
MAX_EXCLUDE_PATHS = 1000

#: Prefix a mount source needs; the rest is the secret's name.
SECRET_SOURCE_PREFIX = "secrets:"

# Error codes: the check set's ``error_kind`` names (docs/architecture.md §6.1).
ROOT_MUST_BE_MAPPING = "manifest_root_must_be_mapping"
MISSING_VERSION = "manifest_missing_version"
VERSION_TYPE_MISMATCH = "manifest_version_type_mismatch"
VERSION_UNSUPPORTED = "manifest_version_unsupported"
INVALID_OR_MISSING_DATA = "manifest_invalid_or_missing_data"
DUPLICATED_MOUNT_DESTINATION = "manifest_duplicated_mount_destination"
INVALID_MOUNT_SOURCE = "manifest_invalid_mount_source"


class InvalidManifestError(Exception):
    """The manifest cannot be used; ``code`` is the error kind, ``message`` is user-visible."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Mount:
    """A secret mounted into a check's container at ``destination``."""

    source: str
    destination: str

    @property
    def secret_name(self) -> str:
        """The secret's name: ``source`` without its ``secrets:`` prefix."""
        return self.source.removeprefix(SECRET_SOURCE_PREFIX)


@dataclass(frozen=True)
class Check:
    """One check: ``envs``/``mounts`` are None when neither the check nor the defaults set them."""

    plugin: str
    envs: dict[str, str] | None
    mounts: tuple[Mount, ...] | None


@dataclass(frozen=True)
class CoverageSettings:
    """The ``coverage`` section; ``min_percent`` None means "report, require nothing"."""

    min_percent: int | None


@dataclass(frozen=True)
class Manifest:
    """A valid manifest; ``exclude_paths`` are normalised (a trailing ``/`` gets ``*``)."""

    version: str
    coverage: CoverageSettings | None
    exclude_paths: tuple[str, ...]
    checks: tuple[Check, ...]

    def path_excluded(self, path: str) -> bool:
        """True if ``path`` matches an exclude pattern (see :func:`glob_match`)."""
        return any(glob_match(pattern, path) for pattern in self.exclude_paths)


def parse_manifest(text: str | bytes) -> Manifest:
    """Parse and validate a manifest; raise :class:`InvalidManifestError` if it is unusable."""
    data = _load_yaml(_decode(text))
    if not isinstance(data, dict):
        raise InvalidManifestError(
            ROOT_MUST_BE_MAPPING, "Invalid manifest: Root should be a mapping"
        )
    _check_version(data.get("version"))
    _SCHEMA.validate(data, ())
    return _build_manifest(data)


# --- Reading YAML ------------------------------------------------------------------------------

_YAML_LOADER = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader
_CORE = "tag:yaml.org,2002:"
_STR_TAG, _INT_TAG, _FLOAT_TAG = f"{_CORE}str", f"{_CORE}int", f"{_CORE}float"
_BOOL_TAG, _NULL_TAG = f"{_CORE}bool", f"{_CORE}null"
_MAPPING_TAGS = frozenset({None, "!", f"{_CORE}map"})
_SEQUENCE_TAGS = frozenset({None, "!", f"{_CORE}seq"})
_SAFE_CONSTRUCTOR = yaml.constructor.SafeConstructor()
# tag -> (constructor, implicit tags its text may have, name for error messages)
_SCALAR_READERS: dict[str, tuple[Callable[[ScalarNode], object], frozenset[str], str]] = {
    _INT_TAG: (_SAFE_CONSTRUCTOR.construct_yaml_int, frozenset({_INT_TAG}), "an integer"),
    _FLOAT_TAG: (
        _SAFE_CONSTRUCTOR.construct_yaml_float,
        frozenset({_FLOAT_TAG, _INT_TAG}),
        "a float",
    ),
    _BOOL_TAG: (_SAFE_CONSTRUCTOR.construct_yaml_bool, frozenset({_BOOL_TAG}), "a boolean"),
}
# PyYAML's implicit scalar rules, minus timestamps and the ``=`` / ``<<`` special keys.
_IMPLICIT_RESOLVERS: dict[str | None, list[tuple[str, re.Pattern[str]]]] = {
    first: [
        (tag, regexp)
        for tag, regexp in rules
        if tag in (_INT_TAG, _FLOAT_TAG, _BOOL_TAG, _NULL_TAG)
    ]
    for first, rules in yaml.resolver.Resolver.yaml_implicit_resolvers.items()
}


def _invalid_data(message: str) -> InvalidManifestError:
    return InvalidManifestError(INVALID_OR_MISSING_DATA, message)


def _decode(text: str | bytes) -> str:
    """The manifest as ``str``, once it is known to be small enough and valid UTF-8."""
    try:
        raw = text if isinstance(text, bytes) else text.encode("utf-8")
        if len(raw) > MAX_MANIFEST_BYTES:
            raise _invalid_data(f"Invalid manifest: file is larger than {MAX_MANIFEST_BYTES} bytes")
        return raw.decode("utf-8")
    except UnicodeError:  # undecodable bytes, or a str holding lone surrogates
        raise _invalid_data("Invalid manifest: file is not valid UTF-8") from None


def _load_yaml(text: str) -> object:
    """The single document's value, built from parser events (never composing a node graph)."""
    builder = _TreeBuilder()
    try:
        for event in yaml.parse(text, Loader=_YAML_LOADER):
            builder.feed(event)
    except yaml.MarkedYAMLError as exc:
        raise _invalid_data(_syntax_error_message(exc)) from None
    except yaml.YAMLError as exc:
        raise _invalid_data(f"Invalid YAML: {str(exc).splitlines()[0]}") from None
    return builder.root


class _Mark(Protocol):
    """Where a YAML event or error is (0-based); libyaml and PyYAML have their own classes."""

    @property
    def line(self) -> int: ...

    @property
    def column(self) -> int: ...


def _syntax_error_message(exc: yaml.MarkedYAMLError) -> str:
    """``Invalid YAML at line 3, column 5: <problem> (<context> at line 1, column 1)``."""
    message = f"{_at(exc.problem_mark)}: {exc.problem or 'invalid syntax'}"
    if exc.context:
        where = f" {_position(exc.context_mark)}" if exc.context_mark else ""
        message += f" ({exc.context}{where})"
    return message


def _position(mark: _Mark | None) -> str:
    return (
        f"at line {mark.line + 1}, column {mark.column + 1}" if mark else "at an unknown position"
    )


def _at(mark: _Mark | None) -> str:
    return f"Invalid YAML {_position(mark)}"


class _TreeBuilder:
    """Builds plain Python values from YAML events, enforcing the safety rules of this module."""

    def __init__(self) -> None:
        self.root: object = None
        self._documents = 0
        self._stack: list[list[object] | dict[str, object]] = []
        self._pending_keys: list[str | None] = []

    def feed(self, event: Event) -> None:
        if isinstance(event, DocumentStartEvent):
            self._documents += 1
            if self._documents > 1:
                raise _invalid_data(f"{_at(event.start_mark)}: expected a single YAML document")
        elif isinstance(event, AliasEvent) or (isinstance(event, NodeEvent) and event.anchor):
            raise _invalid_data(f"{_at(event.start_mark)}: anchors and aliases are not allowed")
        elif isinstance(event, ScalarEvent):
            self._add(_scalar_value(event), event)
        elif isinstance(event, CollectionStartEvent):
            self._open(event)
        elif isinstance(event, CollectionEndEvent):
            self._stack.pop()
            self._pending_keys.pop()

    def _open(self, event: CollectionStartEvent) -> None:
        allowed = _MAPPING_TAGS if isinstance(event, MappingStartEvent) else _SEQUENCE_TAGS
        if event.tag not in allowed:
            raise _invalid_data(f"{_at(event.start_mark)}: {_tag_not_allowed(event.tag)}")
        if len(self._stack) >= MAX_NESTING_DEPTH:
            raise _invalid_data(
                f"{_at(event.start_mark)}: nesting deeper than {MAX_NESTING_DEPTH} levels"
            )
        container: list[object] | dict[str, object] = (
            {} if isinstance(event, MappingStartEvent) else []
        )
        self._add(container, event)
        self._stack.append(container)
        self._pending_keys.append(None)

    def _add(self, value: object, event: Event) -> None:
        if not self._stack:
            self.root = value
            return
        parent = self._stack[-1]
        if isinstance(parent, list):
            parent.append(value)
            return
        key = self._pending_keys[-1]
        if key is not None:
            parent[key] = value
            self._pending_keys[-1] = None
        elif isinstance(value, str):
            self._pending_keys[-1] = value
        else:
            raise _invalid_data(f"{_at(event.start_mark)}: mapping keys must be strings")


def _scalar_value(event: ScalarEvent) -> object:
    """The scalar's Python value: str, int, float, bool or None.

    An explicit core tag must fit its text (``!!int 12``, ``!!float 1``); ``!`` means string.
    """
    explicit = event.tag not in (None, "!")
    if explicit:
        tag = event.tag
    elif event.tag is None and event.implicit[0]:  # untagged and unquoted
        tag = _resolve_plain(event.value)
    else:
        tag = _STR_TAG
    if tag == _STR_TAG:
        return event.value
    if tag == _NULL_TAG:
        return None
    if tag not in _SCALAR_READERS:
        raise _invalid_data(f"{_at(event.start_mark)}: {_tag_not_allowed(tag)}")
    read, accepted, kind = _SCALAR_READERS[tag]
    if not explicit or _resolve_plain(event.value) in accepted:
        try:
            return read(ScalarNode(tag, event.value))
        except ValueError:  # more digits than Python converts to an int; ``!!float 0x1F``
            pass
    shown = event.value if len(event.value) <= 40 else f"{event.value[:40]}..."
    raise _invalid_data(f"{_at(event.start_mark)}: cannot read `{shown}' as {kind}")


def _tag_not_allowed(tag: str | None) -> str:
    shown = f"!!{tag.removeprefix(_CORE)}" if tag and tag.startswith(_CORE) else tag
    return f"YAML tag `{shown}' is not allowed"


def _resolve_plain(value: str) -> str:
    """The tag of an untagged plain scalar (YAML 1.1 core rules)."""
    candidates = _IMPLICIT_RESOLVERS.get(value[:1], []) + _IMPLICIT_RESOLVERS.get(None, [])
    return next((tag for tag, regexp in candidates if regexp.match(value)), _STR_TAG)


# --- Version -----------------------------------------------------------------------------------


def _check_version(version: object) -> None:
    if ruby_blank(version):
        raise InvalidManifestError(MISSING_VERSION, "Invalid manifest: Missing version field")
    if not isinstance(version, str):
        raise InvalidManifestError(
            VERSION_TYPE_MISMATCH, "Invalid manifest: Version must be a string"
        )
    if version != MANIFEST_VERSION:
        raise InvalidManifestError(
            VERSION_UNSUPPORTED, f"Invalid manifest: Unsupported version {version}"
        )


# --- Schema ------------------------------------------------------------------------------------

_Path = tuple[str | int, ...]


def _render_path(path: _Path) -> str:
    """``checks.1.plugin``: keys and list indexes joined by dots.

    The root is ``""``, as in Cocov (``[].join(".")``), so an unknown top-level key gives
    ``Unexpected extra key `foo' on `'``.
    """
    return ".".join(str(part) for part in path)


def _type_mismatch(path: _Path, type_name: str, value: object) -> InvalidManifestError:
    return _invalid_data(
        f"Expected {_render_path(path)} to match {type_name}. "
        f"Assertion failed due to current object's value: {ruby_inspect(value)}"
    )


class _Schema(Protocol):
    def validate(self, value: object, path: _Path) -> None:
        """Raise ``manifest_invalid_or_missing_data`` describing the first violation."""


@dataclass(frozen=True)
class _String:
    reject_blank: bool = False

    def validate(self, value: object, path: _Path) -> None:
        if not isinstance(value, str):
            raise _type_mismatch(path, "string", value)
        if self.reject_blank and ruby_blank(value):
            raise _invalid_data(f"Expected {_render_path(path)} to not be blank")


@dataclass(frozen=True)
class _Integer:
    def validate(self, value: object, path: _Path) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _type_mismatch(path, "Integer", value)


@dataclass(frozen=True)
class _Optional:
    """Null, or a value of ``inner``; not required in a :class:`_Mapping`."""

    inner: _Schema

    def validate(self, value: object, path: _Path) -> None:
        if value is not None:
            self.inner.validate(value, path)


@dataclass(frozen=True)
class _Array:
    item: _Schema
    max_length: int | None = None

    def validate(self, value: object, path: _Path) -> None:
        if not isinstance(value, list):
            raise _type_mismatch(path, "Array", value)
        if self.max_length is not None and len(value) > self.max_length:
            raise _invalid_data(
                f"Expected list at {_render_path(path)} to have at most {self.max_length} "
                f"items. Assertion failed due to current list's length: {len(value)}"
            )
        for index, item in enumerate(value):
            self.item.validate(item, (*path, index))


@dataclass(frozen=True)
class _Mapping:
    """A mapping with exactly these keys (extra keys rejected); non-optional keys required."""

    fields: dict[str, _Schema]

    def validate(self, value: object, path: _Path) -> None:
        if not isinstance(value, dict):
            raise _type_mismatch(path, "Hash", value)
        for key, item in value.items():
            schema = self.fields.get(key)
            if schema is None:
                raise _invalid_data(f"Unexpected extra key `{key}' on `{_render_path(path)}'")
            schema.validate(item, (*path, key))
        for key, schema in self.fields.items():
            if key not in value and not isinstance(schema, _Optional):
                raise _invalid_data(f"{_render_path(path)} is missing a required key: {key}")


@dataclass(frozen=True)
class _StringMap:
    """A mapping of any string keys (the loader guarantees string keys) to ``values``."""

    values: _Schema

    def validate(self, value: object, path: _Path) -> None:
        if not isinstance(value, dict):
            raise _type_mismatch(path, "Hash", value)
        for key, item in value.items():
            self.values.validate(item, (*path, key))


_ENVS = _Optional(_StringMap(_String()))
_MOUNTS = _Optional(
    _Array(
        _Mapping({"source": _String(reject_blank=True), "destination": _String(reject_blank=True)})
    )
)
_SCHEMA = _Mapping(
    {
        "version": _String(reject_blank=True),
        "coverage": _Optional(_Mapping({"min_percent": _Optional(_Integer())})),
        "exclude_paths": _Optional(
            _Array(_String(reject_blank=True), max_length=MAX_EXCLUDE_PATHS)
        ),
        "defaults": _Optional(
            _Mapping({"checks": _Optional(_Mapping({"envs": _ENVS, "mounts": _MOUNTS}))})
        ),
        "checks": _Optional(
            _Array(
                _Mapping({"plugin": _String(reject_blank=True), "envs": _ENVS, "mounts": _MOUNTS}),
                max_length=MAX_CHECKS,
            )
        ),
    }
)


# --- Building the manifest ---------------------------------------------------------------------


@dataclass(frozen=True)
class _CheckDefaults:
    envs: dict[str, str] | None
    mounts: tuple[Mount, ...] | None


def _mapping(value: object) -> dict[str, object]:
    """A schema-validated mapping, ``{}`` for an absent or null one."""
    return cast("dict[str, object]", value) if value is not None else {}


def _items(value: object) -> list[object]:
    """A schema-validated list, ``[]`` for an absent or null one."""
    return cast("list[object]", value) if value is not None else []


def _build_manifest(data: dict[str, object]) -> Manifest:
    """The manifest of schema-valid ``data``; mount and pattern checks run in Cocov's order."""
    defaults = _check_defaults(_mapping(_mapping(data.get("defaults")).get("checks")))
    checks = tuple(_build_check(_mapping(raw), defaults) for raw in _items(data.get("checks")))
    exclude_paths = tuple(
        _exclude_pattern(cast(str, raw), index)
        for index, raw in enumerate(_items(data.get("exclude_paths")))
    )
    return Manifest(
        version=MANIFEST_VERSION,
        coverage=_coverage(data.get("coverage")),
        exclude_paths=exclude_paths,
        checks=checks,
    )


def _coverage(raw: object) -> CoverageSettings | None:
    if raw is None:
        return None
    return CoverageSettings(min_percent=cast("int | None", _mapping(raw).get("min_percent")))


def _check_defaults(raw: dict[str, object]) -> _CheckDefaults:
    mounts = _mounts(raw.get("mounts"))
    if mounts is not None:
        _validate_mounts(mounts, "defaults definition")
    return _CheckDefaults(envs=cast("dict[str, str] | None", raw.get("envs")), mounts=mounts)


def _build_check(raw: dict[str, object], defaults: _CheckDefaults) -> Check:
    """A check with defaults applied: envs merged (check wins); default mounts appended unless
    the check already mounts something at that destination."""
    plugin = cast(str, raw["plugin"])
    own_envs = cast("dict[str, str] | None", raw.get("envs"))
    own_mounts = _mounts(raw.get("mounts"))
    if own_mounts is not None:
        _validate_mounts(own_mounts, f"plugin `{plugin}'")
    envs = None
    if own_envs is not None or defaults.envs is not None:
        envs = {**(defaults.envs or {}), **(own_envs or {})}
    mounts = own_mounts
    if defaults.mounts is not None:
        used = {mount.destination for mount in own_mounts or ()}
        inherited = tuple(mount for mount in defaults.mounts if mount.destination not in used)
        mounts = (own_mounts or ()) + inherited
    return Check(plugin=plugin, envs=envs, mounts=mounts)


def _mounts(raw: object) -> tuple[Mount, ...] | None:
    if raw is None:
        return None
    return tuple(
        Mount(source=cast(str, entry["source"]), destination=cast(str, entry["destination"]))
        for entry in map(_mapping, _items(raw))
    )


def _validate_mounts(mounts: Iterable[Mount], where: str) -> None:
    """Per mount in order: its destination is new, then its source is a secret."""
    destinations: set[str] = set()
    for mount in mounts:
        if mount.destination in destinations:
            raise InvalidManifestError(
                DUPLICATED_MOUNT_DESTINATION,
                f"Duplicated mount destination `{mount.destination}' in {where}",
            )
        destinations.add(mount.destination)
        if not mount.source.startswith(SECRET_SOURCE_PREFIX):
            raise InvalidManifestError(
                INVALID_MOUNT_SOURCE,
                f"Invalid mount source `{mount.source}' in {where}: Only secrets are mountable.",
            )


def _exclude_pattern(raw: str, index: int) -> str:
    """The normalised pattern (``dir/`` → ``dir/*``), checked to compile within budget."""
    pattern = f"{raw}*" if raw.endswith("/") else raw
    try:
        compile_glob(pattern)
    except PatternTooComplexError:
        raise _invalid_data(
            f"Expected exclude_paths.{index} to expand its braces to at most "
            f"{MAX_PATTERN_EXPANSION_CHARS} characters"
        ) from None
    return pattern

"""Job definitions and the registry that names them.

A job is an ``async def name(ctx: JobContext, **args)`` marked with :func:`job`. Marking has
no side effect: the program builds a :class:`Registry` from the modules that hold its jobs
where it is assembled (``cocov_jobs.jobs.registry()``), and it travels with the process's
sessions (:mod:`cocov_jobs.engine.queue`), so tests can build their own registry.

Names: a job is found by its task name (``process_commit``), kebab-case
(``process-commit``) or Ruby class name (``ProcessCommitJob``). Arguments are validated
against the function's signature with pydantic, strictly (``true`` is not 1, ``"2"`` is not 2;
only command-line text is converted, :meth:`JobDefinition.validate_positional`), and every
integer must fit PostgreSQL's ``bigint`` (they are row ids): an argument that does not fit is
refused at enqueue (:class:`JobArgumentsError`), not in the worker.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any

import pydantic

from cocov_jobs.engine.retry import PermanentError

if TYPE_CHECKING:
    from cocov_jobs.config import Settings

JobFunc = Callable[..., Awaitable[None]]
#: Minutes between two runs of a periodic job, from the settings (0 disables it).
Period = Callable[["Settings"], int]

#: Attribute :func:`job` sets on a job function.
_DEFINITION = "__cocov_job__"
#: Range of PostgreSQL's ``bigint``, the type of every id an integer argument names.
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1


def fits_bigint(value: int) -> bool:
    """Whether ``value`` can be a PostgreSQL ``bigint`` (a row or job id)."""
    return BIGINT_MIN <= value <= BIGINT_MAX


class UnknownJobError(KeyError):
    """No job has that name."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        super().__init__(name)
        self.known = sorted(known)

    def __str__(self) -> str:
        return f"unknown job {self.args[0]!r}; known jobs: {', '.join(self.known)}"


class JobArgumentsError(PermanentError, ValueError):
    """The arguments do not match the job's signature."""


@dataclass(frozen=True)
class JobDefinition:
    """A job: its function, argument model, lock/dedupe key templates and period."""

    name: str
    func: JobFunc
    params: tuple[str, ...]
    args_model: type[pydantic.BaseModel]
    lock: str | None
    dedupe: str | None
    every: Period | None
    description: str
    #: Enqueued only by cocov-jobs itself (follow-ups, webhooks, maintenance): the service
    #: API refuses it.
    internal: bool = False

    @property
    def cli_name(self) -> str:
        return self.name.replace("_", "-")

    @property
    def ruby_name(self) -> str:
        return "".join(part.capitalize() for part in self.name.split("_")) + "Job"

    def validate(self, args: Mapping[str, object]) -> dict[str, Any]:
        """Arguments of exactly the job's types; :class:`JobArgumentsError` when they don't fit."""
        try:
            return self.args_model.model_validate(dict(args)).model_dump()
        except pydantic.ValidationError as exc:
            raise self._error(exc) from None

    def validate_positional(self, values: list[str]) -> dict[str, Any]:
        """Positional command-line values (text, converted) mapped onto the parameters."""
        if len(values) != len(self.params):
            raise JobArgumentsError(
                f"{self.cli_name} takes {len(self.params)} argument(s) "
                f"({' '.join(p.upper() for p in self.params) or 'none'}), got {len(values)}"
            )
        try:
            model = self.args_model.model_validate_strings(
                dict(zip(self.params, values, strict=True))
            )
        except pydantic.ValidationError as exc:
            raise self._error(exc) from None
        return model.model_dump()

    def _error(self, exc: pydantic.ValidationError) -> JobArgumentsError:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}"
            for err in exc.errors()
        )
        return JobArgumentsError(f"{self.cli_name}: {problems}")

    def lock_key(self, args: Mapping[str, object]) -> str | None:
        return self.lock.format(**args) if self.lock else None

    def dedupe_key(self, args: Mapping[str, object]) -> str | None:
        return f"{self.name}:{self.dedupe.format(**args)}" if self.dedupe is not None else None

    def usage(self) -> str:
        return f"{self.cli_name} {' '.join(p.upper() for p in self.params)}".strip()


def job(
    *,
    lock: str | None = None,
    dedupe: str | None = None,
    every: Period | None = None,
    internal: bool = False,
) -> Callable[[JobFunc], JobFunc]:
    """Mark ``async def name(ctx: JobContext, **args)`` as the job ``name``.

    ``lock`` and ``dedupe`` are ``str.format`` templates over the arguments, e.g.
    ``lock="repository:{repository_id}"``; ``every`` makes a job without arguments periodic;
    ``internal`` keeps it out of the service API (only cocov-jobs enqueues it).
    """

    def mark(func: JobFunc) -> JobFunc:
        hints = typing.get_type_hints(func)
        params = tuple(inspect.signature(func).parameters)[1:]
        fields: dict[str, Any] = {name: (_argument_type(hints[name]), ...) for name in params}
        model = pydantic.create_model(
            f"{func.__name__}_args",
            __config__=pydantic.ConfigDict(extra="forbid", strict=True),
            **fields,
        )
        definition = JobDefinition(
            name=func.__name__,
            func=func,
            params=params,
            args_model=model,
            lock=lock,
            dedupe=dedupe,
            every=every,
            description=(inspect.getdoc(func) or "").split("\n", 1)[0],
            internal=internal,
        )
        setattr(func, _DEFINITION, definition)
        return func

    return mark


def _argument_type(hint: Any) -> Any:
    """The validated type of an argument: integers are ids, so within ``bigint``."""
    if hint is int:
        return Annotated[int, pydantic.Field(ge=BIGINT_MIN, le=BIGINT_MAX)]
    return hint


def definition_of(func: JobFunc) -> JobDefinition:
    """The definition :func:`job` attached to ``func``."""
    found = getattr(func, _DEFINITION, None)
    if not isinstance(found, JobDefinition):
        raise TypeError(f"{func!r} is not marked with @job")
    return found


class Registry:
    """The jobs one program runs, by task name."""

    def __init__(self, funcs: Iterable[JobFunc] = ()) -> None:
        self._jobs: dict[str, JobDefinition] = {}
        for func in funcs:
            definition = definition_of(func)
            self._jobs[definition.name] = definition

    @classmethod
    def from_modules(cls, modules: Iterable[ModuleType]) -> Registry:
        """Every function marked with :func:`job` in ``modules``."""
        return cls(
            value
            for module in modules
            for value in vars(module).values()
            if getattr(value, _DEFINITION, None) is not None
            and getattr(value, "__module__", None) == module.__name__
        )

    def including(self, *funcs: JobFunc) -> Registry:
        """This registry plus ``funcs`` (a new registry; this one is unchanged)."""
        return Registry([*(d.func for d in self._jobs.values()), *funcs])

    def __iter__(self) -> Iterator[JobDefinition]:
        return iter(self._jobs.values())

    def __contains__(self, name: object) -> bool:
        return name in self._jobs

    def get(self, name: str) -> JobDefinition | None:
        """The job with task name ``name`` exactly (the name stored on a queued job)."""
        return self._jobs.get(name)

    def names(self) -> list[str]:
        """Kebab-case names, sorted (what the command line shows)."""
        return sorted(d.cli_name for d in self._jobs.values())

    def resolve(self, name: str) -> JobDefinition:
        """Find a job by task name, kebab-case name or Ruby class name (``ProcessCommitJob``)."""
        key = name.strip()
        if key.endswith("Job") and key[:1].isupper():
            key = re.sub(r"(?<!^)(?=[A-Z])", "_", key[:-3]).lower()
        key = key.replace("-", "_")
        try:
            return self._jobs[key]
        except KeyError:
            raise UnknownJobError(name, self.names()) from None

    def periodic(self, settings: Settings) -> dict[str, int]:
        """Task name → minutes between runs, for every periodic job enabled by ``settings``."""
        periods = {d.name: d.every(settings) for d in self._jobs.values() if d.every is not None}
        return {name: minutes for name, minutes in periods.items() if minutes > 0}

"""Problem specifications: model family, data, teacher, posterior, optimum settings.

A problem fixes everything the LLC depends on, so every estimator of it — the HMC
reference and the cheap methods — targets the same localized tempered posterior.

>>> spec = ProblemSpec.model_validate(
...     {"name": "tiny", "model": {"family": "rrr", "m_in": 3, "hidden": 2, "n_out": 3},
...      "teacher": {"rank": 1}, "data": {"n": 200}})
>>> spec.pid == ProblemSpec.model_validate(spec.model_dump()).pid
True
>>> spec.widths
(3, 2, 3)
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from lambda_hat.ids import problem_id
from lambda_hat.io import read_text, safe_load_yaml
from lambda_hat.problems.custom import CustomModel, FactoryError, load
from lambda_hat.problems.spec_fields import (
    DIGITS_CLASSES,
    DIGITS_IMAGES,
    DIGITS_PIXELS,
    MAX_LLC_SHIFT,
    DataSpec,
    Frozen,
    InputSpec,
    OptimumSpec,
    PosteriorSpec,
    TeacherSpec,
)

PRESETS = ("smoke", "default", "dln-family", "dln-family-holdout", "dln-ladder", "digits", "tms")


class SpecError(ValueError):
    """A problem set or spec is invalid. The message is one line naming the field."""


def _check_widths(widths: tuple[int, ...]) -> tuple[int, ...]:
    if len(widths) < 2:
        raise ValueError("needs at least 2 entries (input and output width)")
    if any(w < 1 for w in widths):
        raise ValueError("every width must be >= 1")
    return widths


class MLPModel(Frozen):
    """A fully connected network; ``widths`` = (input, hidden…, output)."""

    family: Literal["mlp"]
    widths: tuple[int, ...]
    activation: Literal["tanh", "relu", "gelu"] = "tanh"
    bias: bool = True

    _widths = field_validator("widths")(_check_widths)

    @property
    def layer_widths(self) -> tuple[int, ...]:
        return self.widths


class DLNModel(Frozen):
    """A deep linear network without biases; ``widths`` = (input, hidden…, output)."""

    family: Literal["dln"]
    widths: tuple[int, ...]

    _widths = field_validator("widths")(_check_widths)

    @property
    def layer_widths(self) -> tuple[int, ...]:
        return self.widths


class RRRModel(Frozen):
    """Reduced-rank regression y = B·A·x with A: hidden×m_in, B: n_out×hidden."""

    family: Literal["rrr"]
    m_in: int = Field(ge=1)
    hidden: int = Field(ge=1)
    n_out: int = Field(ge=1)

    @property
    def layer_widths(self) -> tuple[int, ...]:
        return (self.m_in, self.hidden, self.n_out)


ModelSpec = Annotated[MLPModel | DLNModel | RRRModel | CustomModel, Field(discriminator="family")]


class ProblemSpec(Frozen):
    """One LLC problem. ``name`` is a label; it does not enter the problem id."""

    # A label, but it reaches run names and keys: no "/", no leading dot or dash.
    name: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}$")
    model: ModelSpec
    data: DataSpec
    teacher: TeacherSpec = TeacherSpec()
    posterior: PosteriorSpec = PosteriorSpec()
    optimum: OptimumSpec = OptimumSpec()
    seed: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _factory_loads(self) -> ProblemSpec:
        """A custom problem's factory is imported, called and checked here, so a bad one
        fails in one line before anything runs."""
        if not isinstance(self.model, CustomModel):
            return self
        defaults = DataSpec(n=self.data.n)
        if self.data != defaults:
            raise ValueError("data: a custom problem's data and likelihood come from its "
                             "factory; give only data.n")  # fmt: skip
        if self.teacher != TeacherSpec():
            raise ValueError("teacher: a custom problem has no teacher; drop the teacher fields")
        try:
            rows = len(load(self.model).x)
        except FactoryError as error:
            raise ValueError(str(error)) from None
        if rows != self.data.n:
            raise ValueError(f"data.n: the factory returned {rows} samples, not {self.data.n}")
        return self

    @model_validator(mode="after")
    def _data_matches_model(self) -> ProblemSpec:
        if isinstance(self.model, CustomModel):
            return self
        data, widths = self.data, self.widths
        if data.likelihood == "categorical":
            if self.model.family != "mlp":
                raise ValueError(
                    "data.likelihood: categorical needs model.family mlp (dln/rrr are "
                    "Gaussian regressions)"
                )
            if widths[-1] < 2:
                raise ValueError("model.widths: a categorical model needs >= 2 outputs (classes)")
            if data.noise_sigma != DataSpec.model_fields["noise_sigma"].default:
                raise ValueError("data.noise_sigma: only for likelihood gaussian")
        if data.source == "digits":
            if data.likelihood != "categorical":
                raise ValueError("data.likelihood: digits are labelled images; use categorical")
            if (widths[0], widths[-1]) != (DIGITS_PIXELS, DIGITS_CLASSES):
                raise ValueError(
                    f"model.widths: digits need input {DIGITS_PIXELS} and output "
                    f"{DIGITS_CLASSES}, got ({widths[0]}, {widths[-1]})"
                )
            if data.n > DIGITS_IMAGES:
                raise ValueError(f"data.n: digits has {DIGITS_IMAGES} images, got {data.n}")
            if self.teacher != TeacherSpec():
                raise ValueError("teacher: digits have no teacher; drop the teacher fields")
            if self.optimum.init != "random":
                raise ValueError("optimum.init: digits have no teacher; use 'random'")
            if data.input != InputSpec():
                raise ValueError("data.input: only for source teacher")
        return self

    @model_validator(mode="after")
    def _teacher_matches_model(self) -> ProblemSpec:
        if isinstance(self.model, CustomModel):
            return self
        widths = self.widths
        if self.model.family in ("dln", "rrr"):
            if self.teacher.rank is None:
                raise ValueError("teacher.rank: required for dln/rrr problems")
            if self.teacher.rank > min(widths):
                raise ValueError(
                    f"teacher.rank: must be <= the smallest width {min(widths)}, "
                    f"got {self.teacher.rank}"
                )
            if self.teacher.widths is not None:
                raise ValueError("teacher.widths: only for mlp problems (dln/rrr use teacher.rank)")
        else:
            if self.teacher.rank is not None:
                raise ValueError(
                    "teacher.rank: only for dln/rrr problems (mlp uses teacher.widths)"
                )
            tw = self.teacher.widths
            if tw is not None:
                _check_widths(tw)
                if (tw[0], tw[-1]) != (widths[0], widths[-1]):
                    raise ValueError(
                        f"teacher.widths: input/output must match model widths "
                        f"({widths[0]}, {widths[-1]}), got ({tw[0]}, {tw[-1]})"
                    )
            if (
                self.optimum.init == "teacher"
                and tw not in (None, widths)
                and self.data.source == "teacher"
            ):
                raise ValueError(
                    "optimum.init: 'teacher' needs teacher.widths equal to model.widths; "
                    "use 'random'"
                )
        return self

    @property
    def widths(self) -> tuple[int, ...]:
        return self.model.layer_widths

    @property
    def teacher_widths(self) -> tuple[int, ...]:
        if self.model.family == "mlp" and self.teacher.widths is not None:
            return self.teacher.widths
        return self.widths

    def normalized(self) -> dict[str, Any]:
        """Every field that changes the problem, with defaults filled in (not ``name``).

        Fields added after the first release enter only when set away from their default,
        so the problems that existed before them keep their ids (and their cached w* and
        references). Fields a problem does not read are dropped, so they cannot split it.
        """
        fields = self.model_dump(mode="json", exclude={"name"})
        for (group, key), default in _ADDED_LATER.items():
            if fields[group][key] == default:
                del fields[group][key]
        if self.data.likelihood == "categorical":
            del fields["data"]["noise_sigma"]
        if isinstance(self.model, CustomModel):  # the factory's source, data and parameters
            fields["model"]["fingerprint"] = load(self.model).fingerprint
            for unread in ("init", "init_jitter"):
                del fields["optimum"][unread]
        return fields

    @property
    def pid(self) -> str:
        return problem_id(self.normalized())


_ADDED_LATER = {
    ("data", "source"): "teacher",
    ("data", "likelihood"): "gaussian",
    ("optimum", "max_llc_shift"): MAX_LLC_SHIFT,
    ("optimum", "newton_steps"): 200,
}


class ProblemSet(Frozen):
    problems: tuple[ProblemSpec, ...]

    @field_validator("problems")
    @classmethod
    def _non_empty_unique(cls, problems: tuple[ProblemSpec, ...]) -> tuple[ProblemSpec, ...]:
        if not problems:
            raise ValueError("must list at least one problem")
        names = [p.name for p in problems]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate problem names: {duplicates}")
        first_name: dict[str, str] = {}
        for problem in problems:  # the same spec twice would be tuned as one problem
            if problem.pid in first_name:
                raise ValueError(
                    f"{first_name[problem.pid]} and {problem.name} are the same problem "
                    f"({problem.pid}): drop one, or give it another seed"
                )
            first_name[problem.pid] = problem.name
        return problems


def format_validation_error(error: ValidationError) -> str:
    """One line: the first error's field path and message."""
    first = error.errors()[0]
    loc = ".".join(str(part) for part in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "literal_error":
        msg = f"{msg} (got {first['input']!r})"
    elif first["type"] == "extra_forbidden":
        msg = "unknown field"
    more = f" (+{len(error.errors()) - 1} more)" if len(error.errors()) > 1 else ""
    return f"{loc}: {msg}{more}" if loc else f"{msg}{more}"


def parse_problem_set(data: Any, source: str = "problem set") -> ProblemSet:
    """Validate a loaded YAML/JSON value (a mapping with ``problems:`` or a bare list)."""
    if isinstance(data, list):
        data = {"problems": data}
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping with 'problems:' or a list of problems")
    try:
        return ProblemSet.model_validate(data)
    except ValidationError as error:
        raise SpecError(f"{source}: {format_validation_error(error)}") from None


def load_problem_set(path_or_preset: str | Path, field: str = "problems") -> ProblemSet:
    """Load a preset by name (``smoke``, ``default``, ...) or a YAML file by path; errors
    name ``field`` (the argument it came from)."""
    name = str(path_or_preset)
    if name in PRESETS:
        text = resources.files("lambda_hat.presets").joinpath(f"{name}.yaml").read_text()
        source = f"preset {name}"
    else:
        path = Path(name)
        if path.is_dir():
            raise SpecError(f"{field}: {name!r} is a directory; give a YAML file or a preset")
        if not path.is_file():
            raise SpecError(
                f"{field}: no such file or preset {name!r} (presets: {', '.join(PRESETS)})"
            )
        text, source = read_text(path, field, SpecError), str(path)
    return parse_problem_set(safe_load_yaml(text, source, SpecError), source)


def set_name(path_or_preset: str | Path) -> str:
    """A problem set's name: the preset's, or the file's stem (recipe studies and files
    are named after it).

    >>> set_name("dln-family"), set_name("configs/my_family.yaml")
    ('dln-family', 'my_family')
    """
    name = str(path_or_preset)
    return name if name in PRESETS else Path(name).stem


def check_held_out(tuning: ProblemSet, held_out: ProblemSet) -> None:
    """A held-out problem must not be one of the tuning problems (same pid)."""
    tuned = {problem.pid: problem.name for problem in tuning.problems}
    for problem in held_out.problems:
        if problem.pid in tuned:
            raise SpecError(
                f"holdout: {problem.name} is the tuning problem {tuned[problem.pid]} "
                f"({problem.pid}); a held-out problem must not be tuned on"
            )

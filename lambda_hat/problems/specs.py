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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lambda_hat.ids import problem_id
from lambda_hat.io import read_text, safe_load_yaml

PRESETS = ("smoke", "default", "dln-family", "dln-family-holdout", "digits")


class SpecError(ValueError):
    """A problem set or spec is invalid. The message is one line naming the field."""


class _Frozen(BaseModel):
    # Non-finite numbers (.inf, .nan) are refused where they are read: downstream they
    # break hashing, JSON and every sampler.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


def _check_widths(widths: tuple[int, ...]) -> tuple[int, ...]:
    if len(widths) < 2:
        raise ValueError("needs at least 2 entries (input and output width)")
    if any(w < 1 for w in widths):
        raise ValueError("every width must be >= 1")
    return widths


class MLPModel(_Frozen):
    """A fully connected network; ``widths`` = (input, hidden…, output)."""

    family: Literal["mlp"]
    widths: tuple[int, ...]
    activation: Literal["tanh", "relu", "gelu"] = "tanh"
    bias: bool = True

    _widths = field_validator("widths")(_check_widths)

    @property
    def layer_widths(self) -> tuple[int, ...]:
        return self.widths


class DLNModel(_Frozen):
    """A deep linear network without biases; ``widths`` = (input, hidden…, output)."""

    family: Literal["dln"]
    widths: tuple[int, ...]

    _widths = field_validator("widths")(_check_widths)

    @property
    def layer_widths(self) -> tuple[int, ...]:
        return self.widths


class RRRModel(_Frozen):
    """Reduced-rank regression y = B·A·x with A: hidden×m_in, B: n_out×hidden."""

    family: Literal["rrr"]
    m_in: int = Field(ge=1)
    hidden: int = Field(ge=1)
    n_out: int = Field(ge=1)

    @property
    def layer_widths(self) -> tuple[int, ...]:
        return (self.m_in, self.hidden, self.n_out)


ModelSpec = Annotated[MLPModel | DLNModel | RRRModel, Field(discriminator="family")]


# Magnitudes beyond these overflow float64 in the loss or its Hessian (an input scale of
# 1e200 squared is inf): refused in one line naming the field, not met as NaN mid-run.
MAX_MAGNITUDE = 1e6
MAX_WEIGHT_SCALE = 1e3  # raised to the depth: a five-layer teacher reaches 1e15


class InputSpec(_Frozen):
    """Inputs: ``normal`` with standard deviation ``scale`` or ``uniform`` on [−scale, scale]."""

    dist: Literal["normal", "uniform"] = "normal"
    scale: float = Field(default=1.0, gt=0, le=MAX_MAGNITUDE)


DIGITS_IMAGES, DIGITS_PIXELS, DIGITS_CLASSES = 1797, 64, 10  # scikit-learn's bundled 8×8 set


class DataSpec(_Frozen):
    """Where the data comes from and how it is scored.

    ``source: teacher`` draws inputs and labels them with a random teacher network;
    ``source: digits`` takes ``n`` of scikit-learn's 1 797 bundled 8×8 digit images (pixels
    scaled to [−1, 1]; nothing is downloaded). ``likelihood: gaussian`` scores outputs by
    the Gaussian NLL with std ``noise_sigma``; ``categorical`` by softmax cross-entropy
    (the teacher's outputs are then logits, and each label is drawn from their softmax).
    """

    n: int = Field(ge=2, description="number of samples (>= 2 so that log n > 0)")
    source: Literal["teacher", "digits"] = "teacher"
    likelihood: Literal["gaussian", "categorical"] = "gaussian"
    input: InputSpec = InputSpec()
    noise_sigma: float = Field(
        default=0.5, ge=1 / MAX_MAGNITUDE, le=MAX_MAGNITUDE, description="Gaussian noise std of y"
    )


class TeacherSpec(_Frozen):
    """For dln/rrr: the true rank (random factors of that rank). For mlp: teacher widths."""

    rank: int | None = Field(default=None, ge=0)
    widths: tuple[int, ...] | None = None
    weight_scale: float = Field(default=1.0, gt=0, le=MAX_WEIGHT_SCALE)


class PosteriorSpec(_Frozen):
    """log π(w) = −nβ·L_n(w) − (γ/2)‖w − w*‖², β = beta0 / log n."""

    beta0: float = Field(default=1.0, gt=0, le=MAX_MAGNITUDE)
    gamma: float = Field(default=1.0, ge=0, le=MAX_MAGNITUDE**2)


# The LLC shift a residual gradient may cause (docs/user-guide.md): below every reference's
# standard error at the sizes shipped (measured: the smallest is about 0.02).
MAX_LLC_SHIFT = 0.01


class OptimumSpec(_Frozen):
    """How w* is found: Adam, then L-BFGS, then Newton–CG, in float64, until
    ‖∇L_n‖ < grad_tol; and when it is accepted (see ``lambda_hat.problems.optimum``)."""

    init: Literal["teacher", "random"] = "teacher"
    init_jitter: float = Field(
        default=1e-2,
        ge=0,
        description="std of noise added to the teacher: lets training leave the saddles "
        "where every factor has rank exactly r (measured: w* at such a point "
        "underestimated λ by 20 %)",
    )
    adam_steps: int = Field(default=2000, ge=0)
    adam_lr: float = Field(default=1e-2, gt=0)
    lbfgs_steps: int = Field(default=500, ge=0)
    newton_steps: int = Field(
        default=200,
        ge=0,
        le=100_000,
        description="trust-region Newton–CG iterations after L-BFGS, run only while "
        "‖∇L_n‖ > grad_tol (nonlinear nets: L-BFGS crawls along their flat valleys)",
    )
    grad_tol: float = Field(default=1e-8, gt=0)
    max_grad_norm: float = Field(
        default=1e-4,
        gt=0,
        description="accept a w* whose gradient norm is at most this, whatever its LLC shift",
    )
    max_llc_shift: float = Field(
        default=MAX_LLC_SHIFT,
        ge=0,
        le=MAX_MAGNITUDE,
        description="else accept it if the gradient can move the posterior's LLC by at "
        "most this: (nβ·‖∇L_n(w*)‖)²/γ (see docs/user-guide.md, 'The optimum w*')",
    )
    saddle_tol: float = Field(
        default=1e-6,
        gt=0,
        description="refuse a w* whose Hessian has an eigenvalue below −saddle_tol·(largest)",
    )


class ProblemSpec(_Frozen):
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
    def _data_matches_model(self) -> ProblemSpec:
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


class ProblemSet(_Frozen):
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

"""The Optuna storage: engines, a bounded connection check, studies, and retries.

Only the flow process talks to the storage. Every call the driver makes goes through
``StorageRetry``, which rides out a restarting database and then fails in one line.

>>> study = open_study("sqlite:///:memory:", "p_demo:sgld")
>>> finished_trials(study), best_value(study)
(0, None)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from lambda_hat.ids import stable_hash
from lambda_hat.io import check_writable
from lambda_hat.tuning.search_samplers import make_sampler

if TYPE_CHECKING:  # (Optuna and SQLAlchemy load on first use: a refusal needs neither)
    import optuna

log = logging.getLogger(__name__)


def engine_kwargs(url: str) -> dict[str, Any]:
    """Small pools and pre-ping for servers; a long busy timeout for SQLite."""
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}
    kwargs: dict[str, Any] = {
        "pool_pre_ping": True,
        "pool_size": 2,
        "max_overflow": 2,
        "pool_recycle": 300,
    }
    if url.startswith("postgresql"):
        kwargs["connect_args"] = {"connect_timeout": 10}  # an unreachable host fails, not hangs
    return kwargs


class StorageError(RuntimeError):
    """The Optuna storage cannot be used. One line, password masked."""


def check_storage(url: str) -> None:
    """Connect once (bounded by the connect timeout) so that a wrong URL, host or password
    fails before any work starts, with a message that names the storage but not its secret.

    >>> check_storage("sqlite:///:memory:")
    >>> check_storage("nosuchdb://x")
    Traceback (most recent call last):
    ...
    lambda_hat.tuning.storage.StorageError: optuna_storage nosuchdb://x: unknown database driver
    """
    import sqlalchemy

    from lambda_hat.settings import mask_url

    shown = mask_url(url)
    sqlite_file = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None
    if sqlite_file is not None and str(sqlite_file) != ":memory:" and not sqlite_file.exists():
        # Connecting would create the file, which a dry run must not: check the folder.
        try:
            check_writable(sqlite_file, "optuna_storage")
        except ValueError as error:
            raise StorageError(str(error)) from None
        return
    try:
        engine = sqlalchemy.create_engine(url, **engine_kwargs(url))
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError):
        raise StorageError(f"optuna_storage {shown}: unknown database driver") from None
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
            if sqlite_file is not None:
                _check_sqlite_file(connection, shown)
    except sqlalchemy.exc.SQLAlchemyError as error:
        reason = str(getattr(error, "orig", error)).strip().splitlines()[0]
        raise StorageError(f"optuna_storage {shown}: cannot connect ({reason})") from None
    finally:
        engine.dispose()


def _check_sqlite_file(connection: Any, shown: str) -> None:
    """A truncated or overwritten SQLite file still answers ``SELECT 1``; its pages do not
    (``quick_check`` reads them all: a second for a 100 MB file)."""
    import sqlalchemy

    try:
        verdict = connection.execute(sqlalchemy.text("PRAGMA quick_check")).scalar()
    except sqlalchemy.exc.DatabaseError as error:
        verdict = str(getattr(error, "orig", error)).strip().splitlines()[0]
    if verdict != "ok":
        raise StorageError(
            f"optuna_storage {shown}: the database is damaged ({verdict}); restore it from "
            "a backup, or move it aside and rerun (its studies then start over)"
        )


def init_storage(url: str) -> None:
    """Create the storage's tables once, before studies open it from several threads.

    Concurrent first opens of a fresh database race to create the tables and the version
    row (two runs of one deployment started together: one of them failed with a UNIQUE
    or "table exists" error). A file lock serialises SQLite; for a server, the loser of
    the race finds the tables made and simply opens them again.
    """
    sqlite_file = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else None
    if sqlite_file and sqlite_file != ":memory:":
        with FileLock(sqlite_file + ".init.lock", timeout=120):
            _create_tables(url)
        return
    import sqlalchemy.exc

    try:
        _create_tables(url)
    except sqlalchemy.exc.SQLAlchemyError:
        time.sleep(1.0)  # the other run is creating them; its commit lands within a second
        _create_tables(url)


def _create_tables(url: str) -> None:
    import optuna

    storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url))
    storage.engine.dispose()


def open_study(
    url: str, name: str, pruner: optuna.pruners.BasePruner | None = None, sampler: str = "tpe"
) -> optuna.Study:
    """Create or resume the study ``name`` (``<pid>:<method>``). ``sampler`` proposes its
    configurations (``lambda_hat.tuning.search_samplers``), seeded by ``sampler_seed``;
    ``pruner`` (default: none) stops configurations that are losing between their repeats."""
    import optuna

    storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url))
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        pruner=pruner or optuna.pruners.NopPruner(),
        direction="minimize",
        load_if_exists=True,
    )
    seed = sampler_seed(name, len(study.get_trials(deepcopy=False)))
    study.sampler = make_sampler(sampler, seed)
    return study


def sampler_seed(study_name: str, trials_so_far: int) -> int:
    """The seed of a study's sampler: from the study (its problem's pid and the method)
    and the trials it already has.

    - Each study its own: the studies of a campaign explore different configurations
      (seeded alike, every problem's study once drew the same ones).
    - The same campaign run again proposes the same ones: the pid is the problem's content.
    - Not the same draws on each resume: a sampler seeded alike every time would propose
      the first run's random start-up again.

    >>> sampler_seed("p_a:sgld", 0) != sampler_seed("p_b:sgld", 0) != sampler_seed("p_a:sgld", 4)
    True
    >>> sampler_seed("p_a:sgld", 0) == sampler_seed("p_a:sgld", 0)
    True
    """
    return int(stable_hash({"study": study_name, "sampler": trials_so_far}), 16) % 2**31


def finished_trials(study: optuna.Study) -> int:
    """Trials that count toward ``n_trials``: the ones the driver told a result (they carry
    a ``status`` attr: complete, failed or pruned), not the ones it reaped or lost (those
    were re-enqueued and run again)."""
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
    trials = study.get_trials(deepcopy=False, states=states)
    return sum(1 for t in trials if counted(t))


def counted(trial: optuna.trial.FrozenTrial) -> bool:
    """Told by the driver (a ``status`` attr) and not re-enqueued: a trial whose status
    was set but whose ``tell`` never happened (the driver or the database died in between)
    is reaped and re-enqueued like any stale trial, so it must not count as well."""
    return "status" in trial.user_attrs and "requeued" not in trial.user_attrs


def best_value(study: optuna.Study) -> float | None:
    """The best objective so far (one query, not a load of every trial), or None."""
    try:
        return study.best_value
    except ValueError:  # no completed trial yet
        return None


def retryable() -> tuple[type[Exception], ...]:
    """The errors of a database that is restarting or unreachable for a while."""
    import optuna
    import sqlalchemy.exc

    return (
        optuna.exceptions.StorageInternalError,
        sqlalchemy.exc.OperationalError,
        sqlalchemy.exc.InterfaceError,
    )


@dataclass(frozen=True)
class StorageRetry:
    """Call a storage operation, retrying connection errors (a restarting database) with
    backoff for at most ``within_sec``; then fail with one line instead of hanging.

    >>> StorageRetry(1.0)("a query", lambda: 42)
    42
    """

    within_sec: float = 120.0

    def __call__(self, what: str, operation: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + self.within_sec
        delay = 0.5
        transient = retryable()
        while True:
            try:
                return operation(*args, **kwargs)
            except transient as error:
                reason = _first_line(error)
                if _disk_full(reason):  # waiting frees no space: say so at once
                    raise StorageError(
                        f"optuna_storage: {what} failed: {reason} (free space where the "
                        "database lives, then rerun: RUNNING trials are picked up again)"
                    ) from None
                if time.monotonic() + delay > deadline:
                    raise StorageError(
                        f"optuna_storage: {what} failed for {self.within_sec:g} s "
                        f"(LAMBDA_HAT_BUDGETS__STORAGE_RETRY_SEC); last error: {reason}"
                    ) from None
                log.warning(
                    "optuna_storage: %s failed (%s); retrying in %.1f s", what, reason, delay
                )
                time.sleep(delay)
                delay = min(2 * delay, 10.0)


def _disk_full(reason: str) -> bool:
    """SQLite's "database or disk is full", Postgres's "No space left on device"."""
    text = reason.lower()
    return "disk is full" in text or "no space left" in text or "disk full" in text


def _first_line(error: BaseException) -> str:
    """The driver's own message (never the SQL parameters or the URL)."""
    cause = getattr(error, "orig", None) or error.__cause__ or error
    text = str(cause).strip().splitlines()
    return text[0] if text else type(cause).__name__

"""A campaign's studies on one cluster: every (problem, method) study at once, or one recipe
study per method, then the transfer runs of their recommendations to held-out problems.

The runs in flight over all the studies are capped at twice the cluster's capacity and
shared fairly (``lambda_hat.tuning.slots``): one run waiting behind each running one, so a
worker that finishes starts its next run at once instead of after the driver's round trip
(tell, ask, submit, task start: 0.3-0.6 s measured, ``benchmarks/orchestration.py``). Each
problem's studies start as soon as its own reference is in (``flows/supply.py``); the
held-out problems' references are computed beside them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

from prefect import get_run_logger

from flows.campaign import all_at_once
from flows.cluster import capacity, runner_for
from flows.study import tune_study
from flows.supply import ReferenceSupply
from flows.transfer import transfer, transfer_entries
from lambda_hat.problems.specs import set_name
from lambda_hat.settings import Settings
from lambda_hat.tuning.slots import TrialSlots
from lambda_hat.tuning.validation import StudyResult


@dataclass
class Campaign:
    """What every study of one run shares: the references, the cluster, the search."""

    supply: ReferenceSupply
    address: str
    settings: Settings
    specs: list[dict[str, Any]]
    held_specs: list[dict[str, Any]]
    spaces: dict[str, Any]
    methods: list[str]
    tuning: dict[str, Any]
    objective: str
    huber_k: float
    recipe: bool
    problems: str
    holdout: str | None
    allow_untrusted: bool
    warm_starts: dict[str, dict[str, Any]]
    slots: TrialSlots = field(init=False)

    def run(self) -> tuple[list[StudyResult], list[dict[str, Any]]]:
        """Every study at once, then the transfer runs of their recommendations."""
        workers = capacity(self.settings.cluster, "trials", self.address)
        self.slots = TrialSlots(2 * workers)
        get_run_logger().info(
            "%d studies at once on %d workers; at most %d runs in flight over all of them",
            len(self.methods) * (1 if self.recipe else len(self.specs)), workers,
            self.slots.capacity,
        )  # fmt: skip
        work = (
            [self._recipe_studies]
            if self.recipe
            else [partial(self._studies_of, i) for i in range(len(self.specs))]
        )
        *groups, held_refs = all_at_once([*work, self._held_out_references], self.slots)
        studies = [study for group in groups for study in group]
        return studies, self._transfer(studies, held_refs)

    def _trusted(self, reference: dict[str, Any]) -> bool:
        if reference.get("quality") == "untrusted" and not self.allow_untrusted:
            get_run_logger().warning("%s: untrusted reference; not tuned on", reference["name"])
            return False
        return True

    def _subflow(self, specs: list[dict[str, Any]], refs: list[dict[str, Any]], method: str,
                 **kind: Any) -> Any:  # fmt: skip
        subflow = tune_study.with_options(task_runner=runner_for(self.address))
        return partial(
            subflow, specs, refs, method, self.spaces[method].model_dump(mode="json"),
            warm_start=self.warm_starts.get(method), **kind, **self.tuning,
        )  # fmt: skip

    def _studies_of(self, index: int) -> list[StudyResult]:
        """One problem's studies, one per method, once its reference is in."""
        reference = self.supply.get(index, self.address, self.slots)
        if not self._trusted(reference):
            return []
        calls = [
            self._subflow([self.specs[index]], [reference], method,
                          objective=self.objective, huber_k=self.huber_k)
            for method in self.methods
        ]  # fmt: skip
        return all_at_once(calls, self.slots)

    def _recipe_studies(self) -> list[StudyResult]:
        """One study per method over every problem: a recipe is judged on all of them, so
        its studies start once all their references are in."""
        indices = range(len(self.specs))
        refs = all_at_once([partial(self.supply.get, i, self.address, self.slots) for i in indices])
        family = [(s, r) for s, r in zip(self.specs, refs, strict=True) if self._trusted(r)]
        if not family:
            return []
        calls = [
            self._subflow([s for s, _ in family], [r for _, r in family], method,
                          kind="recipe", set_name=set_name(self.problems))
            for method in self.methods
        ]  # fmt: skip
        return all_at_once(calls, self.slots)

    def _held_out_references(self) -> list[dict[str, Any]]:
        first = len(self.specs)
        indices = range(first, first + len(self.held_specs))
        return all_at_once([partial(self.supply.get, i, self.address, self.slots) for i in indices])

    def _transfer(
        self, studies: list[StudyResult], held_refs: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Each recommendation on the held-out problems, on fresh seeds (known once its
        study's validation is in)."""
        if not self.held_specs or not studies:
            return []
        held = [(s, r) for s, r in zip(self.held_specs, held_refs, strict=True) if self._trusted(r)]
        if not held:
            return []
        return transfer.with_options(task_runner=runner_for(self.address))(
            set_name(self.holdout), [s for s, _ in held], [r for _, r in held],
            transfer_entries([s.leaderboard_row for s in studies], self.spaces),
            self.tuning["validation_seeds"], self.settings.budgets.trial_sec,
        )  # fmt: skip

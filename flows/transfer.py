"""The ``transfer`` subflow: each recommended configuration run on held-out problems.

After validation, a study's recommended configuration (a per-problem study's or a
recipe's) is run on every problem of the ``--holdout`` set, each against its own
reference, on fresh seeds (the study's transfer seeds: odd like validation seeds, from
their own sequence, never a search seed). Each run is a row of ``runs.parquet`` with
``stage = transfer``, the source study's ``study_name`` and the held-out problem's pid;
the leaderboard shows the mean relative error over the held-out problems beside the
validated error.
"""

from __future__ import annotations

import json
from typing import Any

from prefect import flow, get_run_logger
from prefect.context import get_run_context

from flows.records import recorder
from flows.study import group_submitter, stall_guard
from lambda_hat.samplers.configs import parse_method_config
from lambda_hat.settings import Settings
from lambda_hat.tuning.kinds import Recipe, member_of, members_of
from lambda_hat.tuning.recipes import recommended_config
from lambda_hat.tuning.search_space import MethodSpace
from lambda_hat.tuning.trials import RunOutcome, RunPlan, plan_runs, study_seeds
from lambda_hat.tuning.validation import judged_rows, run_all, run_groups


def transfer_entries(
    leaderboard: list[dict[str, Any]], spaces: dict[str, MethodSpace]
) -> list[dict[str, Any]]:
    """What each leaderboard row recommends, as a full method config (rows without a
    completed trial recommend nothing)."""
    return [
        {
            "study_name": row["study_name"],
            "method": row["method"],
            "config": recommended_config(row, spaces),
            "hyperparams": json.loads(row["params_json"]),
        }
        for row in leaderboard
        if row["config_id"] is not None
    ]


@flow(name="transfer", flow_run_name="transfer-{set_name}")
def transfer(
    set_name: str,
    specs: list[dict[str, Any]],
    references: list[dict[str, Any]],
    entries: list[dict[str, Any]],
    seeds: int,
    budget_sec: float,
) -> list[dict[str, Any]]:
    """Run every entry's configuration ``seeds`` times on every held-out problem; returns
    each run's judged figures with the study whose recommendation it ran."""
    logger = get_run_logger()
    settings = Settings()
    members = members_of(specs, references)
    held_out = Recipe(set_name)  # judged as a recipe is: relative error on each problem
    spec_of = {ref["pid"]: spec for spec, ref in zip(specs, references, strict=True)}
    plans: list[RunPlan] = []
    source: dict[str, str] = {}  # run id → the study whose recommendation it runs
    for entry in entries:
        mine = plan_runs(
            parse_method_config(entry["method"], entry["config"]), entry["hyperparams"],
            method=entry["method"], pids=list(spec_of),
            seeds=study_seeds(entry["study_name"], seeds, "transfer"), budget_sec=budget_sec,
            stage="transfer",
        )  # fmt: skip
        source.update({plan.run_id: entry["study_name"] for plan in mine})
        plans += mine
    logger.info(
        "transfer to %s: %d recommended configurations × %d held-out problems × %d fresh "
        "seeds (%d runs)",
        set_name, len(entries), len(members), seeds, len(plans),
    )  # fmt: skip
    flow_run_id = str(get_run_context().flow_run.id)
    records = {
        entry["study_name"]: recorder(
            settings,
            members,
            {
                "study_name": entry["study_name"],
                "method": entry["method"],
                "objective_kind": held_out.objective_kind,
                "flow_run_id": flow_run_id,
            },
        )  # fmt: skip
        for entry in entries
    }

    def record(run: RunOutcome) -> None:
        records[source[run.plan.run_id]](run)

    outcomes = run_all(
        plans,
        submit_group=group_submitter(settings, lambda plan: spec_of[plan.pid]),
        # A group runs its runs one after the other: its stall bound is theirs together.
        first_done=stall_guard(
            f"transfer to {set_name}",
            settings,
            budget_sec * max((len(group) for group in run_groups(plans)), default=1),
        ),
        record=record,
        judge=lambda plan, result: held_out.judge(plan, result, member_of(members, plan.pid)),
    )
    return [
        {**row, "study_name": source[run.plan.run_id]}
        for run, row in zip(outcomes, judged_rows(outcomes, members), strict=True)
    ]

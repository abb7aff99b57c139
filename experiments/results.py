"""One experiment's results, assembled from its counts: :func:`summarise`.

Pure: the caller reads the counts (and the weight history) from the store and passes them
in; nothing here reads a clock or a file. For each treatment arm and goal: the effect
against the control (relative by default), the fixed-horizon Welch test, the always-valid
sequential test, the Bayesian reading; per arm and goal the probability of being best; the
sample-ratio check; p-values adjusted over all arms x goals; a power hint; and a decision in
words (:mod:`experiments.report` writes the words, the JSON and the CSV).

CUPED (statistics.md, "Health checks"): given a pre-exposure covariate x per arm
(:class:`Covariate`; the proxy records previous visits), every comparison of a goal whose
arms all have x data, and where x varies, is adjusted: theta = Cov(y, x) / Var(x) over the
units of all arms, the effect of the adjusted means m_y - theta m_x
(:func:`experiments.stats.cuped_estimate`), relative to the unadjusted control mean. The
adjusted effect is the comparison's ``outcome`` (tests, intervals, the decision all use
it); ``Comparison.cuped`` keeps the unadjusted effect and the variance reduction achieved.
Without covariate data nothing changes. ``SummaryOptions(cuped=False)`` turns it off.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from experiments.history import WeightHistory, expected_units
from experiments.model import Experiment, Goal
from experiments.report import Decision, csv_rows, decide, to_json_dict
from experiments.stats import (
    DEFAULT_TUNING,
    SRM_THRESHOLD,
    ArmStats,
    BayesResult,
    Correction,
    CupedArm,
    Difference,
    Estimate,
    GaussianPrior,
    Insufficient,
    Interval,
    MetricKind,
    NotEnoughData,
    PowerHint,
    SequentialResult,
    SrmResult,
    TestResult,
    adjust,
    cuped_estimate,
    cuped_theta,
    estimate,
    expected_from_weights,
    gaussian_effect,
    interval_alpha,
    prob_best_beta,
    prob_best_normal,
    sequential_test,
    srm_check,
    t_test,
    visitors_needed,
)

Counts = Mapping[str, Mapping[str, ArmStats]]  # arm id -> goal id -> statistics


@dataclass(frozen=True, slots=True)
class SummaryOptions:
    alpha: float = 0.05
    sequential: bool = True              # decide on always-valid p-values and intervals
    tuning: float = DEFAULT_TUNING       # N* of the confidence sequence
    correction: Correction = Correction.HOLM
    difference: Difference = Difference.RELATIVE
    prior: GaussianPrior | None = None   # on the effect; None = flat
    mde: float = 0.05                    # relative effect for the power hint
    power: float = 0.8
    srm_threshold: float = SRM_THRESHOLD
    cuped: bool = True                   # adjust with the covariate where there is one


@dataclass(frozen=True, slots=True)
class Covariate:
    """One arm's pre-exposure covariate x, for CUPED.

    ``x`` is ArmStats(n, sum x, sum x^2) over the arm's units (n = the arm's units; a unit
    whose x was not recorded counts as x = 0); ``sum_xy[goal]`` is the sum over the units of
    x times the unit's value on that goal (a goal absent: 0); ``known`` is how many units
    had a recorded x (None: all of them).
    """

    x: ArmStats
    sum_xy: Mapping[str, float]
    known: int | None = None

    @property
    def units_known(self) -> int:
        return self.x.n if self.known is None else self.known


@dataclass(frozen=True, slots=True)
class CupedAdjustment:
    """What CUPED did to one comparison: the outcome is adjusted, this is the rest."""

    theta: float                # Cov(y, x) / Var(x) over the units of all arms
    variance_reduction: float   # 1 - Var(adjusted effect) / Var(unadjusted effect)
    unadjusted: Estimate        # the effect without CUPED
    coverage: float             # share of the compared units with a recorded covariate


@dataclass(frozen=True, slots=True)
class ArmGoalSummary:
    arm: str
    goal: str
    n: int
    value: float | None       # conversion rate or mean per unit; None for an empty arm
    p_best: float | None      # P(this arm is best on the goal); None where undefined


@dataclass(frozen=True, slots=True)
class Comparison:
    """A treatment against the control on one goal."""

    arm: str
    goal: str
    primary: bool
    outcome: Estimate | NotEnoughData
    fixed: TestResult | None = None
    sequential: SequentialResult | None = None
    bayes: BayesResult | None = None
    p_adjusted: float | None = None
    ci_adjusted: Interval | None = None  # at the corrected alpha, sequential if sequential
    ci_alpha: float | None = None        # that corrected alpha (0.025 for Holm over 2)
    cuped: CupedAdjustment | None = None  # set when ``outcome`` is CUPED-adjusted

    @property
    def p(self) -> float | None:
        """The unadjusted p-value decisions use (sequential or fixed, per the options)."""
        chosen = self.sequential if self.sequential is not None else self.fixed
        return None if chosen is None else chosen.p


@dataclass(frozen=True, slots=True)
class ExperimentResult:
    experiment: str
    control: str
    primary_goal: str
    options: SummaryOptions
    arms: tuple[ArmGoalSummary, ...]
    comparisons: tuple[Comparison, ...]
    srm: SrmResult | NotEnoughData
    power: PowerHint | NotEnoughData
    decision: Decision

    def to_json_dict(self) -> dict[str, Any]:
        """Plain JSON types only: enums as their values, infinities as None, no NaN."""
        return to_json_dict(self)

    def csv_rows(self) -> list[list[str]]:
        """A header row, then one row per arm and goal (see experiments.report.CSV_HEADER)."""
        return csv_rows(self)


def summarise(
    experiment: Experiment, counts: Counts, weight_history: WeightHistory,
    options: SummaryOptions = SummaryOptions(), *, units_by_period: Sequence[int] | None = None,
    covariates: Mapping[str, Covariate] | None = None,
) -> ExperimentResult:
    """Everything about ``experiment`` from its cumulative counts.

    ``counts[arm][goal]`` holds the arm's units (n, the same for every goal of the arm) and
    the goal's sum and sum of squares. An arm or goal absent from ``counts`` has had no
    units or no conversions; an id the experiment does not have is an error.
    ``units_by_period`` (units of all arms that entered during each period of
    ``weight_history``) is needed for the sample-ratio check once the weights have changed.
    ``covariates`` (arm -> :class:`Covariate`) enables CUPED; arms absent have no x data.
    """
    table = _complete(experiment, counts)
    arms = tuple(_arm_summaries(experiment, goal, table) for goal in experiment.goals)
    thetas = _thetas(experiment, table, covariates, options)
    raw = [_compare(experiment, goal, arm.id, table, options, thetas.get(goal.id))
           for goal in experiment.goals for arm in experiment.arms[1:]]
    comparisons = _adjusted(raw, options)
    srm = _srm(experiment, table, weight_history, units_by_period, options)
    power = _power(experiment, table, options)
    return ExperimentResult(
        experiment=experiment.id, control=experiment.control.id,
        primary_goal=experiment.primary_goal.id, options=options,
        arms=tuple(summary for per_goal in arms for summary in per_goal),
        comparisons=comparisons, srm=srm, power=power,
        decision=decide(experiment, comparisons, srm, power, options),
    )


def _complete(experiment: Experiment, counts: Counts) -> dict[str, dict[str, ArmStats]]:
    arm_ids = {arm.id for arm in experiment.arms}
    goal_ids = {goal.id for goal in experiment.goals}
    where = f"summarise({experiment.id!r})"
    for arm_id, by_goal in counts.items():
        if arm_id not in arm_ids:
            raise ValueError(f"{where}: counts for unknown arm {arm_id!r}; arms are "
                             f"{', '.join(sorted(arm_ids))}")
        unknown = sorted(set(by_goal) - goal_ids)
        if unknown:
            raise ValueError(f"{where}: counts for unknown goal {unknown[0]!r} on arm "
                             f"{arm_id!r}; goals are {', '.join(sorted(goal_ids))}")
        sizes = {stats.n for stats in by_goal.values()}
        if len(sizes) > 1:
            raise ValueError(f"{where}: arm {arm_id!r} has different unit counts per goal "
                             f"{sorted(sizes)}; n must be the arm's units for every goal")
    table: dict[str, dict[str, ArmStats]] = {}
    for arm in experiment.arms:
        given = counts.get(arm.id, {})
        n = next(iter(given.values())).n if given else 0
        table[arm.id] = {goal.id: given.get(goal.id, ArmStats(n)) for goal in experiment.goals}
    return table


def _kind(goal: Goal) -> MetricKind:
    return MetricKind.BINARY if goal.binary else MetricKind.MEAN


def _arm_summaries(experiment: Experiment, goal: Goal,
                   table: dict[str, dict[str, ArmStats]]) -> tuple[ArmGoalSummary, ...]:
    stats = [table[arm.id][goal.id] for arm in experiment.arms]
    best = _p_best(stats, goal)
    return tuple(
        ArmGoalSummary(arm.id, goal.id, s.n, s.mean if s.n else None,
                       None if best is None else best[k])
        for k, (arm, s) in enumerate(zip(experiment.arms, stats, strict=True)))


def _p_best(stats: list[ArmStats], goal: Goal) -> tuple[float, ...] | None:
    """P(best) under flat priors; None while an arm is empty (its uniform prior would claim
    a large chance of being best on no evidence at all)."""
    if any(s.n == 0 for s in stats):
        return None
    if goal.binary:  # Beta(1 + c, 1 + n - c)
        return prob_best_beta([1.0 + s.sum for s in stats],
                              [1.0 + s.n - s.sum for s in stats])[0]
    if any(s.n < 2 or s.variance(MetricKind.MEAN) == 0.0 for s in stats):
        return None
    sds = [(s.variance(MetricKind.MEAN) / s.n) ** 0.5 for s in stats]
    return prob_best_normal([s.mean for s in stats], sds)[0]


def _complete_covariates(experiment: Experiment, table: dict[str, dict[str, ArmStats]],
                         covariates: Mapping[str, Covariate]) -> None:
    where = f"summarise({experiment.id!r})"
    arm_ids = {arm.id for arm in experiment.arms}
    goal_ids = {goal.id for goal in experiment.goals}
    for arm_id, covariate in covariates.items():
        if arm_id not in arm_ids:
            raise ValueError(f"{where}: covariate for unknown arm {arm_id!r}; arms are "
                             f"{', '.join(sorted(arm_ids))}")
        unknown = sorted(set(covariate.sum_xy) - goal_ids)
        if unknown:
            raise ValueError(f"{where}: covariate sum_xy for unknown goal {unknown[0]!r} on "
                             f"arm {arm_id!r}")
        n = table[arm_id][experiment.primary_goal.id].n
        if covariate.x.n != n:
            raise ValueError(f"{where}: arm {arm_id!r} has {n} units but its covariate has "
                             f"n = {covariate.x.n}; n must be the arm's units")
        if covariate.known is not None and not 0 <= covariate.known <= n:
            raise ValueError(f"{where}: arm {arm_id!r}: {covariate.known} units with a "
                             f"covariate out of {n}")


def _cuped_arm(table: dict[str, dict[str, ArmStats]], covariates: Mapping[str, Covariate],
               arm: str, goal: str) -> CupedArm:
    covariate = covariates[arm]
    return CupedArm(table[arm][goal], covariate.x, covariate.sum_xy.get(goal, 0.0))


def _thetas(experiment: Experiment, table: dict[str, dict[str, ArmStats]],
            covariates: Mapping[str, Covariate] | None,
            options: SummaryOptions) -> dict[str, tuple[float, Mapping[str, Covariate]]]:
    """goal -> (theta, covariates) for the goals CUPED applies to: every arm with units has
    covariate data (some unit with a recorded x) and x varies over all units."""
    if covariates is None:
        return {}
    _complete_covariates(experiment, table, covariates)
    if not options.cuped:
        return {}
    goal0 = experiment.primary_goal.id
    used = [arm.id for arm in experiment.arms if table[arm.id][goal0].n > 0]
    if len(used) < 2 or any(arm not in covariates or covariates[arm].known == 0
                            for arm in used):
        return {}
    out = {}
    for goal in experiment.goals:
        theta = cuped_theta([_cuped_arm(table, covariates, arm, goal.id) for arm in used])
        if not isinstance(theta, NotEnoughData):
            out[goal.id] = (theta, covariates)
    return out


def _compare(experiment: Experiment, goal: Goal, arm_id: str,
             table: dict[str, dict[str, ArmStats]], options: SummaryOptions,
             cuped: tuple[float, Mapping[str, Covariate]] | None = None) -> Comparison:
    control = table[experiment.control.id][goal.id]
    outcome = estimate(control, table[arm_id][goal.id], _kind(goal), options.difference)
    if isinstance(outcome, NotEnoughData):
        return Comparison(arm_id, goal.id, goal.primary, outcome)
    adjustment = None
    if cuped is not None:
        adjusted, adjustment = _cuped(experiment.control.id, arm_id, goal.id, table, outcome,
                                      options, *cuped)
        outcome = adjusted
    return Comparison(
        arm_id, goal.id, goal.primary, outcome,
        fixed=t_test(outcome, options.alpha),
        sequential=sequential_test(outcome, options.alpha, options.tuning)
        if options.sequential else None,
        bayes=gaussian_effect(outcome, options.alpha, options.prior),
        cuped=adjustment,
    )


def _cuped(control: str, arm: str, goal: str, table: dict[str, dict[str, ArmStats]],
           unadjusted: Estimate, options: SummaryOptions, theta: float,
           covariates: Mapping[str, Covariate]) -> tuple[Estimate, CupedAdjustment | None]:
    """The CUPED-adjusted effect of ``arm`` and what it changed; the unadjusted effect (and
    None) when the adjusted one cannot be computed."""
    a = _cuped_arm(table, covariates, control, goal)
    b = _cuped_arm(table, covariates, arm, goal)
    adjusted = cuped_estimate(a, b, theta, options.difference)
    # The reduction compares like with like: the same formula with theta = 0, which for a
    # binary goal differs from the unadjusted p(1 - p) variance by n / (n - 1) only.
    plain = cuped_estimate(a, b, 0.0, options.difference)
    if isinstance(adjusted, NotEnoughData) or isinstance(plain, NotEnoughData):
        return unadjusted, None
    n = a.y.n + b.y.n
    known = covariates[control].units_known + covariates[arm].units_known
    return adjusted, CupedAdjustment(theta, 1.0 - adjusted.se**2 / plain.se**2, unadjusted,
                                     known / n)


def _adjusted(raw: list[Comparison], options: SummaryOptions) -> tuple[Comparison, ...]:
    tested = [c for c in raw if c.p is not None]
    adjusted = adjust([c.p for c in tested if c.p is not None], options.correction)
    alpha = interval_alpha(options.correction, options.alpha, adjusted)
    by_id = {id(c): p for c, p in zip(tested, adjusted, strict=True)}
    out = []
    for c in raw:
        if not isinstance(c.outcome, Estimate):
            out.append(c)
            continue
        ci = (sequential_test(c.outcome, alpha, options.tuning).ci if options.sequential
              else t_test(c.outcome, alpha).ci)
        out.append(Comparison(c.arm, c.goal, c.primary, c.outcome, c.fixed, c.sequential,
                              c.bayes, by_id[id(c)], ci, alpha, c.cuped))
    return tuple(out)


def _srm(experiment: Experiment, table: dict[str, dict[str, ArmStats]],
         history: WeightHistory, units_by_period: Sequence[int] | None,
         options: SummaryOptions) -> SrmResult | NotEnoughData:
    goal = experiment.primary_goal.id
    observed = [table[arm.id][goal].n for arm in experiment.arms]
    if any(len(p.weights) != len(experiment.arms) for p in history.periods):
        raise ValueError(f"summarise({experiment.id!r}): the weight history has periods "
                         f"that do not have {len(experiment.arms)} weights")
    if not history.periods:
        expected = expected_from_weights(sum(observed), experiment.weights)
    elif len(history.periods) == 1 and units_by_period is None:
        expected = expected_from_weights(sum(observed), history.periods[0].weights)
    elif units_by_period is None:
        return NotEnoughData(Insufficient.NOT_COMPUTED, "the weights changed "
                             f"{len(history.periods) - 1} times; pass units_by_period")
    else:
        expected = expected_units(history, units_by_period)
    return srm_check(observed, expected, options.srm_threshold)


def _power(experiment: Experiment, table: dict[str, dict[str, ArmStats]],
           options: SummaryOptions) -> PowerHint | NotEnoughData:
    goal = experiment.primary_goal
    treatments = [arm.weight for arm in experiment.arms[1:] if arm.weight > 0]
    if experiment.control.weight == 0 or not treatments:
        return NotEnoughData(Insufficient.NOT_COMPUTED,
                             "the control or every treatment has a planned weight of 0")
    total = sum(table[arm.id][goal.id].n for arm in experiment.arms)
    return visitors_needed(table[experiment.control.id][goal.id], _kind(goal), total,
                           mde=options.mde, shares=(experiment.control.weight,
                                                    min(treatments)),
                           alpha=options.alpha, power=options.power)

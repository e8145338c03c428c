"""task=seed_report: every figure of the seed report (1–6 and 8) in one run folder.

A composite of the other tasks: it calls them and merges their Reports (tables and
figures keep their names, which say which figure they are; each task's metrics become
one section of metrics.json). Fig. 3 is one descent from a random start, as in the
report; Fig. 8 draws init.n_starts of them.
"""

from __future__ import annotations

import copy

from omegaconf import DictConfig

from lagfit_cli.io.report import Report
from . import register_task
from lagfit_cli.app.tasks.fit import fit_task
from lagfit_cli.app.tasks.landscape import landscape_task
from lagfit_cli.app.tasks.noise_study import noise_study_task


def merge_reports(parts: dict[str, Report]) -> Report:
    """One Report from several: tables/figures united (names must not clash), metrics by part."""
    merged = Report()
    for part, report in parts.items():
        for kind in ("tables", "figures"):
            mine, theirs = getattr(merged, kind), getattr(report, kind)
            clash = set(mine) & set(theirs)
            if clash:
                raise ValueError(f"seed_report: {kind} {sorted(clash)} of {part!r} clash with another part")
            mine.update(theirs)
        merged.metrics[part] = report.metrics
        merged.summary.extend(report.summary)
        merged.figure_notes.update(report.figure_notes)
    return merged


@register_task("seed_report")
def seed_report_task(cfg: DictConfig) -> Report:
    single = copy.deepcopy(cfg)
    single.init.n_starts = 1
    report = merge_reports({
        "fit": fit_task(single),
        "landscape": landscape_task(cfg),
        "noise_study": noise_study_task(cfg),
    })
    fit = report.metrics["fit"]
    report.metrics = {
        "task": "seed_report",
        "system": fit["system"],
        "max_ratio_rel_error": fit["max_ratio_rel_error"],
        **report.metrics,
    }
    return report

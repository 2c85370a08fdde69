"""ired-report: turn a sweep directory into the study's answer (experiment.md, "The report").

    ired-report multirun/2026-11-26/10-00-00     # the directory the sweep printed
    ired-report outputs/2026-11-26/09-00-00      # a single run works too

Writes next to the runs: summary.md (tables, verdict, commands, versions, hardware), summary.json (the
same numbers for programs), runs.csv (one row per run, failed and missing ones included),
learning_curves.png and, where `ired-eval RUN --scaling` has been run, scaling.png. Prints the main table.

It only reads files and trains nothing, so it runs wherever the run directories were copied to.
Importing it loads no torch; writing a report does, once, for the strategies' registry
(mining.STRATEGIES: their order and colours) and a grid's labels (their defaults). Its modules, in
the order the data flows:

    records.py     reading runs: each job of the sweep as a RunRecord
    results.py     the analysis's named records (Stat, Change, SplitResult, ..., Analysis): summary.json's shape
    analysis.py    statistics per strategy over seeds, comparisons with the baseline, the verdict
    provenance.py  the commands, versions and hardware that made the runs
    table.py       the main table, modelled once, rendered to markdown and to the console
    markdown.py    summary.md
    console.py     the terminal's summary
    plots.py       learning_curves.png and scaling.png
    write.py       write_report (every file above) and the ired-report command line
"""

from ired_mining.report.records import ReportError
from ired_mining.report.write import main, write_report

__all__ = ["ReportError", "main", "write_report"]

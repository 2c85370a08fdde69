"""python -m ired_mining.report SWEEP_DIR: the same as ired-report."""

from ired_mining.report.write import main

main()

"""Running a grid: a spec's `grid:` block expanded into cells (grid.py), the cells run and skipped, locked and
recorded (launch.py, locks.py), or written out as a Slurm array (slurm.py). One cell is trained by
`lmbench.training.runner`; this package only decides which cells run where."""

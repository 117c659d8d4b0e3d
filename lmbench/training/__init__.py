"""Training one cell: the runner (runner.py) builds data, model and Accelerator, lets the Trainer (trainer.py)
train with periodic evaluation (evaluate.py) and checkpoints (checkpoint.py), then evaluates, samples and writes
the results folder. The batch plan (plan.py), optimizers, schedules, precision, tracking and the launch's
processes (processes.py) are its parts."""

"""What several models and trainers share: nets, losses, checkpoints, runs, runtime, torchrun."""

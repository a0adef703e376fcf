"""Training: state, optimizer, LR schedule, the loop and (later) the Ray Train driver."""

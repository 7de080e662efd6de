"""Edits on several devices: torch.distributed collectives and the optimizers that average gradients over processes."""

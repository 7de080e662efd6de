"""What every layer uses: the one input-error type, the record of the flags a user typed, reading nerfstudio checkpoints."""

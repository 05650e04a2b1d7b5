"""Self-supervised methods: the model (backbone plus heads) that a training step optimises."""

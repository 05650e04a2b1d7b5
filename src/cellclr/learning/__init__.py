"""Training and embedding: encoders, augmentations, losses, methods, optimisers, the training loop
and the embedding stage (everything that needs torch)."""

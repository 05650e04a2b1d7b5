"""Embeddings -> well and treatment profiles -> post-processing -> MoA evaluation and prediction
(pandas and numpy only, no torch)."""

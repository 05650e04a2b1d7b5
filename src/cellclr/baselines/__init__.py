"""Reference representations evaluated by the same later stages as a trained model."""

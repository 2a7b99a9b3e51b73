"""Inference with trained models: encode a dataset into the store, roll predictors on, decode."""

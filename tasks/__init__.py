"""The stages of the pipeline: pure functions, and the thin Prefect tasks around them."""

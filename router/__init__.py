"""dreamfix router: rustc diagnostics → task key with a confidence, the route table (task → active
coefficient version), and the fallback to the base model."""

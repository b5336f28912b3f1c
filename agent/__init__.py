"""dreamfix agent: the rustc sandbox, diagnostics, suggestion applying, koans, the prompt builder and the fix
loop. It knows nothing of torch, SQL or HTTP: the model comes in as a ``generate`` callable."""

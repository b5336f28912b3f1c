"""Share: per-task coefficients in a shared low-rank subspace of LoRA adapters (see docs/share.md).

``math`` holds the linear algebra; ``layer`` the routed ShareLinear; ``bank`` the hot-swappable coefficient
bank; ``seeds`` LoRA seed training; ``phases`` Phase 1/2/3; ``artifacts`` and ``peft_io`` the files;
``accounting`` the honest parameter counts. Import from the submodules.
"""

"""dreamfix learner: model loading and generation, Share math, the routed Share layer and coefficient bank,
LoRA seed training, Phase 1/2/3, PEFT export/import and adapter artifacts."""

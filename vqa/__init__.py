"""The VQA task: readers, answers, targets, prior, features, tokens, batches, metric, synth data."""

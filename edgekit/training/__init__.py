"""Training a recipe: the loop, its run directory, optimiser and EMA, fine-tuning and distributed set-up."""

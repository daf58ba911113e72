"""What to train and where: the universe (symbols, targets, families, settings) and the
deployment (which backends, from `INTELLIGENCE_*`). Validated at load; nothing else reads them."""

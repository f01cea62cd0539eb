"""Model resolution: concrete models and virtual models with load balancing, retries, fallbacks."""

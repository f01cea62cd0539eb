"""Access control decided in memory: credentials, access rules, rate limits."""

"""Provider adapters: pure translations between OpenAI shapes and other providers' APIs."""

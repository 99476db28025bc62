"""The HTTP server: OpenAI's API (files, fine-tuning jobs, models, chat and text completions) on FastAPI."""

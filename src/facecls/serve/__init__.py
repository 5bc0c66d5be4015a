"""`facecls serve`: a trained or exported model behind an HTTP API (FastAPI + uvicorn) that
batches concurrent requests into shared forward passes, with a small page to try it."""

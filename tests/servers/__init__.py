"""Real HTTP servers on 127.0.0.1 for tests: a scriptable OpenAI-shaped fault server and
helpers around a real llama.cpp server."""

"""The engines behind the ``LLM`` protocol and the wrappers around them.

- :mod:`.transformers_engine`: in-process Hugging Face transformers (CPU/CUDA);
- :mod:`.vllm_engine`: in-process vLLM (GPU);
- :mod:`.openai_engine`: any OpenAI-compatible endpoint (responses parsed by
  :mod:`._openai_parse`);
- :mod:`.scripted`: a fake for unit tests;
- :mod:`.batching`: cross-request micro-batching (``BatchingEngine``, ``MicroBatcher``);
- :mod:`.cached`: a disk cache of calls (``CachedEngine``; the experiment runner's cache).

Nothing is imported here: ``hoprank.llm`` loads each engine lazily.
"""
